"""`dfstream alerts replay-dead-letters NAME --config serve.yaml`: send a webhook's dead letters again, once.

A webhook's sender moves an alert it could not deliver after `max_attempts` to `DATA_DIR/webhooks/NAME.dead.jsonl`
(stream.live.bus.dead_letters). Once the receiver is fixed (or its URL or secret in the config), this POSTs each
letter's message again, signed with the hook's current secret, with its original `Idempotency-Key`, oldest first.
A letter leaves the file only after the receiver took it (2xx), so a run cut short, or one whose receiver still
refuses, leaves what was not delivered, and a second run sends nothing that the first delivered. A running `serve`
may keep appending meanwhile: the file is rewritten under its lock, keeping what it added.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from stream.cli.common import EXIT_INPUT_FAILED, EXIT_OK, EXIT_USAGE


def add_subcommand(actions: Any) -> None:
    p = actions.add_parser("replay-dead-letters", help="send a webhook's dead letters again, once each")
    p.add_argument("name", help="the webhook's name (its `name`, or its URL's host:port when unnamed)")
    p.add_argument("--config", "-c", type=Path, required=True, help="the serve config file holding alerts.webhooks")
    # SUPPRESS: `alerts --data-dir D replay-dead-letters ...` keeps D (a subparser default would overwrite it)
    p.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS,
                   help="serve's data folder (default: the config's data_dir)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import requests

    from stream.config.serve import ConfigError, load_config
    from stream.live.bus.channels.base import ChannelError
    from stream.live.bus.channels.webhook import DEAD_SUFFIX, WEBHOOKS_DIR, post, read_secret, shown
    from stream.live.bus.dead_letters import DeadLetters

    def refuse(message: str) -> int:
        print(f"dfstream alerts replay-dead-letters: {message}", file=sys.stderr)
        return EXIT_USAGE

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return refuse(str(exc))
    hooks = {h.label: h for h in config.alerts.webhooks}
    hook = hooks.get(args.name)
    if hook is None:
        return refuse(f"no webhook named {args.name!r} in {args.config} ({', '.join(sorted(hooks)) or 'none'})")
    try:
        secret = read_secret(hook)
    except ChannelError as exc:
        return refuse(str(exc))
    data_dir = getattr(args, "data_dir", None) or config.data_dir
    letters = DeadLetters(data_dir / WEBHOOKS_DIR / f"{hook.label}{DEAD_SUFFIX}")
    pending = letters.read()
    if not pending:
        print(f"dfstream alerts replay-dead-letters: {hook.label}: no dead letters in {letters.path}")
        return EXIT_OK
    delivered, failed = 0, []
    with requests.Session() as session:
        for letter in pending:
            key = letter["msg"].get("key")
            error = post(session, hook, secret, letter["msg"])
            if error is not None:
                failed.append(f"{key}: {error}")
                continue
            letters.remove(letter)  # only now: a crash before this sends it again, with the same key
            delivered += 1
            print(f"dfstream alerts replay-dead-letters: {hook.label}: delivered {key}", flush=True)
    print(f"dfstream alerts replay-dead-letters: {hook.label} ({shown(hook.url)}): {delivered} of {len(pending)} "
          f"delivered; {letters.count()} left in {letters.path}")
    for line in failed:
        print(f"dfstream alerts replay-dead-letters: not taken: {line}", file=sys.stderr)
    return EXIT_INPUT_FAILED if failed else EXIT_OK
