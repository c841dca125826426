"""Exercises of notebook 03 (fast fine-tuning): Algorithm 3, the ideal speed-up, BatchCap + RBM and LRM.

Each ``solution_<name>`` computes the reference answer with the package (the collator, the sampler, the LR
modulator that training uses), so an answer key cannot drift from what the code does; each
``check_<name>(answer, ...)`` compares a learner's answer with it and returns a
:class:`~tdnotebooks.exercises.Feedback` whose hint names the formula or the control to use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tdnotebooks import validation  # not imported by name: every check_* here is an exercise
from tdnotebooks.exercises import Feedback, unanswered
from tdnotebooks.exercises import check_choice as _check_choice
from tdnotebooks.exercises import check_number as _check_number
from tdnotebooks.padding import PaddingStats
from tdnotebooks.validation import is_int

__all__ = [
    "check_ideal_speedup", "check_lrm_lr", "check_padding_left", "check_scaling_one", "check_steps_per_epoch",
    "check_tokens_to_drop", "solution_ideal_speedup", "solution_lrm_lr", "solution_padding_left",
    "solution_scaling_one", "solution_steps_per_epoch", "solution_tokens_to_drop",
]

# The numbers the notebook asks about (the checks use them unless told otherwise).
TRIM_LENGTHS = (23, 21, 25, 22)  # a batch from one bucket (tokens incl. [CLS] and [SEP])
TRIM_STOPWORDS = (5, 3, 2, 4)  # one-token stopword words each sequence holds (exercise 2)
BUCKET_PROFILE = {12: 40, 17: 25, 22: 9}  # length -> number of training examples of that length
PROFILE_BUDGET, PROFILE_BASE, PROFILE_EPOCH = 256, 8, 1  # token budget, base batch size, epoch index (2nd)
LRM_STEP = {"peak_lr": 5e-4, "total_steps": 40, "step": 30, "batch_size": 13, "base_batch_size": 8}
SCALING_CHOICES = ("fewer", "the same", "more")


def _example(length: int, stopwords: int) -> dict[str, list]:
    """A prepared-looking example of ``length`` tokens whose first ``stopwords`` inner tokens are stopwords."""
    if not 0 <= stopwords <= length - 2:
        raise ValueError(f"stopwords must lie in [0, length - 2] (only inner tokens can be stopwords), "
                         f"got {stopwords} for length {length}")
    return {"input_ids": list(range(100, 100 + length)), "attention_mask": [1] * length,
            "stopword_spans": [[p, p + 1] for p in range(1, 1 + stopwords)]}


def _check_ints(answer: Any, n: int, what: str) -> Feedback | None:
    """None when ``answer`` is a list/tuple of ``n`` ints, else the Feedback that says what is expected."""
    if answer is None:
        return unanswered(what)
    if (not isinstance(answer, (list, tuple)) or len(answer) != n
            or not all(is_int(a) for a in answer)):
        return Feedback(False, f"expected {what}: a list of {n} ints, one per sequence, got {answer!r}")
    return None


# ------------------------------------------------------------------------------ Exercise 1: Algorithm 3
def solution_tokens_to_drop(lengths: Sequence[int] = TRIM_LENGTHS) -> list[int]:
    """Tokens each sequence loses under Algorithm 3 (Tokens_to_drop = cardinality - min_seq_len(batch)).

    Computed by the training collator (``TokenDropBucketCollator``, ``trim_to="shortest"``) on examples with
    enough one-token stopwords, so every sequence can reach the target exactly.
    """
    from tdnotebooks.finetuning.tokendrop import TokenDrop, TokenDropBucketCollator

    if isinstance(lengths, str) or not len(lengths):
        raise ValueError(f"lengths must be a non-empty list of sequence lengths (one batch), got {lengths!r}")
    for i, n in enumerate(lengths):
        validation.check_int(f"lengths[{i}]", n, low=3)     # [CLS], one stopword token, [SEP]
    examples = [_example(n, n - 2) for n in lengths]
    token_drop = TokenDrop(mode="to_length", seed=0)
    target = TokenDropBucketCollator(token_drop, pad_token_id=0, trim_to="shortest").target_length(examples)
    return [token_drop.apply(ex, epoch=0, index=i, target_length=target).dropped_tokens
            for i, ex in enumerate(examples)]


def check_tokens_to_drop(answer: Any, lengths: Sequence[int] = TRIM_LENGTHS) -> Feedback:
    """Exercise 1: how many tokens must each sequence of the batch lose (a list, one int per sequence)?"""
    expected = solution_tokens_to_drop(lengths)
    problem = _check_ints(answer, len(expected), "the tokens each sequence must drop")
    if problem is not None:
        return problem
    if list(answer) == expected:
        return Feedback(True, f"{expected}: every sequence is trimmed to the shortest, {min(lengths)} tokens, so "
                              "the batch needs no padding at all.")
    return Feedback(False, "Algorithm 3: Tokens_to_drop(sample) = cardinality(sample) - min_seq_len(batch). "
                           "Find the shortest sequence first; it loses nothing.")


# ------------------------------------------------------------------------------ Exercise 2: too few stopwords
def solution_padding_left(lengths: Sequence[int] = TRIM_LENGTHS, stopwords: Sequence[int] = TRIM_STOPWORDS,
                          trim_to: str = "shortest") -> int:
    """Padding slots left in the batch after Algorithm 3 when sequence i has only ``stopwords[i]`` stopwords.

    Collated by ``TokenDropBucketCollator`` (as in training): slots - real tokens of the padded batch.
    """
    from tdnotebooks.finetuning.tokendrop import TokenDrop, TokenDropBucketCollator

    if len(lengths) != len(stopwords):
        raise ValueError(f"lengths and stopwords must have one entry per sequence, got {len(lengths)} and "
                         f"{len(stopwords)}")
    collate = TokenDropBucketCollator(TokenDrop(mode="to_length", seed=0), pad_token_id=0, trim_to=trim_to)
    collate([dict(_example(n, s), idx=i) for i, (n, s) in enumerate(zip(lengths, stopwords, strict=True))])
    return collate.stats.pad_tokens


def check_padding_left(answer: Any, lengths: Sequence[int] = TRIM_LENGTHS,
                       stopwords: Sequence[int] = TRIM_STOPWORDS) -> Feedback:
    """Exercise 2: padding slots left when one sequence runs out of stopwords."""
    expected = solution_padding_left(lengths, stopwords)
    reachable = solution_padding_left(lengths, stopwords, trim_to="reachable")
    return _check_number(
        answer, expected, "the padding slots left in the batch",
        hint="A sequence cannot drop more stopwords than it has: find the length each one really reaches, "
             "the batch is as wide as the longest of those, and every shorter sequence is padded up to it.",
        abs_tol=0.5,
        explain=f"The sequence without enough stopwords sets the width; the others were trimmed further than "
                f"needed and padded back up. trim_to='reachable' (FinetuneConfig's default) trims only to that width: "
                f"same width, fewer tokens dropped, {reachable} padding slots.")


# ------------------------------------------------------------------------------ Exercise 3: ideal speed-up
def solution_ideal_speedup(stats: PaddingStats) -> float:
    """Token slots / real tokens (``PaddingStats.ideal_speedup``): the gain if padding cost nothing."""
    if not isinstance(stats, PaddingStats):
        raise ValueError(f"stats must be a PaddingStats (real and slot tokens of an epoch), got {stats!r}")
    return stats.ideal_speedup


def check_ideal_speedup(answer: Any, stats: PaddingStats) -> Feedback:
    """Exercise 3: the ideal speed-up of removing all padding from the baseline's epoch (``stats``)."""
    return _check_number(
        answer, solution_ideal_speedup(stats), "the ideal speed-up",
        hint="If compute is proportional to the token slots, removing all padding leaves only the real tokens: "
             "divide what the model computes on now by what it would compute on then.",
        explain="The padding fraction p and this ratio say the same thing: speed-up = 1 / (1 - p).")


