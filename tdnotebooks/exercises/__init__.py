"""Checked exercises for the notebooks: ``check_...`` says right or wrong, with a hint, in the notebook itself.

One module per notebook (``tdnotebooks.exercises.padding_and_buckets`` for 01, ...). Every exercise has

- ``check_<name>(answer, ...)``: returns a :class:`Feedback` (shown as a green or red box in Jupyter, truthy
  when right); ``answer=None`` means "not answered yet" and never raises, so notebooks run top to bottom;
- ``solution_<name>(...)``: the reference solution, computed with the package (never hard-coded), so it
  cannot rot: the tests check every ``check_`` against its ``solution_`` and against a wrong answer.
"""

from __future__ import annotations

import html
import math
import numbers
from dataclasses import dataclass
from typing import Any

__all__ = ["Feedback", "check_choice", "check_number", "unanswered"]


@dataclass(frozen=True)
class Feedback:
    """The verdict on one answer: ``correct``, and a message (what was right, or a hint)."""

    correct: bool
    message: str
    answered: bool = True

    def __bool__(self) -> bool:
        return self.correct

    def __str__(self) -> str:
        if not self.answered:
            return f"(not answered yet) {self.message}"
        return f"{'Correct' if self.correct else 'Not yet'}: {self.message}"

    def _repr_html_(self) -> str:
        color = "#54A24B" if self.correct else ("#888888" if not self.answered else "#E45756")
        return (f'<div style="border-left: 4px solid {color}; padding: 4px 10px; margin: 4px 0">'
                f"{html.escape(str(self))}</div>")


def unanswered(what: str) -> Feedback:
    """The feedback for ``answer=None``."""
    return Feedback(False, f"replace None with {what} and run the cell again", answered=False)


def check_number(answer: Any, expected: float, what: str, hint: str, rel_tol: float = 0.01,
                 abs_tol: float = 0.0, explain: str = "") -> Feedback:
    """Right when ``answer`` is a number within rel_tol (or abs_tol) of ``expected``."""
    if answer is None:
        return unanswered(what)
    try:
        value = float(answer) if isinstance(answer, numbers.Real) and not isinstance(answer, bool) else math.nan
    except OverflowError:
        value = math.inf
    if math.isnan(value):
        return Feedback(False, f"expected a number ({what}), got {answer!r}")
    answer = value
    if math.isclose(float(answer), float(expected), rel_tol=rel_tol, abs_tol=abs_tol):
        return Feedback(True, f"{what} = {expected:.6g}. {explain}".strip())
    return Feedback(False, hint)


def check_choice(answer: Any, expected: Any, choices: tuple, what: str, hint: str, explain: str = "") -> Feedback:
    """Right when ``answer`` equals ``expected`` (one of ``choices``; a string answer is compared without case)."""
    if answer is None:
        return unanswered(what)
    normal = answer.strip().lower() if isinstance(answer, str) else answer
    allowed = [c.lower() if isinstance(c, str) else c for c in choices]
    if not any(normal is c or (type(normal) is type(c) and normal == c) for c in allowed):
        return Feedback(False, f"answer one of {', '.join(map(repr, choices))}, got {answer!r}")
    expected_normal = expected.lower() if isinstance(expected, str) else expected
    if normal == expected_normal:
        return Feedback(True, f"{expected!r}. {explain}".strip())
    return Feedback(False, hint)
