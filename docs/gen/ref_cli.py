"""The command-line reference, generated from the argparse parsers of `stream/cli/` (`build_parser()`).

Every subcommand, at every depth (`dfstream alerts verify`, `dfstream cluster worker`), gets its usage line and a
table of its arguments: flags, value, default, and the help text with argparse's own `%(default)s` filled in.
Usage lines are formatted at a fixed width so the page does not depend on the terminal of whoever builds it.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from ref_markdown import cell, code, table

USAGE_WIDTH = 76  # characters per usage line: what a code block of the Material theme shows unscrolled

INTRO = """\
# Command-line reference

`dfstream COMMAND [options]`, or `python -m stream COMMAND`, or `./dfstream COMMAND` from a clone (which sets up
`.venv` on its first run). This page is generated from the argparse parsers in `stream/cli/` each time the docs
are built, so it lists every command and option the code accepts; `dfstream COMMAND --help` prints the same.

Exit codes: `0` done; `1` some input failed (the others were processed: `scan`, `kb build`, `alerts verify`);
`2` a usage error (an unknown model, weights that are missing or fail their hash, a bad config), said in one line.
"""


def _fixed_width(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=USAGE_WIDTH)


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("dfstream",),
             summary: str | None = None) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str | None]]:
    """(words, parser, one-line help) for `parser` and every subcommand under it, depth first, in --help order."""
    yield path, parser, summary
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield from commands(sub, path + (name,), helps.get(name))


def _flags(action: argparse.Action) -> str:
    if not action.option_strings:
        return code(action.metavar or action.dest.upper())
    value = ""
    if action.nargs != 0:
        metavar = action.metavar or (("{" + ",".join(map(str, action.choices)) + "}") if action.choices
                                     else action.dest.upper())
        value = " " + (f"{metavar} [{metavar} ...]" if action.nargs in ("+", "*") else
                       f"[{metavar}]" if action.nargs == "?" else metavar)
    return ", ".join(code(flag + value) for flag in action.option_strings)


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    text = parser._get_formatter()._expand_help(action) if action.help else ""
    notes = []
    if action.choices and action.metavar and not isinstance(action, argparse._SubParsersAction):
        notes.append("one of " + ", ".join(code(str(c)) for c in action.choices))
    if action.required and action.option_strings:
        notes.append("required")
    if isinstance(action, argparse._AppendAction) and "repeatable" not in text:
        notes.append("repeatable")
    return "; ".join(filter(None, [cell(text), *notes]))


def _default(action: argparse.Action) -> str:
    if action.nargs == 0 or action.default in (None, argparse.SUPPRESS, [], False) or not action.option_strings:
        return ""
    if isinstance(action.default, list | tuple):
        return code(" ".join(map(str, action.default)))
    return code(str(action.default))


def render_command(words: tuple[str, ...], parser: argparse.ArgumentParser, summary: str | None) -> str:
    _fixed_width(parser)
    depth = min(max(len(words), 2), 4)  # the page's title is the only h1
    name = " ".join(words)
    anchor = "cli-" + "-".join(words[1:]) if len(words) > 1 else "cli-dfstream"
    parts = [f"{'#' * depth} `{name}` {{#{anchor}}}", ""]
    if summary:
        parts += [cell(summary[0].upper() + summary[1:]) + ("" if summary.endswith(".") else "."), ""]
    usage = parser.format_usage().removeprefix("usage: ").rstrip()
    parts += ["```text", usage, "```", ""]
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            subs = ", ".join(f"[{code(n)}](#cli-{'-'.join(words[1:] + (n,))})" for n in action.choices)
            rows.append([code(action.metavar or "COMMAND"), "", cell(action.help) + ("; " if action.help else "")
                         + "one of " + subs])
            continue
        rows.append([_flags(action), _default(action), _help(parser, action)])
    if rows:
        parts += [table(["argument", "default", "description"], rows), ""]
    return "\n".join(parts)


def render(parser: argparse.ArgumentParser) -> str:
    """The whole page: the top-level command, then every subcommand."""
    return "\n".join([INTRO] + [render_command(w, p, s) for w, p, s in commands(parser)])
