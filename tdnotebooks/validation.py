"""Argument checks for the public entry points: one clear ``ValueError`` each, naming the argument, what was
given and what is allowed, raised before any work is done.

Every config and public function of the package checks its arguments with these helpers, once, at the door
(not per example inside a loop). Booleans are never numbers here (``epochs=True`` is refused), numpy
scalars are numbers, NaN and infinities are refused unless a bound says otherwise.

Example:
    >>> check_int("epochs", 3, low=1)
    3
    >>> check_number("lr", 0.0, low=0, low_open=True)
    Traceback (most recent call last):
    ...
    ValueError: lr must be a number in (0, inf), got 0.0
"""

from __future__ import annotations

import argparse
import math
import numbers
import os
from collections.abc import Callable, Collection
from typing import Any, TypeVar

__all__ = ["arg_type", "check_bool", "check_choice", "check_folder", "check_int", "check_number", "is_int", "is_number"]

T = TypeVar("T")


def is_int(value: Any) -> bool:
    """An integer (Python or numpy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite real number (Python or numpy), not a bool."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    left = "(" if low is None or low_open else "["
    right = ")" if high is None or high_open else "]"
    return f"{left}{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}{right}"


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an ``int`` in ``[low, high]`` (both inclusive, either may be None)."""
    if not is_int(value) or (low is not None and value < low) or (high is not None and value > high):
        bounds = {(True, True): "", (False, True): f" >= {low}", (True, False): f" <= {high}",
                  (False, False): f" in [{low}, {high}]"}[(low is None, high is None)]
        raise ValueError(f"{name} must be an int{bounds}, got {value!r}")
    return int(value)


def check_number(name: str, value: Any, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite ``float`` between ``low`` and ``high`` (closed unless ``*_open``)."""
    ok = is_number(value)
    ok = ok and (low is None or (value > low if low_open else value >= low))
    ok = ok and (high is None or (value < high if high_open else value <= high))
    if not ok:
        raise ValueError(f"{name} must be a number in {_interval(low, high, low_open, high_open)}, got {value!r}")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False`` (numpy bools too); 0, 1 and strings are refused."""
    if not isinstance(value, bool) and type(value).__module__ + "." + type(value).__name__ != "numpy.bool":
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_choice(name: str, value: T, choices: Collection[Any]) -> T:
    """``value`` if it is one of ``choices``."""
    try:
        ok = value in choices
    except TypeError:  # unhashable value against a set
        ok = False
    if not ok:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_folder(name: str, value: Any, *, must_exist: bool = False) -> str:
    """``value`` as a ``str`` if it names a folder, or (unless ``must_exist``) a path where one can be made:
    not a file, and its nearest existing parent is a folder."""
    from pathlib import Path

    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ValueError(f"{name} must be a folder path, got {value!r}")
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{name} must be a folder, got the file {str(value)!r}")
    if must_exist and not path.is_dir():
        raise ValueError(f"{name} must be an existing folder, got {str(value)!r}")
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if not path.exists() and (parent is None or not parent.is_dir()):
        raise ValueError(f"{name} must be a folder path, got {str(value)!r} under the file {str(parent)!r}")
    return str(value)


def arg_type(check: Callable[..., Any], convert: Callable[[str], Any] = str, **bounds: Any) -> Callable[[str], Any]:
    """An ``argparse`` ``type=``: ``convert`` the text, then ``check`` it as the API does; a refusal becomes an
    ``argparse.ArgumentTypeError`` with the check's message, so the command line answers with one usage line
    (exit status 2) that argparse prefixes with the option's name.

    Example:
        >>> parser = argparse.ArgumentParser(prog="demo")
        >>> _ = parser.add_argument("--epochs", type=arg_type(check_int, int, low=1))
        >>> parser.parse_args(["--epochs", "3"]).epochs
        3

    ``python demo --epochs 0`` then answers ``demo: error: argument --epochs: must be an int >= 1, got 0``.
    """
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = text                    # the check refuses it in its own words: "..., got 'two'"
        try:
            return check("", value, **bounds)
        except ValueError as exc:            # "<name> must be ...": argparse names the option itself
            raise argparse.ArgumentTypeError(str(exc).strip()) from None

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse
