"""The message schema, generated from the frozen dataclasses of `stream/messages.py`.

Each record gets its docstring and a table of its fields with their types. A field's description is its comment
in the source: the comment at the end of its line, after the comment lines right above it. A field with neither
raises `UndocumentedError`, which fails the docs build, so a new field cannot go out undocumented.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import tokenize
import typing
from types import ModuleType

from ref_markdown import UndocumentedError, cell, code, docstring, table, type_name

INTRO = """\
# Message schema

What `serve` sends on the websocket (`/ws`), on Redis (pub/sub and the alert Stream), to webhooks and MQTT, and
what `alerts.jsonl` holds: one JSON object per message. This page is generated from the records in
`stream/messages.py` each time the docs are built. See [alerts and channels](../alerts.md) for examples and for
which channel carries what.
"""


def field_comments(cls: type) -> dict[str, str]:
    """Field name -> its source comment (the lines right above it, then the one at the end of its line)."""
    lines, _ = inspect.getsourcelines(cls)
    source = "".join(lines)
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    code_lines = {i + 1: line.strip() for i, line in enumerate(source.splitlines())}
    cls_node = ast.parse(inspect.cleandoc(source) if lines[0].startswith((" ", "\t")) else source).body[0]
    found = {}
    for node in cls_node.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above, row = [], node.lineno - 1
        while row in comments and code_lines.get(row, "").startswith("#"):
            above.insert(0, comments[row])
            row -= 1
        trailing = [comments[r] for r in range(node.lineno, node.end_lineno + 1)
                    if r in comments and not code_lines[r].startswith("#")]
        text = " ".join(part for part in above + trailing if not part.startswith("noqa"))
        if text:
            found[node.target.id] = text
    return found


def records(module: ModuleType) -> list[type]:
    """The module's own dataclasses, in source order."""
    own = [obj for obj in vars(module).values()
           if dataclasses.is_dataclass(obj) and isinstance(obj, type) and obj.__module__ == module.__name__]
    return sorted(own, key=lambda cls: inspect.getsourcelines(cls)[1])


def _anchor(cls: type) -> str:
    return "msg-" + cls.__name__.lower()


def render_record(cls: type, known: set[type]) -> tuple[str, list[str]]:
    """The record's section, and its fields that lack a comment."""
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    missing, rows = [], []

    def link(tp: type) -> str | None:
        return f"[{code(tp.__name__)}](#{_anchor(tp)})" if tp in known else None

    for f in dataclasses.fields(cls):
        if f.name not in comments:
            missing.append(f"{cls.__name__}.{f.name}")
        default = ""
        if f.default is not dataclasses.MISSING:
            default = code("null" if f.default is None else repr(f.default).lower() if isinstance(f.default, bool)
                           else repr(f.default))
        elif f.default_factory is not dataclasses.MISSING:
            default = "*made when created*"
        rows.append([code(f.name), type_name(hints[f.name], link), default, cell(comments.get(f.name))])
    parts = [f"## `{cls.__name__}` {{#{_anchor(cls)}}}", ""]
    doc = docstring(cls)
    if doc:
        parts += [doc, ""]
    parts += [table(["field", "type", "default", "description"], rows), ""]
    return "\n".join(parts), missing


def render(module: ModuleType) -> str:
    """The whole page; raises UndocumentedError naming every field without a comment."""
    found = records(module)
    facts = [f"- Schema version: every message carries `\"v\": {module.VERSION}`.",
             "- Lossy (a newer message supersedes an older one, so dropping beats delaying): "
             + ", ".join(code(t) for t in sorted(module.LOSSY_TYPES)) + ".",
             "- Durable (every subscriber gets every message once, in order): "
             + ", ".join(code(t) for t in sorted(module.DURABLE_TYPES)) + ".", ""]
    parts, missing = [INTRO, *facts], []
    for cls in found:
        text, lacking = render_record(cls, set(found))
        parts.append(text)
        missing += lacking
    if missing:
        raise UndocumentedError("message fields without a comment in stream/messages.py: " + ", ".join(missing))
    return "\n".join(parts)
