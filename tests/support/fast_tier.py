"""The fast tier, a pytest plugin that tests/conftest.py loads: `scripts/test.sh --fast` (`pytest --fast`) runs the
tests that need no browser, Ray, TensorFlow or long media, so a change gets an answer in minutes; CI (`.ci/run`)
still runs everything.

A test leaves the fast tier by a marker: `slow` (whole videos, reference models, long waits), `browser`, `ray`,
`tensorflow`. `browser` and `ray` are added from the `needs(...)` parts (see `PART_MARKERS`), `slow` from the
fixtures in `SLOW_FIXTURES`; the others are explicit marks. Two guards keep the tier honest, because a forgotten mark would silently make it slow:

- at collection, `--fast` refuses to run (a usage error naming the tests) when a selected test's own code, its
  fixtures from its module or the module's helpers it calls import Playwright, Ray or TensorFlow, or use the
  support modules built on them (`heavy_uses`);
- at run time, a fast test after which one of those packages is newly in `sys.modules` errors, naming it: this
  also catches imports made deeper, inside the product's code.
"""

from __future__ import annotations

import ast
import functools
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

import pytest

SLOW_MARKERS = ("slow", "browser", "ray", "tensorflow")
MARKER_HELP = {  # `slow` is declared in pyproject.toml
    "browser": "drives Chromium with Playwright: not in the fast tier",
    "ray": "starts or imports Ray: not in the fast tier",
    "tensorflow": "builds a TensorFlow/Keras reference: not in the fast tier",
}
# needs(part, ...) part name -> the marker it implies
PART_MARKERS = {"Chromium (with Playwright)": "browser", "ray": "ray"}
# Fixtures that make a test `slow` wherever it uses them, directly or through another fixture. ffpp_face_crops is
# real MTCNN over the shared videos, asked for by the engines' parity tests, which then build reference networks
# and run them on those crops (the EfficientNet-B4 ones took minutes each: `pytest --fast --durations=40`,
# 2026-12-07). The trade-off: a cheap refusal test that asks for real crops leaves the fast tier too.
SLOW_FIXTURES = ("ffpp_face_crops",)
# Top-level packages a fast test may not load, and the support modules that load them.
HEAVY_PACKAGES = ("playwright", "ray", "tensorflow", "keras")
# Support modules whose every use means a heavy part (they start Ray processes rather than import Ray).
HEAVY_SUPPORT = ("support.ray_cluster",)
_HEAVY_TEXT = re.compile(
    r"^\s*(?:import|from)\s+(?P<imp>(?:{pkgs})(?:\.\w+)*)\b"
    r"|(?:importorskip|import_or_require|import_module)\(\s*[\"'](?P<dyn>(?:{pkgs})(?:\.\w+)*)[\"']".format(
        pkgs="|".join(HEAVY_PACKAGES)),
    re.M,
)


def pytest_addoption(parser) -> None:
    parser.addoption("--fast", action="store_true", default=False,
                     help="the fast tier: deselect tests marked " + ", ".join(SLOW_MARKERS) + " (tests/support/fast_tier.py)")


def pytest_configure(config) -> None:
    for name, text in MARKER_HELP.items():
        config.addinivalue_line("markers", f"{name}: {text}")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items) -> None:
    mark_from_parts(items)
    mark_from_fixtures(items)
    select(config, items)


def mark_from_parts(items) -> None:
    """`needs("Chromium (with Playwright)", ...)` implies `browser`, `needs("ray", ...)` implies `ray`."""
    for item in items:
        for mark in item.iter_markers("needs"):
            marker = PART_MARKERS.get(mark.kwargs["part"])
            if marker and not item.get_closest_marker(marker):
                item.add_marker(marker)


def mark_from_fixtures(items) -> None:
    """A test that uses one of `SLOW_FIXTURES` (its fixture closure counts) is `slow`."""
    for item in items:
        if not item.get_closest_marker("slow") and set(SLOW_FIXTURES) & set(getattr(item, "fixturenames", ())):
            item.add_marker("slow")


def is_fast(item) -> bool:
    return not any(item.get_closest_marker(name) for name in SLOW_MARKERS)


