"""Exercises of notebook 04: every check accepts its solution, rejects a wrong answer with its hint, waits for
None, survives a wrong type, and every solution agrees with an independent computation by hand."""

import math

import pytest
from exercise_asserts import assert_behaves

from tdnotebooks.exercises.fast_inference import (
    SENTENCE,
    SERVER_LENGTHS,
    THROUGHPUT_QUESTION,
    check_length_cut,
    check_server_batches,
    check_throughput_choice,
    check_tokens_left,
    solution_length_cut,
    solution_server_batches,
    solution_throughput_choice,
    solution_tokens_left,
)
from tdnotebooks.finetuning.tokendrop import find_stopwords

TEXTS = ["The plot is thin, but the acting is so good.", "A film of great beauty and no sense at all.",
         "Painful."]


# ------------------------------------------------------------------------- Exercise 1: tokens left
def test_tokens_left_by_hand(wordpiece):
    # [CLS] the plot is thin , but the acting is so good that you will not care about the ending . [SEP]
    ids = wordpiece(SENTENCE)["input_ids"]
    spans = find_stopwords(wordpiece, [SENTENCE])["stopword_spans"][0]
    assert len(ids) == 22 and len(spans) == 12 and all(e - s == 1 for s, e in spans)
    assert solution_tokens_left(wordpiece) == 22 - round(0.5 * 12) == 16
    assert solution_tokens_left(wordpiece, rate=1.0) == 22 - 12
    assert solution_tokens_left(wordpiece, rate=0.0) == 22
    assert solution_tokens_left(wordpiece, rate=0.125) == 22 - 2  # 1.5 words: halves are rounded up


def test_check_tokens_left(wordpiece):
    hint = assert_behaves(check_tokens_left, 16, 22, wordpiece)
    assert "round(rate x n)" in hint
    assert not check_tokens_left(17, wordpiece) and check_tokens_left(10, wordpiece, rate=1.0)


# ------------------------------------------------------------------------- Exercise 2: server-mode batches
def test_server_batches_by_hand():
    # HWCap = 40 // 9 = 4 for [5, 10) (9 requests: 2 full + 1 left), 40 // 14 = 2 for [10, 15) (5 requests:
    # 2 full + 1 left), 40 // 32 = 1 for [30, 35) (1 full). RBM merges the two leftovers: 2 + 2 + 1 + 1 = 6.
    assert solution_server_batches(SERVER_LENGTHS, 40) == 6
    assert solution_server_batches([10] * 7 + [14], 40) == math.ceil(8 / (40 // 14))
    # the last bucket ends at the longest request: HWCap = 128 // 30 = 4, one full batch and one left over
    assert solution_server_batches([30] * 5, 128) == 2
    with pytest.raises(ValueError, match="non-empty"):
        solution_server_batches([], 40)


def test_check_server_batches():
    hint = assert_behaves(check_server_batches, 6, 4)
    assert "HWCap = token budget // the longest length" in hint and "RBM" in hint
    assert check_server_batches(2, lengths=[8, 60, 61], token_budget=128)


# ------------------------------------------------------------------------- Exercise 3: throughput
def test_throughput_choice_counts_slots_and_batches():
    assert solution_throughput_choice() == "b"
    assert solution_throughput_choice([10] * 64) == "c"  # equal lengths: nothing to gain
    assert set(THROUGHPUT_QUESTION) == {"a", "b", "c"}


def test_check_throughput_choice():
    hint = assert_behaves(check_throughput_choice, " B", "c")
    assert "Is padding free?" in hint
    assert "answer one of" in check_throughput_choice("d").message


# ------------------------------------------------------------------------- Exercise 5: rate 1 (explorer)
def test_length_cut_by_hand(wordpiece):
    found = find_stopwords(wordpiece, TEXTS)
    before = [len(ids) for ids in found["input_ids"]]
    after = [n - sum(e - s for s, e in spans) for n, spans in zip(before, found["stopword_spans"], strict=True)]
    assert solution_length_cut(wordpiece, TEXTS) == pytest.approx(1 - sum(after) / sum(before))
    assert solution_length_cut(wordpiece, TEXTS, rate=0.0) == 0.0
    with pytest.raises(ValueError, match="empty"):
        solution_length_cut(wordpiece, [])


def test_check_length_cut(wordpiece):
    cut = solution_length_cut(wordpiece, TEXTS)
    hint = assert_behaves(check_length_cut, round(cut, 3), cut * 100, wordpiece, TEXTS)  # a percentage is not
    assert "slider" in hint and "a fraction" in hint
