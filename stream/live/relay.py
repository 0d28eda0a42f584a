"""Server -> browser video relay over WebRTC (issue 6). Placeholder hook: registers no routes yet."""

from __future__ import annotations


def setup(app, service) -> None:
    """Register the relay's routes on `app` (none until the relay exists)."""
