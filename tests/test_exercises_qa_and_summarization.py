"""Exercises of notebook 08: every check accepts its solution, rejects a wrong answer with its hint, waits for
None, survives a wrong type, and every solution agrees with an independent computation by hand."""

import math

import pytest
from exercise_asserts import assert_behaves

from tdnotebooks.exercises.qa_and_summarization import (
    DROPPED_SPANS,
    TARGET_LENGTHS,
    check_answer_start_after_drop,
    check_ignored_targets,
    check_num_windows,
    check_padded_side,
    solution_answer_start_after_drop,
    solution_ignored_targets,
    solution_num_windows,
    solution_padded_side,
)


def windows_by_hand(question: int, context: int, max_length: int, stride: int) -> int:
    room = max_length - 3 - question  # [CLS] question [SEP] context [SEP]
    if context <= room:
        return 1
    return 1 + math.ceil((context - room) / (room - stride))


# ------------------------------------------------------------------------- Exercise 1: windows
@pytest.mark.parametrize(("question", "context", "max_length", "stride"),
                         [(12, 1000, 384, 128), (12, 369, 384, 128), (12, 370, 384, 128), (5, 300, 64, 16)])
def test_num_windows_by_hand(question, context, max_length, stride):
    assert solution_num_windows(question, context, max_length, stride) == \
        windows_by_hand(question, context, max_length, stride)


def test_check_num_windows():
    assert solution_num_windows() == 4  # room 369, step 241: windows start at 0, 241, 482, 723
    hint = assert_behaves(check_num_windows, 4, 3)
    assert "stride" in hint and "369" in hint
    assert check_num_windows(1, context_tokens=100)


# ------------------------------------------------------------------------- Exercise 2: moved answer start
def test_answer_start_after_drop_by_hand():
    before = sum(e - s for s, e in DROPPED_SPANS if e <= 57)
    assert solution_answer_start_after_drop() == 57 - before == 49
    assert solution_answer_start_after_drop(5, [(6, 9)]) == 5       # a drop after the answer moves nothing
    assert solution_answer_start_after_drop(10, [(0, 2), (4, 5)]) == 7
    with pytest.raises(ValueError, match="dropped by TokenDrop"):
        solution_answer_start_after_drop(3, [(2, 4)])                 # the answer itself can never be dropped


def test_check_answer_start_after_drop():
    hint = assert_behaves(check_answer_start_after_drop, 49, 57)
    assert "BEFORE" in hint
    assert check_answer_start_after_drop(7, start=10, dropped_spans=[(0, 2), (4, 5)])


# ------------------------------------------------------------------------- Exercise 3: -100 entries
def test_ignored_targets_by_hand():
    longest = max(TARGET_LENGTHS)
    assert solution_ignored_targets() == sum(longest - n for n in TARGET_LENGTHS) == 9
    assert solution_ignored_targets([4, 4]) == 0
    with pytest.raises(ValueError, match="non-empty"):
        solution_ignored_targets([])


def test_check_ignored_targets():
    hint = assert_behaves(check_ignored_targets, 9, 12)
    assert "LONGEST" in hint
    assert check_ignored_targets(3, target_lengths=[2, 5])


# ------------------------------------------------------------------------- Exercise 4: which side pads
def test_padded_side_is_the_targets(wordpiece):
    assert solution_padded_side(wordpiece) == "labels"


def test_check_padded_side(wordpiece):
    hint = assert_behaves(check_padded_side, " Labels", "both", wordpiece)
    assert "targets" in hint
    assert "answer one of" in check_padded_side("decoder", wordpiece).message
