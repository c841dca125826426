"""Hand the course to a class: student copies, an answer key, and the notebooks themselves.

    python -m tdnotebooks.course student DIR   # the notebooks, outputs cleared, no `solution_` anywhere
    python -m tdnotebooks.course answers DIR   # the answer key: one Markdown page per notebook, plus index.md
    python -m tdnotebooks.course copy DIR      # the full course notebooks, as they ship

The notebooks are found in a source checkout (``notebooks/`` next to the package) or, after
``pip install tdnotebooks``, inside the package (the wheel ships them as ``tdnotebooks/_course/``).

- **student**: every ``NN_*.ipynb`` with its outputs, execution counts and widget state cleared. The
  ``check_...`` cells stay; every mention of a ``solution_`` name is dropped (the sentence or clause of a
  Markdown cell, the name in an import, the statement of a code cell that uses one) and reported on stderr:
  such a cell is better changed in the notebook itself.
- **answers**: for every exercise (every ``check_...(answer, ...)`` call of a notebook, in order): its
  question (the Markdown cell above the check), the check call, the answer computed by the matching
  ``solution_...`` function with the check's own arguments, and the explanation the check gives a right
  answer. Arguments the notebook states (literals, its constants, ``runtime.pick`` settings, the bundled
  tokenizer) are evaluated here in seconds; arguments that come from the notebook's run (its data, a trained
  model) are computed by executing the notebook up to its last check cell, at the current ``TDN_SIZE``
  (minutes; ``--no-execute`` writes the key without them, naming the call that computes each).
- **copy**: the notebooks as they are.

DIR may not be a file; an existing non-empty DIR needs ``--force`` (files of the same name are overwritten,
others are left alone).
"""

from __future__ import annotations

import argparse
import ast
import builtins
import copy as copy_module
import functools
import importlib
import inspect
import json
import math
import numbers
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tdnotebooks.site import notebook_title

__all__ = [
    "course_dir", "Exercise", "find_exercises", "static_arguments", "solve", "student_notebook",
    "write_student", "answer_key", "write_answers", "write_copy", "main",
]

NOTEBOOK_NAME = re.compile(r"^\d\d_.+\.ipynb$")
SOLUTION = re.compile(r"\bsolution_\w*")
EXERCISES_PACKAGE = "tdnotebooks.exercises"


# ----------------------------------------------------------------------------------------------------------
# Where the notebooks are
# ----------------------------------------------------------------------------------------------------------


def course_dir() -> Path:
    """The folder holding the course notebooks: ``notebooks/`` of a source checkout (also an editable
    install), else the copy a wheel ships inside the package (``tdnotebooks/_course/``)."""
    package = Path(__file__).resolve().parent
    checkout = package.parent / "notebooks"
    if (package.parent / "pyproject.toml").is_file() and _notebooks(checkout):
        return checkout
    from importlib.resources import files

    shipped = Path(str(files("tdnotebooks") / "_course"))
    if _notebooks(shipped):
        return shipped
    raise FileNotFoundError(f"no course notebooks found: neither {checkout} (a source checkout) nor {shipped} "
                            "(an installed package) holds NN_name.ipynb files; reinstall tdnotebooks")


def _notebooks(folder: Path) -> list[Path]:
    folder = Path(folder)
    return sorted(p for p in folder.glob("*.ipynb") if NOTEBOOK_NAME.match(p.name)) if folder.is_dir() else []


def notebook_paths(folder: Path | None = None) -> list[Path]:
    """The course notebooks ``NN_name.ipynb`` of ``folder`` (default :func:`course_dir`), in order."""
    paths = _notebooks(folder if folder is not None else course_dir())
    if not paths:
        raise FileNotFoundError(f"{folder} holds no NN_name.ipynb notebooks")
    return paths


def _read(notebook: Any) -> Any:
    import nbformat

    if isinstance(notebook, (str, os.PathLike)):
        return nbformat.read(str(notebook), as_version=4)
    return notebook


# ----------------------------------------------------------------------------------------------------------
# Finding the exercises of a notebook
# ----------------------------------------------------------------------------------------------------------


