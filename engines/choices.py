"""The names users choose between: backends and precisions. Pure data, importable without torch, so the command
line's parsers and the config records share one list with the engines."""

from __future__ import annotations

from typing import Literal, get_args

Backend = Literal["auto", "torch", "onnx", "tensorrt"]
Precision = Literal["fp32", "fp16", "int8"]
BACKENDS: tuple[str, ...] = get_args(Backend)
PRECISIONS: tuple[str, ...] = get_args(Precision)
