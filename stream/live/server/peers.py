"""What the two WebRTC features share about a peer connection: browser webcams in (`webcam.py`) and cameras
relayed out to the page (`relay.py`).

Reading an offer, the deadlines (negotiation, connect, disconnect grace), a bounded number of peers, closing a
peer whose connection fails, closes or never comes up, and closing every peer at shutdown all live here, so the
two features only say what a peer carries and how to undo it. Shaped after aiortc's examples/server/server.py:
one set of open peers, `connectionstatechange` handled in one place, every peer closed on shutdown.

SDP carries ICE passwords and DTLS fingerprints, so it is never logged here. (aiortc's own loggers print it at
DEBUG level: leave `aiortc` at INFO or above where logs are kept.)
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from aiohttp import web
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

log = logging.getLogger(__name__)

# No STUN/TURN: browser and server on one host or LAN. A WAN deployment adds e.g.
# RTCIceServer("stun:stun.example.org:3478") here. (aiortc falls back to Google's STUN server when given None,
# which this list, always passed, prevents: offline hosts would otherwise wait on a server they cannot reach.)
ICE_SERVERS: tuple[RTCIceServer, ...] = ()
NEGOTIATION_TIMEOUT_S = 15.0  # setRemoteDescription + answer + ICE gathering
CONNECT_TIMEOUT_S = 30.0  # a peer that is answered but never connects (the browser left) is closed
DISCONNECT_GRACE_S = 10.0  # how long a "disconnected" peer may come back before it is closed
NEVER_CONNECTED = "the browser never connected"
FAILED = "peer connection failed"
DISCONNECTED = "peer disconnected"

T = TypeVar("T")


class OfferRefused(ValueError):
    """The offer cannot be answered (garbage SDP, no usable video). The message is for the user."""


@dataclass(frozen=True)
class PeerPolicy:
    """How many peers a feature takes at once, and how long each step of a peer's life may take."""

    max_peers: int
    noun: str  # "WebRTC peers", "relay viewers": for the capacity refusal
    negotiation_timeout_s: float = NEGOTIATION_TIMEOUT_S
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    disconnect_grace_s: float = DISCONNECT_GRACE_S


class Peer(Protocol):
    id: str
    pc: RTCPeerConnection


P = TypeVar("P", bound=Peer)


async def read_offer(request: web.Request, help_text: str) -> tuple[RTCSessionDescription, dict[str, Any]]:
    """The SDP offer of a signalling request, and the whole JSON body for the feature's own fields; 400 with
    `help_text` for anything else."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text=f"malformed JSON: {help_text}") from None
    if not isinstance(body, dict) or not isinstance(body.get("sdp"), str) or body.get("type") != "offer":
        raise web.HTTPBadRequest(text=help_text)
    return RTCSessionDescription(sdp=body["sdp"], type="offer"), body


def negotiation_refused(exc: BaseException) -> web.HTTPException:
    """The HTTP answer for a failed `PeerSet.answer`."""
    if isinstance(exc, OfferRefused):
        return web.HTTPBadRequest(text=str(exc))
    return web.HTTPGatewayTimeout(text="could not answer the offer in time (ICE gathering)")


class PeerSet(Generic[P]):
    """The open peers of one feature, by id. A peer whose connection fails or closes, or that does not connect
    in time, is discarded; `teardown(peer, reason)` undoes the feature's side of it (reason None for a hang-up,
    else why it failed), then the connection is closed in the background and awaited at shutdown."""

    def __init__(self, policy: PeerPolicy, teardown: Callable[[P, str | None], None],
                 ice_servers: tuple[RTCIceServer, ...] = ICE_SERVERS) -> None:
        self.policy = policy
        self.ice_servers = ice_servers
        self.peers: dict[str, P] = {}
        self._teardown = teardown
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._closing: set[asyncio.Task] = set()

    def __len__(self) -> int:
        return len(self.peers)

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self.peers

    def refuse_if_full(self) -> None:
        if len(self.peers) >= self.policy.max_peers:
            raise web.HTTPServiceUnavailable(text=f"already {self.policy.max_peers} {self.policy.noun}; "
                                                  "close one first")

    @asynccontextmanager
    async def opening(self) -> AsyncIterator[RTCPeerConnection]:
        """A new peer connection that is closed again if anything in the block raises."""
        pc = RTCPeerConnection(RTCConfiguration(iceServers=list(self.ice_servers)))
        try:
            yield pc
        except BaseException:
            await pc.close()
            raise

    async def answer(self, pc: RTCPeerConnection, negotiate: Callable[[RTCPeerConnection], Awaitable[T]]) -> T:
        """Run a feature's offer/answer steps under the negotiation deadline. Whatever aiortc raises on bad SDP
        (ValueError, KeyError, OperationError...) becomes OfferRefused; a timeout stays asyncio.TimeoutError.
        Inside `opening`, so `pc` is closed if this raises."""
        try:
            return await asyncio.wait_for(negotiate(pc), self.policy.negotiation_timeout_s)
        except (OfferRefused, asyncio.TimeoutError):
            raise
        except Exception as exc:
            raise OfferRefused(f"the SDP offer was refused: {exc or type(exc).__name__}") from exc

    def add(self, peer: P) -> None:
        """Register a fully answered peer and start its connect deadline. Only answered peers are added, so a
        refused offer leaves nothing behind."""
        self.peers[peer.id] = peer
        peer.pc.on("connectionstatechange", lambda: self._state_changed(peer))
        self._arm(peer.id, self.policy.connect_timeout_s, NEVER_CONNECTED)

    def _arm(self, peer_id: str, delay: float, reason: str) -> None:
        self._timers[peer_id] = asyncio.get_running_loop().call_later(delay, self.discard, peer_id, reason)

    def _state_changed(self, peer: P) -> None:
        if self.peers.get(peer.id) is not peer:
            return
        state = peer.pc.connectionState
        if state == "connected" and peer.id in self._timers:
            self._timers.pop(peer.id).cancel()
        elif state in ("failed", "closed"):
            self.discard(peer.id, FAILED if state == "failed" else None)
        elif state == "disconnected" and peer.id not in self._timers:  # browsers report it; aiortc may in future
            self._arm(peer.id, self.policy.disconnect_grace_s, DISCONNECTED)

    def discard(self, peer_id: str, reason: str | None = None) -> bool:
        """Unregister a peer, undo the feature's side of it and start closing its connection. Idempotent; call
        on the event loop."""
        peer = self.peers.pop(peer_id, None)
        if peer is None:
            return False
        timer = self._timers.pop(peer_id, None)
        if timer is not None:
            timer.cancel()
        try:
            self._teardown(peer, reason)
        finally:
            task = asyncio.ensure_future(peer.pc.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return True

    async def close(self, peer_id: str) -> bool:
        found = self.discard(peer_id)
        await self.wait_closed()
        return found

    async def close_all(self) -> None:
        for peer_id in list(self.peers):
            self.discard(peer_id)
        await self.wait_closed()

    async def wait_closed(self) -> None:
        if self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)
