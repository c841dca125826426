"""GPU readiness: every mechanism of the course measured once on one CUDA GPU, in at most 8 minutes.

``python -m tdnotebooks.bench gpu [--out FILE] [--budget-seconds S] [--sections ...] [--seeds N]``

Three sections, each reusing the pieces of the ``finetune`` and ``pretrain`` benchmarks, all under autocast
(bf16 where ``torch.cuda.is_bf16_supported()``, else fp16; :func:`tdnotebooks.runtime.amp_dtype`):

1. ``finetune``: the bundled MiniLM classifier fine-tuned on the whole ``rt_sentiment`` training split with
   ``random`` (the baseline), ``tokendrop_bucket``, ``group_by_length`` and ``bucket``
   (:func:`tdnotebooks.bench.finetune.train_one`; ``finetune`` adds a GradScaler under fp16): wall-clock
   speed-up vs random, padding fraction, optimizer steps, dev accuracy.
2. ``hwcap``: :func:`tdnotebooks.finetuning.hwcap.profile_hwcap` for the same model at max length 128, one
   bucket at a time (each cap bounded by the previous one, as a single call does): the batch size per bucket and
   the token budget it implies (batch x length).
3. ``pretrain``: step time of ``token_drop`` and ScTD (Fi=10) vs ``baseline`` and of Hugging Face's stock
   ``BertForMaskedLM`` step, at BERT-base size and at the tiny size
   (:func:`tdnotebooks.bench.pretrain.time_mode`); the modes are timed interleaved, ``repeats`` rounds (the
   order rotating by one mode per round, :func:`tdnotebooks.bench.common.interleaved_orders`); median step time,
   spread = (max - min) / median over the rounds (:func:`tdnotebooks.bench.common.spread_summary`); FLOPs ratio:
   counted by ``torch.utils.flop_counter`` (:func:`tdnotebooks.bench.pretrain.measure_flops`, forward +
   backward), beside the analytic one. These steps use autocast without a GradScaler (as the ``pretrain``
   benchmark's): under fp16 only their timing is meant.

Peak GPU memory (``torch.cuda.max_memory_allocated``, reset before each measurement, minus what was allocated
before) is recorded for every fine-tuning run, every HWCap bucket (one forward + backward at the cap found) and
every pretraining mode; the report gathers them in a last table.

The time budget (:class:`TimeBudget`) is checked before every unit of work (a set-up, a fine-tuning run, an
HWCap bucket, a pretraining round) against an estimate: the slowest unit of the same kind measured so far, or a
prior before the first. Each section may use its share of the time left when it starts (weights
:data:`SECTION_WEIGHTS` among the sections still to run); a unit that would end after that is skipped, with a
note in the report and the JSON. A unit already running is never interrupted, so the limit holds as far as the
estimates do.

The measuring code is device-agnostic: ``run_gpu_benchmark(device="cpu", tiny=True)`` runs the same pipeline on
a CPU with tiny sizes in seconds (the tests do). The command line refuses a machine without CUDA.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tdnotebooks.bench.common import (
    format_load,
    format_table,
    int_at_least,
    interleaved_orders,
    out_file,
    run_subcommand,
    spread_summary,
)
from tdnotebooks.validation import check_bool, check_int, check_number

__all__ = ["FINETUNE_METHODS", "HELP", "PRETRAIN_MODES", "SECTIONS", "SECTION_WEIGHTS", "GpuBenchConfig",
           "TimeBudget", "add_arguments", "config_from_args", "format_report", "run", "run_benchmark",
           "run_gpu_benchmark"]

HELP = ("GPU readiness in at most 8 minutes: fine-tuning speed-up, HWCap profile, pretraining step ratios and "
        "peak memory, under autocast (needs a CUDA GPU)")

SECTIONS = ("finetune", "hwcap", "pretrain")
SECTION_WEIGHTS = {"finetune": 4.0, "hwcap": 1.0, "pretrain": 3.0}
TASK = "rt_sentiment"
FINETUNE_METHODS = ("random", "tokendrop_bucket", "group_by_length", "bucket")  # baseline first: budget cuts last
PRETRAIN_MODES = ("baseline", "token_drop", "sctd_fi10", "hf_bert_mlm")
MAX_LENGTH = 128
NO_CUDA = ("needs a CUDA GPU (torch.cuda.is_available() is False); on a CPU use "
           "`python -m tdnotebooks.bench finetune --quick` / `pretrain --quick`")

# Prior estimates in seconds (before a unit of that kind was measured): (GPU run, tiny CPU run).
PRIORS = {"finetune_setup": (40.0, 5.0), "finetune_run": (60.0, 3.0), "hwcap_setup": (10.0, 2.0),
          "hwcap_bucket": (5.0, 0.5), "pretrain_setup": (15.0, 2.0), "pretrain_round": (30.0, 3.0)}


# ============================================================================ 1. settings and the time budget
@dataclass
class GpuBenchConfig:
    """What one run does. ``tiny``: the CPU test sizes (1-2 layer models, tens of examples, 2 rounds)."""

    sections: tuple[str, ...] = SECTIONS
    budget_seconds: float = 480.0
    seeds: int = 1
    device: str = "cuda"
    tiny: bool = False

    def __post_init__(self) -> None:
        chosen = tuple(self.sections)
        if not chosen or any(s not in SECTIONS for s in chosen):
            raise ValueError(f"sections must be a non-empty selection of {', '.join(SECTIONS)}, got {chosen!r}")
        self.sections = tuple(s for s in SECTIONS if s in chosen)  # always run in the documented order
        self.budget_seconds = check_number("budget_seconds", self.budget_seconds, 0)
        check_int("seeds", self.seeds, 1)
        check_bool("tiny", self.tiny)

    @property
    def epochs(self) -> int:
        return 1 if self.tiny else 2

    @property
    def repeats(self) -> int:
        """Pretraining rounds (every mode once per round)."""
        return 2 if self.tiny else 5

    def prior(self, kind: str) -> float:
        return PRIORS[kind][1 if self.tiny else 0]


class TimeBudget:
    """The run's time limit: time used and left, each section's share, and whether a unit still fits.

    ``clock``: seconds, monotonic (a test can pass a frozen one). ``notes``: every skip, in order.
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self.clock, self.start = float(seconds), clock, clock()
        self.notes: list[str] = []
        self.deadline = self.seconds

    @property
    def elapsed(self) -> float:
        return self.clock() - self.start

    @property
    def left(self) -> float:
        return self.seconds - self.elapsed

    def open_section(self, section: str, remaining: Sequence[str]) -> float:
        """Start ``section`` (``remaining``: it and the sections after it); its share of the time left."""
        share = max(0.0, self.left) * SECTION_WEIGHTS[section] / sum(SECTION_WEIGHTS[s] for s in remaining)
        self.deadline = min(self.seconds, self.elapsed + share)
        return share

    def fits(self, estimate: float) -> bool:
        """Would a unit of ``estimate`` seconds, started now, end within the current section's share?"""
        return self.elapsed + estimate <= self.deadline

    def skip(self, what: str, estimate: float) -> str:
        """Record (and return) the note that ``what`` was skipped."""
        note = (f"{what} skipped: estimated {estimate:.1f} s, {max(0.0, self.deadline - self.elapsed):.1f} s left "
                f"of this section's share ({self.left:.0f} s of the {self.seconds:.0f} s budget left)")
        self.notes.append(note)
        return note


