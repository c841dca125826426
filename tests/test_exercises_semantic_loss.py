"""Exercises of notebook 06: every check accepts its solution, rejects a wrong answer with its hint, and every
solution equals an independent computation."""

import math

import pytest

from tdnotebooks.exercises import Feedback
from tdnotebooks.exercises import semantic_loss as ex
from tdnotebooks.pretraining import analysis

SENTENCE = "The story is smart and entirely charming in intent and execution."   # 12 word pieces
ACCURACIES = [0.55, 0.59, 0.61, 0.61, 0.63, 0.66, 0.67]
CACHE = {("MiniLM (pretrained)", "mean"): ACCURACIES, ("MiniLM (pretrained)", "cls"): [0.55, 0.57, 0.60, 0.58,
                                                                                       0.60, 0.61, 0.62]}


@pytest.fixture(scope="module")
def cases(wordpiece):
    """name -> (check, solution, keyword arguments of both, a wrong answer, a phrase of the hint)."""
    return {
        "mask_count": (ex.check_mask_count, ex.solution_mask_count, {"num_pieces": 22}, 4, "round to the nearest"),
        "mask_count_small": (ex.check_mask_count, ex.solution_mask_count, {"num_pieces": 3}, 0, "at least one"),
        "drift_direction": (ex.check_drift_direction, ex.solution_drift_direction,
                            {"masked": 0.495, "masked_dropped": 0.302}, "closer", "higher = closer"),
        "kept_at_high_drop": (ex.check_kept_at_high_drop, ex.solution_kept_at_high_drop,
                              {"tokenizer": wordpiece, "text": SENTENCE}, 1, "always kept"),
        "probe_layer": (ex.check_probe_layer, ex.solution_probe_layer, {"accuracies": ACCURACIES}, 3,
                        "trained to be read from"),
        "best_pooling": (ex.check_best_pooling, ex.solution_best_pooling, {"probe_cache": CACHE}, "cls",
                         "both poolings"),
    }


NAMES = ["mask_count", "mask_count_small", "drift_direction", "kept_at_high_drop", "probe_layer", "best_pooling"]


@pytest.mark.parametrize("name", NAMES)
def test_check_accepts_the_solution(cases, name):
    check, solution, kwargs, *_ = cases[name]
    feedback = check(solution(**kwargs), **kwargs)
    assert isinstance(feedback, Feedback) and feedback.correct and feedback.answered, feedback


@pytest.mark.parametrize("name", NAMES)
def test_check_rejects_a_wrong_answer_with_its_hint(cases, name):
    check, solution, kwargs, wrong, hint = cases[name]
    feedback = check(wrong, **kwargs)
    assert not feedback.correct and feedback.answered
    assert hint in feedback.message
    assert repr(solution(**kwargs)) not in feedback.message        # the hint teaches, it does not reveal


@pytest.mark.parametrize("name", NAMES)
def test_none_is_unanswered(cases, name):
    check, _, kwargs, *_ = cases[name]
    feedback = check(None, **kwargs)
    assert not feedback.correct and not feedback.answered and "replace None" in str(feedback)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", ["a string", [1, 2], {"x": 1}, True, float("nan"), 3.5, -1, 99])
def test_a_wrong_type_is_feedback_not_an_exception(cases, name, bad):
    check, _, kwargs, *_ = cases[name]
    feedback = check(bad, **kwargs)
    assert isinstance(feedback, Feedback) and not feedback.correct


@pytest.mark.parametrize("num_pieces, expected", [(22, 3), (3, 1), (10, 2), (1, 1), (40, 6)])
def test_mask_count_is_what_corrupted_views_masks(wordpiece, num_pieces, expected):
    text = " ".join(["the"] * num_pieces)                        # "the" is one word piece
    view = analysis.corrupted_views(wordpiece, [text], mask_prob=0.15)[0]
    assert len(view.masked_ids) == num_pieces + 2                # [CLS] ... [SEP]
    assert view.masked_ids.count(wordpiece.mask_token_id) == view.num_masked == expected
    assert ex.solution_mask_count(num_pieces, 0.15) == expected == max(1, math.floor(0.15 * num_pieces + 0.5))


def test_drift_direction_follows_the_cosines():
    assert ex.solution_drift_direction(masked=0.5, masked_dropped=0.3) == "further"
    assert ex.solution_drift_direction(masked=0.3, masked_dropped=0.5) == "closer"
    assert ex.check_drift_direction(" Further ", masked=0.5, masked_dropped=0.3)   # case and spaces ignored
    assert ex.check_drift_direction("closer", masked=0.3, masked_dropped=0.5)


def test_kept_at_high_drop_is_the_forced_tokens(wordpiece):
    ids = wordpiece(SENTENCE)["input_ids"]
    masked = analysis.mask_count(len(ids) - 2, 0.15)
    expected = max(math.ceil(0.05 * len(ids)), 2 + masked)        # the budget, or [CLS] + [SEP] + every [MASK]
    assert ex.solution_kept_at_high_drop(wordpiece, SENTENCE) == expected == 4
    view = analysis.corrupted_views(wordpiece, [SENTENCE], keep_fraction=0.05)[0]
    assert view.dropped_ids == [wordpiece.cls_token_id] + [wordpiece.mask_token_id] * masked + [wordpiece.sep_token_id]
    # at drop rate 0 nothing is dropped
    assert ex.solution_kept_at_high_drop(wordpiece, SENTENCE, drop_rate=0.0) == len(ids)


def test_probe_layer_is_the_argmax_and_ties_are_all_right():
    assert ex.solution_probe_layer(ACCURACIES) == max(range(len(ACCURACIES)), key=ACCURACIES.__getitem__) == 6
    tied = [0.5, 0.7, 0.6, 0.7]
    assert ex.solution_probe_layer(tied) == 1
    assert ex.check_probe_layer(1, tied) and ex.check_probe_layer(3, tied) and not ex.check_probe_layer(2, tied)
    with pytest.raises(ValueError, match="accuracies must be a non-empty list"):
        ex.check_probe_layer(0, [])


def test_best_pooling_needs_both_poolings_measured():
    assert ex.solution_best_pooling(CACHE) == "mean"
    swapped = {("MiniLM (pretrained)", "mean"): CACHE["MiniLM (pretrained)", "cls"],
               ("MiniLM (pretrained)", "cls"): ACCURACIES}
    assert ex.solution_best_pooling(swapped) == "cls" and ex.check_best_pooling("CLS", swapped)
    only_mean = {("MiniLM (pretrained)", "mean"): ACCURACIES}
    feedback = ex.check_best_pooling("mean", only_mean)
    assert not feedback.correct and "switch the pooling widget to 'cls'" in feedback.message
    with pytest.raises(ValueError, match="measure every pooling first"):
        ex.solution_best_pooling(only_mean)
    tie = {("m", "mean"): [0.6], ("m", "cls"): [0.6]}
    assert ex.check_best_pooling("mean", tie, model="m") and ex.check_best_pooling("cls", tie, model="m")


def test_a_numpy_argmax_is_a_fine_layer_answer():
    np = pytest.importorskip("numpy")
    assert ex.check_probe_layer(np.argmax(ACCURACIES), ACCURACIES)
