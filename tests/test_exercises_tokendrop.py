"""Exercises of notebook 02: every check accepts its solution, rejects a wrong answer with its hint, treats None
as unanswered, never raises on a wrong type; every solution equals an independent computation by hand."""

from __future__ import annotations

import numpy as np
import pytest

from tdnotebooks.exercises import Feedback
from tdnotebooks.exercises import tokendrop as ex
from tdnotebooks.finetuning.tokendrop import TokenDrop, prepare
from tdnotebooks.stopwords import STOPWORDS

WRONG_TYPES = ["2", [1, 2], True, float("nan"), {"a": 1}, object(), 3.5]
TEXTS = ["The plot is thin, but the actors are not bad at all.", "A film with (almost) no jokes ... sadly.",
         "It's the best thing I've seen this year.", "Great fun!"]


@pytest.fixture(scope="module")
def data(wordpiece):
    from datasets import disable_progress_bars

    disable_progress_bars()
    return prepare(TEXTS, wordpiece, max_length=64)


def test_words_dropped(wordpiece):
    # by hand: The, are, at, all and "." are on the list ("not" is not): n = 5, round(0.3 * 5) = 2 (halves up)
    by_hand = [w for w in ["the", "jokes", "are", "not", "funny", "at", "all", "."] if w in STOPWORDS]
    assert len(by_hand) == 5
    assert ex.solution_words_dropped(tokenizer=wordpiece) == 2
    assert ex.solution_words_dropped(rate=0.5, tokenizer=wordpiece) == 3  # 2.5 -> 3, not Python's round -> 2
    assert ex.solution_words_dropped(rate=1.0, tokenizer=wordpiece) == 5
    # the count is what TokenDrop really drops, in every epoch
    example = prepare([ex.SENTENCE], wordpiece)[0]
    assert {TokenDrop(0.3).apply(example, epoch=e).dropped_words for e in range(5)} == {2}
    assert ex.check_words_dropped(ex.solution_words_dropped(tokenizer=wordpiece), tokenizer=wordpiece)
    floor = ex.check_words_dropped(1, tokenizer=wordpiece)
    assert not floor and "halves up" in floor.message and "missing a stopword" in floor.message
    wrong = ex.check_words_dropped(3, tokenizer=wordpiece)
    assert not wrong and "print STOPWORDS" in wrong.message


def test_never_dropped():
    expected = ("not", "no", "isn't", "never", "don't")  # by hand: the candidates missing from the list
    assert ex.solution_never_dropped() == expected
    assert not set(expected) & set(STOPWORDS)
    assert set(ex.CANDIDATES) - set(expected) <= set(STOPWORDS)
    assert ex.check_never_dropped(list(expected))
    assert ex.check_never_dropped({"NOT", " no", "isn’t", "never", "don't"})  # case, spaces, curly apostrophe
    wrong = ex.check_never_dropped(["not", "very"])
    assert not wrong and "1 of your words can be dropped" in wrong.message and "4 never-dropped" in wrong.message
    assert "word in STOPWORDS" in wrong.message
    unknown = ex.check_never_dropped(["not", "movie"])
    assert not unknown and "not among the candidates" in unknown.message


def test_count_changes_with_epoch(wordpiece):
    rows = [3, 8, 1, 5]
    counts = ex.dropped_per_epoch(TEXTS, rows, rate=0.3, tokenizer=wordpiece)
    # by hand: round(0.3 * n) per text, the same in every epoch
    examples = prepare(TEXTS, wordpiece)
    by_hand = sum(TokenDrop(0.3).num_words_to_drop(len(e["stopword_spans"])) for e in examples)
    assert set(counts.values()) == {by_hand} and by_hand > 0
    assert ex.solution_count_changes_with_epoch(TEXTS, rows, tokenizer=wordpiece) == "no"
    assert ex.check_count_changes_with_epoch("no", TEXTS, rows, tokenizer=wordpiece)
    assert ex.check_count_changes_with_epoch(" No", TEXTS, rows, tokenizer=wordpiece)
    wrong = ex.check_count_changes_with_epoch("yes", TEXTS, rows, tokenizer=wordpiece)
    assert not wrong and "Move only the epoch slider" in wrong.message


