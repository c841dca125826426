"""The pass/fail targets of TokenDrop + BucketSampler, and the accuracy checks that say whether an accuracy
difference means anything (the majority-class rate, the dev set's sampling noise)."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tdnotebooks.bench.finetune.config import BASELINE, PAPER_METHOD

__all__ = ["COMPARISONS", "TARGETS", "accuracy_noise_points", "beats_majority", "evaluate_targets",
           "majority_accuracy"]

# The targets checked for TokenDrop + BucketSampler on every task: (name, comparison, threshold).
TARGETS = (
    ("padding_fraction", "<=", 0.005),          # padding <= 0.5 %
    ("speedup_over_ideal", ">=", 0.9),          # speedup >= 0.9 x ideal speedup
    ("speedup_over_group_by_length", ">", 1.0),  # faster than group_by_length
    ("accuracy_minus_baseline_points", ">=", -1.0),  # dev accuracy at most 1 point below the baseline
)
COMPARISONS: dict[str, Callable[[float, float], bool]] = {"<=": operator.le, ">=": operator.ge, ">": operator.gt}


def evaluate_targets(tasks: Mapping[str, Mapping[str, Any]],
                     corpora: Mapping[str, Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """PASS/FAIL of :data:`TARGETS` for TokenDrop + BucketSampler on every task that ran it, and of the
    padding target on every held-out corpus of the padding pass.

    ``tasks``: the ``"tasks"`` part of the results (each with its ``"methods"`` summary). The padding target
    is read from the whole-split pass (``"padding_at_scale"``) when it ran, else from the training runs.
    ``corpora``: the ``"scale_corpora"`` part (each with its ``"variants"``), checked for padding only.
    A target whose comparison method did not run (group_by_length) is left out. The accuracy target is marked
    ``informative=False`` when the baseline did not beat the majority class (``baseline_beats_majority``):
    it then passes or fails for no reason.
    """
    out = []
    for task, result in tasks.items():
        methods = result["methods"]
        if PAPER_METHOD not in methods:
            continue
        td, base = methods[PAPER_METHOD], methods[BASELINE]
        scale = result.get("padding_at_scale")
        values = {
            "padding_fraction": (scale["variants"][PAPER_METHOD]["padding_fraction"] if scale
                                 else td["padding_fraction"]),
            "speedup_over_ideal": td["speedup_over_ideal"],
            "accuracy_minus_baseline_points": 100 * (td["dev_accuracy_mean"] - base["dev_accuracy_mean"]),
        }
        informative = result.get("baseline_beats_majority", True)
        if "group_by_length" in methods:
            values["speedup_over_group_by_length"] = (methods["group_by_length"]["train_seconds"]
                                                      / td["train_seconds"])
        for name, comparison, threshold in TARGETS:
            if name in values:
                value = values[name]
                out.append({"task": task, "target": name, "value": value, "comparison": comparison,
                            "threshold": threshold, "passed": bool(COMPARISONS[comparison](value, threshold)),
                            "informative": informative if name == "accuracy_minus_baseline_points" else True})
                if name == "padding_fraction":
                    out[-1]["measured_on"] = "whole training split" if scale else "training runs"
    padding = next(t for t in TARGETS if t[0] == "padding_fraction")
    for corpus, result in (corpora or {}).items():
        value = result["variants"][PAPER_METHOD]["padding_fraction"]
        out.append({"task": corpus, "target": padding[0], "value": value, "comparison": padding[1],
                    "threshold": padding[2], "passed": bool(COMPARISONS[padding[1]](value, padding[2])),
                    "informative": True, "measured_on": "held-out corpus, batching only"})
    return out


def majority_accuracy(labels: Sequence[int]) -> float:
    """Accuracy of always predicting the most frequent label: what a model that learned nothing scores."""
    from collections import Counter

    return max(Counter(labels).values()) / len(labels)


def beats_majority(accuracy: float, majority: float, n: int) -> bool:
    """Whether ``accuracy`` exceeds the majority-class rate by more than 2 standard errors (sqrt(m (1-m) / n)).

    When the baseline does not, the models learned (almost) nothing and equal accuracies say nothing.
    """
    return accuracy > majority + 2 * math.sqrt(majority * (1 - majority) / n)


def accuracy_noise_points(accuracy: float, dev_examples: int, seeds: int) -> float:
    """One standard error (points) of a difference of two mean dev accuracies: sqrt(2 p (1-p) / (n seeds)).

    Sampling noise of the dev set only (seed-to-seed variation comes on top): how far apart two equally
    good methods typically land.
    """
    return 100 * math.sqrt(2 * accuracy * (1 - accuracy) / (dev_examples * seeds))
