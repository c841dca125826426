"""Exercises of notebook 05: every check accepts its solution, rejects a wrong answer with its hint, and every
solution equals an independent computation."""

import math

import pytest
import torch

from tdnotebooks.exercises import Feedback
from tdnotebooks.exercises import token_dropping as ex
from tdnotebooks.pretraining.token_dropping import select_kept_tokens

# (check, its solution's keyword arguments, a wrong answer, a phrase of the hint, a wrongly typed answer)
CASES = {
    "layer_split": (ex.check_layer_split, ex.solution_layer_split, {"num_layers": 16}, (7, 15), "L // 2 - 1", "7-14"),
    "keep_count": (ex.check_keep_count, ex.solution_keep_count, {"keep_fraction": 0.1}, 3, "kept whatever the budget", "six"),
    "bert_base_flops": (ex.check_bert_base_flops, ex.solution_bert_base_flops, {}, 0.75, "8nh^2", [0.74]),
    "importance_update": (ex.check_importance_update, ex.solution_importance_update, {}, 9.95, "mean", "9.75"),
    "flops_widget": (ex.check_flops_widget, ex.solution_flops_widget, {}, 0.55, "slider", None),
}


@pytest.mark.parametrize("name", CASES)
def test_check_accepts_the_solution(name):
    check, solution, kwargs, *_ = CASES[name]
    feedback = check(solution(**kwargs), **kwargs)
    assert isinstance(feedback, Feedback) and feedback.correct and feedback.answered, feedback


@pytest.mark.parametrize("name", CASES)
def test_check_rejects_a_wrong_answer_with_its_hint(name):
    check, solution, kwargs, wrong, hint, _ = CASES[name]
    feedback = check(wrong, **kwargs)
    assert not feedback.correct and feedback.answered
    assert hint in feedback.message
    assert str(solution(**kwargs)) not in feedback.message        # the hint teaches, it does not reveal


@pytest.mark.parametrize("name", CASES)
def test_none_is_unanswered(name):
    check, _, kwargs, *_ = CASES[name]
    feedback = check(None, **kwargs)
    assert not feedback.correct and not feedback.answered and "replace None" in str(feedback)


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("bad", ["a string", [1, 2, 3], {"x": 1}, True, float("nan")])
def test_a_wrong_type_is_feedback_not_an_exception(name, bad):
    check, _, kwargs, *_, typed = CASES[name]
    for answer in (bad, typed):
        if answer is None:
            continue
        feedback = check(answer, **kwargs)
        assert isinstance(feedback, Feedback) and not feedback.correct


@pytest.mark.parametrize("num_layers, expected", [(4, (1, 2)), (12, (5, 10)), (16, (7, 14)), (24, (11, 22))])
def test_layer_split_matches_hou_et_al(num_layers, expected):
    # 12 layers: layers 0-4 full, 5-10 dropped, 11 full (Hou et al.'s official code)
    assert ex.solution_layer_split(num_layers) == expected
    assert ex.check_layer_split(list(expected), num_layers=num_layers)   # a list is fine too


@pytest.mark.parametrize("keep_fraction, expected", [(0.35, 11), (0.1, 6), (1.0, 30), (0.2, 6), (0.21, 7)])
def test_keep_count_is_what_select_kept_tokens_keeps(keep_fraction, expected):
    length, forced_positions = 30, [0, 3, 8, 20, 21, 29]           # [CLS], four masked pieces, [SEP]
    forced = torch.zeros(1, length, dtype=torch.bool)
    forced[0, forced_positions] = True
    kept = select_kept_tokens(torch.rand(1, length, generator=torch.Generator().manual_seed(0)),
                              torch.ones(1, length), forced, keep_fraction=keep_fraction)
    assert int(kept.valid.sum()) == expected == max(math.ceil(keep_fraction * length - 1e-9), 6)
    assert ex.solution_keep_count(30, 2, 4, keep_fraction) == expected


def test_keep_count_rejects_impossible_sequences():
    with pytest.raises(ValueError, match="num_special \\+ num_masked"):
        ex.solution_keep_count(length=5, num_special=2, num_masked=4)


def test_bert_base_flops_by_hand():
    def layer(n, h=768, f=3072):
        return 8 * n * h * h + 4 * n * n * h + 4 * n * h * f

    assert ex.solution_bert_base_flops() == pytest.approx((6 * layer(512) + 6 * layer(256)) / (12 * layer(512)))
    assert ex.solution_bert_base_flops() == pytest.approx(0.7375)
    assert ex.solution_bert_base_flops(keep_fraction=1.0) == 1.0


def test_importance_update_by_hand():
    assert ex.solution_importance_update() == pytest.approx(0.95 * 10.0 + 0.05 * (2.0 + 4.0 + 9.0) / 3)
    assert ex.solution_importance_update(old=3.0, losses=(1.0,), beta=0.5) == pytest.approx(2.0)
    # the two usual mistakes are told apart from the answer
    last_write_wins = 0.95 * 10.0 + 0.05 * 9.0
    one_update_per_loss = 10.0
    for loss in (2.0, 4.0, 9.0):
        one_update_per_loss = 0.95 * one_update_per_loss + 0.05 * loss
    for mistake in (last_write_wins, one_update_per_loss, 10.0):
        assert not ex.check_importance_update(mistake)


def test_flops_widget_by_hand():
    def layer(q, kv=None, h=64, f=256):                              # q queries, kv keys / values
        kv = q if kv is None else kv
        return 4 * q * h * h + 4 * kv * h * h + 4 * q * kv * h + 4 * q * h * f

    head = 2 * 9 * 64 * 64 + 2 * 9 * 64 * 30522                    # 9 = round(0.15 * 62) predictions
    full = 4 * layer(64) + head

    def ratio(keep):
        k = math.ceil(keep * 64 - 1e-9)
        # 4 layers: 1 and 2 dropped; layer 1 attends from the k kept tokens to all 64 (the default, Hou's code)
        return (2 * layer(64) + layer(k, 64) + layer(k) + head) / full

    slider = [round(0.1 + 0.05 * i, 2) for i in range(19)]
    expected = max(f for f in slider if ratio(f) <= 0.9)
    assert ex.solution_flops_widget() == expected == 0.5
    assert ratio(0.1) > 0.75                                          # the head dominates a tiny model
    assert ex.check_flops_widget(0.5) and not ex.check_flops_widget(0.55)


def test_flops_widget_target_out_of_reach():
    with pytest.raises(ValueError, match="target must be reachable"):
        ex.solution_flops_widget(target=0.5)


def test_numpy_integers_are_accepted():
    np = pytest.importorskip("numpy")
    assert ex.check_layer_split((np.int64(7), np.int64(14)))
    assert not ex.check_layer_split(np.array([7, 14]))              # an array is not a pair: Feedback, no error
