"""What the pretraining benchmark measures: every mode at each model size on the same masked batches
(:func:`run_size`: the counted FLOPs of every mode always, then the interleaved timing rounds unless their
estimate exceeds the size's budget), the quality comparison of baseline, token_drop and ScTD pretraining
(:func:`run_quality`); :func:`run_benchmark` runs them all."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from typing import Any

from tdnotebooks.bench.common import (
    environment,
    fixed_torch_threads,
    interleaved_orders,
    load_average,
    spread_summary,
)
from tdnotebooks.bench.pretrain.config import (
    BASELINE,
    QUALITY_METHODS,
    SCTD,
    SCTD_UNIT_FI,
    BenchConfig,
    QualitySpec,
    SizeSpec,
    quality_lam,
)
from tdnotebooks.bench.pretrain.steps import analytic_flops_ratios, measure_flops, mode_fi, time_mode
from tdnotebooks.bench.pretrain.targets import compare_sctd, evaluate_targets

__all__ = ["estimate_seconds", "masked_batches", "run_benchmark", "run_quality", "run_size", "size_setup",
           "summarize_rounds", "unit_size"]


def masked_batches(size: SizeSpec, tokenizer: Any, seed: int, device: Any, count: int = 4) -> list[tuple[Any, Any]]:
    """``count`` masked batches of packed shakespeare blocks, as pretrain() builds them, on ``device``."""
    import torch

    from tdnotebooks.pretraining.train import corpus_blocks, mask_tokens, sample_indices

    blocks = corpus_blocks("shakespeare", "train", tokenizer, size.block_size, max_blocks=size.batch_size * count)
    out = []
    for i in range(count):
        rows = sample_indices(i * size.batch_size, size.batch_size, len(blocks), seed)
        inputs, labels = mask_tokens(blocks[rows], tokenizer.mask_token_id, len(tokenizer),
                                     tokenizer.all_special_ids, torch.Generator().manual_seed(seed * 1000 + i))
        out.append((inputs.to(device), labels.to(device)))
    return out


def size_setup(size: SizeSpec, config: Any, tokenizer: Any, device: Any) -> tuple[Any, list[tuple[Any, Any]], dict]:
    """What every timing of ``size`` starts from, seeded with ``config.seed``: a fresh ``BertForMaskedLM`` of that
    size (the initial weights every mode copies), the masked batches, and the analytic FLOPs ratios."""
    from transformers import BertForMaskedLM

    from tdnotebooks.models import tiny_bert
    from tdnotebooks.runtime import seed_everything

    seed_everything(config.seed)
    bert_config = tiny_bert(num_layers=size.num_layers, hidden_size=size.hidden_size, num_heads=size.num_heads,
                            intermediate_size=size.intermediate_size,
                            max_position_embeddings=max(128, size.block_size), tokenizer=tokenizer)
    initial = BertForMaskedLM(bert_config)
    return initial, masked_batches(size, tokenizer, config.seed, device), analytic_flops_ratios(
        size, config, bert_config.vocab_size)


def unit_size(unit: str, size: SizeSpec) -> SizeSpec:
    """The size a unit is timed at: ScTD times at least 2 steps (one full, one dropped)."""
    return replace(size, timed_steps=max(2, size.timed_steps)) if unit == SCTD else size


def _round_value(row: Mapping[str, Any], mode: str, key: str = "step_seconds") -> float:
    """One round's step time of ``mode`` from its unit's timing ``row``; ``sctd_fi{Fi}``: the Fi-weighted mean
    (full + (Fi - 1) dropped) / Fi of that round's full-step and dropped-step means. key: ``step_seconds`` (wall)
    or ``cpu_step_seconds``."""
    fi = mode_fi(mode)
    if fi is None:
        return row[key]
    prefix = "cpu_" if key.startswith("cpu") else ""
    full = row[f"{prefix}full_step_seconds"]
    dropped = row.get(f"{prefix}dropped_step_seconds", full)
    return (full + (fi - 1) * dropped) / fi


def summarize_rounds(mode: str, rows: list[Mapping[str, Any]], base_rows: list[Mapping[str, Any]],
                     tokens_per_step: int) -> dict[str, Any]:
    """The timing columns of ``mode`` from its unit's rows (one per round) and the baseline's (same rounds):
    median step time, its min-max and spread over the rounds, ratios of medians, per-round ratios' range."""
    wall = spread_summary([_round_value(r, mode) for r in rows])
    base = spread_summary([_round_value(b, BASELINE) for b in base_rows])
    cpu = [_round_value(r, mode, "cpu_step_seconds") for r in rows]
    cpu_base = [_round_value(b, BASELINE, "cpu_step_seconds") for b in base_rows]
    ratios = [w / b for w, b in zip(wall["each"], base["each"], strict=True)]
    cpu_median, cpu_base_median = spread_summary(cpu)["median"], spread_summary(cpu_base)["median"]
    out = {"timed": True, "rounds": len(rows), "step_seconds": wall["median"], "step_seconds_min": wall["min"],
           "step_seconds_max": wall["max"], "spread": wall["spread"], "step_seconds_each_round": wall["each"],
           "vs_baseline": wall["median"] / base["median"], "vs_baseline_min": min(ratios),
           "vs_baseline_max": max(ratios), "cpu_step_seconds": cpu_median, "cpu_step_seconds_each_round": cpu,
           "cpu_vs_baseline": cpu_median / cpu_base_median if cpu_base_median > 0 else None,
           "tokens_per_second": tokens_per_step / wall["median"],
           "peak_memory_bytes": max(r["peak_memory_bytes"] for r in rows), "memory_kind": rows[0]["memory_kind"]}
    if mode_fi(mode) is not None:
        for kind in ("full_step_seconds", "dropped_step_seconds"):
            out[kind] = spread_summary([r.get(kind, r["full_step_seconds"]) for r in rows])["median"]
    return out


