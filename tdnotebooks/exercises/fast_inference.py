"""Exercises of notebook 04 (fast inference): inference-time TokenDrop, server-mode batches, throughput.

Each ``solution_<name>`` computes the reference answer with the package (``drop_stopwords_for_inference``,
``inference.predict`` itself), so an answer key cannot drift from what the code does; each
``check_<name>(answer, ...)`` compares a learner's answer with it and returns a
:class:`~tdnotebooks.exercises.Feedback` whose hint names the formula or the control to use.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from tdnotebooks.exercises import Feedback
from tdnotebooks.exercises import check_choice as _check_choice
from tdnotebooks.exercises import check_number as _check_number
from tdnotebooks.validation import is_int

__all__ = [
    "check_length_cut", "check_server_batches", "check_throughput_choice", "check_tokens_left",
    "solution_length_cut", "solution_server_batches", "solution_throughput_choice", "solution_tokens_left",
]

# The numbers the notebook asks about (the checks use them unless told otherwise).
SENTENCE = "The plot is thin, but the acting is so good that you will not care about the ending."
SENTENCE_RATE = 0.5
SERVER_LENGTHS = (6, 7, 7, 8, 8, 9, 9, 9, 9, 11, 12, 13, 14, 14, 32)  # tokens per request
SERVER_BUDGET = 40  # token slots per batch: HWCap = budget // the bucket's longest length
THROUGHPUT_CHOICES = ("a", "b", "c")


# ------------------------------------------------------------------------------ Exercise 1: tokens left
def solution_tokens_left(tokenizer: Any, text: str = SENTENCE, rate: float = SENTENCE_RATE, seed: int = 0) -> int:
    """Tokens the model receives for ``text`` after inference-time TokenDrop at ``rate`` (special tokens included).

    ``drop_stopwords_for_inference`` drops round(rate x n) of the n stopword words (halves rounded up).
    """
    from tdnotebooks.finetuning.tokendrop import drop_stopwords_for_inference

    return int(drop_stopwords_for_inference(tokenizer, text, rate, seed=seed)[0]["input_ids"].shape[1])


def check_tokens_left(answer: Any, tokenizer: Any, text: str = SENTENCE, rate: float = SENTENCE_RATE) -> Feedback:
    """Exercise 1: how many tokens are left of ``text`` at drop rate ``rate``?"""
    return _check_number(
        answer, solution_tokens_left(tokenizer, text, rate), f"the tokens left at rate {rate}",
        hint="Count the stopword words n (underlined) and the tokens (with [CLS] and [SEP]); TokenDrop drops "
             "round(rate x n) words, halves rounded up. Every stopword of this sentence is one token.",
        abs_tol=0.5,
        explain="Which words go is random (seeded per request); how many is fixed by the rate.")


# ------------------------------------------------------------------------------ Exercise 2: server-mode batches
class _CountingModel(torch.nn.Module):
    """A stand-in classifier for ``predict``: zero logits, no arithmetic (only the batching is of interest)."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # predict() reads the device from the parameters

    def forward(self, input_ids: torch.Tensor, **_: Any) -> SimpleNamespace:
        return SimpleNamespace(logits=torch.zeros(input_ids.shape[0], 2))


def solution_server_batches(lengths: Sequence[int] = SERVER_LENGTHS, token_budget: int = SERVER_BUDGET,
                            bucket_width: int = 5) -> int:
    """Batches ``predict(batching="bucketed")`` runs for requests of these ``lengths`` (BatchCap = HWCap, RBM).

    Runs ``tdnotebooks.finetuning.inference.predict`` itself, with a stand-in model, and counts its batches.
    """
    import datasets

    from tdnotebooks.finetuning.inference import predict

    if len(lengths) == 0 or not all(is_int(n) and n >= 1 for n in lengths):
        raise ValueError(f"lengths must be a non-empty list of ints >= 1, got {lengths!r}")
    lengths = [int(n) for n in lengths]
    data = datasets.Dataset.from_dict({"input_ids": [[1] * n for n in lengths], "length": lengths})
    result = predict(_CountingModel(), data, batching="bucketed", token_budget=token_budget,
                     bucket_width=bucket_width)
    return result.padding.num_batches


