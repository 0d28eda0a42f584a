"""Deepfake detection engines: one small module per architecture, one common interface.

`engines.base` defines what every engine looks like to the pipeline; `engines.registry` names the published
models and builds engines from them; `engines.weights` finds, downloads and verifies their weight files.
The package imports nothing heavy itself (names resolve on first use), so `engines.choices` is torch-free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engines.base import Engine, InputSpec, LabelMapping, WeightsFormatError

__all__ = ["Engine", "InputSpec", "LabelMapping", "WeightsFormatError"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from engines import base

        return getattr(base, name)
    raise AttributeError(f"module 'engines' has no attribute {name!r}")
