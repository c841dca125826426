"""Exercises of notebook 07 (ScTD, Zhong et al. 2023, Eq. 4 and Table 5).

Numbered as in the notebook (each comes before the output that answers it):

1. :func:`check_total_loss`: the total of a full step from its four terms (Eq. 4), for lambda = ``lam`` (default: the
   ScTDConfig default, 0.05 / 76.8);
2. :func:`check_full_steps`: how many full steps a run of ``steps`` steps holds at interval Fi (Eq. 4's switch; the
   full step closes each window of Fi steps, as in the paper's Fig. 5);
3. :func:`check_sctd_cost`: ScTD's cost per step in baseline steps, r + 1/Fi, with r from flops_ratio (Table 5);
4. :func:`check_break_even_fi`: the largest Fi at which ScTD costs at least a baseline step (with the Fi widget).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tdnotebooks import validation  # not imported by name: check_number here is the exercises' one
from tdnotebooks.exercises import Feedback, check_number
from tdnotebooks.pretraining.sctd import DEFAULT_LAM, FULL_PASS_AT, is_full_step
from tdnotebooks.pretraining.token_dropping import flops_ratio

__all__ = ["BERT_LARGE", "check_break_even_fi", "check_full_steps", "check_sctd_cost", "check_total_loss",
           "solution_break_even_fi", "solution_full_steps", "solution_sctd_cost", "solution_total_loss"]

BERT_LARGE = {"num_layers": 24, "start_layer": 11, "end_layer": 23, "keep_fraction": 0.5, "seq_len": 512,
              "hidden_size": 1024, "num_predictions": 77, "vocab_size": 30522}


def solution_full_steps(steps: int = 100, fi: int = 10, at: str = "end") -> int:
    """Full steps among t in [0, steps) (counted with sctd.is_full_step): at="end" (default, the paper's Fig. 5)
    t mod Fi == Fi - 1, floor(steps / Fi) of them; at="start" (the official code) t mod Fi == 0, ceil(steps / Fi)."""
    validation.check_int("steps", steps, low=1)
    validation.check_choice("at (full_pass_at)", at, FULL_PASS_AT)
    return sum(is_full_step(t, fi, at) for t in range(steps))


def check_full_steps(answer: Any, steps: int = 100, fi: int = 10, at: str = "end") -> Feedback:
    """``answer``: how many of ``steps`` steps (t = 0 .. steps-1) run the full pass at interval ``fi``
    (``at``: where in each window of Fi steps the full one sits, as ScTDConfig.full_pass_at)."""
    expected = solution_full_steps(steps, fi, at)
    if at == "end":
        hint = ("the full pass closes each window of Fi steps: t = Fi - 1, 2 Fi - 1, ... while t < steps; count "
                "them (step 0 is a dropped step)")
        explain = f"floor({steps}/{fi}) = {steps // fi}: Fi - 1 dropped steps, then the full one (Fig. 5)."
    else:
        hint = "the full pass opens each window: t = 0, Fi, 2 Fi, ... while t < steps; count them (step 0 included)"
        explain = f"ceil({steps}/{fi}) = {math.ceil(steps / fi)}."
    return check_number(answer, expected, "the number of full steps", hint, rel_tol=0.0, abs_tol=1e-9,
                        explain=explain)


def solution_sctd_cost(fi: int = 10, model: Mapping[str, Any] | None = None) -> float:
    """Cost of an ScTD step in baseline steps: flops_ratio(model) + 1/Fi (BERT-large, 512 tokens by default)."""
    validation.check_int("fi (the interval Fi)", fi, low=1)
    return flops_ratio(**dict(model or BERT_LARGE)) + 1.0 / fi


def check_sctd_cost(answer: Any, fi: int = 10, model: Mapping[str, Any] | None = None) -> Feedback:
    """``answer``: ScTD's mean cost per step, in baseline steps, at interval ``fi``."""
    return check_number(answer, solution_sctd_cost(fi, model), "ScTD's cost per step",
                        "every step runs the dropped pass (cost r = flops_ratio(...)); one step in Fi also runs "
                        "the full pass (cost 1): average the two", rel_tol=0.005,
                        explain="r + 1/Fi: the dropped pass at every step, the full pass once every Fi steps.")


def solution_break_even_fi(r: float) -> int:
    """The largest Fi with r + 1/Fi >= 1: below it ScTD costs more than the baseline (0 if none)."""
    validation.check_number("r", r, low=0, high=1, low_open=True, high_open=True)
    return max((fi for fi in range(1, 10_000) if r + 1 / fi >= 1), default=0)


def check_break_even_fi(answer: Any, r: float) -> Feedback:
    """``answer``: the largest Fi at which ScTD (r + 1/Fi) costs at least as much as the baseline (1)."""
    return check_number(answer, solution_break_even_fi(r), "the largest Fi that does not save anything",
                        "move the Fi slider down until the star crosses the baseline line, or solve r + 1/Fi = 1 "
                        "for Fi and take the whole number at or below it", rel_tol=0.0, abs_tol=1e-9,
                        explain=f"1/(1 - r) = {1 / (1 - r):.2f}: up to that Fi the full passes eat the saving.")


def solution_total_loss(terms: Mapping[str, float], lam: float = DEFAULT_LAM, full_mlm: bool = True) -> float:
    """Eq. 4 at a full step: 1/2 MLM* + 1/2 MLM + lam (KL_g + KL_l) (official code: MLM* + lam (KL_g + KL_l))."""
    validation.check_number("lam (lambda)", lam, low=0)
    validation.check_bool("full_mlm", full_mlm)
    missing = [k for k in ("mlm_dropped", "mlm_full", "kl_global", "kl_local")
               if not isinstance(terms, Mapping) or not validation.is_number(terms.get(k))]
    if missing:
        raise ValueError(f"terms must hold a number for each of mlm_dropped, mlm_full, kl_global, kl_local; "
                         f"missing {', '.join(missing)}")
    kl = lam * (terms["kl_global"] + terms["kl_local"])
    return (0.5 * terms["mlm_dropped"] + 0.5 * terms["mlm_full"] if full_mlm else terms["mlm_dropped"]) + kl


def check_total_loss(answer: Any, terms: Mapping[str, float], lam: float = DEFAULT_LAM,
                     full_mlm: bool = True) -> Feedback:
    """``answer``: the loss of a full step with these ``terms`` (ScTDOutput.terms()) and weight ``lam``."""
    return check_number(answer, solution_total_loss(terms, lam, full_mlm), "the full step's loss",
                        "Eq. 4: half of each MLM loss, plus lambda times the sum of the two KL terms",
                        rel_tol=1e-4)
