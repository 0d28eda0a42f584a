"""`dfstream alerts test-webhook NAME --config serve.yaml`: POST one signed test event to a configured webhook,
once, and say what the receiver answered, so a hook can be checked before a real alert needs it."""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from stream.cli.common import EXIT_INPUT_FAILED, EXIT_OK, EXIT_USAGE
from stream.messages import ALERT, VERSION


def add_subcommand(actions: Any) -> None:
    p = actions.add_parser("test-webhook", help="send a signed test event to a webhook of the serve config")
    p.add_argument("name", help="the webhook's name (its `name`, or its URL's host:port when unnamed)")
    p.add_argument("--config", "-c", type=Path, required=True, help="the serve config file holding alerts.webhooks")
    p.set_defaults(run=run)


def test_event() -> dict[str, Any]:
    """Shaped like an alert message, with event `test`, no stream, and a fresh key, so receivers can tell it."""
    alert_id = f"test-{secrets.token_hex(6)}"
    now = time.time()
    return {"v": VERSION, "type": ALERT, "event": "test", "id": alert_id, "key": f"{alert_id}:0", "seq": 0,
            "stream": None, "track": None, "started_at": now, "ended_at": now, "score_max": None, "engines": {},
            "evidence": {}, "ts": now, "test": True}


def run(args: argparse.Namespace) -> int:
    import requests

    from stream.config.serve import ConfigError, load_config
    from stream.live.bus.channels.base import ChannelError
    from stream.live.bus.channels.webhook import post, read_secret, shown

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"dfstream alerts test-webhook: {exc}", file=sys.stderr)
        return EXIT_USAGE
    hooks = {h.label: h for h in config.alerts.webhooks}
    hook = hooks.get(args.name)
    if hook is None:
        known = ", ".join(sorted(hooks)) or "none configured"
        print(f"dfstream alerts test-webhook: no webhook named {args.name!r} in {args.config} ({known})",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        secret = read_secret(hook)
    except ChannelError as exc:
        print(f"dfstream alerts test-webhook: {exc}", file=sys.stderr)
        return EXIT_USAGE
    event = test_event()
    with requests.Session() as session:
        error = post(session, hook, secret, event)
    if error is not None:
        print(f"dfstream alerts test-webhook: {hook.label} ({shown(hook.url)}) did not take the test event: {error}",
              file=sys.stderr)
        return EXIT_INPUT_FAILED
    print(f"dfstream alerts test-webhook: {hook.label} ({shown(hook.url)}) took the signed test event {event['key']}")
    return EXIT_OK
