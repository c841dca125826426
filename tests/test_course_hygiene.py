"""Course hygiene: no exercise gives its answer away above its check, the size switch comes first, and
``paper`` really picks the paper settings in every notebook.

The answer test reads the executed copies nbval leaves in ``build/executed/`` earlier in the same session
(``pytest notebooks/ tests/test_course_hygiene.py``); without a fresh copy that part is skipped, saying so.
"""

from __future__ import annotations

import ast
import json
import math
import re
from html import unescape
from pathlib import Path

import nbformat
import pytest

from tdnotebooks import course
from tdnotebooks.site import executed_dir

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MECHANISM = [p for p in NOTEBOOKS if not p.name.startswith("00")]

SIZE_SWITCH_CELL = '''\
# The size of this run, read when tdnotebooks picks its settings: "small" (the default: minutes on a CPU) or
# "paper" (paper-like settings: use a GPU, e.g. Colab's Runtime > Change runtime type > GPU). A TDN_SIZE set
# before Jupyter started wins over the value here.
import os

os.environ.setdefault("TDN_SIZE", "small")'''


# ----------------------------------------------------------------------------------------------------------
# 1. No answer above its check
# ----------------------------------------------------------------------------------------------------------

FLOAT_FORMATS = ("{:.6g}", "{:.4g}", "{:.3g}", "{:.2f}", "{:.3f}", "{:.4f}", "{:.1%}", "{:.2%}", "{:.0%}")
NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?%?")


def _significant_digits(value: float) -> int:
    digits = f"{abs(value):.12g}".split("e")[0].replace(".", "").strip("0")
    return len(digits)


def _parse(rendering: str) -> float:
    text = rendering.replace(",", "")
    return float(text[:-1]) / 100 if text.endswith("%") else float(text)


def distinctive_renderings(exercise: course.Exercise, args, kwargs, own_text: str) -> set[str]:
    """The ways the notebooks print the answer that would give it away (see the test's docstring)."""
    check, solution = exercise.functions()
    value = solution(**course._solution_call(check, solution, args, kwargs))
    own_numbers = set(NUMBER.findall(own_text))
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return set()                                       # a choice ("closer", "b") is not distinctive
    if isinstance(value, (list, tuple)):
        if len(value) < 2:
            return set()
        return {repr(list(value)), repr(tuple(value)), str(list(value)), ", ".join(map(str, value))} - {own_text}
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return set()
    if _significant_digits(value) < 2 or (float(value).is_integer() and abs(value) < 100):
        return set()                                       # 1, 0.5, 300, 11: everywhere in any notebook
    renderings = {str(int(value)), f"{int(value):,}"} if float(value).is_integer() else set()
    renderings |= {f.format(value) for f in FLOAT_FORMATS}
    out = set()
    for text in renderings:
        if text in own_numbers or _significant_digits(_parse(text)) < 2:
            continue                                       # a setting the exercise states, or too coarse
        if check(_parse(text), *args, **kwargs).correct:   # precise enough to pass the check
            out.add(text)
    return out


def _pattern(rendering: str) -> re.Pattern[str]:
    return re.compile(r"(?<![\w.])" + re.escape(rendering) + r"(?![\w%]|\.\d)")


def _output_text(output: dict) -> str:
    """What a learner reads in an output: streams, text, HTML without tags, plotly's texts (titles,
    annotations, labels: the strings of its JSON, not its data arrays)."""
    if output.get("output_type") == "stream":
        return output.get("text", "")
    if output.get("output_type") == "error":
        return "\n".join(output.get("traceback", []))
    data = output.get("data", {})
    parts = [data.get("text/markdown", ""), unescape(re.sub(r"<[^>]+>", " ", data.get("text/html", "")))]
    if "application/vnd.plotly.v1+json" not in data and "application/vnd.jupyter.widget-view+json" not in data:
        parts.append(data.get("text/plain", ""))
    strings: list[str] = []

    def walk(node):
        if isinstance(node, str):
            strings.append(node)
        elif isinstance(node, dict):
            for key, child in node.items():
                if key not in ("bdata", "dtype", "shape"):
                    walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(data.get("application/vnd.plotly.v1+json", {}))
    return "\n".join([*parts, *strings])


def _own_text(nb, exercise: course.Exercise) -> str:
    """The exercise's own text: its question and its check call (the settings it states)."""
    return exercise.question + "\n" + exercise.call


