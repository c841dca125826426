"""One mode of the pretraining benchmark: its full optimizer step, the timing of ``timed_steps`` such steps with
their peak memory (:func:`time_mode`), the Fi-weighted step time of ScTD (:func:`step_time`), the FLOPs of one
step of every mode counted by PyTorch (:func:`measure_flops`), and the analytic FLOPs ratio each mode should
reach (:func:`analytic_flops_ratios`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from tdnotebooks.bench.common import count_flops
from tdnotebooks.bench.pretrain.config import (
    BASELINE,
    HF_PEER,
    RANDOM_DROP,
    SCTD,
    SCTD_UNIT_FI,
    TOKEN_DROP,
    BenchConfig,
    SizeSpec,
)

__all__ = ["PeakRSS", "analytic_flops_ratios", "measure_flops", "mode_fi", "sctd_steps", "step_time", "time_mode"]


# ============================================================================ 1. memory
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


# ============================================================================ 2. one mode
def mode_fi(mode: str) -> int | None:
    """The ScTD interval of ``mode`` (``sctd_fi{Fi}``; the ``sctd`` unit runs :data:`SCTD_UNIT_FI`), else None."""
    if mode == SCTD:
        return SCTD_UNIT_FI
    return int(mode.removeprefix("sctd_fi")) if mode.startswith("sctd_fi") else None


def sctd_steps(fi: int) -> tuple[int, int | None]:
    """(the first full step t, the first dropped step t or None when Fi = 1) of ScTD's schedule
    (:func:`tdnotebooks.pretraining.sctd.is_full_step`, whichever steps of a window it makes full)."""
    from tdnotebooks.pretraining.sctd import is_full_step

    kinds = [is_full_step(t, fi) for t in range(fi)]
    return kinds.index(True), kinds.index(False) if False in kinds else None


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
        kind = SCTD if mode.startswith(SCTD) else mode
        fi = mode_fi(mode) or 10
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
    updates_importance = mode in (TOKEN_DROP,) or mode.startswith(SCTD)

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
    """Warm up, then time ``size.timed_steps`` optimizer steps of ``mode`` on a copy of ``initial``.

    The steps are t = t0 .. t0 + T - 1 with t0 = 0, or for ScTD its first full step (so the timed steps start a
    window); ScTD's warm-up runs at least 2 steps from t0 (both step kinds when Fi > 1).
    """
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
    fi = mode_fi(mode)
    t0 = 0 if fi is None else sctd_steps(fi)[0]
    warmup = size.warmup_steps if fi is None or fi == 1 else max(2, size.warmup_steps)
    with PeakRSS() as rss:
        step, optimizer = _make_step(mode, copy.deepcopy(initial), config, tokenizer, device)
        for w in range(warmup):
            inputs, labels = batches[w % len(batches)]
            step(inputs, labels, t0 + w)
        _synchronize(device)
        seconds, cpu, full = [], [], []
        for i in range(size.timed_steps):
            t = t0 + i
            inputs, labels = batches[(warmup + i) % len(batches)]
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
    cpu_times = step_time(cpu, full, fi)
    kinds = {f"cpu_{k}": v for k, v in cpu_times.items() if k in ("full_step_seconds", "dropped_step_seconds")}
    return {"mode": mode, "step_seconds_each": seconds, "is_full_step": full,
            **step_time(seconds, full, fi), "cpu_step_seconds_each": cpu,
            "cpu_step_seconds": cpu_times["step_seconds"], **kinds, "peak_memory_bytes": int(peak_bytes),
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


# ============================================================================ 3. FLOPs
def measure_flops(initial: Any, batch: tuple[Any, Any], config: BenchConfig, tokenizer: Any,
                  device: Any) -> dict[str, Any]:
    """FLOPs of one training step of every unit, counted on ``batch`` (:func:`tdnotebooks.bench.common.count_flops`:
    forward + backward; the optimizer's element-wise work counts 0), each unit on a fresh copy of ``initial``.

    Returns ``units`` (unit -> FLOPs of one step; ScTD's entry: its dropped step), ``sctd_full_step`` and
    ``sctd_dropped_step`` (ScTD's two step kinds), ``modes`` (mode -> FLOPs per step; ``sctd_fi{Fi}``: the mean
    over a window, (full + (Fi - 1) dropped) / Fi) and ``seconds`` (unit -> wall seconds of its counted steps,
    each the first step of a fresh copy: a rough, pessimistic step time).
    """
    import copy
    import gc
    from functools import partial

    inputs, labels = batch
    units: dict[str, int] = {}
    seconds: dict[str, float] = {}
    sctd: dict[str, int] = {}
    for unit in config.units:
        step, optimizer = _make_step(unit, copy.deepcopy(initial), config, tokenizer, device)
        if unit == SCTD:
            t_full, t_dropped = sctd_steps(SCTD_UNIT_FI)
            sctd["full"], full_seconds = count_flops(partial(step, inputs, labels, t_full))
            sctd["dropped"], dropped_seconds = count_flops(partial(step, inputs, labels, t_dropped))
            units[unit], seconds[unit] = sctd["dropped"], (full_seconds + dropped_seconds) / 2
        else:
            units[unit], seconds[unit] = count_flops(partial(step, inputs, labels, 0))
        del step, optimizer
        gc.collect()
    modes: dict[str, float] = {}
    for mode in config.modes:
        fi = mode_fi(mode)
        modes[mode] = units[mode] if fi is None else (sctd["full"] + (fi - 1) * sctd["dropped"]) / fi
    return {"units": units, "sctd_full_step": sctd.get("full"), "sctd_dropped_step": sctd.get("dropped"),
            "modes": modes, "seconds": seconds}


def analytic_flops_ratios(size: SizeSpec, config: BenchConfig, vocab_size: int,
                          mlm_probability: float = 0.15) -> dict[str, float]:
    """Forward FLOPs of each mode / baseline for one block (masked predictions per block as mask_tokens makes),
    with token dropping's default ``first_layer_full_kv`` (what the measured modes run)."""
    from tdnotebooks.pretraining.token_dropping import TokenDroppingConfig, flops_ratio, layer_flops

    n, h, f, L = size.block_size, size.hidden_size, size.intermediate_size, size.num_layers
    m = max(1, round(mlm_probability * (n - 2)))           # mask_tokens: round(15 % of non-special), >= 1
    td_config = TokenDroppingConfig(keep_fraction=config.keep_fraction)
    start, end = td_config.layer_range(L)
    r = flops_ratio(L, start, end, config.keep_fraction, n, h, f, first_layer_full_kv=td_config.first_layer_full_kv,
                    num_predictions=m, vocab_size=vocab_size)
    ratios = {BASELINE: 1.0, TOKEN_DROP: r, RANDOM_DROP: r}
    for fi in config.fis:
        ratios[f"sctd_fi{fi}"] = r + 1.0 / fi
    if config.hf_peer:
        encoder = L * layer_flops(n, n, h, f)
        head = lambda k: 2 * k * h * h + 2 * k * h * vocab_size  # noqa: E731
        ratios[HF_PEER] = (encoder + head(n)) / (encoder + head(m))
    return ratios
