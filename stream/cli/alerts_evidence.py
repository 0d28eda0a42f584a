"""`dfstream alerts verify ID` and `dfstream alerts export ID --out FILE.zip`: the evidence actions of the
`alerts` command, kept here so stream/cli/alerts.py only wires them in.

* verify: recomputes every evidence file's sha256 against `manifest.json`, and the manifest's own against the
  alert's `end` message in the alerts log when it is there. Prints each changed or missing file by name and
  exits EXIT_INPUT_FAILED (1) when any is; an unknown id or a folder without a manifest is EXIT_USAGE (2).
* export: one zip with the manifest, every file it names, and `messages.json` (every message of that alert in
  the alerts log, in order), so the bundle can be verified again elsewhere (`verify` reads it unpacked too).
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

from stream.cli.common import EXIT_INPUT_FAILED, EXIT_OK, EXIT_USAGE
from stream.live.bus.base import ALERTS_LOG_NAME, default_data_dir
from stream.live.evidence.manifest import MANIFEST, VerifyError, read_manifest, verify
from stream.live.evidence.names import ALERT_ID, EVIDENCE_DIR

MESSAGES = "messages.json"


def add_actions(actions: Any) -> None:
    """Add `verify` and `export` to `alerts`' actions; without an action, `alerts` prints alerts as before."""
    v = actions.add_parser("verify", help="check an alert's evidence files against its manifest (exit 1 if changed)")
    e = actions.add_parser("export", help="bundle an alert's evidence, manifest and messages into one zip")
    for p in (v, e):
        p.add_argument("id", help="the alert id (32 hex digits, as in its messages)")
        # SUPPRESS: `alerts --data-dir D verify ID` keeps D (a subparser default would overwrite it)
        p.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS,
                       help="serve's data folder (default: $DFSTREAM_DATA or ~/.local/share/dfstream)")
    e.add_argument("--out", type=Path, required=True, metavar="FILE.zip", help="the zip to write")
    v.set_defaults(run=run_verify)
    e.set_defaults(run=run_export)


def _folder(args: argparse.Namespace) -> tuple[Path, Path] | None:
    data_dir = getattr(args, "data_dir", None) or default_data_dir()
    if not ALERT_ID.match(args.id):
        print(f"dfstream alerts {args.action}: {args.id!r} is not an alert id (32 lowercase hex digits)",
              file=sys.stderr)
        return None
    folder = Path(data_dir) / EVIDENCE_DIR / args.id
    if not folder.is_dir():
        print(f"dfstream alerts {args.action}: no evidence for {args.id} in {folder.parent} "
              "(wrong --data-dir, or removed by retention)", file=sys.stderr)
        return None
    return Path(data_dir), folder


def alert_messages(data_dir: Path, alert_id: str) -> list[dict[str, Any]]:
    """Every message of one alert in the alerts log, in the order they were logged (unreadable lines skipped)."""
    log = data_dir / ALERTS_LOG_NAME
    out = []
    if log.is_file():
        with open(log, encoding="utf-8") as f:
            for line in f:
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if isinstance(msg, dict) and msg.get("id") == alert_id:
                    out.append(msg)
    return out


def logged_manifest_sha256(messages: list[dict[str, Any]]) -> str | None:
    for msg in reversed(messages):
        sha = (msg.get("custody") or {}).get("manifest_sha256")
        if sha:
            return sha
    return None


def run_verify(args: argparse.Namespace) -> int:
    found = _folder(args)
    if found is None:
        return EXIT_USAGE
    data_dir, folder = found
    expected = logged_manifest_sha256(alert_messages(data_dir, args.id))
    try:
        findings = verify(folder, expected)
        n = len(read_manifest(folder)["files"])
    except VerifyError as exc:
        print(f"dfstream alerts verify: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for f in findings:
        print(f"CHANGED {f.file}: {f.problem}" if f.problem == "changed" else f"BAD {f}", flush=True)
    if findings:
        print(f"dfstream alerts verify: {args.id}: {len(findings)} of {n} files do not match the manifest",
              file=sys.stderr)
        return EXIT_INPUT_FAILED
    against = "and the manifest matches the alert log" if expected else "(no end message in the alert log to " \
        "check the manifest itself against)"
    print(f"OK {args.id}: {n} files match the manifest {against}")
    return EXIT_OK


def run_export(args: argparse.Namespace) -> int:
    found = _folder(args)
    if found is None:
        return EXIT_USAGE
    data_dir, folder = found
    try:
        manifest = read_manifest(folder)
    except VerifyError as exc:
        print(f"dfstream alerts export: {exc}", file=sys.stderr)
        return EXIT_USAGE
    out: Path = args.out
    if out.suffix.lower() != ".zip":
        print(f"dfstream alerts export: {out}: the bundle must be a .zip", file=sys.stderr)
        return EXIT_USAGE
    if not out.parent.is_dir():
        print(f"dfstream alerts export: {out.parent}: no such folder", file=sys.stderr)
        return EXIT_USAGE
    names = [MANIFEST, *[n for n in sorted(manifest["files"]) if Path(n).name == n and (folder / n).is_file()]]
    part = out.with_name(out.name + ".part")
    with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED) as z:  # MP4 barely deflates; JSON does
        for name in names:
            z.write(folder / name, f"{args.id}/{name}")
        z.writestr(f"{args.id}/{MESSAGES}", json.dumps(alert_messages(data_dir, args.id), indent=1))
    part.replace(out)
    print(f"wrote {out} ({len(names) + 1} files)")
    return EXIT_OK
