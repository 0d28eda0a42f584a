"""The configuration reference, generated from the pydantic records under `ServeConfig`.

Every key is listed by its full path (`scheduler.detection.detect_every`, `sources[].url`), with its type, its
default and its `Field(description=...)`. A record reached by two paths gets a section for each, because its
defaults can differ there (a webhook's `backoff` is not a camera's). A field without a description raises
`UndocumentedError`, which fails the docs build: the reference cannot silently fall behind the code.
"""

from __future__ import annotations

import inspect
import json
import re
import typing
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python

from ref_markdown import UndocumentedError, cell, code, docstring, table, type_name

INTRO = """\
# Configuration reference

`dfstream serve --config FILE` reads a YAML file of these keys. Unknown keys are refused with the key's name,
`${VAR}` is filled from the environment (a variable that is not set is an error, never an empty string), and the
command line's options override the file's values. See [serve](../serve.md) for a worked example.

This page is generated from the pydantic records in `stream/config/` each time the docs are built, so it lists
every key the code accepts. A key is written by its full path: `scheduler.detection.detect_every` is
`detect_every` inside `detection` inside `scheduler`, and `sources[].url` is the `url` of each item of the list
`sources`.
"""


@dataclass(frozen=True)
class Section:
    """One record at one place in the tree."""

    path: str  # "" for the top level, else e.g. "sources[]" or "scheduler.detection"
    model: type[BaseModel]
    default: BaseModel | None  # the parent's default instance of this record, when it has one

    @property
    def anchor(self) -> str:
        return "config-" + (re.sub(r"[^a-z0-9]+", "-", self.path.lower()).strip("-") or "top")

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name


def _records_in(tp: object) -> list[tuple[str, type[BaseModel]]]:
    """The records a field's type holds, each with the path suffix that reaches it: '' or '[]'."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [("", tp)]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (list, tuple, set, frozenset):
        return [("[]" + suffix, m) for a in args if a is not Ellipsis for suffix, m in _records_in(a)]
    if origin is dict:
        return [(".<name>" + suffix, m) for suffix, m in _records_in(args[1])]
    return [pair for a in args for pair in _records_in(a)]


def _field_default(section: Section, name: str, info: FieldInfo) -> object:
    if section.default is not None:
        return getattr(section.default, name)
    if info.default is not PydanticUndefined:
        return info.default
    if info.default_factory is not None:
        made = info.get_default(call_default_factory=True, validated_data={})
        return made if isinstance(made, BaseModel) else _Computed()
    return PydanticUndefined


class _Computed:
    """A default made at start-up from the environment (shown as such, never as this machine's value)."""


def sections(root: type[BaseModel]) -> list[Section]:
    """Every record under `root`, depth first, in field order."""
    out: list[Section] = []

    def visit(section: Section) -> None:
        out.append(section)
        for name, info in section.model.model_fields.items():
            default = _field_default(section, name, info)
            for suffix, model in _records_in(info.annotation):
                inner = default if suffix == "" and isinstance(default, model) else None
                visit(Section(section.key(name) + suffix, model, inner))

    visit(Section("", root, None))
    return out


def _constraints(info: FieldInfo) -> list[str]:
    words = []
    for meta in info.metadata:
        for attr, sign in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            if getattr(meta, attr, None) is not None:
                words.append(f"{sign} {getattr(meta, attr)}")
        if getattr(meta, "min_length", None) is not None:
            words.append(f"length ≥ {meta.min_length}")
        if getattr(meta, "max_length", None) is not None:
            words.append(f"length ≤ {meta.max_length}")
        if getattr(meta, "pattern", None):
            words.append(f"matches {code(meta.pattern)}")
    return words


def _default_text(value: object, link: str | None) -> str:
    if value is PydanticUndefined:
        return "*required*"
    if isinstance(value, _Computed):
        return "*set at start*"
    if isinstance(value, BaseModel):
        return f"[see below](#{link})" if link else "*a record*"
    return code(json.dumps(to_jsonable_python(value), ensure_ascii=False))


def render_section(section: Section, by_path: dict[str, Section], repo: Path) -> tuple[str, list[str]]:
    """The section's Markdown, and the keys that lack a description."""
    missing = []
    rows = []
    for name, info in section.model.model_fields.items():
        key = section.key(name)
        if not (info.description or "").strip():
            missing.append(f"{key} ({section.model.__module__}.{section.model.__name__}.{name})")
        children = {m: by_path[key + suffix] for suffix, m in _records_in(info.annotation) if key + suffix in by_path}

        def link(cls: type, children=children) -> str | None:
            child = children.get(cls)
            return f"[{code(cls.__name__)}](#{child.anchor})" if child else None

        shown = type_name(info.annotation, link)
        limits = _constraints(info)
        if limits:
            shown += " (" + ", ".join(limits) + ")"
        direct = next((c for m, c in children.items() if c.path == key), None)
        rows.append([code(key), shown, _default_text(_field_default(section, name, info),
                                                     direct.anchor if direct else None), cell(info.description)])
    title = f"`{section.path}`" if section.path else "Top level"
    source = Path(inspect.getsourcefile(section.model)).resolve()
    where = source.relative_to(repo) if source.is_relative_to(repo) else source.name
    parts = [f"## {title}: `{section.model.__name__}` {{#{section.anchor}}}", ""]
    doc = docstring(section.model)
    if doc:
        parts += [doc, ""]
    parts += [f"Defined in `{where}`.", "", table(["key", "type", "default", "description"], rows), ""]
    return "\n".join(parts), missing


def render(root: type[BaseModel], repo: Path) -> str:
    """The whole page; raises UndocumentedError naming every field without a description."""
    found = sections(root)
    by_path = {s.path: s for s in found}
    pages, missing = [INTRO], []
    for section in found:
        text, lacking = render_section(section, by_path, repo)
        pages.append(text)
        missing += lacking
    if missing:
        raise UndocumentedError("config fields without Field(description=...): " + ", ".join(missing))
    return "\n".join(pages)
