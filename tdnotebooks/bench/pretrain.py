"""Pretraining speed benchmark: baseline vs token dropping vs random dropping vs ScTD, plus HF's stock step.

``python -m tdnotebooks.bench pretrain [--quick] [--out FILE] [--device cpu|cuda] [--threads N]``

For each model size (a tiny BERT for CPUs and BERT-base, 12 layers x 768, random init) every mode runs a
few full optimizer steps (forward + backward + gradient clipping + AdamW + importance update: the step of
:func:`tdnotebooks.pretraining.train.pretrain`) in one process, with a fixed number of torch threads, each mode on a
fresh copy of the same initial weights and on the same masked batches (:func:`tdnotebooks.pretraining.train.mask_tokens`
on packed corpus blocks). Modes:

- ``baseline``: the full model (MLM head at the masked positions only, like every mode below);
- ``token_drop``: Hou et al. (2022), keep 50 % of the tokens in the middle layers (importance table);
- ``random_drop``: the same layers on a uniform random 50 % (Random-LTD style);
- ``sctd_fi{Fi}``: ScTD (Zhong et al. 2023, Eq. 4): token dropping, plus at steps t with t mod Fi == 0 a
  second, full pass and the two KL terms;
- ``hf_bert_mlm``: Hugging Face's stock ``BertForMaskedLM(labels=...)`` step, whose MLM head runs at all
  positions: the step a user would otherwise run (the peer, not a mode of our wrapper).

Definitions (every figure of the table):

- step time: mean wall time of the timed steps (after ``warmup_steps`` untimed ones that also create
  AdamW's state). For ScTD the step kinds differ, so its step time is the Fi-weighted mean
  ``(t_full + (Fi - 1) t_dropped) / Fi`` of the mean full-step and dropped-step times, which is exactly the
  mean over any window of a multiple of Fi steps: the full-pass steps count in their true proportion even
  when fewer than Fi steps were timed. The timed steps are t = 0 .. T-1 (t = 0 is a full step).
- tokens/s: batch size x block size / step time (all block tokens, as in ``PretrainHistory.tokens_per_second``).
- vs baseline: step time / baseline step time (same size, same run).
- FLOPs ratio: analytic forward FLOPs / baseline's (:func:`tdnotebooks.pretraining.token_dropping.flops_ratio`, MLM head
  at the masked positions included); ScTD: r + 1 / Fi (a full step runs the dropped and the full pass);
  HF: all-position head instead of the masked-position one.
- cpu vs base: the step-time ratio in CPU seconds of the calling thread (``time.thread_time``; with one
  torch thread all the compute runs there): on a shared CPU it leaves out the waiting. Informative only.
- peak memory: CUDA: ``torch.cuda.max_memory_allocated`` during the mode minus the memory allocated before
  its model copy was made (weights, gradients, AdamW state, activations). CPU: the peak resident set size
  (sampled every few ms by a thread, psutil) minus the RSS before the mode: approximate, since the
  allocator keeps freed memory and the sampling can miss short peaks.

Targets (per size): token_drop step / baseline <= FLOPs ratio + 0.05; sctd(Fi=10) step / token_drop <= 1.12.

Quality (the second table; ``--no-quality`` skips it): does ScTD beat vanilla token dropping, as the paper
claims? A tiny BERT is pretrained from scratch on the bundled Shakespeare corpus with baseline, token_drop
and sctd (Fi=10, lambda=0.05), same seeds, data and initial weights, then compared with
:func:`tdnotebooks.pretraining.analysis.compare_pretraining` on dev MLM loss (full model), semantic drift (Sentence-BERT
cosine of the view each method trains on, Rotten Tomatoes dev snippets), a linear sentiment probe on the last
layer, and downstream sentiment accuracy after fine-tuning. The report states each ScTD - token_drop
difference next to its noise (the seeds' sd when there are several) and says plainly when it is inside it.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from tdnotebooks.bench.finetune import _environment, _int_at_least, _load, format_table, write_results

__all__ = ["HELP", "BenchConfig", "QualitySpec", "SizeSpec", "compare_sctd", "format_quality", "run_quality", "add_arguments", "analytic_flops_ratios", "base_size",
           "evaluate_targets", "format_report", "full_config", "quick_config", "run", "run_benchmark", "step_time",
           "tiny_size"]

HELP = ("pretraining step time, tokens/s, FLOPs ratio and peak memory: baseline, token_drop, random_drop, "
        "ScTD(Fi) and HF's BertForMaskedLM, at a tiny and at BERT-base size")

DEFAULT_OUT = "bench-results/pretrain.json"
FIS = (5, 10, 20, 50)
BASELINE = "baseline"
TOKEN_DROP = "token_drop"
HF_PEER = "hf_bert_mlm"
TOKEN_DROP_SLACK = 0.05     # token_drop / baseline <= FLOPs ratio + 0.05
SCTD_LIMIT = 1.12           # sctd(Fi=10) / token_drop <= 1.12


# ============================================================================ 1. configuration
@dataclass
class SizeSpec:
    """One model size: a BERT of ``num_layers`` x ``hidden_size`` trained on blocks of ``block_size`` tokens."""

    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    block_size: int
    batch_size: int
    timed_steps: int
    warmup_steps: int = 1
    budget_seconds: float | None = None   # skip the size when the estimated run time exceeds this

    def __post_init__(self) -> None:
        for name, low in (("num_layers", 2), ("hidden_size", 8), ("num_heads", 1), ("intermediate_size", 8),
                          ("block_size", 8), ("batch_size", 1), ("timed_steps", 1), ("warmup_steps", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{self.name}: {name} must be an int >= {low}, got {value!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"{self.name}: hidden_size ({self.hidden_size}) must be divisible by num_heads "
                             f"({self.num_heads})")
        if self.budget_seconds is not None and not self.budget_seconds > 0:
            raise ValueError(f"{self.name}: budget_seconds must be None or > 0, got {self.budget_seconds!r}")


def tiny_size(**overrides: Any) -> SizeSpec:
    """tdnotebooks.models.tiny_bert's defaults (4 layers x 128), blocks of 64, batch 32 (PretrainConfig's)."""
    settings = {"name": "tiny", "num_layers": 4, "hidden_size": 128, "num_heads": 4, "intermediate_size": 512,
                "block_size": 64, "batch_size": 32, "timed_steps": 10, "warmup_steps": 2}
    return SizeSpec(**{**settings, **overrides})


def base_size(**overrides: Any) -> SizeSpec:
    """BERT-base: 12 layers x 768, 12 heads, feed-forward 3072, blocks of 128."""
    settings = {"name": "bert-base", "num_layers": 12, "hidden_size": 768, "num_heads": 12,
                "intermediate_size": 3072, "block_size": 128, "batch_size": 32, "timed_steps": 20, "warmup_steps": 2}
    return SizeSpec(**{**settings, **overrides})


@dataclass
class QualitySpec:
    """The quality comparison: ``steps`` of pretraining per method and seed, then the analyses.

    probe_size / drift_size / downstream_size: Rotten Tomatoes snippets used (train and dev each);
    downstream_epochs: fine-tuning epochs of :func:`tdnotebooks.pretraining.analysis.downstream`.
    """

    steps: int = 150
    batch_size: int = 16
    block_size: int = 64
    max_texts: int | None = 4000
    seeds: tuple[int, ...] = (0,)
    fi: int = 10
    lam: float = 0.05
    drift_size: int = 64
    probe_size: int = 256
    downstream_size: int = 256
    downstream_epochs: int = 2

    def __post_init__(self) -> None:
        self.seeds = tuple(self.seeds)
        for name, low in (("steps", 1), ("batch_size", 1), ("block_size", 8), ("fi", 1), ("drift_size", 1),
                          ("probe_size", 4), ("downstream_size", 4), ("downstream_epochs", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"quality: {name} must be an int >= {low}, got {value!r}")
        if not self.seeds or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in self.seeds):
            raise ValueError(f"quality: seeds must be a non-empty tuple of ints >= 0, got {self.seeds!r}")
        if isinstance(self.lam, bool) or not isinstance(self.lam, (int, float)) or self.lam < 0:
            raise ValueError(f"quality: lam must be >= 0, got {self.lam!r}")


@dataclass
class BenchConfig:
    """What one benchmark run does. :func:`quick_config` and :func:`full_config` are the two presets.

    fis: the ScTD intervals; target_fi: the one the ScTD target reads (must be in fis). keep_fraction:
    tokens kept by the dropped layers (0.5 = the paper's 50 %). hf_peer: also time HF's BertForMaskedLM.
    quality: the ScTD vs token drop quality comparison (None: skip it).
    """

    sizes: tuple[SizeSpec, ...] = field(default_factory=lambda: (tiny_size(), base_size()))
    fis: tuple[int, ...] = FIS
    target_fi: int = 10
    keep_fraction: float = 0.5
    hf_peer: bool = True
    lr: float = 1e-4
    seed: int = 0
    device: str | None = None      # None: CUDA when present, else CPU
    threads: int | None = None     # None: torch's current number of threads
    quick: bool = False
    quality: QualitySpec | None = field(default_factory=lambda: QualitySpec(steps=2000, batch_size=32, seeds=(0, 1, 2),
                                                                          max_texts=None, downstream_epochs=3))

    def __post_init__(self) -> None:
        self.sizes, self.fis = tuple(self.sizes), tuple(self.fis)
        if not self.sizes or not all(isinstance(s, SizeSpec) for s in self.sizes):
            raise ValueError(f"sizes must be a non-empty tuple of SizeSpec, got {self.sizes!r}")
        if not self.fis or any(isinstance(f, bool) or not isinstance(f, int) or f < 1 for f in self.fis):
            raise ValueError(f"fis must be a non-empty tuple of ints >= 1, got {self.fis!r}")
        if self.target_fi not in self.fis:
            raise ValueError(f"target_fi must be one of fis {self.fis}, got {self.target_fi!r}")
        f = self.keep_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 < f < 1.0:
            raise ValueError(f"keep_fraction must be in (0, 1), got {f!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise ValueError(f"threads must be None or an int >= 1, got {self.threads!r}")
        if self.quality is not None and not isinstance(self.quality, QualitySpec):
            raise ValueError(f"quality must be a QualitySpec or None, got {type(self.quality).__name__}")

    @property
    def modes(self) -> tuple[str, ...]:
        """Row names in run order: our modes, then the HF peer."""
        peer = (HF_PEER,) if self.hf_peer else ()
        return (BASELINE, TOKEN_DROP, "random_drop", *(f"sctd_fi{fi}" for fi in self.fis), *peer)


def quick_config(**overrides: Any) -> BenchConfig:
    """A few minutes on 2 CPU cores, 1 torch thread (see ``finetune.quick_config`` for why one thread):
    the tiny size (10 timed steps) and BERT-base at batch 8 with 3 timed steps after 1 warm-up, skipped
    when the estimate from its first baseline step says it would take more than 4 minutes; quality: 150
    pretraining steps per method, one seed."""
    settings: dict[str, Any] = {
        "quick": True, "threads": 1, "quality": QualitySpec(),
        "sizes": (tiny_size(), base_size(batch_size=8, timed_steps=3, warmup_steps=1, budget_seconds=240.0)),
    }
    return BenchConfig(**{**settings, **overrides})


def full_config(**overrides: Any) -> BenchConfig:
    """For a GPU: tiny (batch 32, 10 steps) and BERT-base (batch 32, 20 timed steps: a multiple of 5, 10, 20);
    quality: 2,000 pretraining steps at batch 32 per method on the whole corpus, seeds 0, 1, 2."""
    return BenchConfig(**overrides)


# ============================================================================ 2. memory
class PeakRSS:
    """Peak resident set size of this process while active, sampled every ``interval`` seconds (psutil)."""

    def __init__(self, interval: float = 0.002) -> None:
        import psutil

        self.process, self.interval = psutil.Process(), interval
        self.start = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def delta_bytes(self) -> int:
        return self.peak - self.start


# ============================================================================ 3. one mode
def _synchronize(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _make_step(mode: str, mlm: Any, config: BenchConfig, tokenizer: Any, device: Any
               ) -> tuple[Callable[[Any, Any, int], None], Any]:
    """(step(inputs, labels, t): one full optimizer step, the optimizer) for ``mode`` on the model ``mlm``."""
    import torch

    from tdnotebooks.pretraining.sctd import ScTDConfig
    from tdnotebooks.pretraining.token_dropping import TokenDroppingBert, TokenDroppingConfig
    from tdnotebooks.pretraining.train import DEFAULT_BETA, PretrainObjective
    from tdnotebooks.runtime import amp_dtype

    dtype = amp_dtype(device)
    if mode == HF_PEER:
        module, objective = mlm, None
    else:
        kind = "sctd" if mode.startswith("sctd") else mode
        fi = int(mode.removeprefix("sctd_fi")) if kind == "sctd" else 10
        td_config = TokenDroppingConfig(keep_fraction=config.keep_fraction, beta=DEFAULT_BETA.get(kind, 0.995),
                                        selection="random" if kind == "random_drop" else "importance")
        module = TokenDroppingBert(mlm, td_config, special_token_ids=tokenizer.all_special_ids,
                                   pad_token_id=tokenizer.pad_token_id)
        objective = PretrainObjective(module, kind, ScTDConfig(fi=fi))
    module.to(device).train()
    decay = [p for p in module.parameters() if p.ndim > 1]
    no_decay = [p for p in module.parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr, eps=1e-6)
    updates_importance = mode in (TOKEN_DROP,) or mode.startswith("sctd")

    def step(inputs: Any, labels: Any, t: int) -> None:
        mask = torch.ones_like(inputs)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            if objective is None:
                loss, out = module(input_ids=inputs, attention_mask=mask, labels=labels).loss, None
            else:
                loss, _, out = objective(inputs, mask, labels, t)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if updates_importance:
            module.update_importance(out)

    return step, optimizer


def time_mode(mode: str, initial: Any, batches: Sequence[tuple[Any, Any]], size: SizeSpec, config: BenchConfig,
              tokenizer: Any, device: Any) -> dict[str, Any]:
    """Warm up, then time ``size.timed_steps`` optimizer steps t = 0..T-1 of ``mode`` on a copy of ``initial``."""
    import copy
    import gc

    import torch

    from tdnotebooks.pretraining.sctd import is_full_step

    gc.collect()
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    with PeakRSS() as rss:
        step, optimizer = _make_step(mode, copy.deepcopy(initial), config, tokenizer, device)
        fi = int(mode.removeprefix("sctd_fi")) if mode.startswith("sctd") else None
        for w in range(size.warmup_steps):         # t = 0 first: for ScTD the warm-up runs both passes
            inputs, labels = batches[w % len(batches)]
            step(inputs, labels, w)
        _synchronize(device)
        seconds, cpu, full = [], [], []
        for t in range(size.timed_steps):
            inputs, labels = batches[(size.warmup_steps + t) % len(batches)]
            _synchronize(device)
            start, cpu_start = time.perf_counter(), time.thread_time()
            step(inputs, labels, t)
            _synchronize(device)
            seconds.append(time.perf_counter() - start)
            cpu.append(time.thread_time() - cpu_start)
            full.append(fi is not None and is_full_step(t, fi))
    peak_bytes = (torch.cuda.max_memory_allocated(device) - before) if cuda else rss.delta_bytes
    del step, optimizer
    gc.collect()
    return {"mode": mode, "step_seconds_each": seconds, "is_full_step": full,
            **step_time(seconds, full, fi), "cpu_step_seconds_each": cpu,
            "cpu_step_seconds": step_time(cpu, full, fi)["step_seconds"], "peak_memory_bytes": int(peak_bytes),
            "memory_kind": "cuda_max_memory_allocated" if cuda else "approx_peak_rss_delta"}


def step_time(seconds: Sequence[float], full: Sequence[bool], fi: int | None) -> dict[str, Any]:
    """The step time of a mode (see the module docstring); for ScTD the Fi-weighted mean of both step kinds.

    Needs at least one full and one dropped step for ScTD with Fi > 1.
    """
    if len(seconds) != len(full) or not seconds:
        raise ValueError("seconds and full must be non-empty and of the same length")
    plain = sum(seconds) / len(seconds)
    if fi is None:
        return {"step_seconds": plain, "plain_mean_seconds": plain}
    full_times = [s for s, f in zip(seconds, full, strict=True) if f]
    dropped_times = [s for s, f in zip(seconds, full, strict=True) if not f]
    if not full_times or (fi > 1 and not dropped_times):
        raise ValueError(f"ScTD (Fi={fi}) needs at least one full and one dropped timed step, got "
                         f"{len(full_times)} full and {len(dropped_times)} dropped")
    t_full = sum(full_times) / len(full_times)
    t_dropped = sum(dropped_times) / len(dropped_times) if dropped_times else t_full
    return {"step_seconds": (t_full + (fi - 1) * t_dropped) / fi, "plain_mean_seconds": plain,
            "full_step_seconds": t_full, "dropped_step_seconds": t_dropped}


# ============================================================================ 4. analytic FLOPs
def analytic_flops_ratios(size: SizeSpec, config: BenchConfig, vocab_size: int,
                          mlm_probability: float = 0.15) -> dict[str, float]:
    """Forward FLOPs of each mode / baseline for one block (masked predictions per block as mask_tokens makes)."""
    from tdnotebooks.pretraining.token_dropping import TokenDroppingConfig, flops_ratio, layer_flops

    n, h, f, L = size.block_size, size.hidden_size, size.intermediate_size, size.num_layers
    m = max(1, round(mlm_probability * (n - 2)))           # mask_tokens: round(15 % of non-special), >= 1
    start, end = TokenDroppingConfig(keep_fraction=config.keep_fraction).layer_range(L)
    r = flops_ratio(L, start, end, config.keep_fraction, n, h, f, num_predictions=m, vocab_size=vocab_size)
    ratios = {BASELINE: 1.0, TOKEN_DROP: r, "random_drop": r}
    for fi in config.fis:
        ratios[f"sctd_fi{fi}"] = r + 1.0 / fi
    if config.hf_peer:
        encoder = L * layer_flops(n, n, h, f)
        head = lambda k: 2 * k * h * h + 2 * k * h * vocab_size  # noqa: E731
        ratios[HF_PEER] = (encoder + head(n)) / (encoder + head(m))
    return ratios


# ============================================================================ 5. one size, the whole run
def _batches(size: SizeSpec, tokenizer: Any, seed: int, device: Any, count: int = 4) -> list[tuple[Any, Any]]:
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


def run_size(size: SizeSpec, config: BenchConfig, tokenizer: Any, device: Any,
             progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Every mode at one size: rows, FLOPs ratios, ratios to the baseline; skipped if over its budget."""
    from transformers import BertForMaskedLM

    from tdnotebooks.models import count_parameters, tiny_bert
    from tdnotebooks.runtime import seed_everything

    started = time.perf_counter()
    seed_everything(config.seed)
    bert_config = tiny_bert(num_layers=size.num_layers, hidden_size=size.hidden_size, num_heads=size.num_heads,
                            intermediate_size=size.intermediate_size,
                            max_position_embeddings=max(128, size.block_size), tokenizer=tokenizer)
    initial = BertForMaskedLM(bert_config)
    batches = _batches(size, tokenizer, config.seed, device)
    flops = analytic_flops_ratios(size, config, bert_config.vocab_size)
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


def evaluate_targets(sizes: Mapping[str, Any], target_fi: int) -> list[dict[str, Any]]:
    """The two targets for every size that was measured (skipped sizes give none)."""
    targets = []
    for name, result in sizes.items():
        modes = result["modes"]
        if result["skipped"] or TOKEN_DROP not in modes:
            continue
        td = modes[TOKEN_DROP]
        threshold = td["flops_ratio"] + TOKEN_DROP_SLACK
        targets.append({"size": name, "target": "token_drop_vs_baseline", "value": td["vs_baseline"],
                        "comparison": "<=", "threshold": threshold, "passed": td["vs_baseline"] <= threshold})
        sctd = modes.get(f"sctd_fi{target_fi}")
        if sctd is not None:
            value = sctd["step_seconds"] / td["step_seconds"]
            targets.append({"size": name, "target": f"sctd_fi{target_fi}_vs_token_drop", "value": value,
                            "comparison": "<=", "threshold": SCTD_LIMIT, "passed": value <= SCTD_LIMIT})
    return targets


QUALITY_METHODS = ("baseline", "token_drop", "sctd")


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


# metric: (better when "lower" / "higher")
QUALITY_DIRECTIONS = {"dev_mlm_loss": "lower", "drift": "higher", "probe_last": "higher",
                      "downstream_accuracy": "higher"}


def compare_sctd(runs: Mapping[str, Any], num_seeds: int) -> list[dict[str, Any]]:
    """ScTD - token_drop per quality metric, and whether the difference is outside the noise.

    noise: sqrt(sd_sctd^2 + sd_td^2) / sqrt(seeds) over seeds (None with one seed: no estimate, so no
    difference can be called real). ``sctd_better`` says the direction only; ``outside_noise`` whether it
    exceeds two noise units.
    """
    rows = []
    for metric, better in QUALITY_DIRECTIONS.items():
        sctd, td = runs["sctd"]["mean"][metric], runs["token_drop"]["mean"][metric]
        if sctd is None or td is None:
            continue
        diff = sctd - td
        sds = runs["sctd"]["sd"][metric], runs["token_drop"]["sd"][metric]
        noise = None if None in sds else float((sds[0] ** 2 + sds[1] ** 2) ** 0.5 / num_seeds ** 0.5)
        rows.append({"metric": metric, "better": better, "sctd": sctd, "token_drop": td, "difference": diff,
                     "sctd_better": diff < 0 if better == "lower" else diff > 0, "noise": noise,
                     "outside_noise": noise is not None and abs(diff) > 2 * noise})
    return rows


def run_benchmark(config: BenchConfig, progress: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Run the whole benchmark; the results as a JSON-ready dict (what ``--out`` writes)."""
    import torch

    from tdnotebooks.models import load_tokenizer
    from tdnotebooks.runtime import get_device

    started = time.perf_counter()
    device = get_device(config.device)
    threads_before = torch.get_num_threads()
    say = progress or (lambda _message: None)
    try:
        torch.set_num_threads(config.threads or threads_before)      # fixed for every mode of the run
        environment = _environment(config, device)
        tokenizer = load_tokenizer()
        sizes = {}
        for size in config.sizes:
            sizes[size.name] = run_size(size, config, tokenizer, device, say)
        quality = run_quality(config.quality, config, tokenizer, device, say) if config.quality else None
        environment["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        targets = evaluate_targets(sizes, config.target_fi)
        return {"benchmark": "pretrain", "environment": environment, "config": asdict(config),
                "sizes": sizes, "targets": targets, "all_targets_met": all(t["passed"] for t in targets),
                "quality": quality,
                "wall_seconds": time.perf_counter() - started}
    finally:
        torch.set_num_threads(threads_before)


# ============================================================================ 6. the report
HEADERS = ["size", "mode", "step s", "tokens/s", "vs base", "cpu vs base", "FLOPs ratio", "peak MiB"]


def _rows(sizes: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for name, result in sizes.items():
        for mode, r in result["modes"].items():
            rows.append([name, mode, f"{r['step_seconds']:.3f}", f"{r['tokens_per_second']:,.0f}",
                         f"{r['vs_baseline']:.2f}",
                         "-" if r["cpu_vs_baseline"] is None else f"{r['cpu_vs_baseline']:.2f}", f"{r['flops_ratio']:.3f}",
                         f"{r['peak_memory_bytes'] / 2**20:,.0f}"])
    return rows


def format_report(results: Mapping[str, Any]) -> str:
    """The human-readable report of :func:`run_benchmark`'s results (table, targets, notes)."""
    env, config = results["environment"], results["config"]
    gpu = f" ({env['gpu']})" if env["gpu"] else ""
    memory = ("peak MiB: torch.cuda.max_memory_allocated minus the memory allocated before the mode"
              if env["device"].startswith("cuda") else
              "peak MiB: peak RSS delta of the process during the mode (approximate: allocator reuse, sampling)")
    out = [f"Pretraining benchmark ({'quick' if env['quick'] else 'full'}): device {env['device']}{gpu}, "
           f"{env['threads']} torch threads, torch {env['torch']}, transformers {env['transformers']}",
           f"keep fraction {config['keep_fraction']}, ScTD Fi {', '.join(map(str, config['fis']))}; "
           "step = forward + backward + clip + AdamW (+ importance update)", ""]
    for name, r in results["sizes"].items():
        s = r["size"]
        out.append(f"{name}: {s['num_layers']} layers x {s['hidden_size']}, {r['parameters'] / 1e6:.1f} M parameters, "
                   f"batch {s['batch_size']} x block {s['block_size']}, {s['warmup_steps']} warm-up + "
                   f"{s['timed_steps']} timed steps" + (f"; SKIPPED after the baseline: {r['skipped']}"
                                                         if r["skipped"] else ""))
    out += ["", format_table(HEADERS, _rows(results["sizes"])), "",
            "sctd step s: (full step + (Fi - 1) dropped steps) / Fi, the mean over a window of Fi steps; "
            "FLOPs ratio: analytic forward FLOPs / baseline; cpu vs base: the same ratio in CPU seconds of the "
            "timing thread (less sensitive to other jobs on a shared CPU; informative, the targets use wall time)",
            memory, "", "Targets"]
    for t in results["targets"]:
        out.append(f"  {'PASS' if t['passed'] else 'FAIL'}  {t['size']:<10} {t['target']}: {t['value']:.3f} "
                   f"{t['comparison']} {t['threshold']:.3f}")
    if not results["targets"]:
        out.append("  none evaluated (every size skipped)")
    if env["quick"]:
        out.append("Quick scale: a few steps on a small, shared CPU; read the ratios as indicative only.")
    if results.get("quality"):
        out += ["", *format_quality(results["quality"])]
    out.append(f"Wall time {results['wall_seconds']:.0f} s; load average (1, 5, 15 min) "
               f"{_load(env['load_average_at_start'])} at start, {_load(env['load_average_at_end'])} at end.")
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


# ============================================================================ 7. command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m tdnotebooks.bench pretrain``."""
    parser.add_argument("--quick", action="store_true",
                        help="minutes on a CPU: 1 thread, tiny size + BERT-base at batch 8, 3 timed steps "
                             "(BERT-base skipped if the estimate exceeds 4 minutes)")
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="FILE", help=f"JSON results (default {DEFAULT_OUT})")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available, else cpu")
    parser.add_argument("--no-quality", action="store_true",
                        help="skip the quality comparison (ScTD vs token drop vs baseline pretraining)")
    parser.add_argument("--quality-steps", type=_int_at_least(1), metavar="N",
                        help="pretraining steps per method in the quality comparison (quick: 150, full: 2000)")
    parser.add_argument("--quality-seeds", type=_int_at_least(1), metavar="N",
                        help="seeds 0 .. N-1 for the quality comparison (quick: 1, full: 3)")
    parser.add_argument("--threads", type=_int_at_least(1), metavar="N",
                        help="torch CPU threads, fixed for the whole run (default: 1 with --quick, else "
                             "torch's current setting)")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The :class:`BenchConfig` the options ask for (ValueError for a bad combination, e.g. no CUDA)."""
    from tdnotebooks.runtime import get_device

    overrides = {name: getattr(args, name) for name in ("device", "threads") if getattr(args, name) is not None}
    config = (quick_config if args.quick else full_config)(**overrides)
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
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        config = config_from_args(args)
    except ValueError as exc:
        args.parser.error(str(exc))
    results = run_benchmark(config)
    print(format_report(results))
    print(f"\nresults written to {write_results(results, args.out)}")
    return 0