def select(config, items) -> None:
    """With `--fast`: deselect the marked tests, and refuse the run if a selected one is heavy all the same."""
    if not config.getoption("fast"):
        return
    kept, dropped = [], []
    for item in items:
        (kept if is_fast(item) else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
    heavy = {}
    for item in kept:
        uses = heavy_uses(item)
        if uses:
            heavy[item.nodeid] = uses
    if heavy:
        lines = "\n".join(f"  {nodeid}: {', '.join(uses)}" for nodeid, uses in sorted(heavy.items()))
        raise pytest.UsageError(
            "--fast selected tests that use Playwright, Ray or TensorFlow; mark them "
            f"({', '.join(SLOW_MARKERS)}):\n{lines}")


def heavy_uses(item) -> list[str]:
    """What heavy packages a collected test uses, read from its code (see `heavy_uses_in`)."""
    module = getattr(item, "module", None)
    if module is None:
        return []
    function = getattr(item, "originalname", None) or item.name
    cls = getattr(item, "cls", None)
    names = [f"{cls.__name__}.{function}" if cls else function, *item.fixturenames]
    return heavy_uses_in(module, names)


def heavy_uses_in(module: ModuleType, names: Iterable[str]) -> list[str]:
    """The heavy packages used by the functions `names` of `module` (a test, its fixtures) and, transitively, by the
    functions and classes they refer to in that module and in the support modules: an import of one in their code,
    a name taken from one, or a `HEAVY_SUPPORT` module. Module-level imports alone do not count: a module may hold
    a browser test beside fast ones, and the support modules import their heavy packages where they use them."""
    found: set[str] = set()
    todo = [(module.__name__, name) for name in names]
    seen: set[tuple[str, str]] = set()
    while todo:
        key = todo.pop()
        if key in seen:
            continue
        seen.add(key)
        mod = sys.modules.get(key[0])
        unit = _units(mod).get(key[1]) if mod is not None else None
        if unit is None:
            continue
        segment, node = unit
        for match in _HEAVY_TEXT.finditer(segment):
            found.add(match.group("imp") or match.group("dyn"))
        namespace = vars(mod)
        for ref in ast.walk(node):
            if not isinstance(ref, ast.Name):
                continue
            if ref.id in _units(mod):
                todo.append((mod.__name__, ref.id))
            elif ref.id in namespace:
                value = namespace[ref.id]
                origin = _origin(value)
                if not origin:
                    continue
                if _heavy(origin):
                    found.add(origin)
                elif origin.split(".")[0] == "support":
                    todo.append((origin, getattr(value, "__name__", ref.id)))
    return sorted(found)


@functools.lru_cache(maxsize=None)
def _parsed(path: str) -> tuple[str, ast.Module]:
    source = Path(path).read_text()
    return source, ast.parse(source)


def _units(module: ModuleType) -> dict[str, tuple[str, ast.AST]]:
    """A module's functions, classes and class methods (`Class.method`) by name: (source, node)."""
    path = getattr(module, "__file__", None)
    if not path or not path.endswith(".py"):
        return {}
    return _units_of(path)


@functools.lru_cache(maxsize=None)
def _units_of(path: str) -> dict[str, tuple[str, ast.AST]]:
    source, tree = _parsed(path)
    units = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            units[node.name] = (ast.get_source_segment(source, node) or "", node)
        if isinstance(node, ast.ClassDef):
            for sub in node.body:
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    units[f"{node.name}.{sub.name}"] = (ast.get_source_segment(source, sub) or "", sub)
    return units


def _origin(value) -> str | None:
    if isinstance(value, ModuleType):
        return value.__name__
    origin = getattr(value, "__module__", None)
    return origin if isinstance(origin, str) else None


def _heavy(module: str) -> bool:
    return module.split(".")[0] in HEAVY_PACKAGES or any(module == m or module.startswith(m + ".")
                                                         for m in HEAVY_SUPPORT)


def loaded_heavy() -> set[str]:
    return {name for name in sys.modules if name.split(".")[0] in HEAVY_PACKAGES and "." not in name}


@pytest.fixture(autouse=True)
def _fast_tier_guard(request):
    """Under `--fast`: a test after which Playwright, Ray or TensorFlow is newly loaded errors, naming it."""
    if not request.config.getoption("fast"):
        yield
        return
    before = loaded_heavy()
    yield
    new = loaded_heavy() - before
    if new:
        pytest.fail(f"the fast tier loaded {', '.join(sorted(new))}: mark {request.node.nodeid} with one of "
                    f"{', '.join(SLOW_MARKERS)}", pytrace=False)
