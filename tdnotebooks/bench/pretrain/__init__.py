"""Pretraining speed benchmark: baseline vs token dropping vs random dropping vs ScTD, plus HF's stock step.

``python -m tdnotebooks.bench pretrain [--quick] [--out FILE] [--device cpu|cuda] [--threads N]``

For each model size (a tiny BERT for CPUs and BERT-base, 12 layers x 768, random init) every mode runs full
optimizer steps (forward + backward + gradient clipping + AdamW + importance update: the step of
:func:`tdnotebooks.pretraining.train.pretrain`) in one process, with a fixed number of torch threads, each on a fresh
copy of the same initial weights and on the same masked batches (:func:`tdnotebooks.pretraining.train.mask_tokens`
on packed corpus blocks). Modes:

- ``baseline``: the full model (MLM head at the masked positions only, like every mode below);
- ``token_drop``: Hou et al. (2022), keep 50 % of the tokens in the middle layers (importance table);
- ``random_drop``: the same layers on a uniform random 50 % (Random-LTD style);
- ``sctd_fi{Fi}``: ScTD (Zhong et al. 2023, Eq. 4): token dropping, plus once per window of Fi steps
  (:func:`tdnotebooks.pretraining.sctd.is_full_step`) a second, full pass and the two KL terms;
- ``hf_bert_mlm``: Hugging Face's stock ``BertForMaskedLM(labels=...)`` step, whose MLM head runs at all
  positions: the step a user would otherwise run (the peer, not a mode of our wrapper).

Two measurements per size, the first independent of the machine's load:

1. FLOPs, always (even when the timing of a size is skipped): one training step of every mode counted by
   ``torch.utils.flop_counter.FlopCounterMode`` (:func:`~tdnotebooks.bench.common.count_flops`: forward +
   backward matrix products) on the first batch. ScTD's steps differ only in how often the full step comes, so
   one ``sctd`` unit is counted (one full and one dropped step) and ``sctd_fi{Fi}`` is the mean over a window,
   (full + (Fi - 1) dropped) / Fi. (The meta device cannot count them: the batch checks and the token selection
   read tensor values.)
2. Step times: ``rounds`` interleaved rounds; each round times every unit once (baseline, token_drop,
   random_drop, sctd, hf_bert_mlm), the order rotating by one unit per round
   (:func:`~tdnotebooks.bench.common.interleaved_orders`), each unit ``warmup_steps`` untimed then
   ``timed_steps`` timed steps on a fresh copy. A size with a ``budget_seconds`` skips its timing (never its
   FLOPs) when the estimate from the FLOPs-counting steps' wall time exceeds it.

Definitions (every figure of the table):

- GFLOP/step, FLOPs ratio: the counted FLOPs of one step, and / baseline's. analytic: the forward FLOPs ratio
  of :func:`tdnotebooks.pretraining.token_dropping.flops_ratio` (MLM head at the masked positions included,
  ``first_layer_full_kv`` as token dropping's default, which the modes run); ScTD: r + 1 / Fi; HF: all-position
  head instead of the masked-position one. Counted and analytic agree to a fraction of a percent: the
  backward's matrix products are twice the forward's in every layer.
- step s: the median over the rounds of each round's mean step time; ScTD: each round's
  ``(t_full + (Fi - 1) t_dropped) / Fi`` from the ScTD unit's mean full-step and dropped-step times, which is
  the mean over any window of a multiple of Fi steps. min-max, spread: over the rounds, spread = (max - min) /
  median.
- tokens/s: batch size x block size / step time (all block tokens, as in ``PretrainHistory.tokens_per_second``).
- vs base: the ratio of the median step times (same size, same run); rounds range: that ratio within each
  round.
- cpu vs base: the median step-time ratio in CPU seconds of the calling thread (``time.thread_time``; with one
  torch thread all the compute runs there): on a shared CPU it leaves out the waiting. Informative only.
- peak memory: CUDA: ``torch.cuda.max_memory_allocated`` during the mode minus the memory allocated before
  its model copy was made (weights, gradients, AdamW state, activations). CPU: the peak resident set size
  (sampled every few ms by a thread, psutil) minus the RSS before the mode: approximate, since the
  allocator keeps freed memory and the sampling can miss short peaks. The max over the rounds.

Targets (per size whose timing ran; relative to the counted FLOPs, never a constant): token_drop step /
baseline <= their FLOPs ratio + 0.05; sctd(Fi=10) step / token_drop <= their FLOPs ratio + 0.05 (the FLOPs
ratio is 1 + 1 / (Fi r) for a dropped-step ratio r). The report says whether every round agrees with the
verdict of the medians, and lists the targets of skipped sizes with the reason.

Quality (the second table; ``--no-quality`` skips it): does ScTD beat vanilla token dropping, as the paper
claims? A tiny BERT is pretrained from scratch on the bundled Shakespeare corpus with baseline, token_drop
and sctd (Fi=10, lambda = the official code's weighting at the block size), same seeds, data and initial weights, then compared with
:func:`tdnotebooks.pretraining.analysis.compare_pretraining` on dev MLM loss (full model), semantic drift (Sentence-BERT
cosine of the view each method trains on, Rotten Tomatoes dev snippets), a linear sentiment probe on the last
layer, and downstream sentiment accuracy after fine-tuning. The report states each ScTD - token_drop
difference next to its noise (the seeds' sd when there are several) and says plainly when it is inside it.

Read it in this order: :mod:`~tdnotebooks.bench.pretrain.config` (modes, sizes, presets),
:mod:`~tdnotebooks.bench.pretrain.steps` (one mode: its step, timing, memory; counted and analytic FLOPs),
:mod:`~tdnotebooks.bench.pretrain.runs` (every size, the quality comparison, the whole run),
:mod:`~tdnotebooks.bench.pretrain.targets` (pass/fail and the ScTD verdict), :mod:`~tdnotebooks.bench.pretrain.report`
(the tables); this module holds the command line and re-exports their public names.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, replace

from tdnotebooks.bench.common import add_common_arguments, int_at_least, run_subcommand
from tdnotebooks.bench.pretrain.config import (
    BASELINE,
    FIS,
    HF_PEER,
    RANDOM_DROP,
    SCTD,
    TOKEN_DROP,
    BenchConfig,
    QualitySpec,
    SizeSpec,
    base_size,
    full_config,
    quick_config,
    tiny_size,
)
from tdnotebooks.bench.pretrain.report import format_quality, format_report
from tdnotebooks.bench.pretrain.runs import (
    estimate_seconds,
    run_benchmark,
    run_quality,
    run_size,
    summarize_rounds,
)
from tdnotebooks.bench.pretrain.steps import analytic_flops_ratios, measure_flops, step_time, time_mode
from tdnotebooks.bench.pretrain.targets import (
    QUALITY_DIRECTIONS,
    TARGET_SLACK,
    compare_sctd,
    evaluate_targets,
    time_target,
)

__all__ = [
    "HELP", "add_arguments", "config_from_args", "run",
    "BASELINE", "FIS", "HF_PEER", "RANDOM_DROP", "SCTD", "TOKEN_DROP", "BenchConfig", "QualitySpec", "SizeSpec",
    "base_size", "full_config", "quick_config", "tiny_size",
    "analytic_flops_ratios", "measure_flops", "step_time", "time_mode", "estimate_seconds", "run_benchmark",
    "run_quality", "run_size", "summarize_rounds",
    "QUALITY_DIRECTIONS", "TARGET_SLACK", "compare_sctd", "evaluate_targets", "time_target",
    "format_quality", "format_report",
]

HELP = ("pretraining counted FLOPs, interleaved step times, tokens/s and peak memory: baseline, token_drop, "
        "random_drop, ScTD(Fi) and HF's BertForMaskedLM, at a tiny and at BERT-base size")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m tdnotebooks.bench pretrain``."""
    add_common_arguments(
        parser, "pretrain",
        quick_help="minutes on a CPU: 1 thread, tiny size + BERT-base at batch 4, 3 rounds of 2 timed steps "
                   "(BERT-base timing skipped if its estimate exceeds 5 minutes; its FLOPs row is always there)")
    parser.add_argument("--rounds", type=int_at_least(1), metavar="N",
                        help="interleaved timing rounds of every size (quick: tiny 5, BERT-base 3; full: 5)")
    parser.add_argument("--no-quality", action="store_true",
                        help="skip the quality comparison (ScTD vs token drop vs baseline pretraining)")
    parser.add_argument("--quality-steps", type=int_at_least(1), metavar="N",
                        help="pretraining steps per method in the quality comparison (quick: 150, full: 2000)")
    parser.add_argument("--quality-seeds", type=int_at_least(1), metavar="N",
                        help="seeds 0 .. N-1 for the quality comparison (quick: 1, full: 3)")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The :class:`BenchConfig` the options ask for (ValueError for a bad combination, e.g. no CUDA)."""
    from tdnotebooks.runtime import get_device

    overrides = {name: getattr(args, name) for name in ("device", "threads") if getattr(args, name) is not None}
    config = (quick_config if args.quick else full_config)(**overrides)
    if getattr(args, "rounds", None) is not None:
        config.sizes = tuple(replace(size, rounds=args.rounds) for size in config.sizes)
    if getattr(args, "no_quality", False):
        config.quality = None
    elif config.quality is not None:
        changes = {}
        if getattr(args, "quality_steps", None) is not None:
            changes["steps"] = args.quality_steps
        if getattr(args, "quality_seeds", None) is not None:
            changes["seeds"] = tuple(range(args.quality_seeds))
        config.quality = QualitySpec(**{**asdict(config.quality), **changes})
    get_device(config.device)  # --device cuda without CUDA: a clear error now
    return config


def run(args: argparse.Namespace) -> int:
    """Entry point of the sub-command: run, print the report, write the JSON."""
    return run_subcommand(args, config_from_args, run_benchmark, format_report)
