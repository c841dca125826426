"""Inference the TokenDrop + BucketSampler way (Nagarajan & Raghunathan 2023, Section 3.2).

- Real-time (batch size 1): drop a fraction of each input's stopwords before the forward pass
  (:func:`tdnotebooks.finetuning.tokendrop.drop_stopwords_for_inference`); :func:`latency_at_batch_size_1` measures
  median latency and accuracy for a drop rate.
- Server mode (many requests at once): :func:`predict` with ``batching="bucketed"`` groups requests of
  similar length (BucketSampler with BatchCap = HWCap, i.e. ``batch_cap=False``), optionally trims them
  with TokenDrop (Algorithm 3), and returns predictions in the original order; ``batching="random"``
  is the baseline of random batches padded to their longest member.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tdnotebooks.checks import check_classifier, check_split
from tdnotebooks.finetuning.bucketing import BucketSampler
from tdnotebooks.finetuning.collate import PadToBatchMax
from tdnotebooks.padding import PaddingStats, random_batches
from tdnotebooks.validation import check_choice, check_int

__all__ = ["Predictions", "predict", "LatencyResult", "latency_at_batch_size_1"]

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


def _model_inputs(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


@torch.no_grad()
def predict(model: torch.nn.Module, data: Any, *, batching: str = "bucketed", batch_size: int = 64,
            token_budget: int | None = 8192, bucket_width: int = 5, pad_token_id: int = 0,
            token_drop: Any = None, seed: int = 0, amp_dtype: torch.dtype | None = None) -> Predictions:
    """Logits for every example of ``data`` (tokenized: ``input_ids``, ``length``), in the original order.

    batching: ``"random"`` — random batches of ``batch_size`` padded to their longest (baseline);
    ``"bucketed"`` — BucketSampler buckets of ``bucket_width`` with HWCap from ``token_budget`` and no
    BatchCap (server mode uses the hardware cap directly), residual batches merged;
    ``"bucketed_tokendrop"`` — the same batches trimmed to their shortest member by dropping stopwords
    (needs ``token_drop=TokenDrop(mode="to_length")`` and data from :func:`tdnotebooks.finetuning.tokendrop.prepare`).
    A Hugging Face ``model`` and ``data`` are checked against each other first (:mod:`tdnotebooks.checks`: token
    ids in the vocabulary, lengths within the position embeddings, ``pad_token_id`` the model's pad token).

    Example:
        >>> preds = predict(model, prepare(test, tokenizer), batching="bucketed", pad_token_id=0)  # doctest: +SKIP
        >>> preds.accuracy(test["label"]), preds.padding.padding_fraction                           # doctest: +SKIP

    Warning: the model is put in ``eval()`` mode and left there. Used in notebooks 03 and 04.
    """
    check_choice("batching", batching, BATCHINGS)
    check_int("batch_size", batch_size, low=1)
    if token_budget is not None:
        check_int("token_budget", token_budget, low=1)
    check_int("bucket_width", bucket_width, low=1)
    check_int("pad_token_id", pad_token_id, low=0)
    check_int("seed", seed, low=0)
    if token_drop is not None and batching != "bucketed_tokendrop":
        raise ValueError(f"token_drop is only used with batching='bucketed_tokendrop', got batching={batching!r} "
                         f"and token_drop={token_drop!r}")
    if batching == "bucketed_tokendrop":
        from tdnotebooks.finetuning.tokendrop import TokenDrop

        if not isinstance(token_drop, TokenDrop):
            raise ValueError("batching='bucketed_tokendrop' needs token_drop=TokenDrop(mode='to_length')")
    hf_model = model if hasattr(model, "config") else None  # a stand-in without a config: the data's shape only
    if hf_model is not None:
        check_classifier(hf_model, pad_token_id)
    needed = ("length", "stopword_spans", "idx") if batching == "bucketed_tokendrop" else ("length",)
    check_split("data", data, hf_model, labels=False, columns=needed)
    n = len(data)
    device = next(model.parameters()).device
    if batching == "random":
        batches = random_batches(n, batch_size, seed)
        collate: Any = PadToBatchMax(pad_token_id)
    else:
        sampler = BucketSampler(lengths=data["length"], bucket_width=bucket_width, token_budget=token_budget,
                                base_batch_size=batch_size, batch_cap=token_budget is None, rbm=True,
                                shuffle=False, seed=seed)
        batches = sampler.epoch_batches(0)
        if batching == "bucketed_tokendrop":
            from tdnotebooks.finetuning.tokendrop import TokenDropBucketCollator

            collate = TokenDropBucketCollator(token_drop, pad_token_id, trim_to="reachable")
        else:
            collate = PadToBatchMax(pad_token_id)
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
    rate: float
    median_ms: float
    mean_tokens: float
    accuracy: float


@torch.no_grad()
def latency_at_batch_size_1(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], labels: Sequence[int],
                            rate: float, *, seed: int = 0, max_length: int = 128, warmup: int = 3,
                            keep_pronouns: bool = False) -> LatencyResult:
    """Real-time inference with TokenDrop at ``rate``: one request at a time; median latency and accuracy.

    Each text is tokenized, its stopwords found and ``rate`` of them dropped (seeded by ``seed`` and the text's
    index), then classified alone (batch size 1, no padding). The latency timed is the model's forward pass.

    Example:
        >>> result = latency_at_batch_size_1(model, tokenizer, texts, labels, rate=0.5)    # doctest: +SKIP
        >>> result.median_ms, result.accuracy                                                 # doctest: +SKIP

    Warning: single timings on a shared CPU vary by tens of percent: compare rates from interleaved repeats
    (notebook 04 does), not from one call each. Used in notebook 04.
    """
    from tdnotebooks.finetuning.tokendrop import drop_stopwords_for_inference

    if isinstance(texts, str):
        raise ValueError(f"texts must be a list of strings (one request each), got the str {texts[:40]!r}")
    if len(texts) != len(labels) or len(texts) == 0:
        raise ValueError(f"texts and labels must be non-empty and of equal length, got {len(texts)} and {len(labels)}")
    check_int("warmup", warmup, low=0)
    device = next(model.parameters()).device
    inputs = drop_stopwords_for_inference(tokenizer, list(texts), rate, seed=seed, keep_pronouns=keep_pronouns,
                                          max_length=max_length)
    was_training = model.training
    model.eval()
    for enc in inputs[:warmup]:
        model(**_model_inputs(enc, device))
    times, correct = [], 0
    for enc, label in zip(inputs, labels, strict=True):
        _synchronize(device)
        start = time.perf_counter()
        logits = model(**_model_inputs(enc, device)).logits
        _synchronize(device)
        times.append(time.perf_counter() - start)
        correct += int(logits.argmax(-1).item() == int(label))
    model.train(was_training)
    return LatencyResult(rate, 1000 * statistics.median(times),
                         float(np.mean([enc["input_ids"].shape[1] for enc in inputs])), correct / len(texts))
