"""The fast tier (`scripts/test.sh --fast`, tests/support/fast_tier.py) stays fast: it selects no test that uses
Playwright, Ray or TensorFlow, at collection by reading the tests' code and at run time by what got imported."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from support.fast_tier import heavy_uses_in

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
COLLECT_TIMEOUT_S = 600
# Files whose every test drives a browser or a Ray cluster: none of their tests may be in the fast tier.
HEAVY_FILES = ("test_browser.py", "test_browser_csrf.py", "test_browser_share.py", "test_evidence_page.py",
               "test_cluster.py")

SAMPLE = '''
import importlib

from support.browser import open_browser
from support.keras_meso_ref import head_classes


def plain():
    return 1


def builds_keras():
    from support.parts import import_or_require

    return import_or_require("tensorflow")


def test_plain():
    assert plain() == 1


def test_imports_ray():
    import ray  # noqa: F401


def test_through_a_helper():
    builds_keras()


def test_through_a_support_function():
    open_browser()


def test_reads_a_keras_file_without_keras():
    head_classes("x.h5")


def test_hides_its_import():
    importlib.import_module("r" + "ay")
'''


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture
def sample(tmp_path, monkeypatch):
    path = tmp_path / "fast_tier_sample.py"
    path.write_text(SAMPLE)
    spec = importlib.util.spec_from_file_location("fast_tier_sample", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "fast_tier_sample", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("test", "uses"), [
    ("test_plain", []),
    ("test_imports_ray", ["ray"]),
    ("test_through_a_helper", ["tensorflow"]),  # the module's helper it calls imports it
    ("test_through_a_support_function", ["playwright.async_api"]),  # support.browser.open_browser imports it
    ("test_reads_a_keras_file_without_keras", []),  # a light function of a support module is light
    ("test_hides_its_import", []),  # invisible to the reading: the run-time guard's job (below)
])
def test_the_reading_finds_heavy_imports_where_a_test_makes_them(sample, test, uses):
    assert heavy_uses_in(sample, [test]) == uses


def test_a_fixture_that_imports_a_heavy_package_makes_its_test_heavy(sample):
    assert heavy_uses_in(sample, ["test_plain", "builds_keras"]) == ["tensorflow"]


def _pytest(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=COLLECT_TIMEOUT_S)


def test_fast_refuses_an_unmarked_heavy_test_and_runs_it_once_marked(tmp_path):
    """At collection, before anything runs: the run stops with the test's name and what it uses."""
    (tmp_path / "test_heavy.py").write_text("def test_ray():\n    import ray  # noqa: F401\n")
    done = _pytest("-p", "support.fast_tier", "--fast", "--collect-only", "-q", str(tmp_path), cwd=tmp_path)
    assert done.returncode != 0, done.stdout
    assert "test_heavy.py::test_ray: ray" in done.stdout + done.stderr, done.stdout + done.stderr
    (tmp_path / "test_heavy.py").write_text("import pytest\n\n\n@pytest.mark.ray\ndef test_ray():\n"
                                            "    import ray  # noqa: F401\n")
    done = _pytest("-p", "support.fast_tier", "--fast", "--collect-only", "-q", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 5 and "1 deselected" in done.stdout, done.stdout + done.stderr  # 5: nothing left to run


def test_fast_errors_a_test_that_loads_a_heavy_package_out_of_sight(tmp_path):
    """At run time: an import no reading sees (here a computed name; in life, deep in the product's code)."""
    (tmp_path / "test_hidden.py").write_text(textwrap.dedent('''
        import importlib


        def test_light():
            assert True


        def test_hidden():
            importlib.import_module("json")  # a light one is fine
            importlib.import_module("play" + "wright")
    '''))
    done = _pytest("-p", "support.fast_tier", "--fast", "-q", str(tmp_path), cwd=tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "2 passed, 1 error" in out, out  # the call passes, its teardown errors: the run fails
    assert "the fast tier loaded playwright: mark test_hidden.py::test_hidden" in out, out


@pytest.mark.slow  # collects the whole suite (about half a minute); `--fast` itself runs the same check
def test_the_suites_fast_tier_selects_no_heavy_test():
    done = _pytest("--fast", "--collect-only", "-q", cwd=REPO)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-5000:]
    selected = [line.split("::")[0] for line in done.stdout.splitlines() if "::" in line]
    assert len(selected) > 300, out[-2000:]  # the fast tier is most of the suite's tests...
    assert "deselected" in out  # ...but not all of them
    assert not {Path(f).name for f in selected} & set(HEAVY_FILES), sorted({Path(f).name for f in selected} & set(HEAVY_FILES))


def test_a_test_on_real_face_crops_is_slow_even_through_another_fixture(tmp_path):
    """SLOW_FIXTURES: asking for ffpp_face_crops, directly or through a fixture of its own, leaves the fast tier."""
    (tmp_path / "conftest.py").write_text(textwrap.dedent('''
        import pytest


        @pytest.fixture
        def ffpp_face_crops():
            return "crops"


        @pytest.fixture
        def crops(ffpp_face_crops):
            return ffpp_face_crops
    '''))
    (tmp_path / "test_crops.py").write_text(textwrap.dedent('''
        def test_direct(ffpp_face_crops):
            pass


        def test_through_a_fixture(crops):
            pass


        def test_without():
            pass
    '''))
    done = _pytest("-p", "support.fast_tier", "--fast", "--collect-only", "-q", str(tmp_path), cwd=tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 0 and "1/3 tests collected (2 deselected)" in out, out
    assert "test_crops.py::test_without" in out and "test_direct" not in out and "test_through_a_fixture" not in out
