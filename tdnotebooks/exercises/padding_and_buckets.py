"""Exercises of notebook 01 (padding and buckets): padding, HWCap, BatchCap, LRM and the explorer widget.

Every ``solution_<name>`` computes its answer with the package (:mod:`tdnotebooks.padding`,
:mod:`tdnotebooks.finetuning.bucketing`); every ``check_<name>(answer, ...)`` returns a
:class:`~tdnotebooks.exercises.Feedback` with a hint that names the formula or the widget to use.
The default arguments are the numbers the notebook's questions quote.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tdnotebooks.exercises import Feedback, check_number, unanswered
from tdnotebooks.finetuning.bucketing import BucketSampler
from tdnotebooks.finetuning.lrm import lr_factor
from tdnotebooks.padding import padding_stats
from tdnotebooks.validation import check_int, is_number
from tdnotebooks.validation import check_number as check_number_arg  # check_number here is the exercises' one

__all__ = [
    "EXAMPLE_BATCH", "check_batch_size", "check_hwcap", "check_lr_factor", "check_padding_fraction",
    "check_padding_threshold_width", "solution_batch_size", "solution_hwcap", "solution_lr_factor",
    "solution_padding_fraction", "solution_padding_threshold_width",
]

EXAMPLE_BATCH: tuple[int, ...] = (12, 7, 9, 4)
"""Token lengths of the four sequences of exercise 1's batch."""


# ------------------------------------------------------------------------------ 1. padding of one batch
def solution_padding_fraction(lengths: Sequence[int] = EXAMPLE_BATCH) -> float:
    """Padding fraction of ONE batch holding sequences of ``lengths``, padded to its longest member."""
    if isinstance(lengths, str) or not len(lengths):
        raise ValueError(f"lengths must be a non-empty list of sequence lengths, got {lengths!r}")
    for i, n in enumerate(lengths):
        check_int(f"lengths[{i}]", n, low=1)
    return padding_stats(lengths, [list(range(len(lengths)))]).padding_fraction


def check_padding_fraction(answer: Any, lengths: Sequence[int] = EXAMPLE_BATCH) -> Feedback:
    """Exercise 1: the share of the batch's token slots that are padding (a fraction in [0, 1])."""
    expected = solution_padding_fraction(lengths)
    if is_number(answer) and 1 < float(answer) <= 100 and math.isclose(float(answer) / 100, expected, rel_tol=0.01):
        return Feedback(False, "that is the right share, but in percent: give it as a fraction in [0, 1]")
    stats = padding_stats(lengths, [list(range(len(lengths)))])
    return check_number(
        answer, expected, "the padding fraction of the batch", rel_tol=0.01,
        hint="The batch is padded to its longest member, so it occupies (sequences × longest length) token "
             "slots, of which the sum of the lengths are real; padding fraction = 1 − real / slots.",
        explain=f"{stats.real_tokens} real tokens in {stats.slot_tokens} slots.",
    )


# ------------------------------------------------------------------------------ 2. HWCap from a token budget
def _sampler(length: int, token_budget: int, bucket_width: int, max_length: int) -> BucketSampler:
    return BucketSampler([length], bucket_width=bucket_width, max_length=max_length, token_budget=token_budget)


def solution_hwcap(length: int = 23, token_budget: int = 8192, bucket_width: int = 5, max_length: int = 256) -> int:
    """HWCap of the bucket holding ``length``-token sequences: ``token_budget // longest length of the bucket``."""
    sampler = _sampler(length, token_budget, bucket_width, max_length)
    return sampler.buckets[sampler.bucket_of(length)].hwcap


def check_hwcap(answer: Any, length: int = 23, token_budget: int = 8192, bucket_width: int = 5,
                max_length: int = 256) -> Feedback:
    """Exercise 2: HWCap (largest batch, in sequences) of the bucket of a ``length``-token sequence."""
    expected = solution_hwcap(length, token_budget, bucket_width, max_length)
    if is_number(answer) and answer == token_budget // length != expected:
        return Feedback(False, f"{token_budget:,} // {length} sizes the batch for {length}-token sequences, but "
                               "the bucket also holds longer ones: HWCap must fit the longest length the bucket "
                               "can hold.")
    k = length // bucket_width
    return check_number(
        answer, expected, f"the HWCap of the bucket of {length}-token sequences", rel_tol=0.0,
        hint=f"Find the bucket [k·w, (k+1)·w) of a {length}-token sequence (bucket k = length // w) and the "
             "longest length it can hold (it excludes (k+1)·w); HWCap = token_budget // that length.",
        explain=f"Bucket {k} holds lengths {k * bucket_width}–{(k + 1) * bucket_width - 1}: "
                f"{token_budget:,} // {min((k + 1) * bucket_width - 1, max_length)}.",
    )


# ------------------------------------------------------------------------------ 3. BatchCap at an epoch
def solution_batch_size(length: int = 77, epoch: int = 2, token_budget: int = 8192, bucket_width: int = 5,
                        max_length: int = 256, base_batch_size: int = 32, scaling_factor: float = 2.0) -> int:
    """BatchCap (Algorithm 2, lines 1-4): ``min(HWCap, floor(base × scaling ** epoch))`` for ``length``'s bucket."""
    sampler = BucketSampler([length], bucket_width=bucket_width, max_length=max_length, token_budget=token_budget,
                            base_batch_size=base_batch_size, scaling_factor=scaling_factor)
    return sampler.batch_size_for(sampler.bucket_of(length), epoch)


