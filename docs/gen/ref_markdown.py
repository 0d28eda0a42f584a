"""Markdown pieces the reference generators share: table cells that survive any text, tables, type names.

Why a module of its own: the three references (configuration, command line, messages) render the same kinds of
cells, and a description holding `|`, `<prefix>` or a newline must not break a table or vanish as raw HTML.
"""

from __future__ import annotations

import html
import re
import types
import typing
from collections.abc import Callable, Iterable
from enum import Enum
from pathlib import Path

CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)


class UndocumentedError(ValueError):
    """The code lacks something the reference needs (a description); the build fails with this message."""


def cell(text: str | None) -> str:
    """One table cell: whitespace folded, `|` escaped, `<`/`>`/`&` escaped outside code spans, code kept."""
    if not text:
        return ""
    text = " ".join(str(text).split())
    out, pos = [], 0
    for m in CODE_SPAN.finditer(text):
        out.append(html.escape(text[pos:m.start()], quote=False))
        out.append(m.group(0))
        pos = m.end()
    out.append(html.escape(text[pos:], quote=False))
    return "".join(out).replace("|", "\\|")


def code(text: str) -> str:
    """`text` as a code span, whatever backticks it holds."""
    ticks = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def table(headers: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    """A Markdown table; the cells are expected to be made by `cell` or `code` already."""
    headers = list(headers)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def docstring(obj: object) -> str:
    """An object's own docstring, dedented; '' when it has none (an inherited one does not count)."""
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    if not doc:
        return ""
    import inspect

    return inspect.cleandoc(doc)


def type_name(tp: object, link: Callable[[type], str | None] = lambda t: None) -> str:
    """A readable type: `list[str]`, `float | null`, `"torch" | "onnx"`; `link(cls)` may turn a record into a
    Markdown link (returned as is, outside any code span)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None) or tp is None:
        return "null"
    if origin is typing.Literal:
        return " \\| ".join(code(f'"{a}"' if isinstance(a, str) else str(a)) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(type_name(a, link) for a in args)
    if origin is not None:
        plain = _plain(tp)
        if plain:
            return code(plain)
        if origin in (list, tuple, set, frozenset) and len([a for a in args if a is not Ellipsis]) == 1:
            inner = type_name(args[0], link)
            return f"list of ({inner})" if "\\|" in inner else f"list of {inner}"
        if origin is dict:
            return f"map of {type_name(args[0], link)} to {type_name(args[1], link)}"
        return code(str(tp).replace("typing.", ""))
    if isinstance(tp, type):
        linked = link(tp)
        if linked:
            return linked
        if issubclass(tp, Enum):
            return " \\| ".join(code(f'"{m.value}"') for m in tp)
        if issubclass(tp, Path):
            return code("path")
        return code(tp.__name__)
    return code(str(tp).replace("typing.", ""))


def _plain(tp: object) -> str | None:
    """`list[str]`, `dict[str, float]`, `tuple[float, float, float]`: the Python spelling, when no part of the
    type is a record, a Literal or an Enum (those get their own rendering)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Ellipsis:
        return "..."
    if tp is typing.Any:
        return "Any"
    if origin is None:
        if isinstance(tp, type) and not issubclass(tp, Enum) and tp.__module__ in ("builtins", "pathlib"):
            return "path" if issubclass(tp, Path) else tp.__name__
        return None
    if origin in (typing.Union, types.UnionType, typing.Literal):
        return None
    inner = [_plain(a) for a in args]
    if any(i is None for i in inner):
        return None
    return f"{getattr(origin, '__name__', origin)}[{', '.join(inner)}]"
