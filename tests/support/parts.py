"""Real parts the tests drive (Redis, Chromium, GStreamer's RTSP server, the shared media, ...), and what a test
does when one is missing.

Locally a missing part skips its tests with the reason, so a developer without root can still run the rest.
In strict mode (`DFSTREAM_STRICT=1`, which `.ci/run` sets) a missing part fails the test instead: a green CI
run must mean that every real part ran. Only GPU-only tests may still skip there, and they do not use this.
"""

from __future__ import annotations

import os

import pytest

STRICT_ENV = "DFSTREAM_STRICT"


def strict() -> bool:
    return os.environ.get(STRICT_ENV, "").strip() not in ("", "0", "false", "no")


def needs(part: str, reason: str | None) -> pytest.MarkDecorator:
    """Mark tests that need `part`; `reason` is None when it is here, else why it is not."""
    return pytest.mark.needs(part=part, reason=reason)


def require(part: str, reason: str | None) -> None:
    """In a test or fixture: carry on when `reason` is None; else skip, or fail in strict mode."""
    if reason is None:
        return
    if strict():
        pytest.fail(f"strict mode ({STRICT_ENV}=1): {part} is needed but missing: {reason}", pytrace=False)
    pytest.skip(f"{part} missing: {reason}")


def import_or_require(module: str):
    """`pytest.importorskip`, strict: the module, or a skip (a failure in strict mode) saying it is missing."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        require(f"the Python package {module}", str(exc))
