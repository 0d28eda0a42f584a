"""`dfstream alerts`: print alerts as they happen, from Redis or from the local alerts log.

* `--redis URL`: reads the `<ns>:alerts` stream through the Redis bus's reader (stream.live.bus.redis_alerts).
  Without `--group`, from the start, then with `--follow` new entries as they come (XREAD BLOCK). With
  `--group NAME`, a consumer group: first this consumer's own pending entries (delivered earlier but never
  acknowledged, e.g. because the terminal was closed), then new ones; each is acknowledged (XACK) after it is
  printed, so the next run resumes where this one left off.
* `--ws ws://HOST:PORT/ws`: a remote serve's websocket, no Redis needed (alerts_follow.py).
* `test-webhook NAME --config FILE`: one signed test event to a configured webhook (alerts_webhook.py).
* `replay-dead-letters NAME --config FILE`: a webhook's dead letters sent again, once (alerts_dead_letters.py).
* without `--redis`: reads `DATA_DIR/alerts.jsonl`, the log `serve` appends every alert to (`--follow` tails it).
* `verify ID` / `export ID --out FILE.zip`: an alert's evidence (alerts_evidence.py).

While following, a lost Redis connection is retried with back-off (a restarted Redis without persistence loses
the group: it is recreated). A message whose idempotency key was already printed in this run is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections import OrderedDict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from stream.cli import alerts_dead_letters, alerts_follow, alerts_webhook
from stream.cli.alerts_evidence import add_actions
from stream.cli.common import EXIT_OK, EXIT_USAGE  # EXIT_USAGE also when Redis is unreachable
from stream.live.bus.base import ALERTS_LOG_NAME, default_data_dir
from stream.messages import Message, dumps

PAGE = 100  # entries per XREAD / XREADGROUP call
BLOCK_MS = 1000  # XREAD BLOCK: how long one read waits for new entries (also how often Ctrl-C is noticed)
TAIL_POLL_S = 0.2  # how often a followed alerts.jsonl is checked for new lines
SEEN_KEYS = 10_000  # idempotency keys remembered to skip a replayed message
RECONNECT_INITIAL_S = 0.5
RECONNECT_MAX_S = 5.0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("alerts", help="print alerts as they happen (from Redis or the local alerts log)")
    p.add_argument("--redis", default=None, metavar="URL", help="redis://host:port/db to read the alerts stream from")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new alerts until Ctrl-C")
    p.add_argument("--group", default=None, metavar="NAME",
                   help="read through this consumer group: resume where it left off, acknowledge what is printed")
    p.add_argument("--consumer", default=None, metavar="NAME",
                   help="consumer name within --group (default: this host's name; keep it stable to resume)")
    p.add_argument("--json", action="store_true", help="print each alert as one JSON object per line")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="folder of alerts.jsonl when reading without --redis (default: $DFSTREAM_DATA or "
                        "~/.local/share/dfstream)")
    p.add_argument("--namespace", default=None, help="Redis key prefix used by serve (default: dfstream)")
    alerts_follow.add_arguments(p)
    p.set_defaults(run=run)
    actions = p.add_subparsers(dest="action", metavar="ACTION", help="instead of printing alerts (optional)")
    alerts_webhook.add_subcommand(actions)
    alerts_dead_letters.add_subcommand(actions)  # `alerts replay-dead-letters NAME --config FILE`
    add_actions(actions)  # `alerts verify ID`, `alerts export ID --out FILE.zip`
    return p


def format_alert(msg: Message) -> str:
    """One readable line: time, event, id, stream, track, peak score and evidence paths."""
    when = datetime.fromtimestamp(float(msg.get("ts") or time.time())).strftime("%Y-%m-%d %H:%M:%S")
    evidence = msg.get("evidence") or {}
    score = msg.get("score_max")
    parts = [when, f"{str(msg.get('event', '?')).upper():<6}", str(msg.get("id")),
             f"stream={msg.get('stream')}", f"track={msg.get('track')}",
             f"score_max={score:.3f}" if isinstance(score, int | float) else f"score_max={score}",
             f"snapshot={evidence.get('snapshot') or '-'}", f"clip={evidence.get('clip') or '-'}"]
    return "  ".join(parts)


class Printer:
    """Prints each alert once per run (by idempotency key), flushed, so pipes and tests see it at once."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.seen: OrderedDict[str, None] = OrderedDict()

    def emit(self, msg: Message) -> None:
        key = str(msg.get("key") or "")
        if key:
            if key in self.seen:
                return
            self.seen[key] = None
            if len(self.seen) > SEEN_KEYS:
                self.seen.popitem(last=False)
        print(dumps(msg) if self.as_json else format_alert(msg), flush=True)


