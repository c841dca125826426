"""The fine-tuning benchmark's report: the results of :func:`~tdnotebooks.bench.finetune.runs.run_benchmark` as
plain-text tables (training, padding at scale, inference, the QA and seq2seq rows), the target verdicts and the
notes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tdnotebooks.bench.common import format_load, format_table
from tdnotebooks.bench.finetune.config import BASELINE, PAPER_METHOD
from tdnotebooks.bench.finetune.qa_seq2seq import format_qa_seq2seq

__all__ = ["format_report"]


def _pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}"


# target -> (label, how to show its value and threshold)
TARGET_LABELS: dict[str, tuple[str, Callable[[float], str]]] = {
    "padding_fraction": ("TokenDrop+BucketSampler padding", lambda v: f"{100 * v:.2f}%"),
    "speedup_over_ideal": ("speedup / ideal speedup", lambda v: f"{v:.2f}"),
    "speedup_over_group_by_length": ("speedup over group_by_length", lambda v: f"{v:.2f}x"),
    "accuracy_minus_baseline_points": ("dev accuracy - baseline", lambda v: f"{v:+.1f} pt"),
    # the QA and seq2seq rows (issue 14)
    "qa_seq2seq_speedup_over_ideal": ("speedup vs random / ideal speedup", lambda v: f"{v:.2f}"),
    "qa_seq2seq_speedup": ("speedup vs random (medians)", lambda v: f"{v:.2f}x"),
}

TRAINING_HEADERS = ["task", "method", "pad %", "real tok", "pad tok", "s/epoch", "speedup", "ideal",
                    "sp/ideal", "cpu sp", "dev acc %", "sd", "collate %"]
LATENCY_HEADERS = ["task", "drop rate", "median ms (end to end)", "speedup", "forward ms", "forward speedup",
                   "tokens", "acc %", "n"]
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
    """One row per (task or held-out corpus, batching); ``tasks`` maps a name to its padding-at-scale pass."""
    rows = []
    for task, result in tasks.items():
        for name, v in result.get("variants", {}).items():
            rows.append([task, name, _pct(v["padding_fraction"], 2),
                         " / ".join(_pct(x, 2) for x in v["padding_fraction_per_epoch"]),
                         f"{v['real_tokens']:,}", f"{v['pad_tokens']:,}", f"{v['num_batches']:,}"])
    return rows


def _inference_rows(tasks: Mapping[str, Any]) -> tuple[list[list[Any]], list[list[Any]]]:
    latency, server = [], []
    for task, result in tasks.items():
        for r in result.get("inference", {}).get("latency", []):
            forward = (f"{r['forward_median_ms']:.2f}", f"{r['forward_speedup']:.2f}x") if "forward_median_ms" in r \
                else ("-", "-")  # results written before the end-to-end figure existed
            latency.append([task, f"{r['rate']:.1f}", f"{r['median_ms']:.2f}", f"{r['speedup']:.2f}x", *forward,
                            f"{r['mean_tokens']:.1f}", _pct(r["accuracy"]), r["examples"]])
        for r in result.get("inference", {}).get("server", []):
            server.append([task, r["batching"], f"{r['seconds']:.3f}", f"{r['throughput']:.1f}",
                           _pct(r["padding_fraction"], 2), f"{r['speedup']:.2f}x", _pct(r["accuracy"]),
                           r["examples"]])
    return latency, server


def _target_lines(results: Mapping[str, Any]) -> list[str]:
    out = ["Targets (TokenDrop + BucketSampler)"]
    width = max([13] + [len(t["task"]) for t in results["targets"]])
    for t in results["targets"]:
        label, show = TARGET_LABELS[t["target"]]
        note = "" if t.get("informative", True) else "  (says nothing: the baseline did not learn, see below)"
        if "measured_on" in t:
            note = f"  ({t['measured_on']})"
        out.append(f"  {'PASS' if t['passed'] else 'FAIL'}  {t['task']:<{width}} {label}: {show(t['value'])} "
                   f"{t['comparison']} {show(t['threshold'])}{note}")
    for task, r in results["tasks"].items():
        if not r["baseline_beats_majority"]:
            out.append(f"  WARNING {task}: baseline dev accuracy "
                       f"{_pct(r['methods'][BASELINE]['dev_accuracy_mean'])}% does not beat always predicting "
                       f"the majority class ({_pct(r['majority_accuracy'])}%) by 2 standard errors: the models "
                       "learned (almost) nothing at this scale.")
    noise = ", ".join(f"{task} +-{r['accuracy_noise_points']:.1f} pt" for task, r in results["tasks"].items())
    if noise:
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
        (f"MiniLM {config['num_layers'] or 6} layers{frozen}, {config['epochs']} epochs x {config['seeds']} seeds, "
         f"lr {config['lr']:g}, base batch {config['base_batch_size']}, token budget {config['token_budget']}"
         if tasks else f"Classification rows not run (only QA / seq2seq tasks named); lr {config['lr']:g}{frozen}, "
                       f"base batch {config['base_batch_size']}, token budget {config['token_budget']}"),
        "",
    ]
    if tasks:
        out += ["Training (tokens: totals over all epochs and seeds; s/epoch: wall time of the training loop only;"
                " cpu sp: speedup in process CPU time)",
                format_table(TRAINING_HEADERS, _training_rows(tasks)),
                ""]
    for task, r in tasks.items():
        overhead = r["methods"].get(PAPER_METHOD, {}).get("tokendrop_overhead")
        out.append(f"{task}: {r['train_examples']} train / {r['dev_examples']} dev examples, mean length "
                   f"{r['mean_length']:.1f} tokens; paper's ideal speedup (baseline slots / real tokens) "
                   f"{r['paper_ideal_speedup']:.2f}x; TokenDrop overhead {_pct(overhead, 2)}% of training time")
    out.append("")
    passes = {task: r["padding_at_scale"] for task, r in tasks.items() if "padding_at_scale" in r}
    corpora = results.get("scale_corpora") or {}
    scale_rows = _scale_rows({**passes, **corpora})
    if scale_rows:
        settings = next(r["settings"] for r in (*passes.values(), *corpora.values()))
        out += [f"Padding at scale (whole training splits and held-out corpora, no model; the full run's batching: "
                f"token budget {settings['token_budget']}, base batch {settings['base_batch_size']}, "
                f"{settings['epochs']} epochs x {settings['seeds']} seeds)",
                format_table(SCALE_HEADERS, scale_rows)]
        out += [f"{name}: {c['train_examples']} examples of real text, mean length {c['mean_length']:.1f} tokens "
                "(held-out corpus: batched, never trained on)" for name, c in corpora.items()]
        out.append("")
    latency, server = _inference_rows(tasks)
    if latency:
        out += ["Inference at batch size 1 (TokenDrop+BucketSampler model of seed 0; inference-time drop rate)",
                format_table(LATENCY_HEADERS, latency), "",
                f"Server mode (all test examples at once; best of {config['server_repeats']} passes)",
                format_table(SERVER_HEADERS, server), ""]
    out += format_qa_seq2seq(results.get("qa_seq2seq") or {}, config.get("qa_seq2seq"))
    out += _target_lines(results)
    if env["quick"]:
        seeds = config["seeds"]
        out.append(f"Quick preset: training subsets, {seeds} seed{'s' if seeds > 1 else ''}, a "
                   f"{config['num_layers'] or 6}-layer model on a small CPU. Accuracy differences within the noise "
                   "above say nothing and the timings are noisy too: read the verdicts as indicative only.")
    out.append(f"Wall time {results['wall_seconds']:.0f} s; load average (1, 5, 15 min) "
               f"{format_load(env['load_average_at_start'])} at start, {format_load(env['load_average_at_end'])} at end.")
    return "\n".join(out)
