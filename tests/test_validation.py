"""The shared argument checks: what each accepts, and that every refusal names the argument and the value."""

import math

import numpy as np
import pytest

from tdnotebooks.validation import check_bool, check_choice, check_int, check_number, is_int, is_number


@pytest.mark.parametrize("value", [0, 7, np.int64(3), np.uint8(2)])
def test_integers_are_ints(value):
    assert is_int(value)


@pytest.mark.parametrize("value", [True, False, 1.0, "3", None, np.bool_(True)])
def test_bools_floats_and_strings_are_not_ints(value):
    assert not is_int(value)


@pytest.mark.parametrize("value", [0, -2.5, np.float32(0.5), np.int64(4)])
def test_finite_reals_are_numbers(value):
    assert is_number(value)


@pytest.mark.parametrize("value", [True, math.nan, math.inf, -math.inf, "1", None, 1j, 10**400])
def test_bools_nonfinite_and_strings_are_not_numbers(value):
    assert not is_number(value)


def test_check_int_returns_a_python_int_and_respects_inclusive_bounds():
    assert check_int("n", np.int64(3), low=3, high=3) == 3 and type(check_int("n", np.int64(3))) is int
    with pytest.raises(ValueError, match=r"^epochs must be an int >= 1, got True$"):
        check_int("epochs", True, low=1)
    with pytest.raises(ValueError, match=r"^k must be an int in \[0, 3\], got 4$"):
        check_int("k", 4, low=0, high=3)
    with pytest.raises(ValueError, match=r"^k must be an int <= 3, got 2.0$"):
        check_int("k", 2.0, high=3)


def test_check_number_open_and_closed_bounds():
    assert check_number("p", 1, 0, 1) == 1.0
    with pytest.raises(ValueError, match=r"^p must be a number in \[0, 1\), got 1$"):
        check_number("p", 1, 0, 1, high_open=True)
    with pytest.raises(ValueError, match=r"^lr must be a number in \(0, inf\), got 0$"):
        check_number("lr", 0, low=0, low_open=True)
    with pytest.raises(ValueError, match=r"^beta must be a number in \(-inf, inf\), got nan$"):
        check_number("beta", math.nan)
    with pytest.raises(ValueError, match="got '5e-5'"):
        check_number("lr", "5e-5", low=0)


def test_check_bool_refuses_numbers_and_strings():
    assert check_bool("rbm", np.bool_(False)) is False
    for value in (0, 1, "False", None):
        with pytest.raises(ValueError, match=rf"^rbm must be True or False, got {value!r}$"):
            check_bool("rbm", value)


def test_check_choice_names_every_allowed_value():
    assert check_choice("mode", "a", ("a", "b")) == "a"
    with pytest.raises(ValueError, match=r"^mode must be one of 'a', 'b', got 'c'$"):
        check_choice("mode", "c", ("a", "b"))
    with pytest.raises(ValueError, match=r"got \[1\]"):
        check_choice("mode", [1], frozenset({"a"}))
