"""The two tables every architecture file fills when it is imported (timm's `register_model` pattern):
models by name (`register_models`) and builders by architecture (`register_architecture`).

An architecture file declares its entries beside its network, so adding a model means editing that file only;
`engines.registry` imports every module of `engines.architectures` before it answers. A builder is
`build(weights_path, entry, device) -> Engine`, with `extra_paths={role: path}` when the entry has extra weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engines.entry import ModelEntry

if TYPE_CHECKING:
    from engines.base import Engine
    from engines.voice_base import VoiceModelEntry

Builder = Callable[..., "Engine"]

MODELS: dict[str, ModelEntry] = {}  # name -> entry, in the order the files declared them
ARCHITECTURES: dict[str, Builder] = {}  # architecture name -> builder
# Voice models by name: a table of their own, so a face path can never be handed a voice engine (their inputs
# differ); their entries name their builder (`module:function`), built by `engines.voices`.
VOICE_MODELS: dict[str, "VoiceModelEntry"] = {}


class DuplicateRegistration(ValueError):
    """Two declarations claim one model or architecture name: a bug in an architecture file, named at import."""


def register_models(*entries: ModelEntry) -> tuple[ModelEntry, ...]:
    """Add `entries` to the registry; returns them. Declaring the same entry again (a module imported twice) is a
    no-op; another entry under a taken name is refused."""
    for entry in entries:
        known = MODELS.get(entry.name)
        if known is not None and known != entry:
            raise DuplicateRegistration(f"model {entry.name!r} is declared twice (architectures "
                                        f"{known.architecture!r} and {entry.architecture!r})")
    for entry in entries:
        MODELS[entry.name] = entry
    return entries


def register_voice_models(*entries: "VoiceModelEntry") -> tuple["VoiceModelEntry", ...]:
    """Add voice `entries` to the registry, with the same rules as `register_models` (a name is taken once, by
    either kind)."""
    for entry in entries:
        known = VOICE_MODELS.get(entry.name)
        if (known is not None and known != entry) or entry.name in MODELS:
            raise DuplicateRegistration(f"voice model {entry.name!r} is declared twice")
    for entry in entries:
        VOICE_MODELS[entry.name] = entry
    return entries


def register_architecture(name: str) -> Callable[[Builder], Builder]:
    """Decorator: `fn` builds engines of architecture `name` from an entry and its weight files."""

    def register(fn: Builder) -> Builder:
        known = ARCHITECTURES.get(name)
        if known is not None and _where(known) != _where(fn):
            raise DuplicateRegistration(f"architecture {name!r} is registered by {_where(known)} and {_where(fn)}")
        ARCHITECTURES[name] = fn
        return fn

    return register


def _where(fn: Any) -> str:
    return f"{fn.__module__}.{getattr(fn, '__qualname__', fn)}"
