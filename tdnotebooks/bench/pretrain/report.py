"""The pretraining benchmark's report: the step-time table of every size and mode, the target verdicts, and the
quality table with its plain-language verdict of ScTD vs token drop."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tdnotebooks.bench.common import format_load, format_table

__all__ = ["format_quality", "format_report"]


HEADERS = ["size", "mode", "GFLOP/step", "FLOPs ratio", "analytic", "step s", "min-max s", "spread %", "vs base",
           "rounds range", "cpu vs base", "tokens/s", "peak MiB"]


def _num(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _rows(sizes: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for name, result in sizes.items():
        for mode, r in result["modes"].items():
            timed = r["timed"]
            rows.append([name, mode, f"{r['flops_per_step'] / 1e9:,.1f}", f"{r['flops_ratio']:.3f}",
                         f"{r['analytic_flops_ratio']:.3f}", _num(r["step_seconds"], ".3f"),
                         f"{r['step_seconds_min']:.3f}-{r['step_seconds_max']:.3f}" if timed else "-",
                         _num(None if r["spread"] is None else 100 * r["spread"], ".0f"), _num(r["vs_baseline"], ".3f"),
                         f"{r['vs_baseline_min']:.2f}-{r['vs_baseline_max']:.2f}" if timed else "-",
                         _num(r["cpu_vs_baseline"], ".3f"), _num(r["tokens_per_second"], ",.0f"),
                         _num(None if r["peak_memory_bytes"] is None else r["peak_memory_bytes"] / 2**20, ",.0f")])
    return rows


def _target_line(t: Mapping[str, Any]) -> str:
    rule = f"<= FLOPs ratio {t['flops_ratio']:.3f} + {t['threshold'] - t['flops_ratio']:.2f} = {t['threshold']:.3f}"
    if t["passed"] is None:
        return f"  SKIP  {t['size']:<10} {t['target']} ({rule}): {t['skipped']}"
    rounds = ("every round agrees" if t["every_round"] else "the rounds straddle the threshold: inside the noise")
    return (f"  {'PASS' if t['passed'] else 'FAIL'}  {t['size']:<10} {t['target']}: {t['value']:.3f} {rule} "
            f"(rounds {t['round_min']:.3f}-{t['round_max']:.3f}, {rounds})")


def format_report(results: Mapping[str, Any]) -> str:
    """The human-readable report of :func:`run_benchmark`'s results (table, targets, notes)."""
    env, config = results["environment"], results["config"]
    gpu = f" ({env['gpu']})" if env["gpu"] else ""
    memory = ("peak MiB: torch.cuda.max_memory_allocated minus the memory allocated before the mode (max over "
              "the rounds)" if env["device"].startswith("cuda") else
              "peak MiB: peak RSS delta of the process during the mode, max over the rounds (approximate: allocator "
              "reuse, sampling)")
    out = [f"Pretraining benchmark ({'quick' if env['quick'] else 'full'}): device {env['device']}{gpu}, "
           f"{env['threads']} torch threads, torch {env['torch']}, transformers {env['transformers']}",
           f"keep fraction {config['keep_fraction']}, ScTD Fi {', '.join(map(str, config['fis']))}; "
           "step = forward + backward + clip + AdamW (+ importance update)", ""]
    for name, r in results["sizes"].items():
        s = r["size"]
        timing = (f"SKIPPED: {r['skipped']}" if r["skipped"] else
                  f"{s['rounds']} interleaved rounds of {s['warmup_steps']} warm-up + {s['timed_steps']} timed steps")
        out.append(f"{name}: {s['num_layers']} layers x {s['hidden_size']}, {r['parameters'] / 1e6:.1f} M parameters, "
                   f"batch {s['batch_size']} x block {s['block_size']}; FLOPs counted; {timing}")
    out += ["", format_table(HEADERS, _rows(results["sizes"])), "",
            "GFLOP/step: one training step's forward + backward FLOPs counted by torch.utils.flop_counter (matrix "
            "products; independent of the machine's load); sctd: (full step + (Fi - 1) dropped steps) / Fi. "
            "FLOPs ratio: counted / baseline's; analytic: the forward FLOPs ratio of the formula "
            "(token_dropping.flops_ratio, first_layer_full_kv as the modes run it).",
            "step s: median over the rounds (modes interleaved, the order rotating each round); min-max and "
            "spread = (max - min) / median over the rounds; vs base: ratio of the medians, rounds range: the same "
            "ratio in each round; cpu vs base: the median ratio in CPU seconds of the timing thread (informative). "
            "sctd step s: (full + (Fi - 1) dropped step) / Fi from one ScTD unit timed per round.",
            memory, "", "Targets (step-time ratio <= counted FLOPs ratio + slack)"]
    out += [_target_line(t) for t in results["targets"]]
    if not results["targets"]:
        out.append("  none")
    if env["quick"]:
        out.append("Quick scale: a few steps on a small, shared CPU; the timings are indicative only, the FLOPs are "
                   "exact.")
    if results.get("quality"):
        out += ["", *format_quality(results["quality"])]
    out.append(f"Wall time {results['wall_seconds']:.0f} s; load average (1, 5, 15 min) "
               f"{format_load(env['load_average_at_start'])} at start, {format_load(env['load_average_at_end'])} at end.")
    return "\n".join(out)


QUALITY_HEADERS = ["method", "dev MLM loss", "drift (cos)", "probe last", "downstream acc", "s/step"]


def _mean_sd(summary: Mapping[str, Any], metric: str, fmt: str) -> str:
    mean, sd = summary["mean"][metric], summary["sd"][metric]
    if mean is None:
        return "-"
    return format(mean, fmt) + ("" if sd is None else " +- " + format(sd, fmt))


def format_quality(quality: Mapping[str, Any]) -> list[str]:
    """The quality table and the plain-language verdict of ScTD vs token drop."""
    spec = quality["spec"]
    rows = [[label, _mean_sd(s, "dev_mlm_loss", ".3f"), _mean_sd(s, "drift", ".3f"), _mean_sd(s, "probe_last", ".3f"),
             _mean_sd(s, "downstream_accuracy", ".3f"), _mean_sd(s, "seconds_per_step", ".3f")]
            for label, s in quality["methods"].items()]
    out = [f"Quality: tiny BERT pretrained from scratch, {spec['steps']} steps of {spec['batch_size']} x "
           f"{spec['block_size']} tokens per method, seeds {', '.join(map(str, spec['seeds']))}; ScTD Fi "
           f"{spec['fi']}, lambda {spec['lam']} (mean +- sd over seeds)", format_table(QUALITY_HEADERS, rows),
           "drift: Sentence-BERT cosine of the view each method trains on (baseline: masked; others: masked + "
           "dropped), higher = less semantic loss; probe: linear sentiment probe on the last layer (dev accuracy); "
           "downstream: sentiment dev accuracy after fine-tuning", "", "Does ScTD beat token drop? (ScTD - token_drop)"]
    for c in quality["comparison"]:
        noise = "no noise estimate with one seed" if c["noise"] is None else f"noise {c['noise']:.4f}"
        direction = "equal" if c["difference"] == 0 else ("better" if c["sctd_better"] else "worse")
        verdict = direction + (
            ", outside the noise" if c["outside_noise"] else ", NOT distinguishable from noise")
        out.append(f"  {c['metric']:<20} {c['difference']:+.4f} ({c['better']} is better): {verdict} ({noise})")
    out.append("At this scale the models are far from converged: read the differences as what this run measured, "
               "not as a test of the paper's claims (those need the full run on a GPU).")
    return out
