"""The tree's layering, read from the code's own imports (ast), so a wrong-way import fails here, not in review.

- no import cycle between modules;
- `engines/` never imports `stream`;
- the hot path (sources, faces, rings, scoring, scheduler) never imports offline jobs or the command line;
- no live stage imports the offline jobs or the command line;
- config modules import no runtime (checked in a fresh interpreter: no torch, PyAV, aiohttp or aiortc loaded).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("stream", "engines")
HOT_PATH = ("stream.live.sources", "stream.live.faces", "stream.live.rings", "stream.live.scoring",
            "stream.live.scheduler")
OFFLINE = ("stream.jobs", "stream.cli")
HEAVY = ("torch", "av", "aiohttp", "aiortc", "numpy", "engines.base", "engines.registry", "stream.live")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (at any depth in the file, lazy imports included)."""
    files = {_module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            deps |= {n for n in names if n in files}
        graph[mod] = deps - {mod}
    return graph


GRAPH = _graph()


def _within(mod: str, prefixes) -> bool:
    return any(mod == p or mod.startswith(p + ".") for p in prefixes)


def _package_of(mod: str) -> str:
    return mod.rsplit(".", 1)[0]


def test_the_graph_is_read():
    assert {"stream.live.scheduler.loop", "stream.jobs.scan", "engines.base"} <= GRAPH.keys()
    assert "stream.live.scoring" in GRAPH["stream.jobs.scan"]


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A module-level import cycle, ignoring a package's own __init__ re-exporting its submodules."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if _package_of(d) == m or _package_of(m) == d:  # a package and its own submodules
                continue
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycle():
    assert _cycle(GRAPH) is None, " -> ".join(_cycle(GRAPH) or [])


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_engines_never_import_stream():
    bad = {m: sorted(d for d in deps if _within(d, ("stream",))) for m, deps in GRAPH.items() if _within(m, ("engines",))}
    assert not {m: d for m, d in bad.items() if d}


@pytest.mark.parametrize("prefixes", [HOT_PATH, ("stream.live",), ("stream.messages",), ("stream.config",)],
                         ids=["hot path", "live stages", "messages", "config"])
def test_live_code_never_imports_offline_jobs_or_the_cli(prefixes):
    bad = {m: sorted(d for d in deps if _within(d, OFFLINE)) for m, deps in GRAPH.items() if _within(m, prefixes)}
    assert not {m: d for m, d in bad.items() if d}


def test_nothing_outside_the_command_line_imports_it():
    """The command line sits on top: jobs, live code and the cluster share what they need below it (engine
    assembly is `stream.live.assembly`). `python -m stream` is the entry point."""
    bad = {m: sorted(d for d in deps if _within(d, ("stream.cli",))) for m, deps in GRAPH.items()
           if not _within(m, ("stream.cli",)) and m != "stream.__main__"}
    assert not {m: d for m, d in bad.items() if d}


def test_config_imports_no_runtime():
    code = ("import sys, stream.config, stream.config.serve, stream.config.sources, stream.config.verdicts, "
            "stream.config.scheduler, stream.config.faces, stream.messages; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == ""


def _external_imports(prefix: str) -> dict[str, set[str]]:
    """module -> the top-level names of what it imports from outside the project (lazy imports included)."""
    found: dict[str, set[str]] = {}
    for path in (REPO / "stream").rglob("*.py"):
        mod = _module_name(path)
        if not _within(mod, (prefix,)):
            continue
        tops: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                tops |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                tops.add(node.module.split(".")[0])
        found[mod] = tops
    return found


def test_live_code_never_imports_the_cluster_or_ray():
    """The cluster drives live code, never the other way: `serve --ray` hands LiveService its remote."""
    bad = {m: sorted(d for d in deps if _within(d, ("stream.cluster",))) for m, deps in GRAPH.items()
           if _within(m, ("stream.live", "stream.config", "stream.messages"))}
    assert not {m: d for m, d in bad.items() if d}
    assert not {m for m, tops in _external_imports("stream.live").items() if "ray" in tops}
    assert "ray" in _external_imports("stream.cluster")["stream.cluster.director"]  # the scan sees Ray's users


def test_serve_does_not_load_ray():
    code = ("import sys, stream.cli, stream.cli.serve, stream.cli.cluster, stream.live.server.app; "
            "stream.cli.build_parser(); print('ray' in sys.modules)")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "False"


# Modules outside the command line that still import it, each with the reason; the list may only shrink (a module
# fixed must leave it, which the test below checks too).
# Assignments that install a callable into another object's attribute, by (file, assignment target), each with
# the reason. Hooks are subscriptions (`x.subscribe(fn) -> unsubscribe`) or constructor arguments; the list may
# only shrink.
CALLABLE_SLOT_EXCEPTIONS = {
    ("stream/live/faces/tv_compat.py", "mod.nms"): "stands in for torchvision's C++ ops (a third-party module)",
    ("stream/live/faces/tv_compat.py", "mod.batched_nms"): "likewise",
    ("stream/live/faces/tv_compat.py", "modules['torchvision.transforms.functional'].to_tensor"): "likewise",
    ("stream/live/server/aiortc_compat.py", "aioice.ice.get_host_addresses"): "the loopback ICE fallback: "
        "aiortc_compat is the one place that patches aiortc/aioice",
}


def callables_installed(path: Path, root: Path = REPO) -> set[tuple[str, str]]:
    """`x.attr = <lambda | a function of this module | x.method | functools.partial(...)>` where x is not self or
    cls; paho-mqtt's own `client.on_*` callback API aside."""
    tree = ast.parse(path.read_text(), str(path))
    defs = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assign):
            continue
        value = node.value
        is_callable = (isinstance(value, ast.Lambda)
                       or (isinstance(value, ast.Name) and value.id in defs)
                       or (isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name)
                           and value.attr in defs)
                       or (isinstance(value, ast.Call) and ast.unparse(value.func).split(".")[-1] == "partial"))
        if not is_callable:
            continue
        for target in node.targets:
            if not isinstance(target, ast.Attribute):
                continue
            owner = ast.unparse(target.value)
            if owner in ("self", "cls") or (owner.split(".")[-1] == "client" and target.attr.startswith("on_")):
                continue
            found.add((path.relative_to(root).as_posix(), ast.unparse(target)))
    return found


def test_the_callable_slot_check_finds_one(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f(x):\n    pass\n\nclass A:\n    def m(self):\n        other.hook = self.m\n"
                      "        self.ok = f\n        client.on_connect = f\n\nsource.ring_status = lambda: 1\n"
                      "store.protected = f\nx.y = functools.partial(f, 1)\nz.n = 3\n")
    assert {t for _, t in callables_installed(sample, tmp_path)} == {"other.hook", "source.ring_status",
                                                                     "store.protected", "x.y"}


def test_no_assignment_installs_a_callable_into_another_objects_attribute():
    found = set().union(*(callables_installed(p) for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")))
    assert found - CALLABLE_SLOT_EXCEPTIONS.keys() == set(), "hooks must be subscriptions or constructor arguments"
    assert CALLABLE_SLOT_EXCEPTIONS.keys() - found == set(), "fixed: remove these from CALLABLE_SLOT_EXCEPTIONS"


def test_one_module_of_the_bus_keeps_a_condition():
    """The spooled sender (sender.py) is the one queue-and-thread mechanism of Redis, webhooks and MQTT."""
    keeping = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "stream" / "live" / "bus").rglob("*.py")
                     if any(isinstance(n, ast.Attribute) and n.attr == "Condition"
                            for n in ast.walk(ast.parse(p.read_text()))))
    assert keeping == ["stream/live/bus/sender.py"]
