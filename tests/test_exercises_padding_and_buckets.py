"""Exercises of notebook 01: every check accepts its solution, rejects a wrong answer with its hint, treats None
as unanswered, never raises on a wrong type; every solution equals an independent computation by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tdnotebooks.exercises import Feedback
from tdnotebooks.exercises import padding_and_buckets as ex

WRONG_TYPES = ["0.3", [1, 2], True, float("nan"), {"a": 1}, object()]


def test_padding_fraction():
    lengths = (12, 7, 9, 4)  # by hand: padded to 12, 4 x 12 = 48 slots, 32 real
    assert ex.solution_padding_fraction() == pytest.approx(1 - 32 / 48)
    assert ex.solution_padding_fraction((5, 5, 5)) == 0.0
    assert ex.check_padding_fraction(ex.solution_padding_fraction())
    assert ex.check_padding_fraction(1 / 3, lengths).correct
    wrong = ex.check_padding_fraction(32 / 48)  # real / slots instead of 1 - real / slots
    assert not wrong and wrong.answered and "1 − real / slots" in wrong.message
    percent = ex.check_padding_fraction(100 / 3)
    assert not percent and "fraction" in percent.message


def test_hwcap():
    # a 23-token sequence lies in bucket 4 = [20, 25), whose longest length is 24
    assert ex.solution_hwcap() == 8192 // 24 == 341
    assert ex.solution_hwcap(length=20, token_budget=1000, bucket_width=10, max_length=100) == 1000 // 29
    assert ex.solution_hwcap(length=100, token_budget=1000, bucket_width=10, max_length=100) == 10  # cut at max
    assert ex.check_hwcap(ex.solution_hwcap())
    own_length = ex.check_hwcap(8192 // 23)
    assert not own_length and "longest length the bucket" in own_length.message
    wrong = ex.check_hwcap(8192 // 25)
    assert not wrong and "token_budget // that length" in wrong.message


def test_batch_size():
    # a 77-token sequence: bucket [75, 80), HWCap 8192 // 79 = 103; epoch 2 cap 32 * 2**2 = 128
    assert ex.solution_batch_size() == min(8192 // 79, 32 * 2 ** 2) == 103
    assert ex.solution_batch_size(length=23, epoch=2) == 128  # there the epoch cap binds
    assert ex.solution_batch_size(epoch=0, scaling_factor=1.5, length=9) == 32
    assert ex.solution_batch_size(epoch=3, scaling_factor=1.5, length=9) == math.floor(32 * 1.5 ** 3)
    assert ex.check_batch_size(ex.solution_batch_size())
    epoch_cap = ex.check_batch_size(128)
    assert not epoch_cap and "smaller of the two" in epoch_cap.message
    wrong = ex.check_batch_size(64)
    assert not wrong and "min(HWCap(bucket)" in wrong.message


def test_lr_factor():
    assert ex.solution_lr_factor() == pytest.approx(math.sqrt(18 / 32)) == pytest.approx(0.75)
    assert ex.solution_lr_factor(128, 32) == 2.0
    assert ex.check_lr_factor(ex.solution_lr_factor())
    linear = ex.check_lr_factor(18 / 32)
    assert not linear and "square-root" in linear.message
    wrong = ex.check_lr_factor(1.0)
    assert not wrong and "square-root rule" in wrong.message


def _padding_by_hand(lengths, width, batch_size):
    """Buckets of one width, full batches of batch_size padded to their longest, all leftovers merged
    in length order into batches of batch_size (RBM when every bucket has the same batch size)."""
    lengths = np.asarray(lengths)
    real = slots = 0
    leftovers = []
    for k in range(lengths.max() // width + 1):
        members = np.sort(lengths[lengths // width == k])
        full = len(members) // batch_size * batch_size
        for start in range(0, full, batch_size):  # lengths in a bucket: padding is within the bucket
            chunk = members[start:start + batch_size]
            real, slots = real + chunk.sum(), slots + chunk.max() * len(chunk)
        leftovers.extend(members[full:])
    for start in range(0, len(leftovers), batch_size):
        chunk = np.asarray(leftovers[start:start + batch_size])
        real, slots = real + chunk.sum(), slots + chunk.max() * len(chunk)
    return 1 - real / slots


def test_padding_threshold_width():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, size=400)
    settings = {"max_length": 64, "token_budget": None, "base_batch_size": 8}
    by_width = ex.padding_by_width(lengths, range(1, 13), **settings)
    # at width 1 all members of a bucket have the same length, so the shuffle cannot change the padding
    assert by_width[1] == pytest.approx(_padding_by_hand(lengths, 1, 8))
    threshold = 0.05
    expected = ex.solution_padding_threshold_width(lengths, threshold, **settings)
    assert expected == min(w for w, f in by_width.items() if f > threshold)
    assert all(by_width[w] <= threshold for w in range(1, expected))
    assert ex.check_padding_threshold_width(expected, lengths, threshold, **settings)
    too_small = ex.check_padding_threshold_width(expected - 1, lengths, threshold, **settings)
    assert not too_small and "move the bucket-width slider further" in too_small.message
    too_big = ex.check_padding_threshold_width(expected + 3, lengths, threshold, **settings)
    assert not too_big and "already at a smaller width" in too_big.message
    assert ex.solution_padding_threshold_width(lengths, 0.99, **settings) is None
    assert not ex.check_padding_threshold_width(40, lengths, threshold, **settings)  # off the slider


def _checks(lengths):
    return [ex.check_padding_fraction, ex.check_hwcap, ex.check_batch_size, ex.check_lr_factor,
            lambda a: ex.check_padding_threshold_width(a, lengths)]


def test_unanswered_and_wrong_types():
    lengths = np.random.default_rng(1).integers(1, 200, size=300)
    for check in _checks(lengths):
        none = check(None)
        assert isinstance(none, Feedback) and not none and not none.answered and "replace None" in none.message
        for wrong in WRONG_TYPES:
            feedback = check(wrong)
            assert isinstance(feedback, Feedback) and not feedback and feedback.answered
        assert "Correct" not in str(check(None)) and "Not yet" in str(check("x"))
        assert check("x")._repr_html_().startswith("<div")
