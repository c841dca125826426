"""Notebook 07 exercises: every check_ accepts its solution_, rejects a wrong answer with its hint, and each solution equals an independent computation."""
import math

import pytest

from tdnotebooks.exercises import sctd as ex
from tdnotebooks.pretraining.token_dropping import flops_ratio

TERMS = {"mlm_dropped": 6.0, "mlm_full": 4.0, "kl_global": 2.0, "kl_local": 4.0, "is_full_step": True}
CASES = {
    "full_steps": (ex.check_full_steps, ex.solution_full_steps, {"steps": 95, "fi": 10}, 10, "closes each window"),
    "full_steps_start": (ex.check_full_steps, ex.solution_full_steps, {"steps": 95, "fi": 10, "at": "start"}, 9,
                         "step 0 included"),
    "sctd_cost": (ex.check_sctd_cost, ex.solution_sctd_cost, {"fi": 10}, 0.95, "average the two"),
    "break_even_fi": (ex.check_break_even_fi, ex.solution_break_even_fi, {"r": 0.75}, 3, "solve r + 1/Fi = 1"),
    "total_loss": (ex.check_total_loss, ex.solution_total_loss, {"terms": TERMS}, 10.3, "half of each MLM"),
}


@pytest.mark.parametrize("name", CASES)
def test_checks(name):
    check, solution, kwargs, wrong, hint = CASES[name]
    assert check(solution(**kwargs), **kwargs)
    bad = check(wrong, **kwargs)
    assert not bad and hint in bad.message
    assert not check(None, **kwargs).answered
    assert not check("ten", **kwargs)


def test_solutions_equal_independent_computations():
    assert ex.solution_full_steps(95, 10) == 95 // 10 == 9               # t = 9, 19, ..., 89 (the paper's Fig. 5)
    assert ex.solution_full_steps(100, 10) == 10 and ex.solution_full_steps(109, 10) == 10
    assert ex.solution_full_steps(95, 10, "start") == math.ceil(95 / 10) == 10
    assert ex.solution_full_steps(100, 10, "start") == 10 and ex.solution_full_steps(101, 10, "start") == 11
    assert ex.solution_sctd_cost(5) == pytest.approx(flops_ratio(**ex.BERT_LARGE) + 0.2)
    assert ex.solution_break_even_fi(0.75) == 4 and ex.solution_break_even_fi(0.744) == 3
    assert ex.solution_total_loss(TERMS, 0.05) == pytest.approx(5.3)
    assert ex.solution_total_loss(TERMS, 0.5, full_mlm=False) == pytest.approx(9.0)