def _leaks(nb, source_of_text) -> list[str]:
    found = []
    for exercise in course.find_exercises(nb):
        arguments = course.static_arguments(exercise, nb)
        if arguments is None:
            continue
        renderings = distinctive_renderings(exercise, *arguments, _own_text(nb, exercise))
        for index, text in source_of_text(nb, exercise):
            for rendering in sorted(renderings):
                if _pattern(rendering).search(text):
                    found.append(f"exercise {exercise.label} ({exercise.check}, answer {rendering}) appears in "
                                 f"cell {index} above its check cell {exercise.cell}")
    return found


def _markdown_above(nb, exercise):
    return [(i, c.source) for i, c in enumerate(nb.cells[:exercise.cell]) if c.cell_type == "markdown"]


def _outputs_above(nb, exercise):
    return [(i, "\n".join(_output_text(o) for o in c.get("outputs", [])))
            for i, c in enumerate(nb.cells[:exercise.cell + 1]) if c.cell_type == "code"]


def _checkable(path: Path) -> int:
    return sum(course.static_arguments(e, path) is not None for e in course.find_exercises(path))


@pytest.mark.parametrize("path", MECHANISM, ids=lambda p: p.name)
def test_no_answer_in_the_markdown_above_its_check(path):
    """An exercise's answer must not be readable in the Markdown above its check cell.

    The answer is what ``solution_<name>`` returns for the check's own arguments, for every exercise whose
    arguments the notebook states (literals, constants, ``runtime.pick`` settings, the bundled tokenizer:
    :func:`tdnotebooks.course.static_arguments`); exercises answered from the run's own figures or widgets
    (data, trained models) are meant to be read off the notebook and are not checked here. The answer is
    searched as the notebooks print numbers (``int``, ``{:,}``, ``{:.2f}``, ``{:.3f}``, ``{:.4f}``, ``{:.3g}``,
    ``{:.4g}``, ``{:.6g}``, ``{:.0%}``, ``{:.1%}``, ``{:.2%}``) and sequences (``[a, b]``, ``(a, b)``,
    ``a, b``), as a whole number (``0.75`` does not match in ``0.755`` or ``10.75``). A rendering counts only
    when it is distinctive: at least 2 significant digits (1, 0.5 or 300 appear everywhere) and, for a whole
    number, at least 100 (11 is also BERT-base's last layer, 16 a batch size), precise enough
    that typing it in passes the check (``33%`` does not give away 0.3333 when the check wants 1 %), and not a
    number the exercise's own question or check call states as a setting. Choices (``"closer"``, ``"b"``)
    and one-element sequences are never distinctive.
    """
    nb = nbformat.read(path, as_version=4)
    assert _checkable(path) >= 2, "fewer than two exercises with stated arguments: the rule checks nothing"
    leaks = _leaks(nb, _markdown_above)
    assert not leaks, f"{path.name} gives answers away:\n" + "\n".join(leaks)


@pytest.mark.parametrize("path", MECHANISM, ids=lambda p: p.name)
def test_no_answer_in_the_outputs_above_its_check(path):
    """The same rule as :func:`test_no_answer_in_the_markdown_above_its_check`, on the outputs a learner sees
    before answering: every output of the executed copy (``build/executed/``, written by nbval earlier in
    this session) up to and including the check cell: streams, text, HTML without tags, and the strings of
    plotly figures (titles, annotations, labels; not their data arrays). Widget state is not searched."""
    executed = executed_dir(ROOT) / path.name
    if not executed.exists():
        pytest.skip(f"no executed copy {executed}: run `pytest notebooks/ tests/test_course_hygiene.py` "
                    "(nbval writes it) to check the outputs")
    if executed.stat().st_mtime < path.stat().st_mtime:
        pytest.skip(f"the executed copy {executed} is older than {path.name}: run nbval on it first")
    nb = nbformat.read(executed, as_version=4)
    source = nbformat.read(path, as_version=4)
    if [c.source for c in nb.cells] != [c.source for c in source.cells]:
        pytest.skip(f"the executed copy {executed} is of another version of {path.name}: run nbval on it first")
    leaks = _leaks(nb, _outputs_above)
    assert not leaks, f"{path.name} gives answers away in its outputs:\n" + "\n".join(leaks)


def test_the_leak_rule_finds_a_printed_answer_and_ignores_settings():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("from tdnotebooks.exercises.padding_and_buckets import check_hwcap, "
                                  "check_lr_factor"),
        nbformat.v4.new_markdown_cell("A bucket of 23-token sequences, budget 8,192: HWCap is 341 here."),
        nbformat.v4.new_markdown_cell("### Exercise 1\n\nHWCap of 23-token sequences at a budget of 8192?"),
        nbformat.v4.new_code_cell("check_hwcap(None)"),
        nbformat.v4.new_markdown_cell("The factor is sqrt(18/32) = 0.7500; not 0.755, 10.75 or 0.75x."),
        nbformat.v4.new_markdown_cell("### Exercise 2\n\nThe LRM factor of a batch of 18 (base 32)?"),
        nbformat.v4.new_code_cell("check_lr_factor(None)"),
    ])
    assert _leaks(nb, _markdown_above) == [
        "exercise 1 (check_hwcap, answer 341) appears in cell 1 above its check cell 3",
        "exercise 2 (check_lr_factor, answer 0.7500) appears in cell 4 above its check cell 6"]


