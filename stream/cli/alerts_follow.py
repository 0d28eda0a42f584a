"""`dfstream alerts --ws ws://HOST:8080/ws [--token T] [--follow] [--json] [--stream NAME]...`: follow a remote
`serve` from a terminal, without Redis, through its websocket (the `websockets` library).

On every (re)connect the server first sends the latest message of each open alert and of its recent ended ones
(`Hub.join`); the `Printer` drops the keys this run already printed, so each alert message prints once across
reconnects. A message superseded while the connection was down (an `update` followed by the `end`) is not
replayed: the latest message of each alert is, so no alert is missed, only intermediate updates can be.

Failures are said in words: a refused token (401) or Host/Origin (403) ends the run, since retrying cannot help;
a server that is gone or restarting is retried with back-off while following.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from stream.cli.common import EXIT_OK, EXIT_USAGE
from stream.config.sources import Backoff
from stream.messages import is_alert

# Reconnect delays while following: 0.5 s doubling to 5 s (jittered), as `--redis` does; a returning server is
# picked up within 5 s, and a dead one costs one attempt every 5 s.
RECONNECT_BACKOFF = Backoff(initial_s=0.5, factor=2.0, max_s=5.0, jitter=0.2)
OPEN_TIMEOUT_S = 10.0  # TCP + TLS + websocket handshake
REPLAY_IDLE_S = 1.0  # without --follow: stop once no alert has come for this long (the replay comes at once)
RECEIVE_POLL_S = 1.0  # how often a blocked receive returns (Ctrl-C and the idle check)


class Refused(Exception):
    """The server answered the handshake with a refusal that retrying will not change (401, 403, 404)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ws", default=None, metavar="URL",
                   help="ws://HOST:PORT/ws of a remote serve to read alerts from (no Redis needed)")
    p.add_argument("--token", default=None, help="the remote serve's access token (sent as a Bearer header)")
    p.add_argument("--stream", action="append", default=None, metavar="NAME",
                   help="only alerts of this stream (repeatable); with --ws")


def _redact(url: str) -> str:
    parts = urlsplit(url)
    query = urlencode([(k, "***" if k == "token" else v) for k, v in parse_qsl(parts.query)])
    return urlunsplit(parts._replace(query=query))


def ws_address(url: str, streams: list[str] | None) -> str:
    """The URL with `streams=a,b` (the hub's server-side filter) added; ValueError when not ws:// or wss://."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"--ws {url!r} must be ws://HOST:PORT/ws or wss://HOST/ws")
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "streams"]
    if streams:
        query.append(("streams", ",".join(streams)))
    return urlunsplit(parts._replace(path=parts.path or "/ws", query=urlencode(query)))


def run_ws(args: argparse.Namespace, printer: Any) -> int:
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

    try:
        address = ws_address(args.ws, args.stream)
    except ValueError as exc:
        print(f"dfstream alerts: {exc}", file=sys.stderr)
        return EXIT_USAGE
    shown = _redact(address)
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    wanted = set(args.stream) if args.stream else None
    attempt = 0
    while True:
        try:
            for msg in _session(address, headers, args.follow):
                attempt = 0
                if is_alert(msg) and (wanted is None or msg.get("stream") in wanted):
                    printer.emit(msg)
            if not args.follow:
                return EXIT_OK
            reason = "the server closed the connection"
        except InvalidStatus as exc:
            status = exc.response.status_code
            body = exc.response.body.decode(errors="replace").strip() if exc.response.body else ""
            if status == 401:
                hint = "the token is wrong" if args.token else "this server needs a token: pass --token"
                print(f"dfstream alerts: {shown} refused the connection (401): {hint}"
                      f"{f' ({body})' if body else ''}", file=sys.stderr)
                return EXIT_USAGE
            if status in (403, 404):
                print(f"dfstream alerts: {shown} refused the connection ({status}){f': {body}' if body else ''}",
                      file=sys.stderr)
                return EXIT_USAGE
            reason = f"the server answered {status}{f': {body}' if body else ''}"
        except InvalidURI as exc:
            print(f"dfstream alerts: bad --ws address {shown}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except ConnectionClosed as exc:
            reason = f"the connection was lost ({exc})"
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            reason = f"the server is gone or not answering ({type(exc).__name__}: {exc})"
        if not args.follow:
            print(f"dfstream alerts: cannot read alerts from {shown}: {reason}", file=sys.stderr)
            return EXIT_USAGE
        delay = RECONNECT_BACKOFF.delay(attempt)
        attempt += 1
        print(f"dfstream alerts: {shown}: {reason}; reconnecting in {delay:.1f} s", file=sys.stderr, flush=True)
        time.sleep(delay)


def _session(address: str, headers: dict[str, str], follow: bool):
    """Messages of one connection, as dicts; ends when the server closes it (or, when not following, once the
    replay is over: no alert for REPLAY_IDLE_S)."""
    from websockets.sync.client import connect

    with connect(address, additional_headers=headers, open_timeout=OPEN_TIMEOUT_S, max_size=None) as ws:
        last_alert = time.monotonic()  # overlays and status never stop coming: only alerts count as news
        while True:
            if not follow and time.monotonic() - last_alert >= REPLAY_IDLE_S:
                return
            try:
                text = ws.recv(timeout=RECEIVE_POLL_S if follow else REPLAY_IDLE_S)
            except TimeoutError:
                continue
            try:
                msg = json.loads(text)
            except (TypeError, json.JSONDecodeError):
                continue
            if isinstance(msg, dict):
                if is_alert(msg):
                    last_alert = time.monotonic()
                yield msg