def parse_code(source: str) -> ast.Module | None:
    """A code cell as Python (IPython magics turned into calls, line for line), or None if it does not parse."""
    try:
        return ast.parse(source)
    except SyntaxError:
        pass
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        return ast.parse(TransformerManager().transform_cell(source))
    except (SyntaxError, ImportError):
        return None


@dataclass
class Exercise:
    """One ``check_...(answer, ...)`` call of a notebook."""

    notebook: str        # the notebook's file name
    number: int          # 1-based: the n-th check cell of the notebook
    part: str            # "" or "a", "b", ... when one cell checks several answers
    cell: int            # index of the check cell
    check: str           # "check_hwcap"
    module: str          # "tdnotebooks.exercises.padding_and_buckets"
    call: str            # the call as written, e.g. "check_hwcap(answer)"
    args: list[str] = field(default_factory=list)            # source of the arguments after the answer
    kwargs: dict[str, str] = field(default_factory=dict)     # source of the keyword arguments
    question: str = ""   # the Markdown above the check cell

    @property
    def name(self) -> str:
        return self.check.removeprefix("check_")

    @property
    def label(self) -> str:
        return f"{self.number}{self.part}"

    def functions(self) -> tuple[Callable[..., Any], Callable[..., Any]]:
        """The ``check_`` and ``solution_`` functions of the exercise."""
        module = importlib.import_module(self.module)
        return getattr(module, self.check), getattr(module, "solution_" + self.name)


def _exercise_imports(nb: Any) -> dict[str, str]:
    """check name -> exercises module, from the notebook's ``from tdnotebooks.exercises.X import ...``."""
    found: dict[str, str] = {}
    for cell in nb.cells:
        tree = parse_code(cell.source) if cell.cell_type == "code" else None
        for node in ast.walk(tree) if tree else ():
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(EXERCISES_PACKAGE + "."):
                for alias in node.names:
                    found[alias.asname or alias.name] = node.module
    return found


def _question(cells: list[Any], index: int) -> str:
    """The Markdown cell nearest above ``index``, from its last heading that names an exercise."""
    for cell in reversed(cells[:index]):
        if cell.cell_type == "markdown":
            lines = cell.source.strip().splitlines()
            starts = [i for i, line in enumerate(lines)
                      if re.match(r"^(#+ |\*\*)\s*exercise", line.strip(), re.I)]
            return "\n".join(lines[starts[-1] if starts else 0:]).strip()
    return ""


def find_exercises(notebook: Any) -> list[Exercise]:
    """Every ``check_...`` call of a notebook (a path or a notebook node), in order."""
    nb = _read(notebook)
    name = Path(str(notebook)).name if isinstance(notebook, (str, os.PathLike)) else nb.metadata.get("name", "")
    modules = _exercise_imports(nb)
    exercises: list[Exercise] = []
    number = 0
    for index, cell in enumerate(nb.cells):
        tree = parse_code(cell.source) if cell.cell_type == "code" else None
        calls = sorted((node for node in ast.walk(tree) if isinstance(node, ast.Call)
                        and isinstance(node.func, ast.Name) and node.func.id in modules
                        and node.func.id.startswith("check_")), key=lambda n: (n.lineno, n.col_offset)) \
            if tree is not None else []
        number += bool(calls)
        for part, call in enumerate(calls):
            exercises.append(Exercise(
                notebook=name, number=number, part="abcdefghij"[part] if len(calls) > 1 else "", cell=index,
                check=call.func.id, module=modules[call.func.id], call=ast.unparse(call),
                args=[ast.unparse(a) for a in call.args[1:]],
                kwargs={k.arg: ast.unparse(k.value) for k in call.keywords if k.arg is not None},
                question=_question(nb.cells, index)))
    return exercises


# ----------------------------------------------------------------------------------------------------------
# Evaluating a check's arguments without running the notebook
# ----------------------------------------------------------------------------------------------------------

SAFE_BUILTINS = {name: getattr(builtins, name) for name in
                 ("len", "range", "tuple", "list", "dict", "set", "min", "max", "round", "int", "float", "str",
                  "abs", "sum", "sorted", "True", "False", "None")}
