"""Every use of aiortc's and aioice's private parts, in one place, each checked against one version.

The relay hands aiortc pre-encoded packets, so two things aiortc keeps to itself are needed: the RTP timestamp
a sender last stamped (to learn its random origin, for the page's sync) and the keyframe request a browser's
PLI/FIR sets (aiortc flags it for its own encoder, which the relay does not use). And aioice never offers
loopback candidates, so on a host with no other address WebRTC cannot connect even to a browser on the same
machine; `offer_loopback_when_offline` fixes that at start-up.

`check()` runs when the server is built: if this aiortc no longer has what is read here, WebRTC is disabled with
a message naming the version these reads were checked against, instead of failing quietly mid-stream.
pyproject.toml bounds aiortc to that version range.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import suppress

import aioice
import aioice.ice
import aiortc
from aiortc import RTCRtpSender

log = logging.getLogger(__name__)

CHECKED_AIORTC = "1.16.0"  # the aiortc release every private read below was checked against
CHECKED_AIOICE = "0.13.0"
# Name-mangled private attributes of RTCRtpSender (aiortc/rtcrtpsender.py):
RTP_TIMESTAMP_ATTR = "_RTCRtpSender__rtp_timestamp"  # set in __init__, updated after each RTP packet sent
FORCE_KEYFRAME_ATTR = "_RTCRtpSender__force_keyframe"  # set in __init__ and by _send_keyframe() on PLI/FIR
LOOPBACK_V4, LOOPBACK_V6 = "127.0.0.1", "::1"
_FALLBACK_MARK = "_dfstream_loopback_fallback"  # on the installed wrapper, so installing twice is a no-op

_missing = object()


class AiortcIncompatible(ImportError):
    """This aiortc (or aioice) lacks a private part the server relies on. An ImportError, so callers that
    already treat a missing aiortc as "WebRTC disabled" treat this the same way."""


def _incompatible(what: str) -> AiortcIncompatible:
    return AiortcIncompatible(
        f"aiortc {getattr(aiortc, '__version__', '?')} / aioice {getattr(aioice, '__version__', '?')} has no "
        f"{what} (checked against aiortc {CHECKED_AIORTC}, aioice {CHECKED_AIOICE}); install the aiortc version "
        "pyproject.toml names")


def check() -> None:
    """Raise AiortcIncompatible unless every private part read here exists in the installed versions. The
    sender's attributes are looked for in the bytecode of the methods that set them (a sender cannot be built
    without a transport)."""
    if RTP_TIMESTAMP_ATTR not in RTCRtpSender.__init__.__code__.co_names:
        raise _incompatible(f"RTCRtpSender.{RTP_TIMESTAMP_ATTR}")
    keyframe_setters = (RTCRtpSender.__init__, getattr(RTCRtpSender, "_send_keyframe", None))
    if any(f is None or FORCE_KEYFRAME_ATTR not in f.__code__.co_names for f in keyframe_setters):
        raise _incompatible(f"RTCRtpSender.{FORCE_KEYFRAME_ATTR} set by _send_keyframe()")
    if not callable(getattr(aioice.ice, "get_host_addresses", None)):
        raise _incompatible("aioice.ice.get_host_addresses")


def last_rtp_timestamp(sender: RTCRtpSender) -> int | None:
    """The RTP timestamp of the last packet `sender` sent (its random origin plus our pts); None before the
    first. Checked against aiortc 1.16.0."""
    sent = getattr(sender, RTP_TIMESTAMP_ATTR, _missing)
    if sent is _missing:
        raise _incompatible(f"RTCRtpSender.{RTP_TIMESTAMP_ATTR}")
    return sent if isinstance(sent, int) and sent else None


def take_keyframe_request(sender: RTCRtpSender) -> bool:
    """True once for each keyframe request (PLI/FIR) the browser sent to `sender`; clears it, as aiortc's own
    encoder path would. Checked against aiortc 1.16.0."""
    wanted = getattr(sender, FORCE_KEYFRAME_ATTR, _missing)
    if wanted is _missing:
        raise _incompatible(f"RTCRtpSender.{FORCE_KEYFRAME_ATTR}")
    if wanted:
        setattr(sender, FORCE_KEYFRAME_ATTR, False)
    return bool(wanted)


def offer_loopback_when_offline() -> bool:
    """Make aioice offer loopback candidates whenever it finds no host address, so a browser on the same
    machine still connects on an offline laptop or in a container without a LAN address (aioice skips loopback,
    and the peer would otherwise give up with "the browser never connected"). Elsewhere nothing changes: the
    wrapper returns aioice's own addresses whenever there are any. Idempotent; patches the module function that
    aioice's Connection.gather_candidates calls (checked against aioice 0.13.0). Returns whether the host has
    no address now, and warns in the log if so."""
    current: Callable[..., list[str]] | None = getattr(aioice.ice, "get_host_addresses", None)
    if not callable(current):
        raise _incompatible("aioice.ice.get_host_addresses")
    if getattr(current, _FALLBACK_MARK, False):
        original = current.__wrapped__  # type: ignore[attr-defined]
    else:
        original = current

        def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
            found = original(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
            if found:
                return found
            return [LOOPBACK_V4] if use_ipv4 else [LOOPBACK_V6] if use_ipv6 else []

        setattr(host_addresses, _FALLBACK_MARK, True)
        host_addresses.__wrapped__ = original  # type: ignore[attr-defined]
        aioice.ice.get_host_addresses = host_addresses
    offline = True
    with suppress(OSError):
        offline = not original(use_ipv4=True, use_ipv6=True)
    if offline:
        log.warning("WebRTC: this host has no network address but loopback, so WebRTC offers loopback (%s) "
                    "candidates: only a browser on this machine can connect", LOOPBACK_V4)
    return offline
