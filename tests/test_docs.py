"""The docs site is part of the build: `mkdocs build --strict` must pass, and the reference it generates must hold
every config key, every command and flag, and every message field the code has.

The keys, commands and fields are listed here from the code itself (pydantic's model_fields, argparse's parsers,
dataclasses.fields), independently of the generator in docs/gen/, and looked up in the built HTML. The guards are
tried for real: a broken link, a missing page and a config field without a description each fail a build.
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from support.parts import import_or_require

REPO = Path(__file__).resolve().parents[1]
GEN = REPO / "docs" / "gen"
BUILD_TIMEOUT_S = 300
README_MAX_LINES = 200
DATED = re.compile(r"\b20\d\d-(0[1-9]|1[0-2])\b")  # 2026-12 or 2026-12-02: a measurement's date


def mkdocs_env() -> dict[str, str]:
    # Material prints a banner about MkDocs 2 on every build; it is not a warning of this site's
    return {**os.environ, "NO_MKDOCS_2_WARNING": "1"}


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    import_or_require("mkdocs")
    import_or_require("material")
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          cwd=REPO, env=mkdocs_env(), capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = build(REPO / "mkdocs.yml", out)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stderr, done.stderr
    return out


def sections(page: Path) -> dict[str, str]:
    """Heading text (tags and the permalink sign stripped) -> the HTML up to the next heading of level 2 to 4."""
    text = page.read_text()
    parts = re.split(r"(<h[234][^>]*>.*?</h[234]>)", text, flags=re.S)
    out = {}
    for i in range(1, len(parts) - 1, 2):
        title = html.unescape(re.sub(r"<[^>]+>", "", parts[i])).replace("¶", "").strip()
        out[title] = parts[i + 1]
    return out


def in_first_column(fragment: str, text: str) -> bool:
    """`text` heads a table row (`<td><code>text</code></td>`), not just a mention in prose."""
    return f"<tr>\n<td><code>{html.escape(text, quote=False)}</code></td>" in fragment


# -- the real build --------------------------------------------------------------------------------------------

def test_site_builds_strict(site):
    for page in ("index.html", "getting-started/index.html", "serve/index.html", "performance/index.html",
                 "reference/configuration/index.html", "reference/cli/index.html",
                 "reference/messages/index.html", "baselines/index.html", "voices/index.html"):
        assert (site / page).is_file(), page
    assert not (site / "gen").exists(), "the generator's sources must not be published"
    for image in ("browser.png", "evidence-player.png", "explain.png", "eval/meso4-df-roc.png"):
        assert (site / image).is_file(), image


def _records_in(tp: object) -> list[tuple[str, type[BaseModel]]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [("", tp)]
    if typing.get_origin(tp) in (list, tuple, set, frozenset):
        return [("[]" + s, m) for a in typing.get_args(tp) for s, m in _records_in(a)]
    return [pair for a in typing.get_args(tp) for pair in _records_in(a)]


def config_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every key under `model`, by its full path: `scheduler.detection.detect_every`, `sources[].url`."""
    keys = []
    for name, info in model.model_fields.items():
        keys.append(prefix + name)
        for suffix, inner in _records_in(info.annotation):
            keys += config_keys(inner, f"{prefix}{name}{suffix}.")
    return keys


def test_every_config_key_is_documented(site):
    from stream.config.serve import ServeConfig

    keys = config_keys(ServeConfig)
    assert {"host", "sources[].url", "sources[].backoff.max_s", "scheduler.detection.detect_every",
            "alerts.webhooks[].backoff.jitter", "mqtt.topic_prefix", "source_policy.allowed_paths"} <= set(keys)
    page = (site / "reference/configuration/index.html").read_text()
    missing = [k for k in keys if not in_first_column(page, k)]
    assert not missing, f"config keys missing from the reference: {missing}"


def test_config_defaults_follow_the_path(site):
    """A record reached by two paths shows each path's own defaults: a webhook retries up to 5 min apart, a
    camera reconnects within 2 s (stream/config/channels.py WEBHOOK_BACKOFF vs Backoff())."""
    from stream.config.channels import WEBHOOK_BACKOFF
    from stream.config.sources import Backoff

    assert WEBHOOK_BACKOFF.max_s != Backoff().max_s
    page = (site / "reference/configuration/index.html").read_text()
    for key, value in (("alerts.webhooks[].backoff.max_s", WEBHOOK_BACKOFF.max_s),
                       ("sources[].backoff.max_s", Backoff().max_s)):
        row = re.search(rf"<tr>\s*<td><code>{re.escape(html.escape(key))}</code></td>(.*?)</tr>", page, re.S)
        assert row, key
        assert f"<code>{value}</code>" in row.group(1), (key, row.group(1))


def commands(parser: argparse.ArgumentParser, words: tuple[str, ...] = ("dfstream",)):
    yield words, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, words + (name,))


def test_every_command_and_flag_is_documented(site):
    from stream.cli import COMMANDS, build_parser

    found = list(commands(build_parser()))
    assert {w[1] for w, _ in found if len(w) > 1} == set(COMMANDS)
    assert ("dfstream", "alerts", "verify") in [w for w, _ in found]
    by_title = sections(site / "reference/cli/index.html")
    for words, parser in found:
        name = " ".join(words)
        assert name in by_title, f"no section for `{name}`"
        flags = [s for a in parser._actions for s in a.option_strings if s not in ("-h", "--help")]
        # in the arguments table, not only in the usage line: `<td><code>--fps FPS</code>, ...`
        rows = re.findall(r"<tr>\s*<td>(.*?)</td>", by_title[name], re.S)
        listed = {m for row in rows for m in re.findall(r"<code>(-[^\s<]+)", row)}
        missing = [f for f in flags if f not in listed]
        assert not missing, f"`{name}`: flags missing from its table: {missing}"