UNKNOWN = object()
LOAD_TOKENIZER = object()


def _allowed(expr: ast.AST) -> bool:
    """Only calls a reader can evaluate in their head: safe builtins and ``runtime.pick``; no comprehensions
    or lambdas (they hide names)."""
    for node in ast.walk(expr):
        if isinstance(node, (ast.Lambda, ast.ListComp, ast.DictComp, ast.SetComp, ast.GeneratorExp,
                             ast.NamedExpr, ast.Await, ast.Yield)):
            return False
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in SAFE_BUILTINS:
                continue
            if isinstance(func, ast.Attribute) and func.attr == "pick" and isinstance(func.value, ast.Name) \
                    and func.value.id == "runtime":
                continue
            return False
    return True


def _stored_names(node: ast.AST) -> set[str]:
    names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del))}
    for n in ast.walk(node):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(n.name)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in n.names)
    return names


def _evaluate(expr: ast.AST, namespace: dict[str, Any]) -> Any:
    if not _allowed(expr):
        return UNKNOWN
    names = {n.id for n in ast.walk(expr) if isinstance(n, ast.Name)}
    if any(namespace.get(n, UNKNOWN) is UNKNOWN and n not in SAFE_BUILTINS for n in names):
        return UNKNOWN
    try:
        return eval(compile(ast.Expression(expr), "<notebook>", "eval"),  # noqa: S307 - checked by _allowed
                    {"__builtins__": SAFE_BUILTINS, **namespace})
    except Exception:
        return UNKNOWN


@functools.lru_cache(maxsize=1)
def _tokenizer() -> Any:
    from tdnotebooks.models import load_tokenizer

    return load_tokenizer()


def static_namespace(notebook: Any, upto: int) -> dict[str, Any]:
    """The names a reader knows before cell ``upto`` without running anything heavy: simple assignments of
    literals, of expressions of known names, of ``runtime.pick(...)`` (at the current size) and of
    ``load_tokenizer()`` (the bundled tokenizer), and the constants imported from ``tdnotebooks.exercises``.
    A name bound any other way is unknown from there on."""
    from tdnotebooks import runtime

    nb = _read(notebook)
    namespace: dict[str, Any] = {"runtime": runtime}
    for cell in nb.cells[:upto]:
        tree = parse_code(cell.source) if cell.cell_type == "code" else None
        for statement in tree.body if tree else ():
            if isinstance(statement, ast.Assign) and all(isinstance(t, ast.Name) for t in statement.targets):
                value = statement.value
                if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and not value.args \
                        and not value.keywords and namespace.get(value.func.id) is LOAD_TOKENIZER:
                    result = _tokenizer()                      # the bundled tokenizer, as the notebook loads it
                else:
                    result = _evaluate(value, namespace)
                for target in statement.targets:
                    namespace[target.id] = result
            elif isinstance(statement, ast.ImportFrom) and (statement.module or "").startswith(EXERCISES_PACKAGE):
                module = importlib.import_module(statement.module)
                for alias in statement.names:
                    namespace[alias.asname or alias.name] = getattr(module, alias.name, UNKNOWN)
            elif isinstance(statement, ast.ImportFrom) and statement.module in ("tdnotebooks.models", "tdnotebooks"):
                for alias in statement.names:
                    namespace[alias.asname or alias.name] = {"load_tokenizer": LOAD_TOKENIZER, "runtime": runtime} \
                        .get(alias.name, UNKNOWN)
            else:
                for name in _stored_names(statement):
                    namespace[name] = UNKNOWN
    mutated = set().union(*(_mutated_names(tree) for cell in nb.cells[:upto] if cell.cell_type == "code"
                            for tree in [parse_code(cell.source)] if tree is not None))
    return {k: v for k, v in namespace.items() if v is not UNKNOWN and v is not LOAD_TOKENIZER
            and not (isinstance(v, (list, dict, set)) and k in mutated)}


