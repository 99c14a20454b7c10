"""Habits the README's test command keeps: ruff passes over src and tests, the API documentation builds without
warnings, and the library's docstring examples run (pytest's ``--doctest-modules`` over ``src/invertible``, set in
``pyproject.toml``). Each check has a negative control: it fails on a file made to fail it."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff(*args: str) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec("ruff") is None and shutil.which("ruff") is None:
        pytest.fail("ruff is not installed: it is part of the test extra (pip install -e '.[test]')")
    return subprocess.run([sys.executable, "-m", "ruff", "check", *args], cwd=ROOT, capture_output=True, text=True,
                          check=False)


def test_ruff_passes_over_src_and_tests_with_the_project_settings() -> None:
    result = _ruff("src", "tests")
    assert result.returncode == 0, f"ruff found problems (fix them, or run ruff check --fix):\n{result.stdout}"


def test_ruff_fails_on_a_file_with_an_unused_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n" + "x = 1  # " + "y" * 130 + "\n")
    result = _ruff("--config", str(ROOT / "pyproject.toml"), str(bad))
    assert result.returncode == 1 and "F401" in result.stdout and "E501" in result.stdout


def _api_docs():  # the docs/api_docs.py module
    spec = importlib.util.spec_from_file_location("api_docs", ROOT / "docs" / "api_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_api_documentation_builds_without_warnings(tmp_path: Path) -> None:
    pytest.importorskip("pdoc", reason="pdoc is part of the test extra (pip install -e '.[test]')")
    api = _api_docs()
    problems = api.build(tmp_path)
    assert problems == [], "pdoc warned:\n" + "\n".join(problems)
    for page in ("index.html", "invertible.html", "invertible/layers/coupling.html", "invertible/models/step.html",
                 "invertible/base.html", "invertible/testing.html"):
        assert (tmp_path / page).is_file(), page
    text = (tmp_path / "invertible" / "layers" / "scale.html").read_text()
    assert "ScaleFunction" in text and "with_eps" in text


def test_the_api_build_reports_a_warning_as_a_problem(tmp_path: Path) -> None:
    """Negative control: an annotation pdoc cannot evaluate is a warning, and ``build`` returns it."""
    pytest.importorskip("pdoc")
    package = tmp_path / "src" / "broken_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('"""A module with a broken annotation."""\n\nfrom __future__ import '
                                         'annotations\n\n\ndef f(x: NoSuchType[int]) -> None:  # noqa: F821\n'
                                         '    """Doc."""\n')
    sys.path.insert(0, str(tmp_path / "src"))
    try:
        api = _api_docs()
        problems = api.build(tmp_path / "out", modules=["broken_pkg"])
    finally:
        sys.path.remove(str(tmp_path / "src"))
        sys.modules.pop("broken_pkg", None)
    assert any("NoSuchType" in p for p in problems), problems


def test_the_doctests_of_the_library_run_with_the_tests() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "src/invertible" in config["testpaths"] and "--doctest-modules" in config["addopts"]
    with_examples = [p for p in (ROOT / "src" / "invertible").rglob("*.py") if ">>>" in p.read_text()]
    assert len(with_examples) >= 30  # the library's examples (36 files when this was written)
