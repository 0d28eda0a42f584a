"""On a host with no address but loopback, a WebRTC session with serve still connects, and serve says why.

aioice offers no loopback candidates, so without serve's fallback (aiortc_compat.offer_loopback_when_offline)
the webcam would give up after 30 s with "the browser never connected". The session runs in a fresh network
namespace (`unshare -rn`), where the only interface is loopback, whatever this machine has; on a host that
already has only loopback it runs in this process. Nothing here patches aioice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from support.parts import require
from support.serve_fakes import NoFaces

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
SESSION_TIMEOUT_S = 30.0
SUBPROCESS_TIMEOUT_S = 120.0
POLL_S = 0.05
CONNECTED = "SESSION CONNECTED"
WARNING = "no network address but loopback"
NAMESPACE = ["unshare", "--user", "--map-root-user", "--net"]



async def _connect(base: str, registry) -> str:
    """A browser stand-in sends a video track through POST /offer and waits until both sides are connected.
    Returns the server's answer SDP."""
    import aiohttp
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(VideoStreamTrack())
    try:
        await pc.setLocalDescription(await pc.createOffer())
        async with aiohttp.ClientSession() as http:
            async with http.post(base + "/offer", json={"sdp": pc.localDescription.sdp, "type": "offer"}) as r:
                assert r.status == 200, await r.text()
                answer = await r.json()
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        deadline = time.monotonic() + SESSION_TIMEOUT_S
        server_pc = registry.peers[answer["peer"]].pc
        while not (pc.connectionState == server_pc.connectionState == "connected"):
            assert time.monotonic() < deadline, (pc.connectionState, server_pc.connectionState)
            await asyncio.sleep(POLL_S)
        return answer["sdp"]
    finally:
        await pc.close()


def session() -> str:
    """Serve on loopback plus one webcam session; returns the answer SDP. Must run where aioice finds no
    host address."""
    import aioice.ice

    from stream.config.serve import ServeConfig
    from stream.live.server.webcam import PEERS_KEY

    from support.live_server import LiveServer

    assert not aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True), "this host has a network address"
    with LiveServer(ServeConfig(port=0), [], detector=NoFaces()) as server:
        registry = server.app[PEERS_KEY]
        return asyncio.run(_connect(server.base, registry))


def _namespace_works() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run([*NAMESPACE, "ip", "link", "set", "lo", "up"], capture_output=True, timeout=30)
    return probe.returncode == 0


def _host_has_only_loopback() -> bool:
    import ifaddr

    return all(ip.ip in ("127.0.0.1", ("::1", 0, 0)) or (isinstance(ip.ip, tuple) and ip.ip[2] != 0)
               for adapter in ifaddr.get_adapters() for ip in adapter.ips)


def test_webrtc_connects_on_a_host_with_only_loopback(caplog):
    if _namespace_works():
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS), os.environ.get("PYTHONPATH", "")])}
        script = f"ip link set lo up && exec {sys.executable} {Path(__file__).resolve()}"
        done = subprocess.run([*NAMESPACE, "sh", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=SUBPROCESS_TIMEOUT_S)
        assert done.returncode == 0 and CONNECTED in done.stdout, done.stdout[-2000:] + done.stderr[-4000:]
        assert WARNING in done.stderr, done.stderr[-4000:]
        assert "127.0.0.1" in done.stdout  # the server's answer offered a loopback candidate
    elif _host_has_only_loopback():
        with caplog.at_level(logging.WARNING, logger="stream.live.server.aiortc_compat"):
            answer = session()
        assert "127.0.0.1" in answer and WARNING in caplog.text
    else:
        require("a loopback-only network (unshare -rn)", "no user network namespace here, and this host has a network address")


if __name__ == "__main__":  # inside the namespace
    logging.basicConfig(level=logging.WARNING)
    sdp = session()
    candidates = [line for line in sdp.splitlines() if line.startswith("a=candidate")]
    print(CONNECTED, *candidates, sep="\n", flush=True)