def _mutated_names(tree: ast.AST) -> set[str]:
    """Names whose (mutable) value the code may change in place: item or attribute stores, method calls,
    use inside a function or class (a closure), or passed to a call other than a safe builtin."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Subscript, ast.Attribute)) and isinstance(node.ctx, (ast.Store, ast.Del)) \
                and isinstance(node.value, ast.Name):
            names.add(node.value.id)
        elif isinstance(node, ast.Call):
            if isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
                names.add(node.func.value.id)
            if not (isinstance(node.func, ast.Name) and node.func.id in SAFE_BUILTINS):
                names.update(a.id for a in [*node.args, *(k.value for k in node.keywords)] if isinstance(a, ast.Name))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            names.update(n.id for n in ast.walk(node) if isinstance(n, ast.Name))
    return names


def static_arguments(exercise: Exercise, notebook: Any) -> tuple[list[Any], dict[str, Any]] | None:
    """The check's arguments (after the answer), evaluated from what the notebook states above the check
    cell; None when one of them comes from the notebook's run."""
    namespace = static_namespace(notebook, exercise.cell)
    args = [_evaluate(ast.parse(a, mode="eval").body, namespace) for a in exercise.args]
    kwargs = {k: _evaluate(ast.parse(v, mode="eval").body, namespace) for k, v in exercise.kwargs.items()}
    if any(v is UNKNOWN for v in [*args, *kwargs.values()]):
        return None
    return args, kwargs


# ----------------------------------------------------------------------------------------------------------
# Solving: the solution_ function with the check's arguments
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Solved:
    value: Any           # the answer, as JSON-like data (numbers, strings, lists)
    text: str            # the answer as a learner would type it (format_value)
    explanation: str     # what the check says to the right answer


