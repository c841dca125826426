"""Exercises of notebook 03: every check accepts its solution, rejects a wrong answer with its hint, waits for
None, survives a wrong type, and every solution agrees with an independent computation by hand."""

import math

import pytest
from exercise_asserts import assert_behaves

from tdnotebooks.exercises.fast_finetuning import (
    BUCKET_PROFILE,
    check_ideal_speedup,
    check_lrm_lr,
    check_padding_left,
    check_scaling_one,
    check_steps_per_epoch,
    check_tokens_to_drop,
    solution_ideal_speedup,
    solution_lrm_lr,
    solution_padding_left,
    solution_scaling_one,
    solution_steps_per_epoch,
    solution_tokens_to_drop,
)
from tdnotebooks.padding import PaddingStats, padding_stats

STATS = PaddingStats(real_tokens=1_200, slot_tokens=2_000, num_batches=10)
LENGTHS = [12] * 40 + [17] * 25 + [22] * 9


# ------------------------------------------------------------------------- Exercise 1: Algorithm 3
def test_tokens_to_drop_equals_length_minus_shortest():
    lengths = (23, 21, 25, 22)
    assert solution_tokens_to_drop(lengths) == [n - min(lengths) for n in lengths] == [2, 0, 4, 1]
    assert solution_tokens_to_drop((7, 7, 9)) == [0, 0, 2]


def test_check_tokens_to_drop():
    hint = assert_behaves(check_tokens_to_drop, [2, 0, 4, 1], [0, 2, 0, 3])
    assert "cardinality(sample) - min_seq_len(batch)" in hint
    assert not check_tokens_to_drop([2, 0, 4]).correct  # one int per sequence
    assert not check_tokens_to_drop([2.0, 0, 4, 1]).correct and "list of 4 ints" in check_tokens_to_drop(
        [2.0, 0, 4, 1]).message
    assert check_tokens_to_drop((1, 0), lengths=(6, 5))


# ------------------------------------------------------------------------- Exercise 2: too few stopwords
def test_padding_left_by_hand():
    # the 25-token sequence drops its only 2 stopwords and stays at 23: the batch is 23 wide, the three others
    # were trimmed to 21 and are padded back up by 2 each ("shortest"); "reachable" trims them only to 23
    assert solution_padding_left((23, 21, 25, 22), (5, 3, 2, 4)) == 3 * (23 - 21) == 6
    assert solution_padding_left((23, 21, 25, 22), (5, 3, 2, 4), trim_to="reachable") == (23 - 21) + (23 - 22)
    assert solution_padding_left((23, 21, 25, 22), (5, 3, 9, 4)) == 0  # enough stopwords: no padding
    with pytest.raises(ValueError, match="one entry per sequence"):
        solution_padding_left((23, 21), (5,))


def test_check_padding_left():
    hint = assert_behaves(check_padding_left, 6, 0)
    assert "cannot drop more stopwords than it has" in hint
    assert "3 padding slots" in check_padding_left(6).message  # the explanation names the reachable variant


# ------------------------------------------------------------------------- Exercise 3: ideal speed-up
def test_ideal_speedup_is_slots_over_real():
    lengths, batches = [3, 5, 4, 8], [[0, 1], [2, 3]]  # slots 2*5 + 2*8 = 26, real 20
    stats = padding_stats(lengths, batches)
    assert solution_ideal_speedup(stats) == pytest.approx(26 / 20)
    assert solution_ideal_speedup(STATS) == pytest.approx(1 / (1 - STATS.padding_fraction))
    with pytest.raises(ValueError, match="PaddingStats"):
        solution_ideal_speedup((1200, 2000))


def test_check_ideal_speedup():
    hint = assert_behaves(check_ideal_speedup, 2000 / 1200, 1200 / 2000, STATS)
    assert "divide" in hint
    assert check_ideal_speedup(1.67, STATS)  # two decimals are close enough
    assert not check_ideal_speedup(0.4, STATS)  # the padding fraction is not the speed-up


# ------------------------------------------------------------------------- Exercise 4: BatchCap + RBM
def test_steps_per_epoch_by_hand():
    # HWCap = 256 // (14, 19, 24) = (18, 13, 10). Epoch 1: cap 8 for all: 40 -> 5 full; 25 -> 3 full + 1;
    # 9 -> 1 full + 1; RBM merges the two leftovers into one batch: 5 + 3 + 1 + 1 = 10 steps.
    assert solution_steps_per_epoch(BUCKET_PROFILE, 256, 8, epoch=0) == 10
    # Epoch 2: cap 16 -> sizes (16, 13, 10): 40 -> 2 full + 8; 25 -> 1 full + 12; 9 -> 9 left. RBM: 8, then
    # +5 of the 12 closes at 13; 7 + 3 of the 9 closes at 10; 6 left: 3 merged batches. 2 + 1 + 3 = 6 steps.
    assert solution_steps_per_epoch(BUCKET_PROFILE, 256, 8, epoch=1) == 6
    # Without a binding HWCap RBM packs the whole epoch like random batches: ceil(74 / 16)
    assert solution_steps_per_epoch(BUCKET_PROFILE, 4096, 8, epoch=1) == math.ceil(74 / 16)
    with pytest.raises(ValueError, match="counts"):
        solution_steps_per_epoch({12: 0})


def test_check_steps_per_epoch():
    hint = assert_behaves(check_steps_per_epoch, 6, 5)
    assert "min(HWCap, base x 2^epoch)" in hint and "RBM" in hint
    assert check_steps_per_epoch(10, epoch=0)


# ------------------------------------------------------------------------- Exercise 5: LRM
def test_lrm_lr_by_hand():
    # 40 steps, 4 of warm-up; step 30 decays to 5e-4 * (40 - 30) / (40 - 4); LRM: x sqrt(13 / 8)
    assert solution_lrm_lr() == pytest.approx(5e-4 * 10 / 36 * math.sqrt(13 / 8), rel=1e-9)
    # in the warm-up: 5e-4 * 2 / 4 at step 2, batch = base (factor 1)
    assert solution_lrm_lr(5e-4, 40, 2, 8, 8) == pytest.approx(2.5e-4, rel=1e-9)
    with pytest.raises(ValueError, match=r"step must be an int in \[0, 39\], got 40"):
        solution_lrm_lr(step=40)


def test_check_lrm_lr():
    expected = 5e-4 * 10 / 36 * math.sqrt(13 / 8)
    hint = assert_behaves(check_lrm_lr, expected, 5e-4 * 10 / 36)  # forgetting LRM is wrong
    assert "sqrt(batch size / base batch size)" in hint
    assert not check_lrm_lr(5e-4 * math.sqrt(13 / 8))  # forgetting the schedule is wrong too
    assert check_lrm_lr(2.5e-4, step=2, batch_size=8)


# ------------------------------------------------------------------------- Exercise 6: scaling factor 1
def test_scaling_one_keeps_the_steps():
    assert solution_scaling_one(LENGTHS, 8, 256) == "the same"
    assert solution_scaling_one(list(range(3, 60)) * 5, 4, 4096, bucket_width=3) == "the same"


def test_check_scaling_one():
    hint = assert_behaves(check_scaling_one, "The same ", "fewer", LENGTHS, 8, 256)
    assert "1^epoch" in hint
    assert "answer one of" in check_scaling_one("half", LENGTHS, 8, 256).message
