"""Fine-tuning benchmark: RandomSampler vs group_by_length vs BucketSampler vs TokenDrop + BucketSampler.

``python -m tdnotebooks.bench finetune [--quick] [--out FILE] [--seeds N] [--device cpu|cuda]``

On each bundled task (``rt_sentiment``, ``reviews_long``) the bundled MiniLM classifier is fine-tuned
with every method of :func:`tdnotebooks.finetuning.train.finetune` (the paper's Table 1 comparison, Section 3.1),
from the same initial weights per seed, in one process, one method after the other. Then the
TokenDrop + BucketSampler model of the first seed is used for the two inference settings of Section 3.2:
latency at batch size 1 against the inference drop rate (Fig. 4) and server-mode throughput of random
vs bucketed vs bucketed + TokenDrop batches (Table 3).

Definitions (every figure of the table; ``BENCHMARKS.md`` beside this file explains them for readers):

- real / slot tokens: non-padding tokens / all token positions (``batch size x padded length``) of every
  training batch, summed over all epochs and seeds; pad tokens = slot - real;
  padding fraction = pad / slot.
- epoch seconds: wall time of the training loop only (no evaluation), mean over epochs and seeds.
- speedup = baseline training time / this method's training time (baseline: ``"random"``).
- ideal speedup = baseline slot tokens / this method's real tokens: the speedup a padding-free version of
  the method would get if cost were proportional to tokens. For methods that keep every token this is
  the paper's notion, the baseline's slot / real tokens = 1 / (1 - baseline padding fraction); for
  TokenDrop it also credits the dropped stopwords.
- cpu speedup: the same ratio in CPU seconds of this process (``time.process_time`` around ``finetune``,
  minus its dev evaluations): on a CPU shared with other work, wall time also counts the waiting.
- collate fraction: seconds spent inside the batch collator / training seconds. For
  ``"tokendrop_bucket"`` the collator is the TokenDrop one: this is the TokenDrop overhead.
- padding at scale: the padding of each batching over the *whole* training split with the full run's
  batching settings (token budget 8192, base batch 32, 3 epochs), made by the very sampler and collator
  of training but without a model (:func:`padding_at_scale`): seconds even on a CPU, and what the
  padding target is checked on (with ``--quick`` the training subsets are too small to say anything
  about padding: almost every batch is a merged residual).

Timing fairness: one process, torch threads fixed for the whole run, a warm-up forward/backward on each
fresh model copy before its timed run, method order reversed on odd seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import operator
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tdnotebooks.finetuning.callbacks import FinetuneCallback

__all__ = [
    "BenchConfig", "quick_config", "full_config", "TimedCollate", "RunRecorder", "warm_up", "train_one",
    "summarize", "padding_at_scale", "measure_inference", "evaluate_targets", "majority_accuracy",
    "beats_majority", "accuracy_noise_points", "run_benchmark", "format_table", "format_report", "add_arguments",
    "config_from_args", "write_results", "run",
]

HELP = ("fine-tuning speed and accuracy: RandomSampler vs group_by_length vs BucketSampler vs "
        "TokenDrop + BucketSampler, plus inference latency/throughput")

TASKS = ("rt_sentiment", "reviews_long")
METHODS = ("random", "group_by_length", "bucket", "tokendrop_bucket")  # = tdnotebooks.finetuning.train.METHODS
BASELINE = "random"
PAPER_METHOD = "tokendrop_bucket"
INFERENCE_RATES = (0.0, 0.5, 1.0)
SERVER_BATCHINGS = ("random", "bucketed", "bucketed_tokendrop")
DEFAULT_OUT = "bench-results/finetune.json"

# Batchings compared by the padding-at-scale pass: name -> FinetuneConfig fields.
SCALE_VARIANTS: dict[str, dict[str, Any]] = {
    "random": {"method": "random"},
    "bucket": {"method": "bucket"},
    "tokendrop_bucket_as_written": {"method": "tokendrop_bucket", "order_by_reachable": False,
                                    "trim_to": "shortest"},
    "tokendrop_bucket": {"method": "tokendrop_bucket"},
}

# The targets checked for TokenDrop + BucketSampler on every task: (name, comparison, threshold).
TARGETS = (
    ("padding_fraction", "<=", 0.005),          # padding <= 0.5 %
    ("speedup_over_ideal", ">=", 0.9),          # speedup >= 0.9 x ideal speedup
    ("speedup_over_group_by_length", ">", 1.0),  # faster than group_by_length
    ("accuracy_minus_baseline_points", ">=", -1.0),  # dev accuracy at most 1 point below the baseline
)
COMPARISONS: dict[str, Callable[[float, float], bool]] = {"<=": operator.le, ">=": operator.ge, ">": operator.gt}


# ============================================================================ 1. configuration
@dataclass
class BenchConfig:
    """What one benchmark run does. :func:`quick_config` and :func:`full_config` are the two presets.

    ``train_examples`` / ``dev_examples`` / ``test_examples``: per task, a random subset of that many
    examples (seeded, the same for every method); a missing task or None = the whole split. Latency at
    batch size 1 uses the first ``latency_examples`` test examples; server mode the whole test subset.
    """

    tasks: tuple[str, ...] = TASKS
    methods: tuple[str, ...] = METHODS
    seeds: int = 3
    epochs: int = 3
    num_layers: int | None = None          # None: all 6 layers of the bundled MiniLM
    freeze_embeddings: bool = False
    lr: float = 1e-4
    base_batch_size: int = 32
    token_budget: int = 8192               # HWCap per bucket = token_budget // bucket length (training)
    server_token_budget: int = 8192        # the same for server-mode inference; random batches get
    max_length: int = 128                  # server_token_budget // max_length examples (same peak size)
    train_examples: dict[str, int | None] = field(default_factory=dict)
    dev_examples: dict[str, int | None] = field(default_factory=dict)
    test_examples: dict[str, int | None] = field(default_factory=dict)
    latency_examples: int = 200
    server_repeats: int = 2                # server-mode time = best of this many passes
    device: str | None = None              # None: CUDA when present, else CPU
    threads: int | None = None             # None: torch's current number of threads
    quick: bool = False
    progress: bool = True
    scale_check: bool = True               # padding of every batching over the whole training splits

    def __post_init__(self) -> None:
        self.tasks, self.methods = tuple(self.tasks), tuple(self.methods)
        for name, low in (("seeds", 1), ("epochs", 1), ("base_batch_size", 1), ("latency_examples", 1),
                          ("server_repeats", 1), ("max_length", 2)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        for name in ("num_layers", "threads"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be None or an int >= 1, got {value!r}")
        for name in ("token_budget", "server_token_budget"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < self.max_length:
                raise ValueError(f"{name} must be an int >= max_length ({self.max_length}), got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not self.tasks or any(t not in TASKS for t in self.tasks):
            raise ValueError(f"tasks must be a non-empty selection of {', '.join(TASKS)}, got {self.tasks!r}")
        if BASELINE not in self.methods or any(m not in METHODS for m in self.methods):
            raise ValueError(f"methods must include {BASELINE!r} (the baseline) and come from "
                             f"{', '.join(METHODS)}, got {self.methods!r}")
        for name in ("train_examples", "dev_examples", "test_examples"):
            for task, n in getattr(self, name).items():
                if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 2):
                    raise ValueError(f"{name}[{task!r}] must be None (whole split) or an int >= 2, got {n!r}")

    def finetune_kwargs(self) -> dict[str, Any]:
        """The :class:`tdnotebooks.finetuning.train.FinetuneConfig` fields every method shares."""
        return {"epochs": self.epochs, "lr": self.lr, "base_batch_size": self.base_batch_size,
                "token_budget": self.token_budget, "freeze_embeddings": self.freeze_embeddings,
                "device": self.device, "progress": False}


def quick_config(**overrides: Any) -> BenchConfig:
    """A few minutes on 2 CPU cores: 2 layers, frozen embeddings, small subsets, 1 epoch, 1 seed, 1 thread.

    One torch thread: on a small CPU shared with other work, OpenMP threads wait for each other far more
    than they compute (an AdamW step took 0.1-3 s with 2 threads and about 0.05 s with 1 on a busy 2-core
    machine), which would swamp the differences being measured.
    """
    settings: dict[str, Any] = {
        "quick": True, "seeds": 1, "epochs": 1, "num_layers": 2, "freeze_embeddings": True, "lr": 2e-4,
        "token_budget": 4096, "server_token_budget": 4096, "threads": 1,
        "train_examples": {"rt_sentiment": 384, "reviews_long": 128},
        "dev_examples": {"rt_sentiment": 192, "reviews_long": 96},
        "test_examples": {"rt_sentiment": 192, "reviews_long": 96},
        "latency_examples": 16,
    }
    return BenchConfig(**{**settings, **overrides})


def full_config(**overrides: Any) -> BenchConfig:
    """For a GPU: whole splits, all 6 layers, 3 epochs, 3 seeds."""
    return BenchConfig(**overrides)


# ============================================================================ 2. one timed fine-tuning run
class TimedCollate:
    """A collator wrapper that adds up the seconds spent inside it (how the TokenDrop overhead is measured).

    It keeps the interface :func:`tdnotebooks.finetuning.train.finetune` reads (``stats``); ``inner`` is the
    wrapped collator (``inner.dropped_tokens`` for the TokenDrop ones).
    """

    def __init__(self, inner: Callable) -> None:
        self.inner, self.seconds, self.calls = inner, 0.0, 0

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> Any:
        start = time.perf_counter()
        try:
            return self.inner(examples)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1

    @property
    def stats(self) -> Any:
        return self.inner.stats


class RunRecorder(FinetuneCallback):
    """A :class:`~tdnotebooks.finetuning.callbacks.FinetuneCallback` for one ``finetune`` run: wraps the run's
    collator in a :class:`TimedCollate` and adds up the CPU seconds of the per-epoch dev evaluation, so that
    subtracting them from the CPU time of the whole call leaves the CPU time of training."""

    def __init__(self) -> None:
        self.collate: TimedCollate | None = None
        self.evaluation_cpu_seconds = 0.0
        self._evaluation_start = 0.0

    def on_batching(self, batching: Any) -> None:
        batching.collate = self.collate = TimedCollate(batching.collate)

    def on_evaluate_begin(self, epoch: int) -> None:
        self._evaluation_start = time.process_time()

    def on_evaluate_end(self, epoch: int) -> None:
        self.evaluation_cpu_seconds += time.process_time() - self._evaluation_start


def warm_up(model: Any, train: Any, pad_token_id: int, device: Any) -> None:
    """One small forward/backward (4 training examples) on ``device``, gradients cleared afterwards."""
    import torch

    from tdnotebooks.finetuning.bucketing import PadToBatchMax
    from tdnotebooks.runtime import amp_dtype

    dtype = amp_dtype(device)
    model.to(device).train()
    batch = PadToBatchMax(pad_token_id)([train[i] for i in range(min(4, len(train)))])
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_one(model: Any, train: Any, dev: Any, method: str, seed: int, config: BenchConfig,
              pad_token_id: int, device: Any) -> dict[str, Any]:
    """Warm up, fine-tune ``model`` in place with ``method``; the run's timings, tokens and accuracy."""
    from tdnotebooks.finetuning.train import finetune

    warm_up(model, train, pad_token_id, device)
    recorder = RunRecorder()
    cpu_start = time.process_time()
    history = finetune(model, train, dev, method=method, seed=seed, pad_token_id=pad_token_id,
                       callbacks=[recorder], **config.finetune_kwargs())
    train_cpu_seconds = time.process_time() - cpu_start - recorder.evaluation_cpu_seconds
    timer = recorder.collate
    padding = history.padding
    return {
        "method": method, "seed": seed,
        "train_seconds": history.train_seconds,
        "epoch_seconds": [e["train_seconds"] for e in history.epochs],
        "train_cpu_seconds": train_cpu_seconds,
        "collate_seconds": timer.seconds,
        "real_tokens": padding.real_tokens, "slot_tokens": padding.slot_tokens,
        "num_batches": padding.num_batches, "optimizer_steps": len(history.steps),
        "dropped_tokens": int(getattr(timer.inner, "dropped_tokens", 0)),
        "dev_accuracy": history.final_dev_accuracy,
        "dev_accuracy_per_epoch": [e["dev_accuracy"] for e in history.epochs],
        "train_loss_per_epoch": [e["train_loss"] for e in history.epochs],
    }


