"""Inference the TokenDrop + BucketSampler way (Nagarajan & Raghunathan 2023, Section 3.2).

- Real-time (batch size 1): drop a fraction of each input's stopwords before the forward pass
  (:func:`tdnotebooks.finetuning.tokendrop.drop_stopwords_for_inference`); :func:`latency_at_batch_size_1` measures
  median latency and accuracy for a drop rate: end to end (text in, label out: tokenize, find the stopwords,
  drop, forward, argmax), the figure a user gets, and the forward pass alone beside it.
- Server mode (many requests at once): :func:`predict` with ``batching="bucketed"`` groups requests of
  similar length (BucketSampler with BatchCap = HWCap, i.e. ``batch_cap=False``), optionally trims them
  with TokenDrop (Algorithm 3, ``trim_to``), and returns predictions in the original order;
  ``batching="random"`` is the baseline of random batches padded to their longest member.

Neither is in the reference code (the paper's Section 3.2 only): the defaults here are the package's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tdnotebooks.checks import check_classifier, check_max_length, check_split
from tdnotebooks.finetuning.bucketing import BucketSampler
from tdnotebooks.finetuning.collate import PadToBatchMax
from tdnotebooks.padding import PaddingStats, random_batches
from tdnotebooks.validation import check_choice, check_int

__all__ = ["BATCHINGS", "Predictions", "check_server_batching", "server_batches", "predict", "LatencyResult",
           "latency_at_batch_size_1"]

BATCHINGS = ("random", "bucketed", "bucketed_tokendrop")


@dataclass
class Predictions:
    """Logits in the original order of the inputs, plus how they were computed."""

    logits: torch.Tensor
    seconds: float
    padding: PaddingStats

    @property
    def labels(self) -> np.ndarray:
        return self.logits.argmax(-1).numpy()

    def accuracy(self, gold: Sequence[int]) -> float:
        return float((self.labels == np.asarray(gold)).mean())

    @property
    def throughput(self) -> float:
        """Examples per second."""
        return len(self.logits) / self.seconds if self.seconds > 0 else float("inf")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_server_batching(batching: str, *, batch_size: int, token_budget: int | None, bucket_width: int,
                          pad_token_id: int, seed: int, trim_to: str, token_drop: Any) -> None:
    """The batching arguments of every server-mode prediction (:func:`predict`, ``qa.predict_qa``), checked
    before any work: one ValueError naming the argument."""
    from tdnotebooks.finetuning.tokendrop import TRIM_TARGETS, TokenDrop

    check_choice("batching", batching, BATCHINGS)
    check_int("batch_size", batch_size, low=1)
    if token_budget is not None:
        check_int("token_budget", token_budget, low=1)
    check_int("bucket_width", bucket_width, low=1)
    check_int("pad_token_id", pad_token_id, low=0)
    check_int("seed", seed, low=0)
    check_choice("trim_to", trim_to, TRIM_TARGETS)
    if token_drop is not None and batching != "bucketed_tokendrop":
        raise ValueError(f"token_drop is only used with batching='bucketed_tokendrop', got batching={batching!r} "
                         f"and token_drop={token_drop!r}")
    if batching == "bucketed_tokendrop" and not (isinstance(token_drop, TokenDrop) and token_drop.mode == "to_length"):
        raise ValueError(f"batching='bucketed_tokendrop' needs token_drop=TokenDrop(mode='to_length'), got {token_drop!r}")


def server_batches(data: Any, batching: str, *, batch_size: int, token_budget: int | None, bucket_width: int,
                   pad_token_id: int, seed: int, trim_to: str = "reachable", token_drop: Any = None,
                   plan_reachable: bool = False, return_positions: bool = False) -> tuple[list, Any]:
    """The batches (row indices) and the collator of one server-mode pass over ``data`` (arguments checked by
    :func:`check_server_batching`).

    ``"random"``: random batches of ``batch_size``, padded to their longest. ``"bucketed"``: BucketSampler
    buckets of ``bucket_width`` with HWCap from ``token_budget`` and no BatchCap (server mode uses the hardware
    cap directly), residual batches merged, in bucket order. ``"bucketed_tokendrop"``: the same batches trimmed
    by ``TokenDropBucketCollator(token_drop, trim_to=trim_to)``; ``plan_reachable=True`` also gives the sampler
    the TokenDrop's reachable lengths, so that each batch can be trimmed to one width; ``return_positions``: the
    collator's ``original_positions`` (QA maps answers back to the text with them).
    """
    if batching == "random":
        return random_batches(len(data), batch_size, seed), PadToBatchMax(pad_token_id)
    from tdnotebooks.finetuning.tokendrop import TokenDropBucketCollator, reachable_lengths

    dropping = batching == "bucketed_tokendrop"
    reachable = reachable_lengths(data, token_drop) if dropping and plan_reachable else None
    sampler = BucketSampler(lengths=data["length"], bucket_width=bucket_width, token_budget=token_budget,
                            base_batch_size=batch_size, batch_cap=token_budget is None, rbm=True, shuffle=False,
                            seed=seed, reachable_lengths=reachable)
    collate = (TokenDropBucketCollator(token_drop, pad_token_id, trim_to=trim_to, bucket_width=bucket_width,
                                       return_positions=return_positions)
               if dropping else PadToBatchMax(pad_token_id))
    return sampler.epoch_batches(0), collate


def _model_inputs(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


@torch.no_grad()
def predict(model: torch.nn.Module, data: Any, *, batching: str = "bucketed", batch_size: int = 64,
            token_budget: int | None = 8192, bucket_width: int = 5, pad_token_id: int = 0,
            token_drop: Any = None, seed: int = 0, amp_dtype: torch.dtype | None = None,
            trim_to: str = "reachable") -> Predictions:
    """Logits for every example of ``data`` (tokenized: ``input_ids``, ``length``), in the original order.

    batching: ``"random"`` — random batches of ``batch_size`` padded to their longest (baseline);
    ``"bucketed"`` — BucketSampler buckets of ``bucket_width`` with HWCap from ``token_budget`` and no
    BatchCap (server mode uses the hardware cap directly), residual batches merged;
    ``"bucketed_tokendrop"`` — the same batches trimmed by dropping stopwords (needs
    ``token_drop=TokenDrop(mode="to_length")`` and data from :func:`tdnotebooks.finetuning.tokendrop.prepare`),
    each batch to ``trim_to``: ``"reachable"`` (default, the package's own reading: only as far as the batch's
    stopword-poorest member can go, so no member is cut below what the batch needs), ``"shortest"`` (Algorithm 3
    as written: the batch's shortest member) or ``"bucket_floor"`` (each request to its bucket's lower edge, as
    the reference code trims training data); see :class:`~tdnotebooks.finetuning.tokendrop.TokenDropBucketCollator`.
    A Hugging Face ``model`` and ``data`` are checked against each other first (:mod:`tdnotebooks.checks`: token
    ids in the vocabulary, lengths within the position embeddings, ``pad_token_id`` the model's pad token).

    Example:
        >>> preds = predict(model, prepare(test, tokenizer), batching="bucketed", pad_token_id=0)  # doctest: +SKIP
        >>> preds.accuracy(test["label"]), preds.padding.padding_fraction                           # doctest: +SKIP

    Warning: the model is put in ``eval()`` mode and left there. Used in notebooks 03 and 04.
    """
    check_server_batching(batching, batch_size=batch_size, token_budget=token_budget, bucket_width=bucket_width,
                          pad_token_id=pad_token_id, seed=seed, trim_to=trim_to, token_drop=token_drop)
    hf_model = model if hasattr(model, "config") else None  # a stand-in without a config: the data's shape only
    if hf_model is not None:
        check_classifier(hf_model, pad_token_id)
    needed = ("length", "stopword_spans", "idx") if batching == "bucketed_tokendrop" else ("length",)
    check_split("data", data, hf_model, labels=False, columns=needed)
    n = len(data)
    device = next(model.parameters()).device
    batches, collate = server_batches(data, batching, batch_size=batch_size, token_budget=token_budget,
                                      bucket_width=bucket_width, pad_token_id=pad_token_id, seed=seed,
                                      trim_to=trim_to, token_drop=token_drop)
    was_training = model.training
    model.eval()
    logits: list[torch.Tensor | None] = [None] * n
    _synchronize(device)
    start = time.perf_counter()
    for batch_indices in batches:
        batch = collate([data[int(i)] for i in batch_indices])
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out = model(**_model_inputs(batch, device)).logits.float().cpu()
        for row, i in enumerate(batch_indices):
            logits[int(i)] = out[row]
    _synchronize(device)
    seconds = time.perf_counter() - start
    model.train(was_training)
    return Predictions(torch.stack(logits), seconds, collate.stats)


@dataclass
class LatencyResult:
    """Batch-size-1 latency of one drop rate.

    ``median_ms``: end to end, text in and label out (tokenize, find the stopwords when ``rate > 0``, drop,
    forward, argmax): what a user of the model sees, the default figure. ``forward_median_ms``: the forward
    pass alone on the same (already dropped) inputs, timed right after each end-to-end call. ``*_p25_ms`` and
    ``*_p75_ms``: the quartiles of the same timings (their spread). NaN where a row was built by hand.
    """

    rate: float
    median_ms: float
    mean_tokens: float
    accuracy: float
    forward_median_ms: float = math.nan
    p25_ms: float = math.nan
    p75_ms: float = math.nan
    forward_p25_ms: float = math.nan
    forward_p75_ms: float = math.nan


@torch.no_grad()
def latency_at_batch_size_1(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], labels: Sequence[int],
                            rate: float, *, seed: int = 0, max_length: int = 128, warmup: int = 3,
                            keep_pronouns: bool = False, repeats: int = 1, unit: str = "type") -> LatencyResult:
    """Real-time inference with TokenDrop at ``rate``: one request at a time; median latency and accuracy.

    Each request is a text: it is tokenized, its stopwords found and ``rate`` of them dropped (seeded by
    ``seed`` and the text's index; ``unit`` as in :class:`~tdnotebooks.finetuning.tokendrop.TokenDrop`), then
    classified alone (batch size 1, no padding) and its label read off (argmax). ``median_ms`` times all of
    that (at ``rate=0`` no stopwords are looked for: tokenize, forward, argmax, as without TokenDrop);
    ``forward_median_ms`` times the forward pass alone. The two are interleaved: each request is timed end to
    end, then forward-only, ``repeats`` times over the whole list (round after round), so both see the same
    machine load. The paper's speed-ups (Fig. 4) are forward-pass figures; end to end, the stopword search
    costs part of what the shorter input saves.

    Example:
        >>> result = latency_at_batch_size_1(model, tokenizer, texts, labels, rate=0.5)    # doctest: +SKIP
        >>> result.median_ms, result.forward_median_ms, result.accuracy                     # doctest: +SKIP

    Warning: single timings on a shared CPU vary by tens of percent: compare rates from interleaved repeats
    (notebook 04 does), not from one call each. Used in notebook 04.
    """
    from tdnotebooks.finetuning.tokendrop import TokenDrop, _check_fast, _find_stopwords, _inference_inputs

    if isinstance(texts, str):
        raise ValueError(f"texts must be a list of strings (one request each), got the str {texts[:40]!r}")
    if len(texts) != len(labels) or len(texts) == 0:
        raise ValueError(f"texts and labels must be non-empty and of equal length, got {len(texts)} and {len(labels)}")
    check_int("warmup", warmup, low=0)
    check_int("repeats", repeats, low=1)
    token_drop = TokenDrop(rate=rate, seed=seed, keep_pronouns=keep_pronouns, unit=unit)
    _check_fast(tokenizer)
    check_max_length(max_length, tokenizer, pair=False)
    texts = list(texts)
    device = next(model.parameters()).device

    def request(i: int) -> tuple[dict[str, torch.Tensor], int]:  # text in, label out
        if rate == 0:
            enc = tokenizer(texts[i], truncation=max_length is not None, max_length=max_length, return_tensors="pt")
            inputs = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        else:
            columns = _find_stopwords(tokenizer, [texts[i]], None, max_length)
            inputs = _inference_inputs(token_drop, {k: v[0] for k, v in columns.items()}, i)
        label = int(model(**_model_inputs(inputs, device)).logits.argmax(-1).item())
        return inputs, label

    was_training = model.training
    model.eval()
    for i in range(min(warmup, len(texts))):
        request(i)
    end_to_end, forward, tokens, correct = [], [], [], 0
    for round_ in range(repeats):
        for i, label in enumerate(labels):
            _synchronize(device)
            start = time.perf_counter()
            inputs, predicted = request(i)
            _synchronize(device)
            end_to_end.append(time.perf_counter() - start)
            model_inputs = _model_inputs(inputs, device)
            _synchronize(device)
            start = time.perf_counter()
            model(**model_inputs)
            _synchronize(device)
            forward.append(time.perf_counter() - start)
            if round_ == 0:
                tokens.append(inputs["input_ids"].shape[1])
                correct += int(predicted == int(label))
    model.train(was_training)

    def quartiles(times: list[float]) -> list[float]:
        return [float(1000 * q) for q in np.percentile(times, [25, 50, 75])]

    (p25, median, p75), (f25, fmedian, f75) = quartiles(end_to_end), quartiles(forward)
    return LatencyResult(rate, median, float(np.mean(tokens)), correct / len(texts), fmedian, p25, p75, f25, f75)
