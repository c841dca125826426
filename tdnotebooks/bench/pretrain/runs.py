"""What the pretraining benchmark measures: every mode at each model size on the same masked batches
(:func:`run_size`, skipping a size whose estimated time exceeds its budget), the quality comparison of
baseline, token_drop and ScTD pretraining (:func:`run_quality`); :func:`run_benchmark` runs them all."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

from tdnotebooks.bench.common import environment, fixed_torch_threads, load_average
from tdnotebooks.bench.pretrain.config import (
    BASELINE,
    HF_PEER,
    QUALITY_METHODS,
    TOKEN_DROP,
    BenchConfig,
    QualitySpec,
    SizeSpec,
)
from tdnotebooks.bench.pretrain.steps import analytic_flops_ratios, time_mode
from tdnotebooks.bench.pretrain.targets import compare_sctd, evaluate_targets

__all__ = ["estimate_seconds", "masked_batches", "run_benchmark", "run_quality", "run_size", "size_setup"]


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


def run_size(size: SizeSpec, config: BenchConfig, tokenizer: Any, device: Any,
             progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Every mode at one size: rows, FLOPs ratios, ratios to the baseline; skipped if over its budget."""

    from tdnotebooks.models import count_parameters

    started = time.perf_counter()
    initial, batches, flops = size_setup(size, config, tokenizer, device)
    result: dict[str, Any] = {"size": asdict(size), "parameters": count_parameters(initial),
                              "tokens_per_step": size.batch_size * size.block_size, "skipped": None, "modes": {}}
    for mode in config.modes:
        progress(f"  {size.name}: {mode}")
        row = time_mode(mode, initial, batches, size, config, tokenizer, device)
        row["flops_ratio"] = flops[mode]
        row["tokens_per_second"] = result["tokens_per_step"] / row["step_seconds"]
        result["modes"][mode] = row
        if mode == BASELINE and size.budget_seconds is not None:
            estimate = estimate_seconds(row, size, config)
            result["estimated_seconds"] = estimate
            if estimate > size.budget_seconds:
                result["skipped"] = (f"estimated {estimate:.0f} s for all {len(config.modes)} modes (from the "
                                     f"baseline's {row['step_seconds']:.1f} s per step) > budget "
                                     f"{size.budget_seconds:.0f} s")
                progress(f"  {size.name}: skipped, {result['skipped']}")
                break
    base = result["modes"][BASELINE]["step_seconds"]
    cpu_base = result["modes"][BASELINE]["cpu_step_seconds"]
    for row in result["modes"].values():
        row["vs_baseline"] = row["step_seconds"] / base
        row["cpu_vs_baseline"] = row["cpu_step_seconds"] / cpu_base if cpu_base > 0 else None
    result["wall_seconds"] = time.perf_counter() - started
    return result


def estimate_seconds(baseline_row: Mapping[str, Any], size: SizeSpec, config: BenchConfig) -> float:
    """Rough run time of all remaining modes from the baseline's step time: token dropping ~0.8x, an ScTD
    full step ~1.8x, HF's all-position head ~1.3x; every step (warm-up included) counted."""
    t = baseline_row["step_seconds"]
    steps = size.warmup_steps + size.timed_steps
    factors = {TOKEN_DROP: 0.8, "random_drop": 0.8, HF_PEER: 1.3}
    total = 0.0
    for mode in config.modes[1:]:
        if mode.startswith("sctd"):
            fi = int(mode.removeprefix("sctd_fi"))
            full_steps = 1 + sum(1 for i in range(size.timed_steps) if i % fi == 0)
            total += t * (0.8 * steps + 1.0 * full_steps)
        else:
            total += t * factors[mode] * steps
    return total


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
        device=device.type, lam=spec.lam, fi=spec.fi)
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
    return {"spec": asdict(spec), "methods": runs, "comparison": compare_sctd(runs, len(spec.seeds))}


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
        sizes = {size.name: run_size(size, config, tokenizer, device, say) for size in config.sizes}
        quality = run_quality(config.quality, config, tokenizer, device, say) if config.quality else None
        env["load_average_at_end"] = load_average()
    targets = evaluate_targets(sizes, config.target_fi)
    return {"benchmark": "pretrain", "environment": env, "config": asdict(config), "sizes": sizes,
            "targets": targets, "all_targets_met": all(t["passed"] for t in targets), "quality": quality,
            "wall_seconds": time.perf_counter() - started}
