"""Exercises of notebook 05 (token dropping in BERT pretraining, Hou et al. 2022).

Each ``solution_`` computes its answer with :mod:`tdnotebooks.pretraining.token_dropping`; each ``check_`` compares a
learner's answer with it and returns a :class:`~tdnotebooks.exercises.Feedback`.

1. :func:`check_layer_split`: the default dropped layers of an L-layer model (first, last; 0-based);
2. :func:`check_keep_count`: tokens a sequence keeps, ceil(keep_fraction * n), at least its forced (special and
   ``[MASK]``) tokens;
3. :func:`check_bert_base_flops`: the forward-FLOPs ratio of BERT-base from the per-layer formula (the papers' split);
4. :func:`check_importance_update`: one step of Hou's moving average, duplicates averaged;
5. :func:`check_flops_widget`: the largest keep fraction at which the tiny model saves 10% (with the widget).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from tdnotebooks.exercises import Feedback, unanswered
from tdnotebooks.exercises import (
    check_number as _check_number,  # aliased: every public check_* name counts as an exercise
)
from tdnotebooks.pretraining.token_dropping import (
    ImportanceTable,
    TokenDroppingConfig,
    flops_ratio,
    keep_counts,
)
from tdnotebooks.validation import is_int

__all__ = [
    "check_bert_base_flops", "check_flops_widget", "check_importance_update", "check_keep_count",
    "check_layer_split", "solution_bert_base_flops", "solution_flops_widget", "solution_importance_update",
    "solution_keep_count", "solution_layer_split",
]


# ----------------------------------------------------------------------------------------------------------
# 1. The default layer split
# ----------------------------------------------------------------------------------------------------------


def solution_layer_split(num_layers: int = 16) -> tuple[int, int]:
    """(first, last) dropped layer, 0-based and inclusive, of the default split (TokenDroppingConfig)."""
    start, end = TokenDroppingConfig().layer_range(num_layers)
    return start, end - 1


def check_layer_split(answer: Any, num_layers: int = 16) -> Feedback:
    """``answer``: (first, last) dropped layer of a ``num_layers``-layer model, 0-based, both included."""
    what = "a pair (first, last), e.g. (3, 9)"
    if answer is None:
        return unanswered(what)
    if (not isinstance(answer, (tuple, list)) or len(answer) != 2
            or not all(is_int(a) for a in answer)):
        return Feedback(False, f"expected {what}: two ints, got {answer!r}")
    first, last = solution_layer_split(num_layers)
    if tuple(int(a) for a in answer) == (first, last):
        return Feedback(True, f"layers {first}..{last} drop tokens: layers 0..{first - 1} see every token, "
                              f"layer {last + 1} (the last) sees every token again.")
    return Feedback(False, f"the dropped range is [L // 2 - 1, L - 1) with L = {num_layers}, layers counted "
                           "from 0 and the end excluded: give the first and the last layer inside it")


# ----------------------------------------------------------------------------------------------------------
# 2. How many tokens a sequence keeps
# ----------------------------------------------------------------------------------------------------------


def solution_keep_count(length: int = 30, num_special: int = 2, num_masked: int = 4,
                        keep_fraction: float = 0.35) -> int:
    """Tokens kept in the dropped layers by a sequence of ``length`` real tokens (keep_counts)."""
    if not 0 <= num_special + num_masked <= length:
        raise ValueError(f"num_special + num_masked must be in [0, length={length}], "
                         f"got {num_special + num_masked}")
    counts = keep_counts(torch.tensor([length]), torch.tensor([num_special + num_masked]),
                         keep_fraction=keep_fraction)
    return int(counts[0])


def check_keep_count(answer: Any, length: int = 30, num_special: int = 2, num_masked: int = 4,
                     keep_fraction: float = 0.35) -> Feedback:
    """``answer``: tokens kept by a sequence of ``length`` real tokens (``num_special`` special ones,
    ``num_masked`` masked with ``[MASK]``, itself a special token) at ``keep_fraction``."""
    expected = solution_keep_count(length, num_special, num_masked, keep_fraction)
    budget = math.ceil(keep_fraction * length - 1e-9)
    forced = num_special + num_masked
    why = (f"ceil({keep_fraction:g} x {length}) = {budget}"
           + (f", but the {forced} special and [MASK] tokens are always kept" if forced > budget else
              f" covers the {forced} special and [MASK] tokens"))
    return _check_number(answer, expected, "the number of kept tokens",
                        "the budget is ceil(keep_fraction x length) (rounded up), and the special and [MASK] "
                        "tokens are kept whatever the budget: take the larger of the two",
                        rel_tol=0.0, abs_tol=1e-9, explain=why + ".")


# ----------------------------------------------------------------------------------------------------------
# 3. The FLOPs ratio of BERT-base, from the formula
# ----------------------------------------------------------------------------------------------------------

BERT_BASE = {"num_layers": 12, "start_layer": 5, "end_layer": 11, "hidden_size": 768, "intermediate_size": 3072}


def solution_bert_base_flops(seq_len: int = 512, keep_fraction: float = 0.5) -> float:
    """Forward FLOPs of BERT-base's 12 layers with dropping (layers 5..10) over without, MLM head left out; the
    split as the papers describe it (``first_layer_full_kv=False``: layer 5 sees the kept tokens only)."""
    return flops_ratio(**BERT_BASE, keep_fraction=keep_fraction, seq_len=seq_len, first_layer_full_kv=False)


def check_bert_base_flops(answer: Any, seq_len: int = 512, keep_fraction: float = 0.5) -> Feedback:
    """``answer``: the forward-FLOPs ratio (with / without dropping) of BERT-base's encoder layers."""
    expected = solution_bert_base_flops(seq_len, keep_fraction)
    return _check_number(answer, expected, "the FLOPs ratio",
                        "cost per layer: 8nh^2 + 4n^2h + 4nhf (h = 768, f = 3072). Six layers run on all "
                        f"n = {seq_len} tokens, six on the k = ceil(keep_fraction x n) kept ones; the n^2 "
                        "(attention) term shrinks by (k/n)^2, not k/n: divide the two sums",
                        rel_tol=0.01,
                        explain="A little below 0.75: in the dropped layers the attention scores, quadratic in "
                                "the length, shrink to a quarter, the rest to half.")