def test_every_message_field_is_documented(site):
    import stream.messages as messages

    records = [obj for obj in vars(messages).values() if dataclasses.is_dataclass(obj) and isinstance(obj, type)]
    assert {r.__name__ for r in records} >= {"Overlay", "FaceOverlay", "Status", "SourceStatus", "SchedulerStatus",
                                             "Alert"}
    by_title = sections(site / "reference/messages/index.html")
    for record in records:
        assert record.__name__ in by_title, record.__name__
        section = by_title[record.__name__]
        missing = [f.name for f in dataclasses.fields(record) if not in_first_column(section, f.name)]
        assert not missing, f"{record.__name__}: fields missing: {missing}"
        for f in dataclasses.fields(record):  # and a description: text in its row's last cell
            row = re.search(rf"<tr>\s*<td><code>{f.name}</code></td>(.*?)</tr>", section, re.S)
            cells = re.findall(r"<td>(.*?)</td>", row.group(1), re.S) if row else []
            assert cells and re.sub(r"<[^>]+>", "", cells[-1]).strip(), f"{record.__name__}.{f.name}: no description"


# -- the guards, each broken once on purpose -------------------------------------------------------------------

def warned(output: str, text: str) -> bool:
    """A WARNING line (what --strict counts) names `text`; INFO lines do not count."""
    return any(line.startswith("WARNING") and text in line for line in output.splitlines())


def docs_copy(tmp_path: Path) -> Path:
    """A copy of docs/ built with the real mkdocs.yml and the real generator (a child config that inherits)."""
    docs = tmp_path / "docs"
    shutil.copytree(REPO / "docs", docs, ignore=shutil.ignore_patterns("gen", "__pycache__"))
    config = tmp_path / "mkdocs.yml"
    config.write_text(f"INHERIT: {REPO / 'mkdocs.yml'}\ndocs_dir: {docs}\nhooks:\n  - {GEN / 'hook.py'}\n")
    return config


def test_copy_builds_clean(tmp_path):
    """The harness of the two tests below: the untouched copy builds, so their failures are the breaks'."""
    done = build(docs_copy(tmp_path), tmp_path / "site")
    assert done.returncode == 0, done.stdout + done.stderr


def test_broken_link_fails_the_build(tmp_path):
    config = docs_copy(tmp_path)
    page = tmp_path / "docs" / "scan.md"
    page.write_text(page.read_text() + "\nSee [the old manual](no-such-page.md) and [there](serve.md#no-such-part).\n")
    done = build(config, tmp_path / "site")
    assert done.returncode != 0
    assert warned(done.stderr, "no-such-page.md") and warned(done.stderr, "no-such-part"), done.stderr


def test_missing_page_fails_the_build(tmp_path):
    config = docs_copy(tmp_path)
    (tmp_path / "docs" / "voices.md").unlink()
    done = build(config, tmp_path / "site")
    assert done.returncode != 0
    assert warned(done.stderr, "voices.md"), done.stderr


def test_config_field_without_description_fails_the_build(tmp_path):
    """The real build, with one real field's description taken away in the building process."""
    import_or_require("mkdocs")
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from stream.config.sources import SourceConfig
        SourceConfig.model_fields["url"].description = None
        from mkdocs.__main__ import cli
        sys.argv = ["mkdocs", "build", "--strict", "-f", {str(REPO / "mkdocs.yml")!r}, "-d", {str(tmp_path)!r}]
        cli()
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=mkdocs_env(), capture_output=True,
                          text=True, timeout=BUILD_TIMEOUT_S)
    assert done.returncode != 0
    assert "sources[].url" in done.stderr and "description" in done.stderr, done.stderr
    assert not (tmp_path / "reference").exists()


def test_message_field_without_comment_is_refused(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(GEN))
    import ref_markdown
    import ref_messages

    source = tmp_path / "fake_messages.py"
    source.write_text(textwrap.dedent('''
        from __future__ import annotations
        from dataclasses import dataclass

        VERSION = 1
        LOSSY_TYPES = frozenset({"overlay"})
        DURABLE_TYPES = frozenset({"alert"})


        @dataclass(frozen=True)
        class Ping:
            """A test record."""

            said: str  # what was said
            # when it was said,
            # in seconds
            at: float
            bare: int
    '''))
    spec = importlib.util.spec_from_file_location("fake_messages", source)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "fake_messages", module)
    spec.loader.exec_module(module)

    assert ref_messages.field_comments(module.Ping) == {"said": "what was said", "at": "when it was said, in seconds"}
    _, missing = ref_messages.render_record(module.Ping, set())
    assert missing == ["Ping.bare"]
    with pytest.raises(ref_markdown.UndocumentedError, match="Ping.bare"):
        ref_messages.render(module)


# -- the README -------------------------------------------------------------------------------------------------

def test_readme_is_short_and_undated():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    dated = [line for line in text.splitlines() if DATED.search(line)]
    assert not dated, f"dated measurements belong in docs/performance.md: {dated}"
    assert "./dfstream serve --source ../shared/data/ffpp-c23/fake/Deepfakes_519_515.mp4 --loop --weights-dir " \
           "../shared/weights/mesonet" in text
    assert "scripts/test.sh" in text and "mkdocs serve" in text
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (REPO / link).exists(), f"README links a missing file: {link}"