class PeakMemory:
    """Peak CUDA memory inside the block: ``max_memory_allocated`` minus what was allocated before (reset on
    entry). ``bytes`` is None on other devices."""

    def __init__(self, device: Any) -> None:
        self.device, self.bytes = device, None

    def __enter__(self) -> PeakMemory:
        import gc

        import torch

        if self.device.type == "cuda":
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.synchronize(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch

        if self.device.type == "cuda" and exc[0] is None:
            torch.cuda.synchronize(self.device)
            self.bytes = int(torch.cuda.max_memory_allocated(self.device) - self.before)


def _release(device: Any) -> None:
    """Free what the last unit left on the GPU (nothing to do elsewhere)."""
    import gc

    import torch

    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


# ============================================================================ 2. section 1: fine-tuning
def _finetune_config(config: GpuBenchConfig) -> Any:
    """The fine-tuning benchmark's settings for this run: whole rt_sentiment splits (tiny: 64 / 32 examples)."""
    from tdnotebooks.bench.finetune import full_config, quick_config

    common = {"tasks": (TASK,), "methods": FINETUNE_METHODS, "seeds": config.seeds, "epochs": config.epochs,
              "device": config.device, "progress": False, "scale_check": False, "test_examples": {TASK: 2}}
    if config.tiny:
        return quick_config(**common, num_layers=1, base_batch_size=16, token_budget=1024, max_length=48,
                            train_examples={TASK: 64}, dev_examples={TASK: 32}, threads=None)
    return full_config(**common, max_length=MAX_LENGTH)


def _finetune_summary(runs: list[dict[str, Any]], seeds: int) -> tuple[dict[str, Any], list[str]]:
    """Per method: :func:`tdnotebooks.bench.finetune.summarize` over the seeds every method finished (else
    the methods of seed 0), plus optimizer steps and peak memory."""
    from tdnotebooks.bench.finetune import summarize

    complete = [s for s in range(seeds) if {r["method"] for r in runs if r["seed"] == s} == set(FINETUNE_METHODS)]
    kept = [r for r in runs if r["seed"] in complete] if complete else [r for r in runs if r["seed"] == 0]
    methods = [m for m in FINETUNE_METHODS if any(r["method"] == m for r in kept)]
    if not complete:
        notes = [f"seed 0 was cut: only {', '.join(methods)} ran"]
    else:
        notes = [] if len(complete) == seeds else [f"summary over seeds {complete}: the other seeds were cut"]
    summary = summarize(kept, methods)
    for method, row in summary.items():
        mine = [r for r in kept if r["method"] == method]
        row["optimizer_steps"] = sum(r["optimizer_steps"] for r in mine) / len(mine)
        peaks = [r["peak_memory_bytes"] for r in mine if r["peak_memory_bytes"] is not None]
        row["peak_memory_bytes"] = max(peaks) if peaks else None
    return summary, notes


def run_finetune_section(config: GpuBenchConfig, budget: TimeBudget, device: Any,
                         say: Callable[[str], None]) -> dict[str, Any]:
    """Fine-tune every method of :data:`FINETUNE_METHODS` per seed from the same initial weights."""
    import copy

    from tdnotebooks.bench.finetune import prepare_splits, train_one
    from tdnotebooks.models import load_pretrained, load_tokenizer
    from tdnotebooks.runtime import seed_everything

    ft = _finetune_config(config)
    result: dict[str, Any] = {"skipped": None, "task": TASK, "settings": ft.finetune_kwargs(),
                              "num_layers": ft.num_layers, "max_length": ft.max_length, "methods": {}, "runs": [],
                              "notes": []}
    first = config.prior("finetune_setup") + 2 * config.prior("finetune_run")  # set-up + baseline + one method
    if not budget.fits(first):
        result["skipped"] = budget.skip("finetune section", first)
        return result
    tokenizer = load_tokenizer()
    splits = prepare_splits(TASK, ft, tokenizer)
    result.update(train_examples=len(splits["train"]), dev_examples=len(splits["dev"]))
    estimate, unit_seconds = config.prior("finetune_run"), []
    for seed in range(config.seeds):
        seed_everything(seed)  # the new classifier head: the same initial weights for every method
        initial = load_pretrained(kind="classifier", num_labels=2, num_layers=ft.num_layers, device="cpu")
        for method in FINETUNE_METHODS if seed % 2 == 0 else tuple(reversed(FINETUNE_METHODS)):
            if not budget.fits(estimate):
                result["notes"].append(budget.skip(f"finetune {method} (seed {seed})", estimate))
                continue
            started = budget.elapsed
            say(f"  finetune: {method} (seed {seed})")
            model = copy.deepcopy(initial)
            with PeakMemory(device) as peak:
                run = train_one(model, splits["train"], splits["dev"], method, seed, ft, tokenizer.pad_token_id,
                                device)
            del model
            _release(device)
            run["peak_memory_bytes"] = peak.bytes
            result["runs"].append(run)
            unit_seconds.append(budget.elapsed - started)
            estimate = 1.2 * max(unit_seconds)  # the slowest run so far, with a margin
    if result["runs"]:
        result["methods"], notes = _finetune_summary(result["runs"], config.seeds)
        result["notes"] += notes
    return result


# ============================================================================ 3. section 2: HWCap
def run_hwcap_section(config: GpuBenchConfig, budget: TimeBudget, device: Any,
                      say: Callable[[str], None]) -> dict[str, Any]:
    """:func:`~tdnotebooks.finetuning.hwcap.profile_hwcap` per bucket of width 5 up to length 128."""
    import warnings

    from tdnotebooks.finetuning.hwcap import measure_peak_memory, profile_hwcap
    from tdnotebooks.finetuning.planning import bucket_upper_lengths
    from tdnotebooks.models import load_pretrained
    from tdnotebooks.runtime import amp_dtype

    lengths = bucket_upper_lengths(MAX_LENGTH, 5)
    max_batch, cpu_token_budget = 4096, 4096
    measured = device.type == "cuda"
    result: dict[str, Any] = {"skipped": None, "max_length": MAX_LENGTH, "bucket_width": 5, "max_batch": max_batch,
                              "measured": measured, "buckets": [], "notes": []}
    first = config.prior("hwcap_setup") + config.prior("hwcap_bucket")
    if not budget.fits(first):
        result["skipped"] = budget.skip("hwcap section", first)
        return result
    model = load_pretrained(kind="classifier", num_labels=2, num_layers=1 if config.tiny else None, device=device)
    dtype = amp_dtype(device)
    if measured:
        import torch

        free, total = torch.cuda.mem_get_info(device)
        result["memory_limit_bytes"] = int(torch.cuda.memory_allocated(device) + 0.9 * free)  # profile_hwcap's
        result["gpu_memory_bytes"] = int(total)
    else:
        result["notes"].append(f"not CUDA: profile_hwcap falls back to a token budget ({cpu_token_budget} // length)")
    estimate, ceiling, unit_seconds = config.prior("hwcap_bucket"), max_batch, []
    say("  hwcap: profiling")
    for i, length in enumerate(lengths):
        if not budget.fits(estimate):
            result["notes"].append(budget.skip(f"hwcap buckets of length {', '.join(map(str, lengths[i:]))}",
                                               estimate))
            break
        started = budget.elapsed
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the CPU fallback's warning: noted once above
            cap = profile_hwcap(model, [length], device, max_batch=ceiling, amp_dtype=dtype,
                                cpu_token_budget=cpu_token_budget)[0]
        ceiling = cap  # a longer bucket never gets a larger batch (what one call over all lengths does)
        peak = None
        if measured:  # the probe resets the peak stats per attempt: measure the cap found once more
            import torch

            before = torch.cuda.memory_allocated(device)  # the weights (profile_hwcap cleared the gradients)
            absolute = measure_peak_memory(model, cap, length, model.config.vocab_size, device, dtype)
            peak = None if absolute is None else absolute - before  # None: out of memory this time
        bound = "max_batch" if cap == max_batch else "memory" if measured else "token budget"
        result["buckets"].append({"length": length, "batch_size": cap, "tokens": cap * length, "bound": bound,
                                  "peak_memory_bytes": peak, "seconds": budget.elapsed - started})
        unit_seconds.append(result["buckets"][-1]["seconds"])
        estimate = 1.5 * max(unit_seconds)  # longer buckets probe bigger tensors: a wider margin
    del model
    _release(device)
    buckets = result["buckets"]
    capped = [b["tokens"] for b in buckets if b["bound"] != "max_batch"]
    result["implied_token_budget"] = min(capped) if capped else None  # safe for every bucket HWCap did cap
    result["token_budget_at_longest"] = buckets[-1]["tokens"] if buckets else None
    peaks = [b["peak_memory_bytes"] for b in buckets if b["peak_memory_bytes"] is not None]
    result["peak_memory_bytes"] = max(peaks) if peaks else None
    return result


# ============================================================================ 4. section 3: pretraining steps
def _pretrain_sizes(config: GpuBenchConfig) -> tuple[Any, ...]:
    """BERT-base (batch 32 x 128) and the tiny BERT, 10 timed steps each (t = 0 is ScTD's full step)."""
    from tdnotebooks.bench.pretrain import SizeSpec, base_size, tiny_size

    if config.tiny:
        small = {"num_layers": 2, "num_heads": 2, "block_size": 32, "batch_size": 4, "timed_steps": 2,
                 "warmup_steps": 1}
        return (SizeSpec(name="base-standin", hidden_size=64, intermediate_size=128, **small),
                SizeSpec(name="tiny", hidden_size=32, intermediate_size=64, **small))
    return base_size(timed_steps=10, warmup_steps=2), tiny_size(timed_steps=10, warmup_steps=2)


def _mode_summary(rows: list[dict[str, Any]], base_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and spread over the rounds of one mode, and its ratio to the baseline's (same rounds)."""
    steps = spread_summary([r["step_seconds"] for r in rows])
    median = steps["median"]
    ratios = [r["step_seconds"] / b["step_seconds"] for r, b in zip(rows, base_rows, strict=True)]
    peaks = [r["peak_memory_bytes"] for r in rows]
    return {"rounds": len(rows), "step_seconds_median": median, "step_seconds_min": steps["min"],
            "step_seconds_max": steps["max"], "spread": steps["spread"], "step_seconds_each_round": steps["each"],
            "vs_baseline": median / statistics.median(b["step_seconds"] for b in base_rows),
            "vs_baseline_min": min(ratios), "vs_baseline_max": max(ratios),
            "peak_memory_bytes": max(peaks), "memory_kind": rows[0]["memory_kind"]}


def run_pretrain_section(config: GpuBenchConfig, budget: TimeBudget, device: Any,
                         say: Callable[[str], None]) -> dict[str, Any]:
    """Every mode of :data:`PRETRAIN_MODES` at each size, interleaved over ``config.repeats`` rounds."""

    from tdnotebooks.bench.pretrain import BenchConfig, measure_flops, time_mode
    from tdnotebooks.bench.pretrain.runs import size_setup
    from tdnotebooks.models import count_parameters, load_tokenizer

    bench = BenchConfig(sizes=_pretrain_sizes(config), fis=(10,), target_fi=10, hf_peer=True, device=config.device,
                        quality=None)
    result: dict[str, Any] = {"skipped": None, "modes": list(PRETRAIN_MODES), "repeats": config.repeats,
                              "keep_fraction": bench.keep_fraction, "sizes": {}, "notes": []}
    first = config.prior("pretrain_setup") + config.prior("pretrain_round")
    if not budget.fits(first):
        result["skipped"] = budget.skip("pretrain section", first)
        return result
    tokenizer = load_tokenizer()
    for size in bench.sizes:
        entry: dict[str, Any] = {"size": asdict(size), "skipped": None, "modes": {}}
        result["sizes"][size.name] = entry
        setup_estimate, round_estimate = config.prior("pretrain_setup"), config.prior("pretrain_round")
        if not budget.fits(setup_estimate + round_estimate):
            entry["skipped"] = budget.skip(f"pretrain {size.name}", setup_estimate + round_estimate)
            continue
        initial, batches, analytic = size_setup(size, bench, tokenizer, device)
        counted = measure_flops(initial, batches[0], bench, tokenizer, device)["modes"]
        _release(device)
        entry.update(parameters=count_parameters(initial), tokens_per_step=size.batch_size * size.block_size)
        rows: dict[str, list[dict[str, Any]]] = {mode: [] for mode in PRETRAIN_MODES}
        orders = interleaved_orders(PRETRAIN_MODES, config.repeats)
        for r in range(config.repeats):
            if not budget.fits(round_estimate):
                entry.setdefault("notes", []).append(budget.skip(
                    f"pretrain {size.name} rounds {r + 1}-{config.repeats}", round_estimate))
                break
            started = budget.elapsed
            say(f"  pretrain: {size.name} round {r + 1}/{config.repeats}")
            for mode in orders[r]:
                rows[mode].append(time_mode(mode, initial, batches, size, bench, tokenizer, device))
                _release(device)
            round_estimate = (budget.elapsed - started) * 1.2
        del initial, batches
        _release(device)
        if not rows["baseline"]:  # the set-up took longer than estimated: not even one round fits
            entry["skipped"] = entry.pop("notes")[0]
            continue
        for mode in PRETRAIN_MODES:
            entry["modes"][mode] = {**_mode_summary(rows[mode], rows["baseline"]),
                                    "flops_ratio": counted[mode] / counted["baseline"],
                                    "analytic_flops_ratio": analytic[mode],
                                    "tokens_per_second": entry["tokens_per_step"]
                                    / statistics.median(x["step_seconds"] for x in rows[mode])}
    return result


# ============================================================================ 5. the whole run
SECTION_RUNNERS = {"finetune": run_finetune_section, "hwcap": run_hwcap_section, "pretrain": run_pretrain_section}


def _environment(config: GpuBenchConfig, device: Any) -> dict[str, Any]:
    import torch

    from tdnotebooks.bench.common import environment
    from tdnotebooks.runtime import amp_dtype

    env = environment(argparse.Namespace(quick=False), device)
    del env["quick"]
    dtype = amp_dtype(device)
    env.update(tiny=config.tiny, cuda=torch.version.cuda, autocast_dtype=str(dtype).removeprefix("torch.")
               if dtype is not None else "none (float32)", bf16_supported=bool(dtype == torch.bfloat16),
               finetune_grad_scaler=bool(dtype == torch.float16))
    if device.type == "cuda":
        env["gpu_memory_bytes"] = int(torch.cuda.get_device_properties(device).total_memory)
    return env


def _peak_memory_table(sections: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every peak-memory measurement of the run, one row each."""
    rows = []
    for method, m in sections.get("finetune", {}).get("methods", {}).items():
        rows.append({"section": "finetune", "what": method, "bytes": m["peak_memory_bytes"]})
    buckets = sections.get("hwcap", {}).get("buckets", [])
    if buckets:  # every bucket's peak is in the hwcap section; here the largest
        b = max(buckets, key=lambda b: b["peak_memory_bytes"] or 0)
        what = (f"largest: length {b['length']} x batch {b['batch_size']}" if b["peak_memory_bytes"] is not None
                else f"{len(buckets)} buckets, not measured")
        rows.append({"section": "hwcap", "what": what, "bytes": b["peak_memory_bytes"]})
    for name, size in sections.get("pretrain", {}).get("sizes", {}).items():
        for mode, m in size["modes"].items():
            rows.append({"section": "pretrain", "what": f"{name} {mode}", "bytes": m["peak_memory_bytes"],
                         "kind": m["memory_kind"]})
    return rows


def run_benchmark(config: GpuBenchConfig, progress: Callable[[str], None] | None = None,
                  clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Run the chosen sections within ``config.budget_seconds``; the results as a JSON-ready dict.

    ``progress``: one line per unit of work (default: to stderr; the report goes to stdout).
    """
    import gc

    import datasets

    from tdnotebooks.bench.common import fixed_torch_threads, load_average
    from tdnotebooks.runtime import get_device

    budget = TimeBudget(config.budget_seconds, clock)
    started = time.perf_counter()
    say = progress if progress is not None else (lambda line: print(line, file=sys.stderr, flush=True))
    device = get_device(config.device)
    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # tokenizing the splits would print a bar per split
    gc.freeze()  # what exists now (modules, the bundled data) is never garbage: gc.collect() between units skips it
    try:
        with fixed_torch_threads(1 if config.tiny else None):
            env = _environment(config, device)
            sections: dict[str, Any] = {}
            for i, name in enumerate(config.sections):
                share = budget.open_section(name, config.sections[i:])
                say(f"{name}: up to {share:.0f} s")
                section_started = budget.elapsed
                sections[name] = SECTION_RUNNERS[name](config, budget, device, say)
                sections[name]["seconds"] = budget.elapsed - section_started
                sections[name]["share_seconds"] = share
            env["load_average_at_end"] = load_average()
    finally:
        gc.unfreeze()
        if bars_were_on:
            datasets.enable_progress_bars()
    return {"benchmark": "gpu", "environment": env, "config": asdict(config),
            "budget": {"seconds": config.budget_seconds, "used_seconds": budget.elapsed, "skipped": budget.notes,
                       "section_weights": SECTION_WEIGHTS, "priors": {k: config.prior(k) for k in PRIORS}},
            **sections, "peak_memory": _peak_memory_table(sections), "wall_seconds": time.perf_counter() - started}


def run_gpu_benchmark(device: str = "cuda", *, tiny: bool = False, sections: Sequence[str] = SECTIONS,
                      budget_seconds: float = 480.0, seeds: int = 1, progress: Callable[[str], None] | None = None,
                      clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """:func:`run_benchmark` from keywords, e.g. ``run_gpu_benchmark(device="cpu", tiny=True)`` (seconds)."""
    config = GpuBenchConfig(sections=tuple(sections), budget_seconds=budget_seconds, seeds=seeds, device=device,
                            tiny=tiny)
    return run_benchmark(config, progress, clock)


# ============================================================================ 6. the report
def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.0f}"


def _finetune_lines(ft: Mapping[str, Any]) -> list[str]:
    head = (f"1. Fine-tuning: MiniLM classifier on {ft['task']} ({ft.get('train_examples', '?')} train / "
            f"{ft.get('dev_examples', '?')} dev examples), {ft['settings']['epochs']} epoch(s), "
            f"token budget {ft['settings']['token_budget']}, base batch {ft['settings']['base_batch_size']}")
    if ft["skipped"]:
        return [head, f"   SKIPPED: {ft['skipped']}"]
    headers = ["method", "vs", "speed-up", "s/epoch", "pad %", "opt steps", "dev acc %", "peak MiB"]
    rows = [[method, "random", f"{m['speedup']:.2f}x", f"{m['epoch_seconds']:.2f}",
             f"{100 * m['padding_fraction']:.2f}", f"{m['optimizer_steps']:.0f}", f"{100 * m['dev_accuracy_mean']:.1f}",
             _mib(m["peak_memory_bytes"])] for method, m in ft["methods"].items()]
    return [head, format_table(headers, rows), *ft["notes"]]


def _hwcap_lines(hw: Mapping[str, Any]) -> list[str]:
    how = ("measured (torch.cuda.max_memory_allocated, forward + backward under autocast, limit "
           f"{_mib(hw.get('memory_limit_bytes'))} MiB)" if hw["measured"] else "token-budget fallback (not CUDA)")
    head = f"2. HWCap: profile_hwcap at max length {hw['max_length']}, buckets of width {hw['bucket_width']}, {how}"
    if hw["skipped"]:
        return [head, f"   SKIPPED: {hw['skipped']}"]
    rows = [[b["length"], b["batch_size"], f"{b['tokens']:,}", b["bound"], _mib(b["peak_memory_bytes"])]
            for b in hw["buckets"]]
    implied = hw["implied_token_budget"]
    return [head, format_table(["length", "batch", "tokens", "bound by", "peak MiB"], rows),
            f"implied token budget (smallest batch x length among the buckets not at max_batch {hw['max_batch']}): "
            f"{'-' if implied is None else f'{implied:,}'}; at the longest bucket: "
            f"{'-' if hw['token_budget_at_longest'] is None else format(hw['token_budget_at_longest'], ',')}",
            *hw["notes"]]


def _pretrain_lines(pt: Mapping[str, Any]) -> list[str]:
    head = (f"3. Pretraining steps: {', '.join(pt['modes'])}; keep fraction {pt['keep_fraction']}; "
            f"{pt['repeats']} interleaved rounds (rotating order), median step time, spread = (max - min) / median; "
            "FLOPs ratio: counted (forward + backward) / baseline's, analytic: the formula's")
    if pt["skipped"]:
        return [head, f"   SKIPPED: {pt['skipped']}"]
    rows, notes = [], []
    for name, size in pt["sizes"].items():
        if size["skipped"]:
            notes.append(f"{name}: SKIPPED: {size['skipped']}")
            continue
        notes += [f"{name}: {n}" for n in size.get("notes", [])]
        for mode, m in size["modes"].items():
            rows.append([name, mode, f"{1000 * m['step_seconds_median']:.1f}", f"{100 * m['spread']:.0f}",
                         f"{m['vs_baseline']:.2f}", f"{m['vs_baseline_min']:.2f}-{m['vs_baseline_max']:.2f}",
                         f"{m['flops_ratio']:.3f}", f"{m['analytic_flops_ratio']:.3f}", f"{m['tokens_per_second']:,.0f}",
                         m["rounds"],
                         _mib(m["peak_memory_bytes"])])
    headers = ["size", "mode", "step ms", "spread %", "vs base", "range", "FLOPs ratio", "analytic", "tokens/s",
               "rounds", "peak MiB"]
    return [head, format_table(headers, rows) if rows else "   (no size measured)", *notes,
            "hf_bert_mlm: HF's stock BertForMaskedLM step (MLM head at every position; ours at the masked ones, "
            "see its FLOPs ratio): at keep-all our wrapper should cost nothing beyond that"]


def format_report(results: Mapping[str, Any]) -> str:
    """The human-readable report of :func:`run_benchmark`'s results: one table per section, then memory."""
    env = results["environment"]
    gpu = f" ({env['gpu']})" if env["gpu"] else ""
    scaler = " (+ GradScaler in fine-tuning)" if env["finetune_grad_scaler"] else ""
    out = [f"GPU readiness{' (tiny CPU test sizes)' if env['tiny'] else ''}: device {env['device']}{gpu}, "
           f"autocast {env['autocast_dtype']}{scaler}, torch {env['torch']}, transformers {env['transformers']}, "
           f"CUDA {env['cuda']}",
           f"budget {results['budget']['seconds']:.0f} s, used {results['budget']['used_seconds']:.0f} s", ""]
    formatters = {"finetune": _finetune_lines, "hwcap": _hwcap_lines, "pretrain": _pretrain_lines}
    for name in SECTIONS:
        if name in results:
            out += [*formatters[name](results[name]), ""]
    memory = results["peak_memory"]
    out.append("4. Peak memory (torch.cuda.max_memory_allocated minus memory allocated before, reset per "
               "measurement; '-' where not CUDA, pretrain rows on a CPU: approximate RSS delta)")
    out.append(format_table(["section", "what", "peak MiB"], [[m["section"], m["what"], _mib(m["bytes"])]
                                                               for m in memory]) if memory else "   (nothing measured)")
    if results["budget"]["skipped"]:
        out += ["", "Skipped to stay within the budget:", *(f"  {n}" for n in results["budget"]["skipped"])]
    out.append(f"Wall time {results['wall_seconds']:.0f} s; load average (1, 5, 15 min) "
               f"{format_load(env['load_average_at_start'])} at start, {format_load(env['load_average_at_end'])} at end.")
    return "\n".join(out)


# ============================================================================ 7. command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m tdnotebooks.bench gpu``."""
    default_out = "bench-results/gpu.json"
    parser.add_argument("--out", type=out_file, default=default_out, metavar="FILE",
                        help=f"JSON results (default {default_out})")
    parser.add_argument("--budget-seconds", type=int_at_least(60), default=480, metavar="S",
                        help="hard time budget of the whole run; sections that would overrun are skipped with a "
                             "note (default 480 = 8 minutes)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), metavar="SECTION",
                        help=f"subset of {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--seeds", type=int_at_least(1), default=1, metavar="N",
                        help="fine-tuning seeds 0 .. N-1 (default 1)")


def config_from_args(args: argparse.Namespace) -> GpuBenchConfig:
    """The :class:`GpuBenchConfig` the options ask for (always CUDA, full sizes)."""
    return GpuBenchConfig(sections=tuple(args.sections), budget_seconds=float(args.budget_seconds),
                          seeds=args.seeds, device="cuda")


def run(args: argparse.Namespace) -> int:
    """Entry point: refuse a machine without CUDA (exit status 2, one line), else run, report, write the JSON."""
    import torch

    if not torch.cuda.is_available():
        print(f"{args.parser.prog}: error: {NO_CUDA}", file=sys.stderr)
        return 2
    return run_subcommand(args, config_from_args, run_benchmark, format_report)
