"""What every alert channel is, and the error it raises when it cannot be set up.

A channel is a `SpooledChannel` (stream.live.bus.sender): it says which records it subscribes to (`kinds`), which
messages it wants (`wants`: filters) and how it delivers one; the shared `SpooledSender` keeps its queue, its
fsynced spool, its back-off and its dead letters. `serve` subscribes each channel to the bus in wire form.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from stream.messages import Message


class ChannelError(ValueError):
    """A channel cannot be set up as configured (a secret's variable is not set): said before serve starts."""


@runtime_checkable
class Channel(Protocol):
    name: str
    kinds: tuple[type, ...]  # the records it takes from the bus (in wire form)

    def publish(self, msg: Message) -> None: ...
    def start(self) -> None: ...
    def close(self) -> None: ...
    def stats(self) -> dict[str, Any]: ...