UNTIMED = {"timed": False, "rounds": 0, "step_seconds": None, "step_seconds_min": None, "step_seconds_max": None,
           "spread": None, "step_seconds_each_round": [], "vs_baseline": None, "vs_baseline_min": None,
           "vs_baseline_max": None, "cpu_step_seconds": None, "cpu_step_seconds_each_round": [],
           "cpu_vs_baseline": None, "tokens_per_second": None, "peak_memory_bytes": None, "memory_kind": None}


def run_size(size: SizeSpec, config: BenchConfig, tokenizer: Any, device: Any,
             progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Every mode at one size: its counted FLOPs (always), then ``size.rounds`` interleaved timing rounds
    (skipped, with the reason in ``skipped``, when their estimate exceeds ``size.budget_seconds``)."""

    from tdnotebooks.models import count_parameters

    started = time.perf_counter()
    initial, batches, analytic = size_setup(size, config, tokenizer, device)
    tokens = size.batch_size * size.block_size
    result: dict[str, Any] = {"size": asdict(size), "parameters": count_parameters(initial), "tokens_per_step": tokens,
                              "skipped": None, "modes": {}}
    progress(f"  {size.name}: counting FLOPs")
    flops = measure_flops(initial, batches[0], config, tokenizer, device)
    base_flops = flops["modes"][BASELINE]
    result["flops"] = {"counted_on": "one step of each unit on the first batch (forward + backward)",
                       "sctd_full_step": flops["sctd_full_step"], "sctd_dropped_step": flops["sctd_dropped_step"],
                       "counting_seconds": flops["seconds"], "first_layer_full_kv": _first_layer_full_kv(config)}
    for mode in config.modes:
        result["modes"][mode] = {"mode": mode, "flops_per_step": flops["modes"][mode],
                                 "flops_ratio": flops["modes"][mode] / base_flops,
                                 "analytic_flops_ratio": analytic[mode], **UNTIMED}
    estimate = estimate_seconds(flops["seconds"], size, config)
    result["estimated_seconds"] = estimate
    if size.budget_seconds is not None and estimate > size.budget_seconds:
        result["skipped"] = (f"timing skipped: estimated {estimate:.0f} s for {size.rounds} rounds of "
                             f"{len(config.units)} units (from the FLOPs-counting steps, "
                             f"{flops['seconds'][BASELINE]:.1f} s per baseline step) > budget "
                             f"{size.budget_seconds:.0f} s")
        progress(f"  {size.name}: {result['skipped']}")
    else:
        orders = interleaved_orders(config.units, size.rounds)
        result["round_orders"] = orders
        timed: dict[str, list[dict[str, Any]]] = {unit: [] for unit in config.units}
        for r, order in enumerate(orders):
            progress(f"  {size.name}: round {r + 1}/{size.rounds}: {', '.join(order)}")
            for unit in order:
                mode = f"sctd_fi{SCTD_UNIT_FI}" if unit == SCTD else unit
                timed[unit].append(time_mode(mode, initial, batches, unit_size(unit, size), config, tokenizer,
                                             device))
        for mode, row in result["modes"].items():
            unit = SCTD if mode_fi(mode) is not None else mode
            row.update(summarize_rounds(mode, timed[unit], timed[BASELINE], tokens))
    result["wall_seconds"] = time.perf_counter() - started
    return result


def _first_layer_full_kv(config: BenchConfig) -> bool:
    from tdnotebooks.pretraining.token_dropping import TokenDroppingConfig

    return TokenDroppingConfig(keep_fraction=config.keep_fraction).first_layer_full_kv


def estimate_seconds(count_seconds: Mapping[str, float], size: SizeSpec, config: BenchConfig) -> float:
    """Rough run time of the timing rounds from the wall time of each unit's FLOPs-counting step (a first step on
    a fresh copy, so rather pessimistic): rounds x, per unit, (warm-up + timed steps) x its counted step."""
    total = 0.0
    for unit in config.units:
        timed = unit_size(unit, size).timed_steps
        warmup = max(2, size.warmup_steps) if unit == SCTD else size.warmup_steps
        total += (warmup + timed) * count_seconds[unit]
    return size.rounds * total


def run_quality(spec: QualitySpec, config: BenchConfig, tokenizer: Any, device: Any,
                say: Callable[[str], None]) -> dict[str, Any]:
    """Pretrain baseline, token_drop and sctd with the same seeds and compare their quality
    (:func:`tdnotebooks.pretraining.analysis.compare_pretraining`); adds the ScTD - token_drop differences."""
    from tdnotebooks.data import load_task
    from tdnotebooks.models import load_pretrained
    from tdnotebooks.pretraining.analysis import compare_pretraining
    from tdnotebooks.pretraining.train import PretrainConfig

    data = load_task("rt_sentiment")
    train = data["train"].shuffle(seed=0).select(range(spec.probe_size))
    dev = data["dev"].shuffle(seed=0).select(range(spec.probe_size))
    pretrain_config = PretrainConfig(
        steps=spec.steps, batch_size=spec.batch_size, block_size=spec.block_size, max_texts=spec.max_texts,
        keep_fraction=config.keep_fraction, lr=5e-4, eval_every=max(1, spec.steps // 5), progress=False,
        device=device.type, lam=quality_lam(spec), fi=spec.fi)
    methods = {mode: {"mode": mode} for mode in QUALITY_METHODS}
    runs = compare_pretraining(
        methods, pretrain_config, sbert=load_pretrained(kind="sbert"), drift_texts=list(dev["text"][:spec.drift_size]),
        probe_data=(list(train["text"]), list(train["label"]), list(dev["text"]), list(dev["label"])),
        downstream_kwargs={"train_size": spec.downstream_size, "dev_size": spec.downstream_size,
                           "epochs": spec.downstream_epochs, "lr": 5e-4},
        seeds=spec.seeds, tokenizer=tokenizer, progress=say)
    for summary in runs.values():
        for run in summary["runs"]:
            run["losses"] = [round(v, 5) for v in run["losses"]]      # keep the JSON small
    return {"spec": {**asdict(spec), "lam": quality_lam(spec)}, "methods": runs, "comparison": compare_sctd(runs, len(spec.seeds))}


def run_benchmark(config: BenchConfig, progress: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Run the whole benchmark; the results as a JSON-ready dict (what ``--out`` writes)."""
    from tdnotebooks.models import load_tokenizer
    from tdnotebooks.runtime import get_device

    started = time.perf_counter()
    device = get_device(config.device)
    say = progress or (lambda _message: None)
    with fixed_torch_threads(config.threads):  # the same for every mode of the run
        env = environment(config, device)
        tokenizer = load_tokenizer()
        gc.freeze()  # what exists now is never garbage: the gc.collect() around every timed unit skips it
        try:
            sizes = {size.name: run_size(size, config, tokenizer, device, say) for size in config.sizes}
        finally:
            gc.unfreeze()
        quality = run_quality(config.quality, config, tokenizer, device, say) if config.quality else None
        env["load_average_at_end"] = load_average()
    targets = evaluate_targets(sizes, config.target_fi)
    evaluated = [t for t in targets if t["passed"] is not None]
    return {"benchmark": "pretrain", "environment": env, "config": asdict(config), "sizes": sizes,
            "targets": targets, "all_targets_met": all(t["passed"] for t in evaluated),
            "targets_evaluated": len(evaluated), "targets_skipped": len(targets) - len(evaluated), "quality": quality,
            "wall_seconds": time.perf_counter() - started}
