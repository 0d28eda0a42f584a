"""Deepfake detection engines: one small module per architecture, one common interface.

`engines.base` defines what every engine looks like to the pipeline; `engines.registry` names the published
models and builds engines from them; `engines.weights` finds, downloads and verifies their weight files.
"""

from engines.base import Engine, InputSpec, LabelMapping, WeightsFormatError

__all__ = ["Engine", "InputSpec", "LabelMapping", "WeightsFormatError"]