def _solution_call(check: Callable[..., Any], solution: Callable[..., Any], args: Sequence[Any],
                   kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``solution`` that ``check(None, *args, **kwargs)`` stands for."""
    bound = inspect.signature(check).bind(None, *args, **kwargs)
    params = inspect.signature(solution).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    out: dict[str, Any] = {}
    check_params = inspect.signature(check).parameters
    for i, (name, value) in enumerate(bound.arguments.items()):
        if i == 0:
            continue                                        # the answer
        if check_params[name].kind is inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        elif name in params or takes_any:
            out[name] = value
    return out


def jsonable(value: Any) -> Any:
    """Numbers, strings and (nested) lists of them; numpy scalars become Python numbers, tuples lists."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if hasattr(value, "tolist"):
        return jsonable(value.tolist())
    return repr(value)


def solve(exercise: Exercise, args: Sequence[Any], kwargs: dict[str, Any]) -> Solved:
    """Run ``solution_<name>`` with the check's arguments; the explanation is the check's verdict on it."""
    check, solution = exercise.functions()
    value = solution(**_solution_call(check, solution, args, kwargs))
    feedback = check(value, *args, **kwargs)
    return Solved(jsonable(value), format_value(value),
                  feedback.message if feedback.correct else f"(the check says: {feedback})")


RECORDER = "_tdn_course_record"


def _record(key: str, module: str, check: str, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
    """Used inside a kernel by :func:`solve_by_running`: solve one exercise and keep the result."""
    exercise = Exercise(notebook="", number=0, part="", cell=0, check=check, module=module, call="")
    try:
        solved = solve(exercise, args, kwargs)
        _RECORDED[key] = {"value": solved.value, "text": solved.text, "explanation": solved.explanation}
    except Exception as exc:  # the key says so, the notebook run goes on
        _RECORDED[key] = {"error": f"{type(exc).__name__}: {exc}"}


_RECORDED: dict[str, Any] = {}


def solve_by_running(path: Path, exercises: Sequence[Exercise], timeout: int = 600) -> dict[str, Solved | str]:
    """Execute the notebook (fresh kernel, cwd its folder, install cells skipped) up to its last check cell,
    solving every exercise in the kernel right after its check cell, with the same arguments.
    Returns label -> :class:`Solved` (or an error message)."""
    import nbformat
    from nbclient import NotebookClient

    nb = _read(path)
    last = max(e.cell for e in exercises)
    cells = []
    for index, cell in enumerate(nb.cells[:last + 1]):
        if cell.cell_type == "code" and cell.source.lstrip().startswith("# NBVAL_SKIP"):
            continue
        cells.append(cell)
        for e in (e for e in exercises if e.cell == index):
            arguments = f"[{', '.join(e.args)}], {{{', '.join(f'{k!r}: {v}' for k, v in e.kwargs.items())}}}"
            cells.append(nbformat.v4.new_code_cell(
                f"from tdnotebooks.course import _record as {RECORDER}\n"
                f"{RECORDER}({e.label!r}, {e.module!r}, {e.check!r}, {arguments})"))
    cells.append(nbformat.v4.new_code_cell(
        "import json as _tdn_json\nfrom tdnotebooks import course as _tdn_course\n"
        "print(_tdn_json.dumps(_tdn_course._RECORDED))"))
    runnable = nbformat.v4.new_notebook(cells=cells, metadata=copy_module.deepcopy(nb.metadata))
    class Client(NotebookClient):
        def on_comm_open_jupyter_widget(self, msg: dict[str, Any]) -> None:
            # No Output-widget emulation: the answers never depend on it, and with it a panel cell
            # (viz.panel: controls over an interactive output) waited out the whole cell timeout.
            return None

    client = Client(runnable, timeout=timeout, kernel_name="python3",
                    resources={"metadata": {"path": str(Path(path).parent)}})
    client.execute()
    text = "".join(o.get("text", "") for o in runnable.cells[-1].outputs if o.get("output_type") == "stream")
    recorded = json.loads(text)
    out: dict[str, Solved | str] = {}
    for label, result in recorded.items():
        out[label] = Solved(result["value"], result["text"], result["explanation"]) if "value" in result \
            else result["error"]
    return out


# ----------------------------------------------------------------------------------------------------------
# Student copies
# ----------------------------------------------------------------------------------------------------------


def _drop_markdown_mentions(text: str) -> str:
    """Drop every sentence (or the ``;`` clause) that mentions a ``solution_`` name."""
    while (match := SOLUTION.search(text)) is not None:
        start = match.start()
        end_match = re.compile(r"\.(?=\s|$)").search(text, match.end())
        end = end_match.start() if end_match else len(text)
        clause = text.rfind(";", 0, start)
        sentence = max((m.end() for m in re.finditer(r"\.\s+|^\s*(?:[-*]|\d+\.)\s+|\n\s*\n", text[:start], re.M)),
                       default=0)
        if clause >= sentence:                       # "...; the reference solutions are ..." -> "..."
            text = text[:clause] + text[end:]
        else:                                         # the whole sentence, with the space after it
            tail = re.match(r"\.?[ \t]*", text[end:])
            text = text[:sentence] + text[end + (tail.end() if tail else 0):]
    text = re.sub(r"[ \t]+(?=\n|$)", "", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n") + ("\n" if text.endswith("\n") else "")


def _drop_code_mentions(source: str) -> str:
    """Remove ``solution_`` names from imports; a statement that uses one becomes a comment."""
    tree = parse_code(source)
    lines = source.splitlines(keepends=True)
    if tree is None:
        return "".join("# (removed in the student copy)\n" if SOLUTION.search(line) else line for line in lines)
    replacements = []
    for statement in ast.walk(tree):
        if not isinstance(statement, ast.stmt) or not hasattr(statement, "end_lineno"):
            continue
        text = "".join(lines[statement.lineno - 1:statement.end_lineno])
        if not SOLUTION.search(text) or any(isinstance(s, ast.stmt) and s is not statement
                                            for s in ast.walk(statement)):
            continue
        indent = re.match(r"\s*", lines[statement.lineno - 1]).group(0)
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            kept = [a for a in statement.names if not SOLUTION.search(a.name) and not SOLUTION.search(a.asname or "")]
            new = copy_module.copy(statement)
            new.names = kept
            text = indent + ast.unparse(new) + "\n" if kept else ""
        else:
            text = f"{indent}pass  # (removed in the student copy: it used a reference solution)\n"
        replacements.append((statement.lineno, statement.end_lineno, text))
    for first, last, text in sorted(replacements, reverse=True):
        lines[first - 1:last] = [text]
    result = "".join(lines)
    if SOLUTION.search(result):                      # e.g. in a comment or a compound statement's header
        result = "".join(line for line in result.splitlines(keepends=True) if not SOLUTION.search(line))
    return result


def student_notebook(notebook: Any) -> tuple[Any, list[str]]:
    """A student copy of a notebook (a new node) and a note per cell that had to be changed: outputs,
    execution counts and widget state cleared; ``solution_`` mentions dropped."""
    nb = copy_module.deepcopy(_read(notebook))
    notes = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        if SOLUTION.search(cell.source):
            before = cell.source
            cell.source = _drop_markdown_mentions(before) if cell.cell_type != "code" else _drop_code_mentions(before)
            mention = SOLUTION.search(before).group(0)
            notes.append(f"cell {index} ({cell.cell_type}) mentions {mention!r}: dropped in the student copy; "
                         "better changed in the notebook itself")
    nb.metadata.pop("widgets", None)
    leftover = SOLUTION.search(json.dumps(nb))
    if leftover:
        raise ValueError(f"the student copy still mentions {leftover.group(0)!r} (in metadata?): fix the notebook")
    return nb, notes


# ----------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------


def _prepare(out: Path, force: bool) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ValueError(f"{out} is not empty; use --force to write into it (files of the same name are "
                         "overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_student(out: Path, notebooks: Path | None = None, force: bool = False,
                  log: Callable[[str], None] = print) -> list[Path]:
    """Write the student copies of the course notebooks to ``out``; returns their paths."""
    import nbformat

    out = _prepare(out, force)
    written = []
    for path in notebook_paths(notebooks):
        nb, notes = student_notebook(path)
        for note in notes:
            log(f"{path.name}: {note}")
        nbformat.write(nb, str(out / path.name))
        written.append(out / path.name)
    return written


def write_copy(out: Path, notebooks: Path | None = None, force: bool = False) -> list[Path]:
    """Copy the course notebooks, as they ship, to ``out``; returns their paths."""
    import shutil

    out = _prepare(out, force)
    return [Path(shutil.copyfile(path, out / path.name)) for path in notebook_paths(notebooks)]


def format_value(value: Any) -> str:
    """The answer as a learner would type it: ``0.333333``, ``(3, 9)``, ``['not', 'no']``, ``'closer'``."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return f"{float(value):.6g}" if math.isfinite(value) else repr(float(value))
    if isinstance(value, tuple):
        return "(" + ", ".join(map(format_value, value)) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, list):
        return "[" + ", ".join(map(format_value, value)) + "]"
    return repr(value)


def _quote(text: str) -> str:
    return "\n".join("> " + line if line.strip() else ">" for line in text.strip().splitlines())


def answer_key(path: Path, execute: bool = True, timeout: int = 600,
               log: Callable[[str], None] = print) -> str:
    """The answer key of one notebook, as Markdown."""
    from tdnotebooks import runtime

    nb = _read(path)
    exercises = find_exercises(path)
    solved: dict[str, Solved | str] = {}
    pending = []
    for e in exercises:
        arguments = static_arguments(e, nb)
        if arguments is None:
            pending.append(e)
        else:
            try:
                solved[e.label] = solve(e, *arguments)
            except Exception as exc:
                solved[e.label] = f"{type(exc).__name__}: {exc}"
    if pending and execute:
        log(f"{Path(path).name}: executing up to cell {max(e.cell for e in pending)} for "
            f"{len(pending)} answer(s) that depend on the run (TDN_SIZE={runtime.size()}) ...")
        try:
            ran = solve_by_running(Path(path), exercises, timeout)
        except Exception as exc:  # a notebook that fails to run: the key says so for its run-dependent answers
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
            ran = {e.label: f"the notebook did not run to this check ({type(exc).__name__}: {first})"
                   for e in pending}
        solved.update({e.label: ran[e.label] for e in pending if e.label in ran})
    modules = sorted({e.module for e in exercises})
    lines = [f"# Answer key · {notebook_title(nb, Path(path).stem)}", "",
             f"Generated by `python -m tdnotebooks.course answers` from `{Path(path).name}`; the answers are "
             f"computed by the `solution_...` functions of {', '.join(f'`{m}`' for m in modules) or '(none)'} "
             f"with the arguments of each check cell (size `{runtime.size()}`). Not for students.", ""]
    if not exercises:
        lines += ["This notebook has no checked exercises.", ""]
    for e in exercises:
        lines += [f"## Exercise {e.label} · `{e.check}`", ""]
        if e.question:
            lines += ["**Question** (the notebook's text above the check cell):", "", _quote(e.question), ""]
        lines += [f"**Check cell** (cell {e.cell}): `{e.call}`", ""]
        result = solved.get(e.label)
        call = f"solution_{e.name}({', '.join([*e.args, *(f'{k}={v}' for k, v in e.kwargs.items())])})"
        if isinstance(result, Solved):
            lines += [f"**Answer:** `{result.text}`  (from `{call}`)", "",
                      f"**Explanation** (the check's reply to this answer): {result.explanation}", ""]
        elif isinstance(result, str):
            lines += [f"**Answer:** could not be computed: {result} (`{call}`)", ""]
        else:
            lines += [f"**Answer:** depends on the notebook's run (its data or a trained model): run "
                      f"`{call}` in the notebook after the check cell, or generate the key without "
                      "`--no-execute`.", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_answers(out: Path, notebooks: Path | None = None, force: bool = False, execute: bool = True,
                  timeout: int = 600, log: Callable[[str], None] = print) -> list[Path]:
    """Write ``NN_name.md`` (one answer key per notebook) and ``index.md`` to ``out``; returns the pages."""
    out = _prepare(out, force)
    pages = []
    index = ["# Answer key", "", "One page per notebook of the course. Not for students.", ""]
    for path in notebook_paths(notebooks):
        page = out / (path.stem + ".md")
        page.write_text(answer_key(path, execute=execute, timeout=timeout, log=log), encoding="utf-8")
        count = len(find_exercises(path))
        index.append(f"- [{path.stem}]({page.name}): {count} exercise{'s' if count != 1 else ''}")
        pages.append(page)
    (out / "index.md").write_text("\n".join(index) + "\n", encoding="utf-8")
    return pages


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tdnotebooks.course", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="{student,answers,copy}")
    helps = {"student": "student copies: outputs cleared, no solution_ mentions (the checks stay)",
             "answers": "the answer key: one Markdown page per notebook, and index.md",
             "copy": "the full course notebooks, as they ship"}
    for name, text in helps.items():
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("dir", metavar="DIR", help="the folder to write (made if missing)")
        sub.add_argument("--force", action="store_true", help="write into a non-empty DIR")
        sub.add_argument("--notebooks", metavar="FOLDER",
                         help="take the notebooks from FOLDER (default: the course's own)")
        if name == "answers":
            sub.add_argument("--no-execute", action="store_true",
                             help="do not run notebooks: answers that depend on a run are left out")
            sub.add_argument("--timeout", type=int, default=600, help="seconds per cell when executing (600)")
    args = parser.parse_args(argv)
    out = Path(args.dir)
    if out.exists() and not out.is_dir():
        parser.error(f"DIR {args.dir!r} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        parser.error(f"DIR {args.dir!r} is not empty; add --force to write into it")
    if args.notebooks is not None and not _notebooks(Path(args.notebooks)):
        parser.error(f"--notebooks {args.notebooks!r} holds no NN_name.ipynb notebooks")
    if getattr(args, "timeout", 1) < 1:
        parser.error(f"--timeout must be >= 1, got {args.timeout}")
    notebooks = Path(args.notebooks) if args.notebooks else None
    warn = lambda message: print(message, file=sys.stderr)  # noqa: E731
    try:
        if args.command == "student":
            written = write_student(out, notebooks, force=args.force, log=warn)
        elif args.command == "answers":
            written = write_answers(out, notebooks, force=args.force, execute=not args.no_execute,
                                    timeout=args.timeout, log=warn)
        else:
            written = write_copy(out, notebooks, force=args.force)
    except FileNotFoundError as exc:
        parser.exit(1, f"error: {exc}\n")
    print(f"{len(written)} {'pages' if args.command == 'answers' else 'notebooks'} written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
