"""Exercises of notebook 06 (the semantic loss of token dropping, Zhong et al. 2023, Sec. 2).

Each ``solution_`` computes its answer with :mod:`tdnotebooks.pretraining.analysis` or from the notebook's own numbers;
each ``check_`` compares a learner's answer with it and returns a :class:`~tdnotebooks.exercises.Feedback`.

Numbered as in the notebook (each comes before the output that answers it):

1. :func:`check_drift_direction`: is the masked + dropped view closer to the original than the masked one?
2. :func:`check_probe_layer`: the layer at which MiniLM's sentiment probe is best (a prediction);
3. :func:`check_best_pooling`: mean or [CLS] pooling for MiniLM's last layer (a prediction);
4. :func:`check_mask_count`: word pieces masked in a sentence of n pieces (round(p * n), at least 1);
5. :func:`check_kept_at_high_drop`: tokens a view keeps at drop rate 0.95 (the forced tokens win).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tdnotebooks.exercises import Feedback, unanswered
from tdnotebooks.exercises import (
    check_choice as _check_choice,  # aliased: every public check_* name counts as an exercise
)
from tdnotebooks.exercises import check_number as _check_number
from tdnotebooks.pretraining import analysis
from tdnotebooks.validation import is_int

__all__ = [
    "check_best_pooling", "check_drift_direction", "check_kept_at_high_drop", "check_mask_count",
    "check_probe_layer", "solution_best_pooling", "solution_drift_direction", "solution_kept_at_high_drop",
    "solution_mask_count", "solution_probe_layer",
]


def _not_a_word(answer: Any, choices: tuple[str, ...]) -> Feedback | None:
    """Feedback(False) for an answer that is neither None nor a string (check_choice cannot hash a list)."""
    if answer is None or isinstance(answer, str):
        return None
    return Feedback(False, f"answer one of {', '.join(map(repr, choices))} (a string), got {answer!r}")


# ----------------------------------------------------------------------------------------------------------
# 1. How many word pieces are masked
# ----------------------------------------------------------------------------------------------------------


def solution_mask_count(num_pieces: int = 22, mask_prob: float = 0.15) -> int:
    """Word pieces masked in a sentence of ``num_pieces`` (special tokens not counted): analysis.mask_count."""
    return analysis.mask_count(num_pieces, mask_prob)


def check_mask_count(answer: Any, num_pieces: int = 22, mask_prob: float = 0.15) -> Feedback:
    """``answer``: how many of ``num_pieces`` word pieces a view masks at ``mask_prob``."""
    expected = solution_mask_count(num_pieces, mask_prob)
    return _check_number(answer, expected, "the number of masked word pieces",
                        "multiply the number of word pieces by the mask probability and round to the nearest "
                        "integer; a sentence always gets at least one [MASK] ([CLS] and [SEP] are never masked)",
                        rel_tol=0.0, abs_tol=1e-9,
                        explain=f"round({mask_prob:g} x {num_pieces}) = {round(mask_prob * num_pieces)}"
                                + (", raised to 1: every sentence gets at least one [MASK]."
                                   if round(mask_prob * num_pieces) < 1 else "."))


# ----------------------------------------------------------------------------------------------------------
# 2. Closer or further? (a prediction, answered by the notebook's Sentence-BERT numbers)
# ----------------------------------------------------------------------------------------------------------

DIRECTIONS = ("closer", "further")


def solution_drift_direction(masked: float, masked_dropped: float) -> str:
    """The answer "further" when the masked + dropped view's mean cosine is below the masked view's, else "closer"."""
    return "further" if masked_dropped < masked else "closer"


def check_drift_direction(answer: Any, masked: float, masked_dropped: float) -> Feedback:
    """``answer``: "closer" or "further"; ``masked``, ``masked_dropped``: the two views' mean cosines."""
    expected = solution_drift_direction(masked, masked_dropped)
    if (wrong_type := _not_a_word(answer, DIRECTIONS)) is not None:
        return wrong_type
    return _check_choice(answer, expected, DIRECTIONS, "'closer' or 'further'",
                        "compare the two views' mean cosine similarity to the original (higher = closer): the "
                        "dropped view is the masked view with tokens removed, so ask what removing words does to "
                        "the meaning Sentence-BERT reads",
                        explain=f"Mean cosine {masked_dropped:.3f} (masked + dropped) against {masked:.3f} "
                                "(masked)" + (": the middle layers of a token-dropping BERT learn from "
                                              "sentences that have lost more of their meaning."
                                              if expected == "further" else "."))


# ----------------------------------------------------------------------------------------------------------
# 3. How many tokens survive a drop rate of 0.95
# ----------------------------------------------------------------------------------------------------------


def solution_kept_at_high_drop(tokenizer: Any, text: str, mask_prob: float = 0.15, drop_rate: float = 0.95,
                               seed: int = 0) -> int:
    """Tokens ([CLS] and [SEP] included) of the masked + dropped view of ``text`` (the notebook's widget).

    ``text`` must be the first of the widget's sentences: views are seeded by (seed, position in the list).
    """
    view = analysis.corrupted_views(tokenizer, [text], mask_prob=mask_prob, keep_fraction=1.0 - drop_rate,
                                    seed=seed)[0]
    return len(view.dropped_ids)


