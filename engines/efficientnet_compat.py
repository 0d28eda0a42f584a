"""Every private part of efficientnet_pytorch that the ICPR networks read, in one place, checked against one
version (as `stream/live/server/aiortc_compat.py` does for aiortc).

`engines.architectures.efficientnet_b4` runs the backbone block by block, so that the AutoAtt branch can act
after block 9, and swaps the memory-efficient Swish for an exportable one: it reads the network's underscore
attributes and calls each block with `drop_connect_rate`. The package's last release (0.7.1, 2021) has them, and
pyproject.toml bounds it to that release line; should another version lack one, `check` refuses to build the
network with a message naming the part and the version checked, instead of failing mid-inference or, worse,
computing something else.
"""

from __future__ import annotations

import inspect
from typing import Any

CHECKED_VERSION = "0.7.1"  # the efficientnet_pytorch release every read below was checked against
MODULES = ("_conv_stem", "_bn0", "_blocks", "_conv_head", "_bn1", "_avg_pooling", "_dropout", "_swish", "_fc")
METHODS = ("set_swish",)
BLOCK_KEYWORD = "drop_connect_rate"  # each MBConv block's forward takes it; the network scales it per block


class EfficientNetIncompatible(ImportError):
    """This efficientnet_pytorch lacks a part the ICPR networks read. An ImportError: the package as installed
    cannot serve these models, whatever the weights."""


def _version() -> str:
    try:
        import efficientnet_pytorch

        return str(getattr(efficientnet_pytorch, "__version__", "?"))
    except ImportError:
        return "not installed"


def _incompatible(what: str) -> EfficientNetIncompatible:
    return EfficientNetIncompatible(
        f"efficientnet_pytorch {_version()} has no {what} (the ICPR networks were checked against "
        f"{CHECKED_VERSION}); install the efficientnet-pytorch version pyproject.toml names")


def check(net: Any) -> None:
    """Raise EfficientNetIncompatible unless `net` (a fresh `EfficientNet.from_name(...)`) has every part read."""
    for name in MODULES:
        if not hasattr(net, name):
            raise _incompatible(f"EfficientNet.{name}")
    for name in METHODS:
        if not callable(getattr(net, name, None)):
            raise _incompatible(f"EfficientNet.{name}()")
    if not hasattr(getattr(net, "_global_params", None), "drop_connect_rate"):
        raise _incompatible("EfficientNet._global_params.drop_connect_rate")
    blocks = list(net._blocks)
    if not blocks or BLOCK_KEYWORD not in inspect.signature(blocks[0].forward).parameters:
        raise _incompatible(f"MBConvBlock.forward({BLOCK_KEYWORD}=...)")
