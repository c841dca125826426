"""Fine-tuning benchmark: RandomSampler vs group_by_length vs BucketSampler vs TokenDrop + BucketSampler.

``python -m tdnotebooks.bench finetune [--quick] [--out FILE] [--seeds N] [--device cpu|cuda] [--tasks TASK ...]
[--no-qa-seq2seq] [--repeats N]``

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
  of training but without a model (:func:`~tdnotebooks.bench.finetune.runs.padding_at_scale`): seconds even on a CPU, and what the
  padding target is checked on (with ``--quick`` the training subsets are too small to say anything
  about padding: almost every batch is a merged residual). The same pass runs on held-out corpora of
  other shapes (:mod:`~tdnotebooks.bench.finetune.corpora`: Shakespeare's sentences and speeches, the
  King James Bible's sentences; 4,200 examples each, batched but never trained on), and the padding
  target is checked on each of them too.

QA and seq2seq rows (issue 14; :mod:`~tdnotebooks.bench.finetune.qa_seq2seq`, which defines them): on
``shakespeare_qa`` (SQuAD format, windows of 384 tokens, stride 128) and ``shakespeare_cast`` (document ->
summary), the padding at scale of ``random`` / ``bucket`` / ``tokendrop_bucket`` (encoder inputs, and the
seq2seq targets, which TokenDrop does not touch) and the speed-up of one-epoch fine-tuning runs vs random
batches, median of interleaved repeats with their spread, against the ideal speed-up. ``--tasks`` selects
among all four tasks (only QA and seq2seq names: only these rows, without the held-out corpora);
``--no-qa-seq2seq`` skips them; ``--repeats N`` sets their timed runs per method.

Timing fairness: one process, torch threads fixed for the whole run, a warm-up forward/backward on each
fresh model copy before its timed run, method order reversed on odd seeds.

Read it in this order: :mod:`~tdnotebooks.bench.finetune.config` (what is compared, the presets),
:mod:`~tdnotebooks.bench.finetune.corpora` (the held-out corpora of the padding pass),
:mod:`~tdnotebooks.bench.finetune.runs` (what is measured), :mod:`~tdnotebooks.bench.finetune.qa_seq2seq` (the
QA and seq2seq rows: their measurements, targets and report section), :mod:`~tdnotebooks.bench.finetune.targets` (the
pass/fail targets), :mod:`~tdnotebooks.bench.finetune.report` (the tables); this module holds the command
line and re-exports their public names.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from tdnotebooks.bench.common import add_common_arguments, int_at_least, run_subcommand, write_results
from tdnotebooks.bench.finetune.config import (
    BASELINE,
    INFERENCE_RATES,
    METHODS,
    PAPER_METHOD,
    SERVER_BATCHINGS,
    TASKS,
    BenchConfig,
    full_config,
    quick_config,
)
from tdnotebooks.bench.finetune.corpora import CORPUS_EXAMPLES, SCALE_CORPORA, corpus_texts, prepare_corpus
from tdnotebooks.bench.finetune.qa_seq2seq import (
    QA_SEQ2SEQ_METHODS,
    QA_SEQ2SEQ_TASKS,
    SPEEDUP_BAR,
    QASeq2SeqSpec,
    evaluate_qa_seq2seq_targets,
    format_qa_seq2seq,
    load_qa_model,
    padding_at_scale_qa_seq2seq,
    prepare_split,
    run_qa_seq2seq,
    summarize_timings,
    time_methods,
)
from tdnotebooks.bench.finetune.report import format_report
from tdnotebooks.bench.finetune.runs import (
    SCALE_VARIANTS,
    RunRecorder,
    TimedCollate,
    measure_inference,
    padding_at_scale,
    padding_on_corpora,
    prepare_splits,
    run_benchmark,
    scale_variants,
    summarize,
    train_one,
    warm_up,
)
from tdnotebooks.bench.finetune.targets import (
    TARGETS,
    accuracy_noise_points,
    beats_majority,
    evaluate_targets,
    majority_accuracy,
)

__all__ = [
    "HELP", "add_arguments", "config_from_args", "run",
    "BASELINE", "INFERENCE_RATES", "METHODS", "PAPER_METHOD", "SERVER_BATCHINGS", "TASKS", "BenchConfig",
    "full_config", "quick_config",
    "CORPUS_EXAMPLES", "SCALE_CORPORA", "corpus_texts", "prepare_corpus",
    "SCALE_VARIANTS", "RunRecorder", "TimedCollate", "measure_inference", "padding_at_scale", "padding_on_corpora",
    "prepare_splits", "run_benchmark", "scale_variants", "summarize", "train_one", "warm_up",
    "TARGETS", "accuracy_noise_points", "beats_majority", "evaluate_targets", "majority_accuracy",
    "QA_SEQ2SEQ_METHODS", "QA_SEQ2SEQ_TASKS", "SPEEDUP_BAR", "QASeq2SeqSpec", "evaluate_qa_seq2seq_targets",
    "format_qa_seq2seq", "load_qa_model", "padding_at_scale_qa_seq2seq", "prepare_split", "run_qa_seq2seq",
    "summarize_timings", "time_methods",
    "format_report", "write_results",
]

HELP = ("fine-tuning speed and accuracy: RandomSampler vs group_by_length vs BucketSampler vs "
        "TokenDrop + BucketSampler, plus inference latency/throughput and QA / seq2seq rows")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m tdnotebooks.bench finetune``."""
    add_common_arguments(
        parser, "finetune",
        quick_help="minutes on a CPU: 2 layers, frozen embeddings, small subsets, 1 epoch, 1 seed, 1 thread "
                   "(default: the full run for a GPU: whole splits, 6 layers, 3 epochs, 3 seeds)")
    parser.add_argument("--seeds", type=int_at_least(1), metavar="N", help="number of seeds (0..N-1)")
    parser.add_argument("--epochs", type=int_at_least(1), metavar="N",
                        help="epochs per fine-tuning run of the classification rows (the QA and seq2seq timed runs: 1)")
    parser.add_argument("--tasks", nargs="+", choices=TASKS + QA_SEQ2SEQ_TASKS, metavar="TASK",
                        help=f"subset of {', '.join(TASKS + QA_SEQ2SEQ_TASKS)} (default: all); the last two are "
                             "the QA and seq2seq rows: name only them to run only those rows")
    parser.add_argument("--no-qa-seq2seq", action="store_true",
                        help=f"skip the QA and seq2seq rows ({', '.join(QA_SEQ2SEQ_TASKS)})")
    parser.add_argument("--repeats", type=int_at_least(1), metavar="N",
                        help="interleaved timed runs per method of the QA and seq2seq rows (default 3)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-scale-check", action="store_true",
                        help="skip the padding pass over the whole training splits and the held-out corpora "
                             "(batching only, no model), the QA and seq2seq ones included")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The :class:`BenchConfig` the options ask for (ValueError for a bad combination, e.g. no CUDA)."""
    from tdnotebooks.runtime import get_device

    overrides: dict[str, Any] = {"progress": not args.no_progress, "scale_check": not args.no_scale_check}
    for name in ("seeds", "epochs", "device", "threads"):  # only what was given replaces the preset's value
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    preset = quick_config if args.quick else full_config
    named = tuple(dict.fromkeys(args.tasks or ()))
    extra = [t for t in named if t in QA_SEQ2SEQ_TASKS]
    if args.no_qa_seq2seq and extra:
        raise ValueError(f"--no-qa-seq2seq skips {', '.join(QA_SEQ2SEQ_TASKS)}, but --tasks names {', '.join(extra)}")
    if args.no_qa_seq2seq and args.repeats is not None:
        raise ValueError("--repeats sets the timed runs of the QA and seq2seq rows, which --no-qa-seq2seq skips")
    if named and not extra and args.repeats is not None:
        raise ValueError(f"--repeats sets the timed runs of the QA and seq2seq rows, but --tasks names none of "
                         f"{', '.join(QA_SEQ2SEQ_TASKS)}")
    if named:
        overrides["tasks"] = tuple(t for t in named if t in TASKS)
    spec = preset().qa_seq2seq
    if args.no_qa_seq2seq or (named and not extra):
        overrides["qa_seq2seq"] = None
    elif extra or args.repeats is not None:
        overrides["qa_seq2seq"] = dataclasses.replace(spec, tasks=tuple(extra) or spec.tasks,
                                                      repeats=args.repeats or spec.repeats)
    config = preset(**overrides)
    get_device(config.device)  # --device cuda on a machine without CUDA: a clear error now, not later
    return config


def run(args: argparse.Namespace) -> int:
    """Entry point of the sub-command: run, print the report, write the JSON."""
    return run_subcommand(args, config_from_args, run_benchmark, format_report)
