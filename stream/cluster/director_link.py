"""The gateway's line to the director: a Ray driver attachment, the director's handle, and the last camera list.

The page's requests run on the gateway's event loop, so nothing here may block it for long when the head is lost:
* a watcher thread asks the director for its status every `STATUS_EVERY_S` and keeps the last camera list, which
  `cameras()` returns at once, whatever Ray does;
* when the director does not answer, the watcher looks for it again (a head that came back: Ray restarted it),
  and first attaches the driver again if its own Ray node died (a gateway on the head's machine). Meanwhile
  `ask` refuses at once (`RemoteUnavailable`, the API's 503) instead of waiting on a head that is not there.

The handle (and attaching again) are behind one lock, which `ask` waits for at most `LOCK_WAIT_S`; its call
then waits outside it, so the watcher can find out meanwhile that the director is gone.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

import ray

from stream.cluster.director import find_director
from stream.cluster.settings import DIRECTOR_NAME, HEAD_LOSS, NAMESPACE
from stream.live.server.service import RemoteUnavailable

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 30.0  # a director call slower than this fails the request (the cluster is unwell)
STATUS_EVERY_S = 0.5  # the watcher asks for the camera list this often...
STATUS_TIMEOUT_S = 2.0  # ...and gives up on one answer after this long (the director is then looked for again)
LOCK_WAIT_S = 5.0  # a request waits this long for a watcher busy finding the director, then gets a 503
WAIT_SLICE_S = 0.25  # a request's call is looked at this often: it stops waiting once the watcher finds the director gone
FAILURES = (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError)


class DirectorLink:
    def __init__(self, address: str) -> None:
        self.address = address
        self._director: Any = None
        self._known: dict[str, dict] = {}  # the last camera list the director gave
        self._down: str | None = None  # why the director is not reachable now (None: it is)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        """Attach, find the director (waiting for it, as at a cluster's start) and start watching it."""
        self._join()
        self._director = find_director()
        self._known = ray.get(self._director.status.remote(), timeout=CALL_TIMEOUT_S)["cameras"]
        self._thread = threading.Thread(target=self._watch, name="cluster-director", daemon=True)
        self._thread.start()

    def cameras(self) -> dict[str, dict]:
        """The last camera list the director gave (never waits)."""
        return dict(self._known)

    def ask(self, method: str, *args: Any, timeout: float = CALL_TIMEOUT_S) -> Any:
        """One call to the director (its own errors are raised as they are). RemoteUnavailable at once while it
        is known to be unreachable, and as soon as the watcher finds it so while this call waits."""
        if self._down is not None:
            raise RemoteUnavailable(f"the cluster's director does not answer ({self._down}); is the head down?")
        if not self._lock.acquire(timeout=LOCK_WAIT_S):
            raise RemoteUnavailable("the cluster's director is being looked for again; try again shortly")
        try:
            ref = getattr(self._director, method).remote(*args)
        finally:
            self._lock.release()
        deadline = time.monotonic() + timeout
        try:
            while not ray.wait([ref], timeout=WAIT_SLICE_S)[0]:
                if self._down is not None or time.monotonic() > deadline:
                    raise ray.exceptions.GetTimeoutError(self._down or f"no answer within {timeout:.0f} s")
            result = ray.get(ref)
        except FAILURES as exc:
            self._down = self._down or type(exc).__name__
            raise RemoteUnavailable(f"the cluster's director does not answer ({self._down}); "
                                    "is the head down?") from None
        if self._lock.acquire(timeout=LOCK_WAIT_S):
            try:
                self._refresh()  # read your own change: the camera list includes it
            except FAILURES:
                pass  # done all the same; the watcher finds out
            finally:
                self._lock.release()
        return result

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(STATUS_TIMEOUT_S + 3)
        if ray.is_initialized():
            ray.shutdown()

    # -- the watcher ----------------------------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stop.wait(STATUS_EVERY_S):
            with self._lock:
                try:
                    if self._down is not None:
                        self._find()
                    self._refresh()
                except FAILURES as exc:
                    if self._down is None:
                        log.warning("serve --ray: the director does not answer (%s); showing the last camera list",
                                    type(exc).__name__)
                    self._down = type(exc).__name__
                except Exception as exc:  # noqa: BLE001 - the head is still away; looked for again next round
                    self._down = f"{type(exc).__name__}: {exc}"

    def _refresh(self) -> None:
        self._known = ray.get(self._director.status.remote(), timeout=STATUS_TIMEOUT_S)["cameras"]
        if self._down is not None:
            log.warning("serve --ray: the director answers again")
        self._down = None

    def _find(self) -> None:
        """The director again: on a live Ray node of this machine (attached again if ours died), by its name."""
        me = ray.get_runtime_context().get_node_id()
        if not any(n["NodeID"] == me and n.get("Alive") for n in ray.nodes()):
            log.warning("serve --ray: this gateway's Ray node is gone; attaching to the cluster again")
            ray.shutdown()
            self._join()
        self._director = ray.get_actor(DIRECTOR_NAME, namespace=NAMESPACE)

    def _join(self) -> None:
        """Attach to the cluster as a Ray driver (to a node of this machine; Ray prefers the head's)."""
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        for name, value in HEAD_LOSS.env().items():  # this driver waits for a lost head as long as the nodes do
            os.environ.setdefault(name, value)
        ray.init(address=self.address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING)
        if threading.current_thread() is threading.main_thread():  # serve's own shutdown keeps SIGTERM
            for sig, handler in handlers.items():
                if handler is not None:
                    signal.signal(sig, handler)