def check_batch_size(answer: Any, length: int = 77, epoch: int = 2, token_budget: int = 8192, bucket_width: int = 5,
                     max_length: int = 256, base_batch_size: int = 32, scaling_factor: float = 2.0) -> Feedback:
    """Exercise 3: the batch size BucketSampler uses for ``length``-token sequences in epoch index ``epoch`` (from 0)."""
    expected = solution_batch_size(length, epoch, token_budget, bucket_width, max_length, base_batch_size,
                                   scaling_factor)
    epoch_cap = math.floor(base_batch_size * scaling_factor ** epoch)
    hwcap = solution_hwcap(length, token_budget, bucket_width, max_length)
    if is_number(answer) and answer != expected and answer in (epoch_cap, hwcap):
        which = "the epoch's cap (base × scaling^epoch)" if answer == epoch_cap else "the bucket's HWCap"
        return Feedback(False, f"{answer} is {which}, one of the two limits; BatchCap takes the smaller of the two.")
    return check_number(
        answer, expected, f"the batch size of the {length}-token bucket in epoch {epoch + 1} (index {epoch})",
        rel_tol=0.0,
        hint="BatchCap: batch size(bucket, e) = min(HWCap(bucket), floor(base × scaling_factor^e)), where e is the "
             "epoch index (0 in the first epoch), and HWCap comes from the bucket's longest length as in exercise 2.",
        explain=f"min(HWCap {hwcap}, {base_batch_size} × {scaling_factor:g}^{epoch} = {epoch_cap}).",
    )


# ------------------------------------------------------------------------------ 4. LRM
def solution_lr_factor(batch_size: int = 18, base_batch_size: int = 32) -> float:
    """LRM (Section 2.2): the learning-rate factor ``sqrt(batch_size / base_batch_size)``."""
    return lr_factor(batch_size, base_batch_size)


def check_lr_factor(answer: Any, batch_size: int = 18, base_batch_size: int = 32) -> Feedback:
    """Exercise 4: the factor LRM multiplies the learning rate by for a batch of ``batch_size`` sequences."""
    expected = solution_lr_factor(batch_size, base_batch_size)
    if is_number(answer) and math.isclose(float(answer), batch_size / base_batch_size, rel_tol=0.01) \
            and not math.isclose(float(answer), expected, rel_tol=0.01):
        return Feedback(False, "that is the linear scaling rule (lr ∝ batch size); LRM follows the paper's "
                               "square-root scaling law.")
    return check_number(
        answer, expected, f"the LRM factor of a batch of {batch_size}", rel_tol=0.01,
        hint="LRM rescales the base learning rate by the square-root rule of Section 7: compare this batch's "
             "size with the base batch size, then take the square root.",
        explain=f"sqrt({batch_size} / {base_batch_size}); the step is smaller than a full batch's, as it "
                "averages fewer examples.",
    )


# ------------------------------------------------------------------------------ 5. the explorer widget
def padding_by_width(lengths: Sequence[int], widths: Sequence[int] = tuple(range(1, 33)), *, max_length: int = 256,
                     token_budget: int | None = 8192, base_batch_size: int = 32, scaling_factor: float = 2.0,
                     epoch: int = 0, rbm: bool = True, seed: int = 0) -> dict[int, float]:
    """Padding fraction of one epoch for every bucket width, as the notebook's explorer computes it."""
    out = {}
    for width in widths:
        sampler = BucketSampler(np.asarray(lengths), bucket_width=width, max_length=max_length,
                                token_budget=token_budget, base_batch_size=base_batch_size,
                                scaling_factor=scaling_factor, rbm=rbm, seed=seed)
        out[width] = sampler.padding_stats(epoch).padding_fraction
    return out


def solution_padding_threshold_width(lengths: Sequence[int], threshold: float = 0.05, **settings: Any) -> int | None:
    """Smallest bucket width (1-32, the slider's range) whose padding exceeds ``threshold``; None if none does.

    ``settings``: the explorer's other controls (``max_length``, ``token_budget``, ``base_batch_size``,
    ``scaling_factor``, ``epoch``, ``rbm``), see :func:`padding_by_width`.
    """
    check_number_arg("threshold", threshold, low=0, high=1, high_open=True)
    return next((w for w, fraction in padding_by_width(lengths, **settings).items() if fraction > threshold), None)


def check_padding_threshold_width(answer: Any, lengths: Sequence[int], threshold: float = 0.05,
                                  **settings: Any) -> Feedback:
    """Exercise 5: the smallest bucket width at which the explorer reports padding above ``threshold``."""
    what = f"the smallest bucket width with more than {threshold:.0%} padding"
    if answer is None:
        return unanswered(what)
    if not is_number(answer) or float(answer) != int(answer) or not 1 <= answer <= 32:
        return Feedback(False, f"expected a bucket width, an int from 1 to 32 (the slider's range), got {answer!r}")
    answer = int(answer)
    widths = tuple(range(1, answer + 1))
    by_width = padding_by_width(lengths, widths, **settings)
    expected = solution_padding_threshold_width(lengths, threshold, **settings)
    if answer == expected:
        return Feedback(True, f"{what} is {expected}: {by_width[answer]:.2%} padding (width {answer - 1}: "
                              f"{by_width[answer - 1]:.2%})." if answer > 1 else f"{what} is 1.")
    if by_width[answer] <= threshold:
        return Feedback(False, f"at width {answer} the explorer reports {by_width[answer]:.2%} padding, not above "
                               f"{threshold:.0%}: move the bucket-width slider further.")
    return Feedback(False, f"padding is above {threshold:.0%} at width {answer}, but already at a smaller width: "
                           "start the bucket-width slider at 1 and move it one step at a time, reading the "
                           "BucketSampler row's padding.")