def run(args: argparse.Namespace) -> int:
    printer = Printer(args.json)
    try:
        if args.ws:
            if args.redis or args.group or args.consumer:
                print("dfstream alerts: --ws reads a serve's websocket; --redis, --group and --consumer do not "
                      "apply", file=sys.stderr)
                return EXIT_USAGE
            return alerts_follow.run_ws(args, printer)
        if args.stream or args.token:
            print("dfstream alerts: --stream and --token need --ws", file=sys.stderr)
            return EXIT_USAGE
        if args.redis:
            return _run_redis(args, printer)
        if args.group or args.consumer:
            print("dfstream alerts: --group and --consumer need --redis", file=sys.stderr)
            return EXIT_USAGE
        return _run_file(args, printer)
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:  # piped into `head`: the reader is gone, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


# -- the local alerts log ------------------------------------------------------------------------------------

def _run_file(args: argparse.Namespace, printer: Printer) -> int:
    path = (args.data_dir or default_data_dir()) / ALERTS_LOG_NAME
    if not path.exists() and not args.follow:
        print(f"dfstream alerts: no alerts yet ({path} does not exist)", file=sys.stderr)
        return EXIT_OK
    for msg in tail_jsonl(path, args.follow):
        printer.emit(msg)
    return EXIT_OK


def tail_jsonl(path: Path, follow: bool) -> Iterator[Message]:
    """Complete lines of `path` as dicts; with `follow`, waits for the file, new lines, and a replaced file."""
    while follow and not path.exists():
        time.sleep(TAIL_POLL_S)
    f = open(path, "rb")  # noqa: SIM115 - reopened when the file is replaced
    try:
        partial = b""
        while True:
            chunk = f.read()
            if chunk:
                lines = (partial + chunk).split(b"\n")
                partial = lines.pop()  # a line being written has no newline yet
                for line in lines:
                    if line.strip():
                        try:
                            yield json.loads(line)
                        except json.JSONDecodeError:
                            print(f"dfstream alerts: unreadable line skipped in {path}", file=sys.stderr)
                continue
            if not follow:
                return
            time.sleep(TAIL_POLL_S)
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            if st.st_ino != os.fstat(f.fileno()).st_ino or st.st_size < f.tell():  # replaced or truncated
                f.close()
                f = open(path, "rb")  # noqa: SIM115
                partial = b""
    finally:
        f.close()


# -- Redis ---------------------------------------------------------------------------------------------------

def _run_redis(args: argparse.Namespace, printer: Printer) -> int:
    import redis

    from stream.live.bus.redis_alerts import AlertGroupReader, AlertStreamReader
    from stream.live.bus.redis_bus import DEFAULT_NAMESPACE, IO_TIMEOUT_S, UNREACHABLE, connect
    from stream.live.sources.urls import redact

    shown = redact(args.redis)
    try:  # a blocked XREAD must not trip the socket timeout
        client = connect(args.redis, client_name="dfstream-alerts", socket_timeout=BLOCK_MS / 1000 + IO_TIMEOUT_S)
        client.ping()
    except ValueError as exc:
        print(f"dfstream alerts: bad Redis URL {shown}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except redis.RedisError as exc:
        print(f"dfstream alerts: cannot reach Redis at {shown}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    namespace = args.namespace or DEFAULT_NAMESPACE
    if args.group:
        reader: Any = AlertGroupReader(client, args.group, args.consumer or socket.gethostname(), namespace)
    else:
        reader = AlertStreamReader(client, namespace)
    delay = RECONNECT_INITIAL_S
    caught_up = False  # without --group: the stream's entries up to now have been printed
    while True:
        try:
            block = BLOCK_MS if args.follow and (args.group or caught_up) else None
            page = reader.read(PAGE, block)
            if page is None:  # a group's own backlog ran out, or the group was recreated: read again at once
                continue
            for entry_id, msg in page:
                if msg is not None:
                    printer.emit(msg)
                else:  # pending so long that MAXLEN trimmed it: say so rather than skip silently
                    print(f"dfstream alerts: entry {entry_id} was trimmed from the stream before it was printed",
                          file=sys.stderr, flush=True)
                if args.group:
                    reader.ack(entry_id)
            delay = RECONNECT_INITIAL_S
            caught_up = caught_up or len(page) < PAGE
            if not page and not args.follow and (args.group or caught_up):
                return EXIT_OK
        except BrokenPipeError:  # an OSError, but the reader of stdout is gone, not Redis
            raise
        except UNREACHABLE as exc:
            if not args.follow:
                print(f"dfstream alerts: lost Redis at {shown}: {exc}", file=sys.stderr)
                return EXIT_USAGE
            print(f"dfstream alerts: Redis at {shown} unreachable ({exc}); retrying in {delay:.1f} s",
                  file=sys.stderr, flush=True)
            time.sleep(delay)
            delay = min(RECONNECT_MAX_S, delay * 2)
            reader.reconnected()
        except redis.RedisError as exc:  # refused by the server (ACL, wrong key type...): retrying will not help
            print(f"dfstream alerts: Redis at {shown} refused: {exc}", file=sys.stderr)
            return EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    """`python -m stream.cli.alerts ...`, the same as `dfstream alerts ...`."""
    parser = argparse.ArgumentParser(prog="dfstream")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["alerts", *(sys.argv[1:] if argv is None else argv)])
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
