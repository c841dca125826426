"""QA and seq2seq rows of the fine-tuning benchmark (issue 14): padding at scale and speed-up vs random batches.

The paper fine-tunes SQuAD and a T5 summarizer as well as GLUE. On the two bundled offline sets of those
shapes, ``shakespeare_qa`` (SQuAD format, windows of 384 tokens with stride 128 over contexts with a long
tail) and ``shakespeare_cast`` (document -> summary), this module measures, for ``"random"`` (the baseline),
``"bucket"`` and ``"tokendrop_bucket"`` batching:

1. **Padding at scale** (:func:`padding_at_scale_qa_seq2seq`; no model, seconds): every batch of every epoch
   that each method makes over the *whole* training split (QA: every feature of :func:`~tdnotebooks.finetuning.qa.prepare_qa`;
   seq2seq: every source of :func:`~tdnotebooks.finetuning.seq2seq.prepare_seq2seq`), with the full run's
   batching (token budget 8192, base batch 32, 3 epochs), made by the very sampler and collator of training
   (:func:`~tdnotebooks.finetuning.padding_plan.plan_epochs`). For seq2seq the **target side** too: the labels
   of a batch are padded (with -100) to its longest target, and TokenDrop does not touch them, so buckets by
   source length leave the target padding about where random batches leave it.
2. **Speed-up vs random batches** (:func:`time_methods`): a small model (QA: ``AutoModelForQuestionAnswering``
   on the bundled MiniLM, :func:`load_qa_model`; seq2seq: :func:`~tdnotebooks.finetuning.seq2seq.load_seq2seq_model`,
   bert2bert) is fine-tuned for one epoch on a training subset with each method, ``repeats`` times,
   interleaved (method order reversed on odd repeats), every run from a deep copy of the same initial weights
   with a warm-up forward/backward first and the same seed (so the same batches: the spread is timing noise
   only). Reported: median seconds per epoch (the training loop only, no evaluation), the spread
   ((max - min) / median), the speed-up = median baseline seconds / median method seconds with the range of
   the per-repeat ratios, the same in process CPU seconds, and the analytic **ideal speed-up** = baseline slot
   tokens / method real tokens (encoder side, as the classification rows define it). For seq2seq the ideal is
   an upper bound: the decoder and its LM head compute on the targets, which no method shortens.

Targets (:func:`evaluate_qa_seq2seq_targets`, per task): ``tokendrop_bucket`` pads at most 0.5 % of the
encoder slots at scale (the classification sets' bar, :data:`~tdnotebooks.bench.finetune.targets.TARGETS`),
and its speed-up over ``random`` (ratio of the medians) is at least :data:`SPEEDUP_BAR` of its ideal speed-up
and above 1 (``BENCHMARKS.md`` gives the reasoning).

The hooks: :func:`~tdnotebooks.bench.finetune.runs.run_benchmark` calls :func:`run_qa_seq2seq` (results key
``"qa_seq2seq"``), :func:`~tdnotebooks.bench.finetune.report.format_report` prints :func:`format_qa_seq2seq`,
and the command line selects the tasks with ``--tasks`` or skips them with ``--no-qa-seq2seq``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tdnotebooks.bench.common import format_table
from tdnotebooks.finetuning.callbacks import FinetuneCallback
from tdnotebooks.validation import check_int

__all__ = ["QA_SEQ2SEQ_METHODS", "QA_SEQ2SEQ_TASKS", "SPEEDUP_BAR", "QASeq2SeqSpec", "evaluate_qa_seq2seq_targets",
           "format_qa_seq2seq", "load_qa_model", "padding_at_scale_qa_seq2seq", "prepare_split", "run_qa_seq2seq",
           "summarize_timings", "time_methods"]

QA_SEQ2SEQ_TASKS = ("shakespeare_qa", "shakespeare_cast")
TASK_KIND = {"shakespeare_qa": "qa", "shakespeare_cast": "seq2seq"}
QA_SEQ2SEQ_METHODS = ("random", "bucket", "tokendrop_bucket")
BASELINE = "random"
PAPER_METHOD = "tokendrop_bucket"
# tokendrop_bucket's speed-up over random (ratio of medians) must reach this fraction of its ideal speed-up.
# Why this bar: BENCHMARKS.md, "QA and seq2seq rows (issue 14)".
SPEEDUP_BAR = 0.5


@dataclass
class QASeq2SeqSpec:
    """What the QA and seq2seq rows do (a field of :class:`~tdnotebooks.bench.finetune.config.BenchConfig`;
    the model size, learning rate, frozen embeddings, token budget, base batch, device and threads are the
    benchmark's own).

    ``train_examples``: per task, the number of raw examples (QA: questions, each one or more windows) of the
    seeded training subset of the timed runs; a missing task or None = the whole split. ``repeats``: timed runs
    per method, interleaved. ``epochs``: epochs per timed run. ``num_layers``: layers of the QA model and of
    each half of the seq2seq model (None: the benchmark's ``num_layers``).
    """

    tasks: tuple[str, ...] = QA_SEQ2SEQ_TASKS
    methods: tuple[str, ...] = QA_SEQ2SEQ_METHODS
    repeats: int = 3
    epochs: int = 1
    train_examples: dict[str, int | None] = field(default_factory=dict)
    qa_max_length: int = 384
    qa_stride: int = 128
    max_source_length: int = 512     # no shakespeare_cast document is longer (max 463 tokens)
    max_target_length: int = 64      # its summaries have 6-34 tokens
    num_layers: int | None = None

    def __post_init__(self) -> None:
        self.tasks, self.methods = tuple(self.tasks), tuple(self.methods)
        if not self.tasks or any(t not in QA_SEQ2SEQ_TASKS for t in self.tasks) or len(set(self.tasks)) < len(self.tasks):
            raise ValueError(f"qa_seq2seq tasks must be a non-empty selection of {', '.join(QA_SEQ2SEQ_TASKS)}, "
                             f"got {self.tasks!r}")
        if (BASELINE not in self.methods or any(m not in QA_SEQ2SEQ_METHODS for m in self.methods)
                or len(set(self.methods)) < len(self.methods)):
            raise ValueError(f"qa_seq2seq methods must include {BASELINE!r} (the baseline) and come from "
                             f"{', '.join(QA_SEQ2SEQ_METHODS)}, got {self.methods!r}")
        for name in ("repeats", "epochs", "qa_max_length", "max_source_length", "max_target_length"):
            check_int(name, getattr(self, name), 1)
        check_int("qa_stride", self.qa_stride, 0, self.qa_max_length - 1)
        if self.num_layers is not None:
            check_int("num_layers", self.num_layers, 1)
        for task, n in self.train_examples.items():
            if task not in QA_SEQ2SEQ_TASKS or (n is not None and (isinstance(n, bool) or not isinstance(n, int)
                                                                   or n < 2)):
                raise ValueError(f"qa_seq2seq train_examples[{task!r}] must be None (whole split) or an int >= 2 "
                                 f"for a task of {', '.join(QA_SEQ2SEQ_TASKS)}, got {n!r}")


# ============================================================================ data and models
def _subset(split: Any, n: int | None) -> Any:
    """A seeded random subset of ``n`` rows (None or more than there are: the whole split)."""
    if n is None or n >= len(split):
        return split
    return split.shuffle(seed=0).select(range(n))


def prepare_split(task: str, spec: QASeq2SeqSpec, tokenizer: Any, examples: int | None = None) -> Any:
    """The training split of ``task`` (a seeded subset of ``examples`` raw examples; None: all) as the training
    loop takes it: QA features (``prepare_qa``, ``spec.qa_max_length`` / ``spec.qa_stride``) or seq2seq
    sources + labels (``prepare_seq2seq``)."""
    from tdnotebooks.data import load_task

    raw = _subset(load_task(task)["train"], examples)
    if TASK_KIND[task] == "qa":
        from tdnotebooks.finetuning.qa import prepare_qa

        return prepare_qa(raw, tokenizer, max_length=spec.qa_max_length, stride=spec.qa_stride)
    from tdnotebooks.finetuning.seq2seq import prepare_seq2seq

    return prepare_seq2seq(raw, tokenizer, max_source_length=spec.max_source_length,
                           max_target_length=spec.max_target_length)


def load_qa_model(num_layers: int | None = None) -> Any:
    """``AutoModelForQuestionAnswering`` on the bundled MiniLM (a new ``qa_outputs`` head), its first
    ``num_layers`` layers only when given (as ``load_pretrained(kind="classifier", num_layers=...)``), on the CPU."""
    import warnings

    from transformers import AutoModelForQuestionAnswering
    from transformers.utils import logging as hf_logging

    from tdnotebooks.models import bundled_model_path

    kwargs = {} if num_layers is None else {"num_hidden_layers": check_int("num_layers", num_layers, 1)}
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # the new head's load report: expected
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return AutoModelForQuestionAnswering.from_pretrained(bundled_model_path(), **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _load_model(task: str, num_layers: int | None) -> Any:
    if TASK_KIND[task] == "qa":
        return load_qa_model(num_layers)
    from tdnotebooks.finetuning.seq2seq import load_seq2seq_model

    return load_seq2seq_model(num_layers=num_layers, device="cpu")


def _training_only(inner: Any) -> Any:
    """``inner`` (a :class:`~tdnotebooks.finetuning.tasks.FinetuneTask`) with its labels and losses but no dev
    evaluation: the timed runs measure training speed only (QA post-processing and seq2seq generation would
    dominate a small run's wall time). Built here, not at import: the task module imports torch."""
    from tdnotebooks.finetuning.tasks import FinetuneTask

    class TrainingOnly(FinetuneTask):
        def __init__(self) -> None:
            self.name, self.label_keys, self.main_metric = inner.name, inner.label_keys, inner.main_metric

        def check(self, model: Any, train: Any, dev: Any, pad_token_id: int | None,
                  columns: Sequence[str] = ("length",), train_name: str = "train") -> None:
            inner.check(model, train, None, pad_token_id, columns, train_name)

        def model_inputs(self, batch: dict, labels: Mapping[str, Any]) -> dict:
            return inner.model_inputs(batch, labels)

        def example_losses(self, outputs: Any, labels: Mapping[str, Any], model: Any) -> Any:
            return inner.example_losses(outputs, labels, model)

        def evaluate(self, model: Any, dev: Any, **kwargs: Any) -> dict[str, float]:
            return {}

    return TrainingOnly()


def _task(task: str, tokenizer: Any) -> Any:
    if TASK_KIND[task] == "qa":
        from tdnotebooks.finetuning.qa import QATask

        return _training_only(QATask())
    from tdnotebooks.finetuning.seq2seq import Seq2SeqTask

    return _training_only(Seq2SeqTask(tokenizer))


# ============================================================================ 1. padding at scale
def _target_lengths(train: Any) -> list[int] | None:
    """Target tokens per example (seq2seq ``labels``), None for a split without a target side (QA)."""
    if "labels" not in train.column_names:
        return None
    return [len(row) for row in train["labels"]]


def padding_at_scale_qa_seq2seq(train: Any, pad_token_id: int, *, seeds: int, epochs: int, token_budget: int,
                                base_batch_size: int, methods: Sequence[str] = QA_SEQ2SEQ_METHODS
                                ) -> dict[str, dict[str, Any]]:
    """Encoder-side (and, for seq2seq, target-side) real and slot tokens of every batch each method makes.

    For each method and seed, :func:`~tdnotebooks.finetuning.padding_plan.plan_epochs` builds the sampler and
    collator of training (``make_batching``) and collates every batch of every epoch: the encoder counts are
    the collator's (TokenDrop's dropped stopwords and trimmed widths included). The target side of a batch is
    counted as :func:`~tdnotebooks.finetuning.collate.collate_labels` pads it: every target padded to the
    batch's longest (real = target tokens, slots = batch size x longest target). Totals over epochs and seeds.
    """
    from tdnotebooks.finetuning.padding_plan import plan_epochs
    from tdnotebooks.finetuning.train import FinetuneConfig

    targets = _target_lengths(train)
    out: dict[str, dict[str, Any]] = {}
    for method in methods:
        per_epoch = [[0, 0, 0, 0, 0] for _ in range(epochs)]  # real, slots, batches, target real, target slots
        for seed in range(seeds):
            config = FinetuneConfig(method=method, token_budget=token_budget, base_batch_size=base_batch_size,
                                    seed=seed, epochs=epochs, progress=False)
            for counts, (batches, padding) in zip(per_epoch, plan_epochs(config, train, pad_token_id), strict=True):
                counts[0] += padding.real_tokens
                counts[1] += padding.slot_tokens
                counts[2] += padding.num_batches
                if targets is not None:
                    for batch in batches:
                        widths = [targets[i] for i in batch]
                        counts[3] += sum(widths)
                        counts[4] += max(widths) * len(widths)
        real, slots, batches, t_real, t_slots = (sum(c) for c in zip(*per_epoch, strict=True))
        row: dict[str, Any] = {
            "real_tokens": real, "slot_tokens": slots, "pad_tokens": slots - real,
            "padding_fraction": (slots - real) / slots, "num_batches": batches,
            "padding_fraction_per_epoch": [(c[1] - c[0]) / c[1] for c in per_epoch],
            "target": None,
        }
        if targets is not None:
            row["target"] = {"real_tokens": t_real, "slot_tokens": t_slots, "pad_tokens": t_slots - t_real,
                             "padding_fraction": (t_slots - t_real) / t_slots,
                             "padding_fraction_per_epoch": [(c[4] - c[3]) / c[4] for c in per_epoch]}
        out[method] = row
    return out


# ============================================================================ 2. timed runs
class _Recorder(FinetuneCallback):
    """Counts the target-side tokens of the batches a run trains on (labels that are not -100 vs all label
    slots), by wrapping the run's collator."""

    def __init__(self) -> None:
        self.target_real = self.target_slots = 0

    def on_batching(self, batching: Any) -> None:
        inner = batching.collate
        recorder = self

        class Counting:
            stats = property(lambda self: inner.stats)

            def __call__(self, examples: Any) -> Any:
                batch = inner(examples)
                labels = batch.get("labels")
                if labels is not None and labels.dim() == 2:
                    recorder.target_real += int(labels.ne(-100).sum())
                    recorder.target_slots += labels.numel()
                return batch

            def __getattr__(self, name: str) -> Any:
                return getattr(inner, name)

        batching.collate = Counting()


def _warm_up(model: Any, train: Any, task: Any, pad_token_id: int, device: Any) -> None:
    """One small forward/backward (4 training examples, the task's inputs and loss), gradients cleared."""
    import torch

    from tdnotebooks.finetuning.collate import PadToBatchMax

    model.to(device).train()
    batch = PadToBatchMax(pad_token_id)([train[i] for i in range(min(4, len(train)))])
    batch = {k: v.to(device) for k, v in batch.items()}
    labels = {key: batch.pop(key) for key in task.label_keys}
    outputs = model(**task.model_inputs(batch, labels))
    task.example_losses(outputs, labels, model).mean().backward()
    model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_once(initial: Any, train: Any, task: Any, method: str, finetune_kwargs: Mapping[str, Any],
                pad_token_id: int, device: Any) -> dict[str, Any]:
    import copy

    from tdnotebooks.finetuning.train import finetune

    model = copy.deepcopy(initial)
    _warm_up(model, train, task, pad_token_id, device)
    recorder = _Recorder()
    cpu_start = time.process_time()
    history = finetune(model, train, None, method=method, seed=0, pad_token_id=pad_token_id, task=task,
                       callbacks=[recorder], **finetune_kwargs)
    cpu_seconds = time.process_time() - cpu_start
    padding = history.padding
    return {"train_seconds": history.train_seconds, "train_cpu_seconds": cpu_seconds,
            "real_tokens": padding.real_tokens, "slot_tokens": padding.slot_tokens,
            "num_batches": padding.num_batches, "optimizer_steps": len(history.steps),
            "target_real_tokens": recorder.target_real, "target_slot_tokens": recorder.target_slots,
            "train_loss": history.epochs[-1]["train_loss"]}


def time_methods(task: str, train: Any, spec: QASeq2SeqSpec, finetune_kwargs: Mapping[str, Any],
                 pad_token_id: int, device: Any, tokenizer: Any, num_layers: int | None = None,
                 progress: Any = None) -> list[dict[str, Any]]:
    """``spec.repeats`` x ``spec.methods`` timed fine-tuning runs of ``task`` on ``train``, interleaved (the
    method order reversed on odd repeats), each from a deep copy of the same initial model, with seed 0."""
    import gc

    from tdnotebooks.runtime import seed_everything

    seed_everything(0)  # the new head (QA) / cross-attention (seq2seq): the same initial weights for every run
    initial = _load_model(task, num_layers)
    fine_task = _task(task, tokenizer)
    runs = []
    for repeat in range(spec.repeats):
        order = spec.methods if repeat % 2 == 0 else tuple(reversed(spec.methods))
        for method in order:
            if progress is not None:
                progress.set_postfix_str(f"{task} {method} repeat {repeat}")
            run = _train_once(initial, train, fine_task, method, finetune_kwargs, pad_token_id, device)
            runs.append({"method": method, "repeat": repeat, **run})
            gc.collect()
            if progress is not None:
                progress.update(1)
    return runs


def summarize_timings(runs: Sequence[Mapping[str, Any]], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per method: tokens (one run's: every repeat trains on the same batches), median / min / max seconds per
    epoch, spread, speed-up over the baseline (ratio of medians, and the range of the per-repeat ratios), CPU
    speed-up, ideal speed-up = baseline slot tokens / this method's real tokens."""
    out: dict[str, dict[str, Any]] = {}
    for method in methods:
        mine = sorted((r for r in runs if r["method"] == method), key=lambda r: r["repeat"])
        first = mine[0]
        epochs = first.get("epochs", 1)
        seconds = [r["train_seconds"] / epochs for r in mine]
        median = statistics.median(seconds)
        t_real, t_slots = first["target_real_tokens"], first["target_slot_tokens"]
        out[method] = {
            "repeats": len(mine),
            "real_tokens": first["real_tokens"], "slot_tokens": first["slot_tokens"],
            "pad_tokens": first["slot_tokens"] - first["real_tokens"],
            "padding_fraction": (first["slot_tokens"] - first["real_tokens"]) / first["slot_tokens"],
            "target_padding_fraction": (t_slots - t_real) / t_slots if t_slots else None,
            "num_batches": first["num_batches"], "optimizer_steps": first["optimizer_steps"],
            "epoch_seconds": seconds, "median_epoch_seconds": median,
            "min_epoch_seconds": min(seconds), "max_epoch_seconds": max(seconds),
            "spread": (max(seconds) - min(seconds)) / median,
            "median_cpu_seconds": statistics.median(r["train_cpu_seconds"] for r in mine),
            "ms_per_1k_real_tokens": 1e6 * median / first["real_tokens"],
            "train_loss": statistics.fmean(r["train_loss"] for r in mine),
        }
    base_runs = {r["repeat"]: r for r in runs if r["method"] == BASELINE}
    base = out[BASELINE]
    for method, m in out.items():
        ratios = [base_runs[r["repeat"]]["train_seconds"] / r["train_seconds"]
                  for r in runs if r["method"] == method and r["repeat"] in base_runs]
        m["speedup"] = base["median_epoch_seconds"] / m["median_epoch_seconds"]
        m["speedup_min"], m["speedup_max"] = min(ratios), max(ratios)
        m["cpu_speedup"] = base["median_cpu_seconds"] / m["median_cpu_seconds"]
        m["ideal_speedup"] = base["slot_tokens"] / m["real_tokens"]
        m["speedup_over_ideal"] = m["speedup"] / m["ideal_speedup"]
    return out


# ============================================================================ the hook of run_benchmark
def run_qa_seq2seq(config: Any, tokenizer: Any, device: Any, scale_settings: Mapping[str, int] | None
                   ) -> dict[str, Any]:
    """Both measurements on every task of ``config.qa_seq2seq``: the padding pass over the whole training split
    with ``scale_settings`` (seeds, epochs, token budget, base batch; None: skipped) and the timed runs with the
    benchmark's model size and batching. The ``"qa_seq2seq"`` part of the results."""
    from tqdm.auto import tqdm

    spec: QASeq2SeqSpec = config.qa_seq2seq
    layers = spec.num_layers if spec.num_layers is not None else config.num_layers
    out: dict[str, Any] = {}
    bar = tqdm(total=len(spec.tasks) * spec.repeats * len(spec.methods), desc="QA / seq2seq timed runs",
               disable=not config.progress)
    for task in spec.tasks:
        started = time.perf_counter()
        n = spec.train_examples.get(task)
        train = prepare_split(task, spec, tokenizer, n)
        finetune_kwargs = {**config.finetune_kwargs(), "epochs": spec.epochs}
        runs = time_methods(task, train, spec, finetune_kwargs, tokenizer.pad_token_id, device, tokenizer,
                            num_layers=layers, progress=bar)
        for run in runs:
            run["epochs"] = spec.epochs
        lengths = list(train["length"])
        result: dict[str, Any] = {
            "kind": TASK_KIND[task], "num_layers": layers,
            "train_examples": _raw_examples(train), "train_features": len(train),
            "mean_length": sum(lengths) / len(lengths), "longest": max(lengths),
            "methods": summarize_timings(runs, spec.methods), "runs": runs,
            "wall_seconds": {"timed_runs": time.perf_counter() - started},  # set-up, models and warm-ups included
        }
        if scale_settings is not None:
            started = time.perf_counter()
            whole = train if n is None else prepare_split(task, spec, tokenizer, None)
            whole_lengths = list(whole["length"])
            result["padding_at_scale"] = {
                "train_features": len(whole), "mean_length": sum(whole_lengths) / len(whole_lengths),
                "settings": dict(scale_settings),
                "variants": padding_at_scale_qa_seq2seq(whole, tokenizer.pad_token_id, methods=spec.methods,
                                                        **scale_settings)}
            result["wall_seconds"]["padding_at_scale"] = time.perf_counter() - started  # tokenization included
        out[task] = result
    bar.close()
    return out


def _raw_examples(train: Any) -> int:
    """Raw examples behind a prepared split (QA: distinct questions of its windows)."""
    if "example_id" in train.column_names:
        return len(set(train["example_id"]))
    return len(train)


# ============================================================================ targets
def evaluate_qa_seq2seq_targets(results: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """PASS/FAIL of ``tokendrop_bucket`` on every task of the ``"qa_seq2seq"`` results that ran it.

    - ``padding_fraction`` (encoder inputs) <= the classification sets' bar (0.5 %), read from the padding pass
      over the whole training split when it ran, else from the timed runs (``measured_on`` says which);
    - ``qa_seq2seq_speedup_over_ideal``: speed-up over ``random`` (ratio of median seconds) >= :data:`SPEEDUP_BAR`
      x the ideal speed-up, and ``qa_seq2seq_speedup`` > 1: faster than random (ratio of the medians; with an
      ideal below 2 the first bar alone would allow a slowdown). The per-repeat ratios are reported, not
      checked: one slow repeat on a busy CPU says nothing about the method.
    """
    from tdnotebooks.bench.finetune.targets import COMPARISONS, TARGETS

    padding = next(t for t in TARGETS if t[0] == "padding_fraction")
    out = []
    for task, result in results.items():
        methods = result["methods"]
        if PAPER_METHOD not in methods:
            continue
        td = methods[PAPER_METHOD]
        scale = result.get("padding_at_scale")
        checks = [
            (padding[0], scale["variants"][PAPER_METHOD]["padding_fraction"] if scale else td["padding_fraction"],
             padding[1], padding[2],
             "whole training split, encoder inputs" if scale else "timed runs' subset, encoder inputs"),
            ("qa_seq2seq_speedup_over_ideal", td["speedup_over_ideal"], ">=", SPEEDUP_BAR, None),
            ("qa_seq2seq_speedup", td["speedup"], ">", 1.0, None),
        ]
        for name, value, comparison, threshold, measured_on in checks:
            out.append({"task": task, "target": name, "value": value, "comparison": comparison,
                        "threshold": threshold, "passed": bool(COMPARISONS[comparison](value, threshold)),
                        "informative": True})
            if measured_on:
                out[-1]["measured_on"] = measured_on
    return out


# ============================================================================ report
def _pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}"


SPEED_HEADERS = ["task", "method", "pad %", "tgt pad %", "real tok", "slot tok", "batches", "s/epoch (median)",
                 "min-max", "spread %", "speedup", "per repeat", "ideal", "sp/ideal", "cpu sp"]
SCALE_HEADERS = ["task", "batching", "pad %", "per epoch %", "real tok", "pad tok", "batches", "tgt pad %",
                 "tgt pad tok"]


def format_qa_seq2seq(results: Mapping[str, Any], spec: Mapping[str, Any] | None = None) -> list[str]:
    """The report's section "QA and seq2seq (issue 14)" (no lines when the part did not run); ``spec``: the
    results' ``config["qa_seq2seq"]``."""
    if not results:
        return []
    layers = next(iter(results.values())).get("num_layers") or 6
    epochs = (spec or {}).get("epochs", 1)
    out = ["QA and seq2seq (issue 14)",
           f"Models: QA = MiniLM {layers} layer{'s' if layers > 1 else ''} + a new span head; seq2seq = bert2bert "
           f"{layers}+{layers} layers warm-started from MiniLM. Timed runs: {epochs} epoch{'s' if epochs > 1 else ''} "
           "each, the benchmark's lr, token budget and base batch, no evaluation. Targets for tokendrop_bucket: "
           f"encoder padding <= 0.5 % at scale; speedup (medians) >= {SPEEDUP_BAR:g} x ideal and > 1.",
           ""]
    scale_rows = []
    for task, r in results.items():
        for name, v in r.get("padding_at_scale", {}).get("variants", {}).items():
            tgt = v["target"]
            scale_rows.append([task, name, _pct(v["padding_fraction"]),
                               " / ".join(_pct(x) for x in v["padding_fraction_per_epoch"]),
                               f"{v['real_tokens']:,}", f"{v['pad_tokens']:,}", f"{v['num_batches']:,}",
                               "-" if tgt is None else _pct(tgt["padding_fraction"]),
                               "-" if tgt is None else f"{tgt['pad_tokens']:,}"])
    if scale_rows:
        settings = next(r["padding_at_scale"]["settings"] for r in results.values() if "padding_at_scale" in r)
        out += [f"Padding at scale (whole training splits, no model; token budget {settings['token_budget']}, base "
                f"batch {settings['base_batch_size']}, {settings['epochs']} epochs x {settings['seeds']} seeds; "
                "pad % = encoder inputs, tgt pad % = seq2seq targets padded to the batch's longest)",
                format_table(SCALE_HEADERS, scale_rows)]
        for task, r in results.items():
            if "padding_at_scale" in r:
                s = r["padding_at_scale"]
                out.append(f"{task}: {s['train_features']:,} training "
                           f"{'features (windows)' if r['kind'] == 'qa' else 'sources'}, mean length "
                           f"{s['mean_length']:.1f} tokens")
        out.append("")
    rows = []
    for task, r in results.items():
        for method, m in r["methods"].items():
            rows.append([task, method + (" (baseline)" if method == BASELINE else ""), _pct(m["padding_fraction"]),
                         _pct(m["target_padding_fraction"]), f"{m['real_tokens']:,}", f"{m['slot_tokens']:,}",
                         m["num_batches"], f"{m['median_epoch_seconds']:.2f}",
                         f"{m['min_epoch_seconds']:.2f}-{m['max_epoch_seconds']:.2f}", f"{100 * m['spread']:.0f}",
                         f"{m['speedup']:.2f}x", f"{m['speedup_min']:.2f}-{m['speedup_max']:.2f}",
                         f"{m['ideal_speedup']:.2f}x", f"{m['speedup_over_ideal']:.2f}", f"{m['cpu_speedup']:.2f}x"])
    n = next(iter(results.values()))["methods"][BASELINE]["repeats"]
    out += [f"Speed-up vs random batches ({n} interleaved repeats per method, the same batches each time; s/epoch: "
            "training loop only; ideal = baseline slot tokens / real tokens, encoder side)",
            format_table(SPEED_HEADERS, rows)]
    for task, r in results.items():
        out.append(f"{task}: {r['train_examples']} training examples -> {r['train_features']} "
                   f"{'features' if r['kind'] == 'qa' else 'sources'}, mean length {r['mean_length']:.1f} tokens, "
                   f"longest {r['longest']}"
                   + ("; the ideal is an upper bound: the decoder computes on the targets, which no method shortens"
                      if r["kind"] == "seq2seq" else "")
                   + "; wall s: " + ", ".join(f"{k.replace('_', ' ')} {v:.0f}" for k, v in r["wall_seconds"].items()))
    out.append("")
    return out