def check_kept_at_high_drop(answer: Any, tokenizer: Any, text: str, mask_prob: float = 0.15,
                            drop_rate: float = 0.95, seed: int = 0) -> Feedback:
    """``answer``: how many tokens ([CLS], [SEP] included) sentence #0 keeps at ``drop_rate``."""
    expected = solution_kept_at_high_drop(tokenizer, text, mask_prob, drop_rate, seed)
    return _check_number(answer, expected, "the number of kept tokens",
                        "the budget is ceil((1 - drop rate) x length), length counting [CLS] and [SEP]; but "
                        "[CLS], [SEP] and every [MASK] are always kept, and the view keeps the larger of the "
                        "two; the widget prints how many tokens were dropped",
                        rel_tol=0.0, abs_tol=1e-9,
                        explain="At a high drop rate the budget falls below the forced tokens ([CLS], [SEP] "
                                "and the masked ones), so exactly those survive.")


# ----------------------------------------------------------------------------------------------------------
# 4. Where to read a probe
# ----------------------------------------------------------------------------------------------------------


def _check_accuracies(accuracies: Any) -> list[float]:
    if isinstance(accuracies, (str, bytes)) or not isinstance(accuracies, Sequence) or len(accuracies) == 0:
        raise ValueError("accuracies must be a non-empty list of probe accuracies, one per layer "
                         "(analysis.probe_layers)")
    return [float(a) for a in accuracies]


def solution_probe_layer(accuracies: Sequence[float]) -> int:
    """The layer (0 = embeddings) with the highest probe accuracy (the first one on a tie)."""
    values = _check_accuracies(accuracies)
    return values.index(max(values))


def check_probe_layer(answer: Any, accuracies: Sequence[float]) -> Feedback:
    """``answer``: the layer index (0 = embeddings) at which the probe with these ``accuracies`` is best.

    Any layer that ties for the best accuracy is right.
    """
    values = _check_accuracies(accuracies)
    what = f"a layer index from 0 (embeddings) to {len(values) - 1}"
    if answer is None:
        return unanswered(what)
    if not is_int(answer) or not 0 <= answer < len(values):
        return Feedback(False, f"expected {what}, got {answer!r}")   # numpy ints (np.argmax) are fine
    answer = int(answer)
    best = max(values)
    if values[answer] == best:
        where = ("the last layer, the one the model was trained to be read from"
                 if answer == len(values) - 1 else "not the last layer")
        return Feedback(True, f"layer {answer}, {where}: {best:.1%} of the dev snippets right.")
    return Feedback(False, "index 0 is the embedding output, index l the output of layer l: which layer does a "
                           "pretrained model refine its sentence representation towards, and which one was it "
                           "trained to be read from? (The probe chart after the exercises shows every layer.)")


# ----------------------------------------------------------------------------------------------------------
# 5. Which pooling (with the widget)
# ----------------------------------------------------------------------------------------------------------


def _last_layer_by_pooling(probe_cache: Mapping[tuple[str, str], Sequence[float]], model: str) -> dict:
    """{pooling: last-layer accuracy or None when that pooling was not measured yet}."""
    return {p: (float(probe_cache[model, p][-1]) if (model, p) in probe_cache else None) for p in analysis.POOLINGS}


def solution_best_pooling(probe_cache: Mapping[tuple[str, str], Sequence[float]],
                          model: str = "MiniLM (pretrained)") -> str:
    """The pooling ("mean" or "cls") whose probe on ``model``'s last layer is more accurate.

    ``probe_cache``: {(model, pooling): accuracies per layer}; both poolings must be measured.
    """
    last = _last_layer_by_pooling(probe_cache, model)
    missing = [p for p, a in last.items() if a is None]
    if missing:
        raise ValueError(f"probe_cache has no ({model!r}, {missing[0]!r}) entry: measure every pooling first")
    return max(analysis.POOLINGS, key=lambda p: last[p])


def check_best_pooling(answer: Any, probe_cache: Mapping[tuple[str, str], Sequence[float]],
                       model: str = "MiniLM (pretrained)") -> Feedback:
    """``answer``: "mean" or "cls", the better pooling for ``model``'s last layer (ties: both are right)."""
    if answer is None:
        return unanswered("'mean' or 'cls'")
    if (wrong_type := _not_a_word(answer, analysis.POOLINGS)) is not None:
        return wrong_type
    last = _last_layer_by_pooling(probe_cache, model)
    missing = [p for p, a in last.items() if a is None]
    if missing:
        return Feedback(False, f"not measured yet: switch the pooling widget to {missing[0]!r} (it is computed "
                               "once, then cached), then run this cell again")
    best = max(last.values())
    winners = tuple(p for p in analysis.POOLINGS if last[p] == best)
    summary = ", ".join(f"{p} {a:.1%}" for p, a in last.items())
    expected = answer.strip().lower() if answer.strip().lower() in winners else winners[0]
    return _check_choice(answer, expected, analysis.POOLINGS, "'mean' or 'cls'",
                        f"compare the last point of {model}'s line under both poolings: which one gives the "
                        "probe more to read? (Think of how Sentence-BERT makes one vector from a sentence.)",
                        explain=f"last layer: {summary}." + (" MiniLM was trained to be read by mean "
                                                              "pooling; its [CLS] vector alone carries less."
                                                              if winners == ("mean",) else ""))