# ------------------------------------------------------------------------------ Exercise 4: BatchCap + RBM
def _profile_lengths(profile: Mapping[int, int]) -> list[int]:
    if not profile or any(not is_int(n) or n < 1 for n in profile.values()):
        raise ValueError(f"profile must map lengths to counts >= 1, got {profile!r}")
    return [length for length, count in sorted(profile.items()) for _ in range(count)]


def solution_steps_per_epoch(profile: Mapping[int, int] = BUCKET_PROFILE, token_budget: int = PROFILE_BUDGET,
                             base_batch_size: int = PROFILE_BASE, epoch: int = PROFILE_EPOCH,
                             scaling_factor: float = 2.0, bucket_width: int = 5, max_length: int = 128) -> int:
    """Optimizer steps of ``epoch`` (0-based) for a length profile: ``BucketSampler.num_batches`` (Algorithm 2)."""
    from tdnotebooks.finetuning.bucketing import BucketSampler

    sampler = BucketSampler(_profile_lengths(profile), bucket_width=bucket_width, max_length=max_length,
                            token_budget=token_budget, base_batch_size=base_batch_size,
                            scaling_factor=scaling_factor, batch_cap=True, rbm=True, seed=0)
    return sampler.num_batches(epoch)


def check_steps_per_epoch(answer: Any, profile: Mapping[int, int] = BUCKET_PROFILE,
                          token_budget: int = PROFILE_BUDGET, base_batch_size: int = PROFILE_BASE,
                          epoch: int = PROFILE_EPOCH) -> Feedback:
    """Exercise 4: optimizer steps in one epoch under BatchCap and RBM, for a given bucket profile."""
    return _check_number(
        answer, solution_steps_per_epoch(profile, token_budget, base_batch_size, epoch),
        f"the optimizer steps of epoch {epoch + 1}",
        hint="Per bucket: batch size = min(HWCap, base x 2^epoch) (BatchCap; epoch 2 is epoch index 1), then "
             "full batches, then a leftover. RBM (Algorithm 2, lines 5-17) walks the leftovers shortest bucket "
             "first and closes the running batch when it reaches the batch size of the bucket being read "
             "(or already holds it before that bucket is read).",
        abs_tol=0.5,
        explain=f"Check it in one line: BucketSampler(lengths, bucket_width=5, max_length=128, "
                f"token_budget={token_budget}, base_batch_size={base_batch_size}).num_batches({epoch}).")


