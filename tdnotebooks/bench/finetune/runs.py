"""What the fine-tuning benchmark measures: timed fine-tuning runs of every method (observed through a
:class:`~tdnotebooks.finetuning.callbacks.FinetuneCallback`), their per-method summary, the padding of every
batching over whole training splits (no model), and inference latency and throughput; :func:`run_benchmark`
runs them all, and the QA and seq2seq rows of :mod:`~tdnotebooks.bench.finetune.qa_seq2seq`."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from tdnotebooks.bench.common import environment, fixed_torch_threads, load_average
from tdnotebooks.bench.finetune.config import (
    BASELINE,
    INFERENCE_RATES,
    PAPER_METHOD,
    SERVER_BATCHINGS,
    BenchConfig,
    full_config,
)
from tdnotebooks.bench.finetune.qa_seq2seq import evaluate_qa_seq2seq_targets, run_qa_seq2seq
from tdnotebooks.bench.finetune.targets import (
    accuracy_noise_points,
    beats_majority,
    evaluate_targets,
    majority_accuracy,
)
from tdnotebooks.finetuning.callbacks import FinetuneCallback

__all__ = ["SCALE_VARIANTS", "RunRecorder", "TimedCollate", "measure_inference", "padding_at_scale", "padding_on_corpora",
           "prepare_splits", "run_benchmark", "scale_variants", "summarize", "train_one", "warm_up"]

# Batchings compared by the padding-at-scale pass: name -> FinetuneConfig fields.
SCALE_VARIANTS: dict[str, dict[str, Any]] = {
    "random": {"method": "random"},
    "bucket": {"method": "bucket"},
    "tokendrop_bucket_as_written": {"method": "tokendrop_bucket", "order_by_reachable": False,
                                    "trim_to": "shortest"},
    "tokendrop_bucket": {"method": "tokendrop_bucket"},
}
# The default with Algorithm 2's merging (the default before TokenDrop-aware merging): compared as well
# where FinetuneConfig has the switch (see :func:`scale_variants`).
RBM_BUCKET_ORDER = ("tokendrop_bucket_rbm_bucket_order", {"method": "tokendrop_bucket", "rbm_by_reachable": False})


def scale_variants() -> dict[str, dict[str, Any]]:
    """:data:`SCALE_VARIANTS`, plus the default with Algorithm 2's merging where ``FinetuneConfig`` has
    ``rbm_by_reachable``."""
    import dataclasses

    from tdnotebooks.finetuning.train import FinetuneConfig

    variants = dict(SCALE_VARIANTS)
    if "rbm_by_reachable" in {f.name for f in dataclasses.fields(FinetuneConfig)}:
        name, fields = RBM_BUCKET_ORDER
        variants = {**{k: v for k, v in variants.items() if k != "tokendrop_bucket"}, name: fields,
                    "tokendrop_bucket": variants["tokendrop_bucket"]}
    return variants


# ============================================================================ 1. one timed fine-tuning run
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

    from tdnotebooks.finetuning.collate import PadToBatchMax
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


# ============================================================================ 2. per-method summary
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
                     base_batch_size: int, variants: Mapping[str, Mapping[str, Any]] | None = None,
                     ) -> dict[str, dict[str, Any]]:
    """Real and slot tokens of every batch each batching makes over ``train``: no model, no timing.

    For each variant (default :func:`scale_variants`) and seed, :func:`tdnotebooks.finetuning.padding_plan.plan_epochs`
    collates every batch of every epoch with the very sampler and collator training would use. Totals over
    epochs and seeds, per variant, plus the padding fraction of each epoch.
    """
    from tdnotebooks.finetuning.padding_plan import plan_epochs
    from tdnotebooks.finetuning.train import FinetuneConfig

    out: dict[str, dict[str, Any]] = {}
    for name, fields in (scale_variants() if variants is None else variants).items():
        per_epoch = [[0, 0, 0] for _ in range(epochs)]  # real tokens, slot tokens, batches; summed over seeds
        for seed in range(seeds):
            config = FinetuneConfig(token_budget=token_budget, base_batch_size=base_batch_size, seed=seed,
                                    epochs=epochs, progress=False, **fields)
            for counts, (_, padding) in zip(per_epoch, plan_epochs(config, train, pad_token_id), strict=True):
                counts[0] += padding.real_tokens
                counts[1] += padding.slot_tokens
                counts[2] += padding.num_batches
        real, slots, batches = (sum(counts) for counts in zip(*per_epoch, strict=True))
        out[name] = {"real_tokens": real, "slot_tokens": slots, "pad_tokens": slots - real,
                     "padding_fraction": (slots - real) / slots, "num_batches": batches,
                     "real_tokens_per_epoch": [r for r, _, _ in per_epoch],
                     "slot_tokens_per_epoch": [s_ for _, s_, _ in per_epoch],
                     "padding_fraction_per_epoch": [(s_ - r) / s_ for r, s_, _ in per_epoch]}
    return out


# ============================================================================ 3. inference (Section 3.2)
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
        latency.append({"rate": rate, "median_ms": r.median_ms, "forward_median_ms": r.forward_median_ms,
                        "mean_tokens": r.mean_tokens, "accuracy": r.accuracy, "examples": len(sample)})
    for row in latency:  # end to end (text in, label out) is the headline; the forward pass alone beside it
        row["speedup"] = latency[0]["median_ms"] / row["median_ms"]
        row["forward_speedup"] = latency[0]["forward_median_ms"] / row["forward_median_ms"]

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


# ============================================================================ 4. the whole benchmark
def _subset(split: Any, n: int | None) -> Any:
    """A seeded random subset of ``n`` rows (the splits are ordered by label: never take the first n)."""
    if n is None or n >= len(split):
        return split
    return split.shuffle(seed=0).select(range(n))


def prepare_splits(task: str, config: BenchConfig, tokenizer: Any) -> dict[str, Any]:
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
    settings = _scale_settings(config)
    return {"train_examples": len(train), "settings": settings,
            "variants": padding_at_scale(train, tokenizer.pad_token_id, **settings)}


def _scale_settings(config: BenchConfig) -> dict[str, int]:
    """The batching of the padding-at-scale pass: the full run's (with ``--quick``) or this run's own."""
    batching = full_config() if config.quick else config
    return {"seeds": config.seeds, "epochs": batching.epochs, "token_budget": batching.token_budget,
            "base_batch_size": batching.base_batch_size}


def padding_on_corpora(config: BenchConfig, tokenizer: Any) -> dict[str, Any]:
    """:func:`padding_at_scale` on every held-out corpus of ``config.scale_corpora``
    (:mod:`~tdnotebooks.bench.finetune.corpora`: real texts of other shapes, batched but never trained on)."""
    from tdnotebooks.bench.finetune.corpora import prepare_corpus

    settings = _scale_settings(config)
    out = {}
    for name in config.scale_corpora:
        train = prepare_corpus(name, tokenizer, max_length=config.max_length)
        out[name] = {"train_examples": len(train), "mean_length": sum(train["length"]) / len(train),
                     "settings": settings, "variants": padding_at_scale(train, tokenizer.pad_token_id, **settings)}
    return out


def _train_every_method(config: BenchConfig, splits: Mapping[str, Any], pad_token_id: int, device: Any
                        ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """Every (seed, task, method) run from the same initial weights per seed; the runs per task and the
    TokenDrop + BucketSampler model of the first seed per task (for the inference measurements)."""
    import copy
    import gc

    from tqdm.auto import tqdm

    from tdnotebooks.models import load_pretrained
    from tdnotebooks.runtime import seed_everything

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
    return runs, inference_models


def run_benchmark(config: BenchConfig) -> dict[str, Any]:
    """Run the whole benchmark; the results as a JSON-ready dict (what ``--out`` writes)."""
    import datasets

    from tdnotebooks.models import load_tokenizer
    from tdnotebooks.runtime import get_device

    started = time.perf_counter()
    device = get_device(config.device)
    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        with fixed_torch_threads(config.threads):  # the same for every method of the run
            env = environment(config, device)
            tokenizer = load_tokenizer()
            splits = {task: prepare_splits(task, config, tokenizer) for task in config.tasks}
            runs, inference_models = (_train_every_method(config, splits, tokenizer.pad_token_id, device)
                                      if config.tasks else ({}, {}))
            tasks: dict[str, Any] = {}
            for task in config.tasks:
                tasks[task] = _task_result(splits[task], runs[task], config)
                if config.scale_check:
                    tasks[task]["padding_at_scale"] = _scale_check(task, splits[task]["train"], config, tokenizer)
                if task in inference_models:
                    tasks[task]["inference"] = measure_inference(inference_models[task], tokenizer, splits[task]["test"],
                                                                 config, tokenizer.pad_token_id, device)
            corpora = padding_on_corpora(config, tokenizer) if config.scale_check and config.tasks else {}
            qa_seq2seq = {}
            if config.qa_seq2seq is not None:  # issue 14: QA and seq2seq rows (their own module)
                qa_seq2seq = run_qa_seq2seq(config, tokenizer, device,
                                            _scale_settings(config) if config.scale_check else None)
        env["load_average_at_end"] = load_average()
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    targets = evaluate_targets(tasks, corpora) + evaluate_qa_seq2seq_targets(qa_seq2seq)
    return {
        "benchmark": "finetune", "environment": env,
        "config": {**asdict(config), "finetune": config.finetune_kwargs()},
        "tasks": tasks, "scale_corpora": corpora, "qa_seq2seq": qa_seq2seq,
        "targets": targets, "all_targets_met": all(t["passed"] for t in targets),
        "wall_seconds": time.perf_counter() - started,
    }
