"""MkDocs hook: writes the three reference pages from the code itself as the site is built.

- `reference/configuration.md` from the pydantic records under `ServeConfig` (`ref_config`);
- `reference/cli.md` from the argparse parsers of `stream/cli/` (`ref_cli`);
- `reference/messages.md` from the dataclasses of `stream/messages.py` (`ref_messages`).

The pages are virtual files: nothing is written into `docs/`, so they cannot be edited by hand or go stale in
the repository. The checkout this file lives in goes first on `sys.path`, so the docs describe the code they are
built beside, never another installed copy; a field without a description stops the build.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

import ref_cli
import ref_config
import ref_messages
from ref_markdown import UndocumentedError

REPO = Path(__file__).resolve().parents[2]  # docs/gen/hook.py -> the checkout


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return config


def _check_origin(module: object, repo: Path) -> None:
    where = Path(module.__file__).resolve()
    if not where.is_relative_to(repo):
        raise PluginError(f"docs: {module.__name__} was imported from {where}, not from {repo}; the reference "
                          "would describe another copy of the code")


def pages(repo: Path) -> dict[str, str]:
    """The generated pages' Markdown, keyed by their place in the site."""
    import stream.messages
    from stream.cli import build_parser
    from stream.config.serve import ServeConfig

    for module in (stream.messages, sys.modules["stream.cli"], sys.modules["stream.config.serve"]):
        _check_origin(module, repo)
    return {
        "reference/configuration.md": ref_config.render(ServeConfig, repo),
        "reference/cli.md": ref_cli.render(build_parser()),
        "reference/messages.md": ref_messages.render(stream.messages),
    }


def on_files(files: Files, config: MkDocsConfig) -> Files:
    try:
        generated = pages(REPO)
    except UndocumentedError as exc:
        raise PluginError(f"docs reference: {exc}") from None
    for uri, text in generated.items():
        if files.get_file_from_path(uri) is not None:
            raise PluginError(f"docs/{uri} exists, but the build generates it: delete the file")
        files.append(File.generated(config, uri, content=text))
    return files