# ----------------------------------------------------------------------------------------------------------
# 2. The size switch is the first cell that runs
# ----------------------------------------------------------------------------------------------------------


def _install_index(nb) -> int:
    install = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "pip install" in c.source]
    assert len(install) == 1, "exactly one install cell"
    return install[0]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_size_switch_is_the_first_cell_that_runs(path):
    nb = nbformat.read(path, as_version=4)
    install = _install_index(nb)
    runs = [i for i, c in enumerate(nb.cells)
            if c.cell_type == "code" and not c.source.lstrip().startswith("# NBVAL_SKIP")]
    assert runs, "no cell runs under nbval"
    first = nb.cells[runs[0]].source.strip()
    assert first == SIZE_SWITCH_CELL, (f"the first cell nbval runs (cell {runs[0]}) must be the size switch:\n"
                                       f"{SIZE_SWITCH_CELL}\n--- found:\n{first}")
    assert runs[0] == install + 1, f"the size switch (cell {runs[0]}) must come right after the install cell " \
                                   f"(cell {install})"


# ----------------------------------------------------------------------------------------------------------
# 3. TDN_SIZE=paper picks the paper settings
# ----------------------------------------------------------------------------------------------------------


def _pick_cell(nb) -> tuple[int, str, str]:
    """(index, assigned name, source of paper=) of the first cell that calls ``runtime.pick(``."""
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or "runtime.pick(" not in cell.source:
            continue
        tree = course.parse_code(cell.source)
        for node in ast.walk(tree) if tree else ():
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                    and isinstance(node.value, ast.Call) and ast.unparse(node.value.func) == "runtime.pick":
                paper = {k.arg: k.value for k in node.value.keywords}.get("paper")
                if paper is None and len(node.value.args) == 2:
                    paper = node.value.args[1]
                if paper is not None:
                    return index, node.targets[0].id, ast.unparse(paper)
        pytest.fail(f"cell {index} calls runtime.pick( but not as NAME = runtime.pick(small=..., paper=...)")
    pytest.fail("no cell calls runtime.pick(: this notebook has no size switch to check")


def _run_up_to_pick(nb, name: str, paper: str, upto: int) -> dict:
    from nbclient import NotebookClient

    cells = [c for c in nb.cells[:upto + 1]
             if c.cell_type == "code" and not c.source.lstrip().startswith("# NBVAL_SKIP")]
    probe = ("import json as _j\nfrom tdnotebooks import runtime as _r\n"
             f"print(_j.dumps({{'size': _r.size(), 'picked_paper': {name} == ({paper})}}))")
    runnable = nbformat.v4.new_notebook(cells=[*cells, nbformat.v4.new_code_cell(probe)])
    NotebookClient(runnable, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    text = "".join(o.get("text", "") for o in runnable.cells[-1].outputs if o.get("output_type") == "stream")
    return json.loads(text.strip().splitlines()[-1])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_tdn_size_paper_picks_the_paper_settings(path, monkeypatch):
    """TDN_SIZE=paper set before the kernel starts: the cells up to the first ``runtime.pick(`` run in a fresh
    kernel, then ``runtime.size()`` is "paper" and the picked settings equal the ``paper=`` value."""
    nb = nbformat.read(path, as_version=4)
    index, name, paper = _pick_cell(nb)
    monkeypatch.setenv("TDN_SIZE", "paper")
    assert _run_up_to_pick(nb, name, paper, index) == {"size": "paper", "picked_paper": True}


def test_paper_the_colab_way():
    """On Colab nobody sets TDN_SIZE: the learner writes "paper" in the size-switch cell."""
    path = NOTEBOOKS[0]
    nb = nbformat.read(path, as_version=4)
    index, name, paper = _pick_cell(nb)
    switch = [c for c in nb.cells if c.cell_type == "code" and 'os.environ.setdefault("TDN_SIZE", "small")'
              in c.source]
    assert switch, f"{path.name} has no size-switch cell to edit"
    switch[0].source = switch[0].source.replace('setdefault("TDN_SIZE", "small")', 'setdefault("TDN_SIZE", "paper")')
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("TDN_SIZE", raising=False)
        assert _run_up_to_pick(nb, name, paper, index) == {"size": "paper", "picked_paper": True}