# ============================================================================ 3. per-method summary
def summarize(runs: Sequence[Mapping[str, Any]], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per method: token totals over all runs (seeds x epochs), mean times, speedups, accuracy mean/sd."""
    import statistics

    totals: dict[str, dict[str, Any]] = {}
    for method in methods:
        mine = [r for r in runs if r["method"] == method]
        epochs = sum(len(r["epoch_seconds"]) for r in mine)
        accuracies = [r["dev_accuracy"] for r in mine]
        train_seconds = sum(r["train_seconds"] for r in mine)
        real, slots = sum(r["real_tokens"] for r in mine), sum(r["slot_tokens"] for r in mine)
        totals[method] = {
            "seeds": len(mine),
            "real_tokens": real, "slot_tokens": slots, "pad_tokens": slots - real,
            "padding_fraction": (slots - real) / slots,
            "dropped_tokens": sum(r["dropped_tokens"] for r in mine),
            "num_batches": sum(r["num_batches"] for r in mine),
            "train_seconds": train_seconds / len(mine),  # all epochs of one seed, mean over seeds
            "epoch_seconds": train_seconds / epochs,
            "train_cpu_seconds": sum(r["train_cpu_seconds"] for r in mine) / len(mine),
            "collate_fraction": sum(r["collate_seconds"] for r in mine) / train_seconds,
            "dev_accuracy_mean": statistics.fmean(accuracies),
            "dev_accuracy_sd": statistics.stdev(accuracies) if len(accuracies) > 1 else None,
        }
    base = totals[BASELINE]
    for method, t in totals.items():
        t["speedup"] = base["train_seconds"] / t["train_seconds"]
        t["cpu_speedup"] = base["train_cpu_seconds"] / t["train_cpu_seconds"]
        t["ideal_speedup"] = base["slot_tokens"] / t["real_tokens"]
        t["speedup_over_ideal"] = t["speedup"] / t["ideal_speedup"]
        t["token_speedup"] = base["slot_tokens"] / t["slot_tokens"]  # what the method's own slot count predicts
        t["tokendrop_overhead"] = t["collate_fraction"] if method == PAPER_METHOD else None
    return totals


def padding_at_scale(train: Any, pad_token_id: int, *, seeds: int, epochs: int, token_budget: int,
                     base_batch_size: int, variants: Mapping[str, Mapping[str, Any]] = SCALE_VARIANTS,
                     ) -> dict[str, dict[str, Any]]:
    """Real and slot tokens of every batch each batching makes over ``train``: no model, no timing.

    For each variant (:data:`SCALE_VARIANTS`) and seed, :func:`tdnotebooks.finetuning.train.make_batching` builds the
    sampler and collator that training would use; every batch of every epoch goes through the collator.
    Totals over epochs and seeds, per variant, plus the padding fraction of each epoch.
    """
    from tdnotebooks.finetuning.train import FinetuneConfig, make_batching

    rows = train.remove_columns([c for c in ("text",) if c in train.column_names]).to_list()
    out: dict[str, dict[str, Any]] = {}
    for name, fields in variants.items():
        per_epoch = [[0, 0, 0] for _ in range(epochs)]  # real tokens, slot tokens, batches; summed over seeds
        for seed in range(seeds):
            config = FinetuneConfig(token_budget=token_budget, base_batch_size=base_batch_size, seed=seed,
                                    epochs=epochs, progress=False, **fields)
            batching = make_batching(config, train, pad_token_id)
            for epoch in range(epochs):
                batching.set_epoch(epoch)
                before = batching.collate.stats
                for batch in batching.batch_sampler:
                    batching.collate([rows[i] for i in batch])
                after = batching.collate.stats
                per_epoch[epoch][0] += after.real_tokens - before.real_tokens
                per_epoch[epoch][1] += after.slot_tokens - before.slot_tokens
                per_epoch[epoch][2] += after.num_batches - before.num_batches
        real, slots, batches = (sum(counts) for counts in zip(*per_epoch, strict=True))
        out[name] = {"real_tokens": real, "slot_tokens": slots, "pad_tokens": slots - real,
                     "padding_fraction": (slots - real) / slots, "num_batches": batches,
                     "real_tokens_per_epoch": [r for r, _, _ in per_epoch],
                     "slot_tokens_per_epoch": [s_ for _, s_, _ in per_epoch],
                     "padding_fraction_per_epoch": [(s_ - r) / s_ for r, s_, _ in per_epoch]}
    return out


# ============================================================================ 4. inference (Section 3.2)
def measure_inference(model: Any, tokenizer: Any, test: Any, config: BenchConfig, pad_token_id: int,
                      device: Any) -> dict[str, list[dict[str, Any]]]:
    """Latency at batch size 1 per drop rate (Fig. 4) and server-mode throughput per batching (Table 3)."""
    from tdnotebooks.finetuning.inference import latency_at_batch_size_1, predict
    from tdnotebooks.finetuning.tokendrop import TokenDrop
    from tdnotebooks.runtime import amp_dtype

    sample = test.select(range(min(config.latency_examples, len(test))))
    latency = []
    for rate in INFERENCE_RATES:
        r = latency_at_batch_size_1(model, tokenizer, sample["text"], sample["label"], rate,
                                    max_length=config.max_length)
        latency.append({"rate": rate, "median_ms": r.median_ms, "mean_tokens": r.mean_tokens,
                        "accuracy": r.accuracy, "examples": len(sample)})
    for row in latency:
        row["speedup"] = latency[0]["median_ms"] / row["median_ms"]

    common = {"batch_size": max(1, config.server_token_budget // config.max_length),
              "token_budget": config.server_token_budget, "pad_token_id": pad_token_id,
              "amp_dtype": amp_dtype(device)}
    server = []
    for batching in SERVER_BATCHINGS:
        token_drop = TokenDrop(mode="to_length", seed=0) if batching == "bucketed_tokendrop" else None
        predict(model, test.select(range(min(8, len(test)))), batching=batching, token_drop=token_drop, **common)
        passes = [predict(model, test, batching=batching, token_drop=token_drop, **common)
                  for _ in range(config.server_repeats)]
        best = min(passes, key=lambda p: p.seconds)
        server.append({"batching": batching, "seconds": best.seconds, "throughput": best.throughput,
                       "padding_fraction": best.padding.padding_fraction,
                       "real_tokens": best.padding.real_tokens, "slot_tokens": best.padding.slot_tokens,
                       "accuracy": best.accuracy(test["label"]), "examples": len(test)})
    for row in server:
        row["speedup"] = server[0]["seconds"] / row["seconds"]
    return {"latency": latency, "server": server}


# ============================================================================ 5. targets
def evaluate_targets(tasks: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """PASS/FAIL of :data:`TARGETS` for TokenDrop + BucketSampler on every task that ran it.

    ``tasks``: the ``"tasks"`` part of the results (each with its ``"methods"`` summary). The padding target
    is read from the whole-split pass (``"padding_at_scale"``) when it ran, else from the training runs.
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


# ============================================================================ 6. the whole benchmark
def _subset(split: Any, n: int | None) -> Any:
    """A seeded random subset of ``n`` rows (the splits are ordered by label: never take the first n)."""
    if n is None or n >= len(split):
        return split
    return split.shuffle(seed=0).select(range(n))


def _prepare_splits(task: str, config: BenchConfig, tokenizer: Any) -> dict[str, Any]:
    """train / dev / test subsets of ``task``, tokenized once with their stopwords found (TokenDrop's prepare)."""
    from tdnotebooks.data import load_task
    from tdnotebooks.finetuning.tokendrop import prepare

    raw = load_task(task)
    return {name: prepare(_subset(raw[name], getattr(config, f"{name}_examples").get(task)), tokenizer,
                          max_length=config.max_length)
            for name in ("train", "dev", "test")}


def _task_result(splits: Mapping[str, Any], runs: list[dict[str, Any]], config: BenchConfig) -> dict[str, Any]:
    """One task's part of the results: data sizes, per-method summary, accuracy noise and sanity check."""
    train, dev = splits["train"], splits["dev"]
    methods = summarize(runs, config.methods)
    base = methods[BASELINE]
    majority = majority_accuracy(dev["label"])
    return {
        "train_examples": len(train), "dev_examples": len(dev), "test_examples": len(splits["test"]),
        "train_tokens": sum(train["length"]), "mean_length": sum(train["length"]) / len(train),
        "longest": max(train["length"]),
        "paper_ideal_speedup": base["slot_tokens"] / base["real_tokens"],
        "accuracy_noise_points": accuracy_noise_points(base["dev_accuracy_mean"], len(dev), config.seeds),
        "majority_accuracy": majority,
        "baseline_beats_majority": beats_majority(base["dev_accuracy_mean"], majority, len(dev)),
        "methods": methods, "runs": runs,
    }


def _scale_check(task: str, train: Any, config: BenchConfig, tokenizer: Any) -> dict[str, Any]:
    """:func:`padding_at_scale` over the whole training split of ``task`` with the full run's batching
    (with ``--quick``: the full preset's epochs, token budget and base batch; otherwise this run's own)."""
    if config.train_examples.get(task) is not None:  # the runs used a subset: tokenize the whole split
        from tdnotebooks.data import load_task
        from tdnotebooks.finetuning.tokendrop import prepare

        train = prepare(load_task(task)["train"], tokenizer, max_length=config.max_length)
    batching = full_config() if config.quick else config  # the full run's batching, or this run's own
    settings = {"seeds": config.seeds, "epochs": batching.epochs, "token_budget": batching.token_budget,
                "base_batch_size": batching.base_batch_size}
    return {"train_examples": len(train), "settings": settings,
            "variants": padding_at_scale(train, tokenizer.pad_token_id, **settings)}


def _environment(config: BenchConfig, device: Any) -> dict[str, Any]:
    import platform

    import torch
    import transformers

    return {
        "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "quick": config.quick,
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def run_benchmark(config: BenchConfig) -> dict[str, Any]:
    """Run the whole benchmark; the results as a JSON-ready dict (what ``--out`` writes)."""
    import copy
    import gc

    import datasets
    import torch
    from tqdm.auto import tqdm

    from tdnotebooks.models import load_pretrained, load_tokenizer
    from tdnotebooks.runtime import get_device, seed_everything

    started = time.perf_counter()
    device = get_device(config.device)
    threads_before = torch.get_num_threads()
    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        torch.set_num_threads(config.threads or threads_before)  # fixed for every method of the run
        environment = _environment(config, device)
        tokenizer = load_tokenizer()
        pad_token_id = tokenizer.pad_token_id
        splits = {task: _prepare_splits(task, config, tokenizer) for task in config.tasks}

        runs: dict[str, list[dict[str, Any]]] = {task: [] for task in config.tasks}
        inference_models: dict[str, Any] = {}
        bar = tqdm(total=config.seeds * len(config.tasks) * len(config.methods), desc="fine-tuning runs",
                   disable=not config.progress)
        for seed in range(config.seeds):
            seed_everything(seed)  # the new classifier head: the same initial weights for every method
            initial = load_pretrained(kind="classifier", num_labels=2, num_layers=config.num_layers, device="cpu")
            order = config.methods if seed % 2 == 0 else tuple(reversed(config.methods))
            for task in config.tasks:
                for method in order:
                    bar.set_postfix_str(f"seed {seed} {task} {method}")
                    model = copy.deepcopy(initial)
                    runs[task].append(train_one(model, splits[task]["train"], splits[task]["dev"], method, seed,
                                                config, pad_token_id, device))
                    if method == PAPER_METHOD and task not in inference_models:
                        inference_models[task] = model
                    del model
                    gc.collect()
                    bar.update(1)
            del initial
        bar.close()

        tasks: dict[str, Any] = {}
        for task in config.tasks:
            tasks[task] = _task_result(splits[task], runs[task], config)
            if config.scale_check:
                tasks[task]["padding_at_scale"] = _scale_check(task, splits[task]["train"], config, tokenizer)
            if task in inference_models:
                tasks[task]["inference"] = measure_inference(inference_models[task], tokenizer,
                                                             splits[task]["test"], config, pad_token_id, device)
        environment["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        targets = evaluate_targets(tasks)
        return {
            "benchmark": "finetune", "environment": environment,
            "config": {**asdict(config), "finetune": config.finetune_kwargs()},
            "tasks": tasks, "targets": targets, "all_targets_met": all(t["passed"] for t in targets),
            "wall_seconds": time.perf_counter() - started,
        }
    finally:
        torch.set_num_threads(threads_before)
        if bars_were_on:
            datasets.enable_progress_bars()


# ============================================================================ 7. the report
def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain-text table: the first two columns left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def _pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}"


# target -> (label, how to show its value and threshold)
TARGET_LABELS: dict[str, tuple[str, Callable[[float], str]]] = {
    "padding_fraction": ("TokenDrop+BucketSampler padding", lambda v: f"{100 * v:.2f}%"),
    "speedup_over_ideal": ("speedup / ideal speedup", lambda v: f"{v:.2f}"),
    "speedup_over_group_by_length": ("speedup over group_by_length", lambda v: f"{v:.2f}x"),
    "accuracy_minus_baseline_points": ("dev accuracy - baseline", lambda v: f"{v:+.1f} pt"),
}

TRAINING_HEADERS = ["task", "method", "pad %", "real tok", "pad tok", "s/epoch", "speedup", "ideal",
                    "sp/ideal", "cpu sp", "dev acc %", "sd", "collate %"]
LATENCY_HEADERS = ["task", "drop rate", "median ms", "tokens", "speedup", "acc %", "n"]
SERVER_HEADERS = ["task", "batching", "seconds", "ex/s", "pad %", "speedup", "acc %", "n"]


def _training_rows(tasks: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for task, result in tasks.items():
        for method, m in result["methods"].items():
            sd = m["dev_accuracy_sd"]
            rows.append([task, method + (" (baseline)" if method == BASELINE else ""),
                         _pct(m["padding_fraction"], 2), f"{m['real_tokens']:,}", f"{m['pad_tokens']:,}",
                         f"{m['epoch_seconds']:.2f}", f"{m['speedup']:.2f}x", f"{m['ideal_speedup']:.2f}x",
                         f"{m['speedup_over_ideal']:.2f}", f"{m['cpu_speedup']:.2f}x", _pct(m["dev_accuracy_mean"]),
                         "-" if sd is None else f"{100 * sd:.1f}", _pct(m["collate_fraction"], 2)])
    return rows


SCALE_HEADERS = ["task", "batching", "pad %", "per epoch %", "real tok", "pad tok", "batches"]


def _scale_rows(tasks: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for task, result in tasks.items():
        for name, v in result.get("padding_at_scale", {}).get("variants", {}).items():
            rows.append([task, name, _pct(v["padding_fraction"], 2),
                         " / ".join(_pct(x, 2) for x in v["padding_fraction_per_epoch"]),
                         f"{v['real_tokens']:,}", f"{v['pad_tokens']:,}", f"{v['num_batches']:,}"])
    return rows


def _inference_rows(tasks: Mapping[str, Any]) -> tuple[list[list[Any]], list[list[Any]]]:
    latency, server = [], []
    for task, result in tasks.items():
        for r in result.get("inference", {}).get("latency", []):
            latency.append([task, f"{r['rate']:.1f}", f"{r['median_ms']:.2f}", f"{r['mean_tokens']:.1f}",
                            f"{r['speedup']:.2f}x", _pct(r["accuracy"]), r["examples"]])
        for r in result.get("inference", {}).get("server", []):
            server.append([task, r["batching"], f"{r['seconds']:.3f}", f"{r['throughput']:.1f}",
                           _pct(r["padding_fraction"], 2), f"{r['speedup']:.2f}x", _pct(r["accuracy"]),
                           r["examples"]])
    return latency, server


def _target_lines(results: Mapping[str, Any]) -> list[str]:
    out = ["Targets (TokenDrop + BucketSampler)"]
    for t in results["targets"]:
        label, show = TARGET_LABELS[t["target"]]
        note = "" if t.get("informative", True) else "  (says nothing: the baseline did not learn, see below)"
        if "measured_on" in t:
            note = f"  ({t['measured_on']})"
        out.append(f"  {'PASS' if t['passed'] else 'FAIL'}  {t['task']:<13} {label}: {show(t['value'])} "
                   f"{t['comparison']} {show(t['threshold'])}{note}")
    for task, r in results["tasks"].items():
        if not r["baseline_beats_majority"]:
            out.append(f"  WARNING {task}: baseline dev accuracy "
                       f"{_pct(r['methods'][BASELINE]['dev_accuracy_mean'])}% does not beat always predicting "
                       f"the majority class ({_pct(r['majority_accuracy'])}%) by 2 standard errors: the models "
                       "learned (almost) nothing at this scale.")
    noise = ", ".join(f"{task} +-{r['accuracy_noise_points']:.1f} pt" for task, r in results["tasks"].items())
    out.append(f"Accuracy noise (1 s.e. of a difference of mean dev accuracies, dev-set sampling only): {noise}")
    return out


def format_report(results: Mapping[str, Any]) -> str:
    """The human-readable report of :func:`run_benchmark`'s results (tables, targets, notes)."""
    env, config, tasks = results["environment"], results["config"], results["tasks"]
    gpu = f" ({env['gpu']})" if env["gpu"] else ""
    frozen = ", frozen embeddings" if config["freeze_embeddings"] else ""
    out = [
        f"Fine-tuning benchmark ({'quick' if env['quick'] else 'full'}): device {env['device']}{gpu}, "
        f"{env['threads']} torch threads, torch {env['torch']}",
        f"MiniLM {config['num_layers'] or 6} layers{frozen}, {config['epochs']} epochs x {config['seeds']} seeds, "
        f"lr {config['lr']:g}, base batch {config['base_batch_size']}, token budget {config['token_budget']}",
        "",
        "Training (tokens: totals over all epochs and seeds; s/epoch: wall time of the training loop only;"
        " cpu sp: speedup in process CPU time)",
        format_table(TRAINING_HEADERS, _training_rows(tasks)),
        "",
    ]
    for task, r in tasks.items():
        overhead = r["methods"].get(PAPER_METHOD, {}).get("tokendrop_overhead")
        out.append(f"{task}: {r['train_examples']} train / {r['dev_examples']} dev examples, mean length "
                   f"{r['mean_length']:.1f} tokens; paper's ideal speedup (baseline slots / real tokens) "
                   f"{r['paper_ideal_speedup']:.2f}x; TokenDrop overhead {_pct(overhead, 2)}% of training time")
    out.append("")
    scale_rows = _scale_rows(tasks)
    if scale_rows:
        settings = next(r["padding_at_scale"]["settings"] for r in tasks.values() if "padding_at_scale" in r)
        out += [f"Padding at scale (whole training splits, no model; the full run's batching: token budget "
                f"{settings['token_budget']}, base batch {settings['base_batch_size']}, {settings['epochs']} epochs "
                f"x {settings['seeds']} seeds)",
                format_table(SCALE_HEADERS, scale_rows), ""]
    latency, server = _inference_rows(tasks)
    if latency:
        out += ["Inference at batch size 1 (TokenDrop+BucketSampler model of seed 0; inference-time drop rate)",
                format_table(LATENCY_HEADERS, latency), "",
                f"Server mode (all test examples at once; best of {config['server_repeats']} passes)",
                format_table(SERVER_HEADERS, server), ""]
    out += _target_lines(results)
    if env["quick"]:
        seeds = config["seeds"]
        out.append(f"Quick preset: training subsets, {seeds} seed{'s' if seeds > 1 else ''}, a "
                   f"{config['num_layers'] or 6}-layer model on a small CPU. Accuracy differences within the noise "
                   "above say nothing and the timings are noisy too: read the verdicts as indicative only.")
    out.append(f"Wall time {results['wall_seconds']:.0f} s; load average (1, 5, 15 min) "
               f"{_load(env['load_average_at_start'])} at start, {_load(env['load_average_at_end'])} at end.")
    return "\n".join(out)


def _load(values: Sequence[float] | None) -> str:
    return "n/a" if values is None else "/".join(f"{v:.1f}" for v in values)


# ============================================================================ 8. command line
def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an int >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an int >= {low}, got {value}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m tdnotebooks.bench finetune``."""
    parser.add_argument("--quick", action="store_true",
                        help="minutes on a CPU: 2 layers, frozen embeddings, small subsets, 2 epochs, 1 seed "
                             "(default: the full run for a GPU: whole splits, 6 layers, 3 epochs, 3 seeds)")
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="FILE", help=f"JSON results (default {DEFAULT_OUT})")
    parser.add_argument("--seeds", type=_int_at_least(1), metavar="N", help="number of seeds (0..N-1)")
    parser.add_argument("--epochs", type=_int_at_least(1), metavar="N", help="epochs per fine-tuning run")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available, else cpu")
    parser.add_argument("--threads", type=_int_at_least(1), metavar="N",
                        help="torch CPU threads, fixed for the whole run (default: torch's current setting)")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, metavar="TASK",
                        help=f"subset of {', '.join(TASKS)} (default: both)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-scale-check", action="store_true",
                        help="skip the padding pass over the whole training splits (batching only, no model)")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The :class:`BenchConfig` the options ask for (ValueError for a bad combination, e.g. no CUDA)."""
    from tdnotebooks.runtime import get_device

    overrides: dict[str, Any] = {"progress": not args.no_progress, "scale_check": not args.no_scale_check}
    for name in ("seeds", "epochs", "device", "threads"):  # only what was given replaces the preset's value
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.tasks:
        overrides["tasks"] = tuple(dict.fromkeys(args.tasks))
    config = (quick_config if args.quick else full_config)(**overrides)
    get_device(config.device)  # --device cuda on a machine without CUDA: a clear error now, not later
    return config


def write_results(results: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``results`` as indented JSON, creating the folder."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return out


def run(args: argparse.Namespace) -> int:
    """Entry point of the sub-command: run, print the report, write the JSON."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is bundled: never wait for the hub
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        config = config_from_args(args)
    except ValueError as exc:
        args.parser.error(str(exc))
    results = run_benchmark(config)
    print(format_report(results))
    print(f"\nresults written to {write_results(results, args.out)}")
    return 0