def check_server_batches(answer: Any, lengths: Sequence[int] = SERVER_LENGTHS, token_budget: int = SERVER_BUDGET,
                         bucket_width: int = 5) -> Feedback:
    """Exercises 2 and 4: how many batches does bucketed server-mode inference run?"""
    w = bucket_width
    return _check_number(
        answer, solution_server_batches(lengths, token_budget, bucket_width), "the number of batches",
        hint=f"Buckets of width {w}: [0, {w}), [{w}, {2 * w}), ... Each bucket's HWCap = token budget // the "
             f"longest length the bucket can hold ({w - 1}, {2 * w - 1}, ...; the last bucket ends at the longest "
             "request). Cut each bucket into full batches of its HWCap; the leftovers are merged shortest bucket "
             "first (RBM), and a merged batch is closed as soon as it holds the batch size of the bucket being read.",
        abs_tol=0.5,
        explain="Short requests share big batches, long ones get small batches: the token slots per batch stay "
                "near the budget.")


# ------------------------------------------------------------------------------ Exercise 3: throughput
THROUGHPUT_QUESTION = {
    "a": "random batches of 64: every batch is full, so the GPU is kept busiest",
    "b": "bucketed with BatchCap = HWCap: fewer token slots, carried in fewer and larger batches",
    "c": "neither: both run the same requests through the same model, so they do the same work",
}


def solution_throughput_choice(lengths: Sequence[int] | None = None, batch_size: int = 64,
                               token_budget: int = 8192) -> str:
    """The answer to :data:`THROUGHPUT_QUESTION`, from counting slots and batches of both schemes.

    ``lengths``: request lengths (default: 2,048 seeded random lengths in [8, 128]). "b" when bucketing
    (``BucketSampler`` with BatchCap = HWCap, as ``predict`` builds it) needs fewer token slots and no more
    forward passes than random batches, "a" when random batches need fewer of both, "c" when both are equal.
    """
    from tdnotebooks.finetuning.bucketing import BucketSampler
    from tdnotebooks.padding import padding_stats, random_batches

    if lengths is None:
        lengths = np.random.default_rng(0).integers(8, 129, size=2048)
    lengths = np.asarray(lengths, dtype=np.int64)
    random = padding_stats(lengths, random_batches(len(lengths), batch_size))
    bucketed = BucketSampler(lengths, token_budget=token_budget, batch_cap=False, shuffle=False).padding_stats(0)
    a, b = (random.slot_tokens, random.num_batches), (bucketed.slot_tokens, bucketed.num_batches)
    if a == b:
        return "c"
    if b[0] <= a[0] and b[1] <= a[1]:
        return "b"
    if a[0] <= b[0] and a[1] <= b[1]:
        return "a"
    raise ValueError(f"no clear winner for these lengths: random {a}, bucketed {b} (slots, batches)")


def check_throughput_choice(answer: Any) -> Feedback:
    """Exercise 3: which batching gives the most throughput in server mode, and why ('a', 'b' or 'c')?"""
    if answer is not None and not isinstance(answer, str):
        return Feedback(False, f"answer one of {', '.join(map(repr, THROUGHPUT_CHOICES))}, got {answer!r}")
    return _check_choice(
        answer, solution_throughput_choice(), THROUGHPUT_CHOICES, "'a', 'b' or 'c'",
        hint="Is padding free? The model computes on every token slot, padded or not. Count the slots of each "
             "scheme, and how many requests one forward pass carries.",
        explain="Bucketing removes most padding, and BatchCap = HWCap lets the short requests fill the hardware "
                "(the paper's 4.5x over random batches).")


# ------------------------------------------------------------------------------ Exercise 5: rate 1 (explorer)
def solution_length_cut(tokenizer: Any, texts: Sequence[str], rate: float = 1.0) -> float:
    """Fraction by which the mean request length falls at ``rate``: 1 - mean tokens(rate) / mean tokens(0)."""
    from tdnotebooks.finetuning.tokendrop import drop_stopwords_for_inference

    texts = list(texts)
    if not texts:
        raise ValueError("texts is empty: give the requests")

    def mean_tokens(r: float) -> float:
        return float(np.mean([x["input_ids"].shape[1] for x in drop_stopwords_for_inference(tokenizer, texts, r)]))

    return 1 - mean_tokens(rate) / mean_tokens(0.0)


def check_length_cut(answer: Any, tokenizer: Any, texts: Sequence[str], rate: float = 1.0) -> Feedback:
    """Exercise 5: by what fraction does the mean request length fall at ``rate`` (read from the explorer)?"""
    return _check_number(
        answer, solution_length_cut(tokenizer, texts, rate), f"the cut in mean tokens per request at rate {rate}",
        hint="Move the drop-rate slider to 0 and to 1 and read the tokens per request each time; the cut is "
             "1 - tokens at rate 1 / tokens at rate 0 (a fraction, e.g. 0.25).",
        rel_tol=0.02,
        explain="That is the most the forward pass can save at batch size 1; the measured latency falls by less, "
                "because part of it does not depend on the number of tokens.")