def test_token_share(data):
    # exact expectation on a tiny case: spans of 1, 1 and 3 tokens, rate 0.3 -> k = round(0.9) = 1 of n = 3
    example = {"input_ids": list(range(10)), "stopword_spans": [[1, 2], [2, 3], [4, 7]]}
    assert ex.expected_dropped_tokens(example, 0.3) == pytest.approx(1 / 3 * 5)
    assert ex.solution_token_share([example], 0.3) == pytest.approx(5 / 3 / 10)
    assert ex.solution_token_share([example], 1.0) == pytest.approx(5 / 10)
    # the expectation matches the average of what TokenDrop.apply removes over many epochs
    share = ex.solution_token_share(data, 0.3)
    total = sum(data["length"])
    mean = np.mean([sum(TokenDrop(0.3).apply(e, epoch=epoch).dropped_tokens for e in data)
                    for epoch in range(400)]) / total
    assert share == pytest.approx(mean, abs=0.01)
    assert 0 < share < 0.3
    assert ex.check_token_share(share, data)
    stop_share = sum(TokenDrop(1.0).apply(e, epoch=0).dropped_tokens for e in data) / total
    assert ex.check_token_share(0.3 * stop_share, data)  # the intended estimate is accepted
    wrong = ex.check_token_share(stop_share, data)  # forgot the rate
    assert not wrong and "combine the rate" in wrong.message
    percent = ex.check_token_share(100 * share, data)
    assert not percent and "fraction" in percent.message
    with pytest.raises(ValueError, match="no tokens"):
        ex.solution_token_share([], 0.3)


def test_unanswered_and_wrong_types(wordpiece, data):
    checks = [lambda a: ex.check_words_dropped(a, tokenizer=wordpiece), ex.check_never_dropped,
              lambda a: ex.check_count_changes_with_epoch(a, TEXTS, [0, 1, 2, 3], tokenizer=wordpiece),
              lambda a: ex.check_token_share(a, data)]
    for check in checks:
        none = check(None)
        assert isinstance(none, Feedback) and not none and not none.answered and "replace None" in none.message
        for wrong in WRONG_TYPES:
            feedback = check(wrong)
            assert isinstance(feedback, Feedback) and not feedback and feedback.answered
    assert not ex.check_never_dropped(["not", 3]) and not ex.check_never_dropped("not")


def test_expected_dropped_tokens_by_type_is_exact():
    """Issue 16: the exercise's expectation follows TokenDrop's default unit ("type"); checked against every
    order of the types (the generator draws each order with equal probability)."""
    import itertools

    from tdnotebooks.exercises.tokendrop import expected_dropped_tokens

    # "the" x3 (1 token), "it's" x2 (3 tokens), "a" (1 token)
    ex = {"input_ids": [0, 7, 9, 9, 9, 7, 1, 8, 7, 9, 9, 9, 2],
          "stopword_spans": [[1, 2], [2, 5], [5, 6], [7, 8], [8, 9], [9, 12]]}
    groups = {(7,): [1, 1, 1], (9, 9, 9): [3, 3], (8,): [1]}
    for rate in (0.2, 0.5, 0.7, 1.0):
        k = TokenDrop(rate=rate).num_words_to_drop(6)
        orders = list(itertools.permutations(groups))
        brute = sum(sum([size for key in order for size in groups[key]][:k]) for order in orders) / len(orders)
        assert expected_dropped_tokens(ex, rate) == pytest.approx(brute)
        assert expected_dropped_tokens(ex, rate, unit="occurrence") == pytest.approx(k / 6 * 10)