# ------------------------------------------------------------------------------ Exercise 5: LRM
def solution_lrm_lr(peak_lr: float = LRM_STEP["peak_lr"], total_steps: int = LRM_STEP["total_steps"],
                    step: int = LRM_STEP["step"], batch_size: int = LRM_STEP["batch_size"],
                    base_batch_size: int = LRM_STEP["base_batch_size"], warmup_ratio: float = 0.1) -> float:
    """The learning rate step ``step`` (0-based) uses: linear warm-up/decay schedule x LRM's sqrt(b / base).

    Built as ``finetune`` builds it: ``get_linear_schedule_with_warmup`` over ``total_steps`` with
    ``int(warmup_ratio * total_steps)`` warm-up steps, read after ``step`` scheduler steps, then scaled by
    ``LRModulator`` (paper Section 2.2: learning_rate(batch) = base_learning_rate * sqrt(batch_size / base)).
    """
    import torch
    from transformers import get_linear_schedule_with_warmup

    from tdnotebooks.finetuning.lrm import LRModulator

    validation.check_int("total_steps", total_steps, low=1)
    validation.check_int("step", step, low=0, high=total_steps - 1)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak_lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(warmup_ratio * total_steps), total_steps)
    for _ in range(step):
        optimizer.step()
        scheduler.step()
    with LRModulator(optimizer, base_batch_size).modulated(batch_size):
        return float(optimizer.param_groups[0]["lr"])


def check_lrm_lr(answer: Any, **step: Any) -> Feedback:
    """Exercise 5: the learning rate LRM gives one step (keywords as :func:`solution_lrm_lr`)."""
    return _check_number(
        answer, solution_lrm_lr(**step), "the learning rate of the step",
        hint="Two factors: the schedule (after the warm-up it decays linearly, peak x (total - step) / "
             "(total - warm-up steps)) and LRM, which multiplies it by sqrt(batch size / base batch size).",
        explain="A batch larger than the base gets a larger learning rate, by the square root of the size ratio.")


# ------------------------------------------------------------------------------ Exercise 6: scaling factor 1
def solution_scaling_one(lengths: Sequence[int], base_batch_size: int, token_budget: int | None,
                         bucket_width: int = 5) -> str:
    """Steps of epoch 2 compared with epoch 1 when the scaling factor is 1: "fewer", "the same" or "more"."""
    from tdnotebooks.finetuning.bucketing import BucketSampler

    sampler = BucketSampler(list(lengths), bucket_width=bucket_width, token_budget=token_budget,
                            base_batch_size=base_batch_size, scaling_factor=1.0, seed=0)
    first, second = sampler.num_batches(0), sampler.num_batches(1)
    return SCALING_CHOICES[(second > first) - (second < first) + 1]


def check_scaling_one(answer: Any, lengths: Sequence[int], base_batch_size: int, token_budget: int | None,
                      bucket_width: int = 5) -> Feedback:
    """Exercise 6 (explorer): with scaling factor 1, does epoch 2 take fewer, the same or more steps?"""
    if answer is not None and not isinstance(answer, str):
        return Feedback(False, f"answer one of {', '.join(map(repr, SCALING_CHOICES))}, got {answer!r}")
    return _check_choice(
        answer, solution_scaling_one(lengths, base_batch_size, token_budget, bucket_width), SCALING_CHOICES,
        "'fewer', 'the same' or 'more'",
        hint="BatchCap: batch size = min(HWCap, base x scaling_factor^epoch). What is 1^epoch? Then compare with "
             "the explorer: method 'bucket', scaling 1.",
        explain="With scaling factor 1 the cap stays at the base batch size, so every epoch cuts the same batch "
                "sizes: BatchCap never grows and the later epochs are no cheaper.")
