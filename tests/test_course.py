"""The course for a class (tdnotebooks.course): student copies, the answer key, the shipped notebooks, the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from tdnotebooks import course

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _check_calls(nb) -> list[str]:
    return [e.call for e in course.find_exercises(nb)]


def test_the_course_is_found_in_the_checkout():
    assert course.course_dir() == ROOT / "notebooks"
    assert course.notebook_paths() == NOTEBOOKS and len(NOTEBOOKS) >= 9  # 00-08


def test_every_mechanism_notebook_has_exercises_with_a_module_and_a_question():
    for path in NOTEBOOKS[1:]:
        exercises = course.find_exercises(path)
        assert len(exercises) >= 3, path.name
        for e in exercises:
            check, solution = e.functions()
            assert check.__name__ == e.check and solution.__name__ == "solution_" + e.name
            assert e.question, f"{path.name} exercise {e.label}: no Markdown question above its check cell"


# ----------------------------------------------------------------------------------------------------------
# student
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    notes: list[str] = []
    course.write_student(out, log=notes.append)
    return out, notes


def test_student_copies_have_no_solutions_and_no_outputs_but_every_check(student_dir):
    out, notes = student_dir
    assert sorted(p.name for p in out.iterdir()) == [p.name for p in NOTEBOOKS]
    for path in NOTEBOOKS:
        copy = out / path.name
        text = copy.read_text()
        assert "solution_" not in text, path.name
        nb, original = nbformat.read(copy, as_version=4), nbformat.read(path, as_version=4)
        assert len(nb.cells) == len(original.cells)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None
        assert "widgets" not in nb.metadata
        assert _check_calls(nb) == _check_calls(original), "every check_ call stays, as written"
        nbformat.validate(nb)
    # every cell that had to change is reported, by notebook and cell
    for note in notes:
        assert re.match(r"\d\d_\w+\.ipynb: cell \d+ \((markdown|code)\) mentions 'solution_", note), note


def test_student_copy_drops_solution_mentions_from_markdown_and_code():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("Check yourself; the answers are the `solution_...` functions. Good luck."),
        nbformat.v4.new_markdown_cell("Replace None and run the cell. The reference solutions are the "
                                      "`solution_...` functions of\n`tdnotebooks/exercises/sctd.py`.\n\n## Next"),
        nbformat.v4.new_code_cell("from tdnotebooks.exercises.sctd import (check_full_steps,\n"
                                  "                                        solution_full_steps)\n"
                                  "import math\n"
                                  "if True:\n"
                                  "    print(solution_full_steps(95, 10),\n"
                                  "          math.pi)\n"
                                  "check_full_steps(None, steps=95)"),
        nbformat.v4.new_code_cell("from tdnotebooks.exercises.sctd import solution_full_steps as s"),
    ])
    copy, notes = course.student_notebook(nb)
    assert "solution_" not in json.dumps(copy) and len(notes) == 4
    assert copy.cells[0].source == "Check yourself. Good luck."
    assert copy.cells[1].source == "Replace None and run the cell.\n\n## Next"
    code = copy.cells[2].source
    compile(code, "cell", "exec")
    assert "from tdnotebooks.exercises.sctd import check_full_steps" in code and "check_full_steps(None" in code
    assert copy.cells[3].source.strip() == ""
    assert "solution_" in json.dumps(nb), "the notebook itself is not changed"


def test_student_copies_run_their_first_cells(student_dir):
    """The setup cells (up to the first one that picks the size) of every student copy run in a kernel."""
    from nbclient import NotebookClient

    out, _ = student_dir
    cells = []
    for path in NOTEBOOKS:
        nb = nbformat.read(out / path.name, as_version=4)
        cells.append(nbformat.v4.new_code_cell(f"%reset -f\nimport os\nos.chdir({str(ROOT / 'notebooks')!r})"))
        for cell in nb.cells:
            if cell.cell_type == "code" and not cell.source.lstrip().startswith("# NBVAL_SKIP"):
                cells.append(cell)
                if "runtime.pick(" in cell.source:
                    break
        cells.append(nbformat.v4.new_code_cell(f"print('ran the first cells of {path.name}')"))
    runnable = nbformat.v4.new_notebook(cells=cells)
    NotebookClient(runnable, timeout=300, kernel_name="python3").execute()
    printed = "".join(o.get("text", "") for c in runnable.cells for o in c.outputs)
    assert all(f"ran the first cells of {p.name}" in printed for p in NOTEBOOKS)


# ----------------------------------------------------------------------------------------------------------
# answers
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def answer_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("answers")
    course.write_answers(out, execute=False, log=lambda _: None)
    return out


def test_the_answer_key_lists_every_exercise_of_every_notebook_with_its_solution(answer_dir):
    assert (answer_dir / "index.md").is_file()
    computed = 0
    for path in NOTEBOOKS:
        page = (answer_dir / (path.stem + ".md")).read_text()
        exercises = course.find_exercises(path)
        assert f"({path.stem}.md): {len(exercises)} exercise" in (answer_dir / "index.md").read_text()
        sections = re.split(r"^## ", page, flags=re.M)[1:]
        assert len(sections) == len(exercises), path.name
        for e, section in zip(exercises, sections, strict=True):
            assert section.startswith(f"Exercise {e.label} · `{e.check}`")
            assert e.question.splitlines()[0] in section, "the question is quoted"
            arguments = course.static_arguments(e, path)
            if arguments is None:
                assert "depends on the notebook's run" in section and f"solution_{e.name}(" in section
                continue
            check, solution = e.functions()
            args, kwargs = arguments
            expected = solution(**course._solution_call(check, solution, args, kwargs))
            assert f"**Answer:** `{course.format_value(expected)}`" in section, (path.name, e.label)
            assert "**Explanation**" in section and check(expected, *args, **kwargs).message in section
            computed += 1
    assert computed >= 20, "most answers follow from what the notebooks state"


def test_the_answer_key_runs_the_notebook_for_answers_that_depend_on_it(tmp_path):
    """An argument computed in the notebook (a comprehension here) is evaluated by executing the notebook."""
    folder = tmp_path / "nbs"
    folder.mkdir()
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# 01 · A tiny course"),
        nbformat.v4.new_code_cell("# NBVAL_SKIP\nraise RuntimeError('the install cell is not run')"),
        nbformat.v4.new_code_cell("from tdnotebooks.exercises.padding_and_buckets import check_padding_fraction, "
                                  "check_lr_factor\nlengths = [int(n) for n in '12 7 9 4'.split()]\nBATCH = 8"),
        nbformat.v4.new_markdown_cell("### Exercise 1\n\nThe padding fraction of the batch?"),
        nbformat.v4.new_code_cell("answer = None\ncheck_padding_fraction(answer, lengths)"),
        nbformat.v4.new_markdown_cell("### Exercise 2\n\nThe LRM factor of a batch of 8?"),
        nbformat.v4.new_code_cell("check_lr_factor(None, batch_size=BATCH)"),
        nbformat.v4.new_code_cell("raise RuntimeError('cells after the last check are not run')"),
    ])
    nbformat.write(nb, folder / "01_tiny.ipynb")
    out = tmp_path / "key"
    assert course.main(["answers", str(out), "--notebooks", str(folder)]) == 0
    page = (out / "01_tiny.md").read_text()
    assert "**Answer:** `0.333333`  (from `solution_padding_fraction(lengths)`)" in page
    assert "32 real tokens in 48 slots" in page
    assert "**Answer:** `0.5`  (from `solution_lr_factor(batch_size=BATCH)`)" in page
    assert "The padding fraction of the batch?" in page


# ----------------------------------------------------------------------------------------------------------
# copy, and the notebooks shipped in the wheel
# ----------------------------------------------------------------------------------------------------------


def test_copy_writes_every_notebook_unchanged(tmp_path):
    assert course.main(["copy", str(tmp_path / "course")]) == 0
    written = sorted((tmp_path / "course").iterdir())
    assert [p.name for p in written] == [p.name for p in NOTEBOOKS]
    assert all(w.read_bytes() == p.read_bytes() for w, p in zip(written, NOTEBOOKS, strict=True))


def test_pyproject_ships_the_notebooks_and_lists_every_package():
    tomllib = pytest.importorskip("tomllib")                      # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    from setuptools import find_namespace_packages

    found = set(find_namespace_packages(str(ROOT), include=["tdnotebooks*"])) - {"tdnotebooks._course"}
    found = {p for p in found if (ROOT / p.replace(".", "/") / "__init__.py").exists()}
    listed = set(config["packages"])
    missing = sorted(found - listed)
    assert not missing, f'pyproject.toml [tool.setuptools] packages: add {", ".join(map(repr, missing))}'
    assert listed - found == {"tdnotebooks._course"}
    assert config["package-dir"]["tdnotebooks._course"] == "notebooks"
    assert "[0-9][0-9]_*.ipynb" in config["package-data"]["tdnotebooks._course"]


@pytest.mark.slow
def test_an_installed_wheel_copies_its_own_notebooks(tmp_path):
    """Build the wheel, unpack it as site-packages would hold it, and run `copy` from there (no checkout)."""
    import shutil

    source, wheels = tmp_path / "source", tmp_path / "wheels"     # built from a copy: nothing lands in ROOT
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        (source / name).parent.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, source / name)
    for name in ("tdnotebooks", "notebooks"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(source)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = wheels.glob("tdnotebooks-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert sorted(n for n in names if n.startswith("tdnotebooks/_course/")) == \
            [f"tdnotebooks/_course/{p.name}" for p in NOTEBOOKS]
        archive.extractall(tmp_path / "site")
    out = tmp_path / "course"
    code = (f"import sys; sys.path.insert(0, {str(tmp_path / 'site')!r}); import tdnotebooks.course as c; "
            f"assert c.__file__.startswith({str(tmp_path / 'site')!r}), c.__file__; print(c.course_dir()); "
            f"raise SystemExit(c.main(['copy', {str(out)!r}]))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert str(tmp_path / "site" / "tdnotebooks" / "_course") in run.stdout
    assert sorted(p.name for p in out.iterdir()) == [p.name for p in NOTEBOOKS]


# ----------------------------------------------------------------------------------------------------------
# the command line
# ----------------------------------------------------------------------------------------------------------


def _usage_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        course.main(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


def test_cli_usage_errors(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    assert "is a file" in _usage_error(["student", str(a_file)], capsys)
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    for command in ("student", "answers", "copy"):
        assert "not empty; add --force" in _usage_error([command, str(full)], capsys)
    assert "invalid choice: 'teacher'" in _usage_error(["teacher", str(tmp_path / "x")], capsys)
    assert "the following arguments are required" in _usage_error([], capsys)
    assert "the following arguments are required: DIR" in _usage_error(["copy"], capsys)
    assert "holds no NN_name.ipynb" in _usage_error(["copy", str(tmp_path / "y"), "--notebooks", str(tmp_path)],
                                                     capsys)
    assert "--timeout must be >= 1" in _usage_error(["answers", str(tmp_path / "z"), "--timeout", "0"], capsys)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_cli_force_writes_into_a_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    assert course.main(["student", str(tmp_path), "--force"]) == 0
    assert (tmp_path / "keep.txt").read_text() == "mine" and len(list(tmp_path.glob("*.ipynb"))) == len(NOTEBOOKS)


def test_python_dash_m_runs_the_command_line(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    run = subprocess.run([sys.executable, "-m", "tdnotebooks.course", "copy", str(tmp_path / "c")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0 and f"{len(NOTEBOOKS)} notebooks written" in run.stdout, run.stderr
    bad = subprocess.run([sys.executable, "-m", "tdnotebooks.course", "copy", str(tmp_path / "c")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "usage: python -m tdnotebooks.course" in bad.stderr
