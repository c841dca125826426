"""Notebook and repository hygiene (nbval itself executes every notebook: see pyproject addopts)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_numbered_notebooks():
    assert NOTEBOOKS and NOTEBOOKS[0].name == "00_start_here.ipynb"
    for nb in NOTEBOOKS:
        assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", nb.name), nb.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_conventions(path):
    nb = nbformat.read(path, as_version=4)
    assert path.stat().st_size < 1 * 2**20, "commit notebooks with small outputs only"
    first = nb.cells[0].source
    assert "colab.research.google.com/github/" in first and f"notebooks/{path.name})" in first
    assert "mybinder.org/v2/gh/" in first and f"lab/tree/notebooks/{path.name})" in first
    assert nb.metadata.get("accelerator") == "GPU" and "colab" in nb.metadata
    install = [c for c in nb.cells if c.cell_type == "code" and "pip install" in c.source]
    assert len(install) == 1, "exactly one install cell"
    assert install[0].source.startswith("# NBVAL_SKIP") and '"google.colab" in sys.modules' in install[0].source
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if cell.outputs:
            assert cell.metadata.get("keep_output"), "only keep_output cells may carry outputs"
            assert "# NBVAL_CHECK_OUTPUT" in cell.source, "a kept output exists to be checked"
        else:
            assert cell.execution_count is None
        if "# NBVAL_CHECK_OUTPUT" in cell.source:
            assert cell.outputs, "a checked cell needs its stored output, or nbval has nothing to compare"
        assert "FigureWidget" not in cell.source


def test_notebooks_are_stripped():
    result = subprocess.run([sys.executable, "-m", "nbstripout", "--verify", "--keep-id", "--keep-count", *map(str, NOTEBOOKS)],
                            capture_output=True, text=True)
    assert result.returncode == 0, f"run `nbstripout --keep-id notebooks/*.ipynb`: {result.stdout}{result.stderr}"


def test_ruff_is_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_lists_every_notebook_and_ci_runs_its_test_command():
    readme = (ROOT / "README.md").read_text()
    for nb in NOTEBOOKS:
        assert f"notebooks/{nb.name}" in readme, nb.name
    for command in ("./setup.sh lab", "./setup.sh test"):
        assert re.search(rf"^{re.escape(command)}$", readme, re.M), f"README must state {command!r} on its own line"
    ci_commands = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
                   if line.strip() and not line.startswith(("#", "set -", "cd "))]
    assert ci_commands == ["./setup.sh test"], ".ci/run runs the README's test command and nothing else"
    setup = ROOT / "setup.sh"
    assert os.access(setup, os.X_OK), "chmod +x setup.sh (the README runs it as ./setup.sh)"
    assert "pip install torch==2.13.0" in setup.read_text() and "pip install torch==2.13.0" in readme
    usage = subprocess.run([str(setup), "teach"], capture_output=True, text=True, timeout=30)
    assert usage.returncode == 2 and "usage: ./setup.sh lab|test" in usage.stderr


MECHANISM_NOTEBOOKS = [p for p in NOTEBOOKS if p.name[:2] != "00"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_teaching_layer_objectives_and_summary(path):
    markdown = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown"]
    opening = " ".join(markdown[:3]).lower()
    assert "you will" in opening or "objectives" in opening, "open with what the learner will be able to do"
    assert any(re.search(r"^## Summary", m, re.M) for m in markdown[-3:]), "end with a short ## Summary"


@pytest.mark.parametrize("path", MECHANISM_NOTEBOOKS, ids=lambda p: p.name)
def test_mechanism_notebooks_have_three_checked_exercises(path):
    cells = nbformat.read(path, as_version=4).cells
    checks = [c for c in cells if c.cell_type == "code" and re.search(r"^\s*check_\w+\(", c.source, re.M)]
    assert len(checks) >= 3, "at least three exercises a learner can check in the notebook"
    source = "\n".join(c.source for c in cells if c.cell_type == "code")
    assert "from tdnotebooks.exercises" in source, "the checks come from the package (tested solutions)"


def test_every_check_has_a_tested_solution():
    import importlib
    import pkgutil

    import tdnotebooks.exercises as exercises

    modules = [m.name for m in pkgutil.iter_modules(exercises.__path__)]
    assert modules, "no exercise modules"
    for name in modules:
        module = importlib.import_module(f"tdnotebooks.exercises.{name}")
        checks = [f for f, obj in vars(module).items()                  # defined here, not imported
                  if f.startswith("check_") and getattr(obj, "__module__", None) == module.__name__]
        assert checks, f"{name} defines no check_ functions"
        for check in checks:
            assert hasattr(module, "solution_" + check.removeprefix("check_")), f"{name}.{check} has no solution_"
        tests = ROOT / "tests" / f"test_exercises_{name}.py"
        assert tests.exists(), f"{name}: its solutions need tests in {tests.name}"
        assert all(check in tests.read_text() for check in checks), f"{tests.name} must exercise every check_"