# ----------------------------------------------------------------------------------------------------------
# 4. One update of the importance table, by hand
# ----------------------------------------------------------------------------------------------------------


def solution_importance_update(old: float = 10.0, losses: tuple[float, ...] = (2.0, 4.0, 9.0),
                               beta: float = 0.95) -> float:
    """The id's importance after one step in which it was predicted with ``losses`` (ImportanceTable.update)."""
    table = ImportanceTable(vocab_size=1, beta=beta, initial=old)
    table.update(torch.zeros(len(losses), dtype=torch.long), torch.tensor(losses, dtype=torch.float64))
    return float(table.table[0])


def check_importance_update(answer: Any, old: float = 10.0, losses: tuple[float, ...] = (2.0, 4.0, 9.0),
                            beta: float = 0.95) -> Feedback:
    """``answer``: the new importance of an id at ``old`` predicted with ``losses`` in one step."""
    expected = solution_importance_update(old, losses, beta)
    return _check_number(answer, expected, "the new importance",
                        "one update per step and id: imp = beta x imp + (1 - beta) x m, where m is the mean "
                        "of that id's losses in this step (not the last one, and not one update per loss)",
                        rel_tol=0.0, abs_tol=5e-4,
                        explain=f"{beta:g} x {old:g} + {1 - beta:.2g} x mean{tuple(losses)}: one step moves "
                                f"the importance only {1 - beta:.0%} of the way towards the step's loss.")


# ----------------------------------------------------------------------------------------------------------
# 5. With the widget: how little does the tiny model save?
# ----------------------------------------------------------------------------------------------------------

SLIDER = tuple(round(0.1 + 0.05 * i, 2) for i in range(19))   # the keep-fraction slider: 0.1, 0.15, ..., 1.0


def _tiny_ratio(keep_fraction: float, num_layers: int, block_size: int, hidden_size: int, intermediate_size: int,
                vocab_size: int) -> float:
    """The ratio the widget prints, dropped layers at their default (the first one attending to all tokens, as
    ``flops_ratio`` and ``TokenDroppingConfig`` do by default)."""
    start, end = TokenDroppingConfig().layer_range(num_layers)
    return flops_ratio(num_layers, start, end, keep_fraction, block_size, hidden_size, intermediate_size,
                       num_predictions=round(0.15 * (block_size - 2)), vocab_size=vocab_size)


def solution_flops_widget(num_layers: int = 4, block_size: int = 64, hidden_size: int = 64,
                          intermediate_size: int = 256, vocab_size: int = 30522, target: float = 0.9) -> float:
    """The largest keep fraction on the slider whose FLOPs ratio is at most ``target`` (default layers)."""
    ok = [f for f in SLIDER if _tiny_ratio(f, num_layers, block_size, hidden_size, intermediate_size,
                                           vocab_size) <= target]
    if not ok:
        lowest = _tiny_ratio(SLIDER[0], num_layers, block_size, hidden_size, intermediate_size, vocab_size)
        raise ValueError(f"target must be reachable on the slider, in [{lowest:.3f}, 1], got {target!r}")
    return max(ok)


def check_flops_widget(answer: Any, num_layers: int = 4, block_size: int = 64, hidden_size: int = 64,
                       intermediate_size: int = 256, vocab_size: int = 30522, target: float = 0.9) -> Feedback:
    """``answer``: the largest keep fraction (slider value) at which the tiny model's FLOPs ratio <= target."""
    args = (num_layers, block_size, hidden_size, intermediate_size, vocab_size)
    expected = solution_flops_widget(*args, target=target)
    lowest = _tiny_ratio(SLIDER[0], *args)
    return _check_number(answer, expected, "the keep fraction",
                        f"leave the dropped layers at their default and move the keep-fraction slider: read the "
                        f"printed 'FLOPs with / without dropping' and find the last value at or below "
                        f"{target:g} (answer a slider value, e.g. 0.35)",
                        rel_tol=0.0, abs_tol=1e-6,
                        explain=f"Even at keep fraction 0.1 the ratio is {lowest:.2f}: the MLM head (a "
                                f"{vocab_size:,}-word projection) and the full layers do not shrink, and in a "
                                f"model of width {hidden_size} they dominate.")
