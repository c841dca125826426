"""What every benchmark shares: the run's environment, fixed torch threads, plain-text tables, JSON output,
the command-line plumbing (an int option's parser, the ``run`` of a sub-command), and the load-independent
measurement helpers: interleaved timing rounds (:func:`interleaved_orders`), the median and spread of repeated
timings (:func:`spread_summary`) and counted FLOPs (:func:`count_flops`)."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tdnotebooks.validation import arg_type, check_int

__all__ = ["add_common_arguments", "count_flops", "device_arg", "environment", "fixed_torch_threads", "format_load",
           "format_table", "int_at_least", "interleaved_orders", "load_average", "out_file", "run_subcommand",
           "spread_summary", "write_results"]


# ============================================================================ the run's environment
def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages of the machine (None where the OS does not report them)."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def environment(config: Any, device: Any) -> dict[str, Any]:
    """Device, versions, threads and load at the start of a run (``config.quick``: which preset)."""
    import platform

    import torch
    import transformers

    return {
        "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "quick": config.quick,
        "load_average_at_start": load_average(),
    }


@contextmanager
def fixed_torch_threads(threads: int | None) -> Iterator[None]:
    """Torch CPU threads fixed at ``threads`` (None: the current number) inside, the previous number after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ============================================================================ load-independent measurement
def interleaved_orders(items: Sequence[Any], rounds: int) -> list[list[Any]]:
    """The order of every timing round: each round holds every item once, round r starts at item r mod k (the
    order rotates), so over k rounds each item runs once in each position and a slow phase of the machine
    falls on every item alike instead of on whichever ran during it."""
    check_int("rounds", rounds, low=1)
    items = list(items)
    if not items:
        raise ValueError("items must not be empty")
    return [items[r % len(items):] + items[:r % len(items)] for r in range(rounds)]


def spread_summary(values: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and spread = (max - min) / median of repeated measurements (one per round)."""
    import statistics

    if not values:
        raise ValueError("values must not be empty")
    median = statistics.median(values)
    return {"median": median, "min": min(values), "max": max(values),
            "spread": (max(values) - min(values)) / median if median > 0 else 0.0, "each": list(values)}


def _sdpa_cpu_formulas() -> dict[Any, Callable[..., int]]:
    """FLOP formulas for CPU's fused attention kernel, which ``torch.utils.flop_counter`` does not count (its CUDA
    kernels it does): forward and backward as the registered sdpa formulas count them."""
    import torch
    from torch.utils import flop_counter

    aten = torch.ops.aten
    if not hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        return {}

    def forward(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        return flop_counter.sdpa_flop_count(query, key, value)

    def backward(grad_out: Any, query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None,
                 **kwargs: Any) -> int:
        return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)

    return {aten._scaled_dot_product_flash_attention_for_cpu: forward,
            aten._scaled_dot_product_flash_attention_for_cpu_backward: backward}


def count_flops(fn: Callable[[], Any]) -> tuple[int, float]:
    """(FLOPs, wall seconds) of one call of ``fn``, counted by ``torch.utils.flop_counter.FlopCounterMode``.

    It counts the matrix products (mm, addmm, bmm, attention kernels; a multiply-add = 2 FLOPs) of every
    operator that runs, forward and backward alike; element-wise work (LayerNorm, softmax, GELU, the optimizer)
    counts 0. The count depends on the shapes only, never on the machine's load.
    """
    import time

    from torch.utils.flop_counter import FlopCounterMode

    started = time.perf_counter()
    with FlopCounterMode(display=False, custom_mapping=_sdpa_cpu_formulas()) as counter:
        fn()
    return int(counter.get_total_flops()), time.perf_counter() - started


# ============================================================================ output
def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain-text table: the first two columns left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def format_load(values: Sequence[float] | None) -> str:
    """Load averages as ``1.0/0.8/0.5``, or ``n/a``."""
    return "n/a" if values is None else "/".join(f"{v:.1f}" for v in values)


def write_results(results: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``results`` as indented JSON, creating the folder."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return out


# ============================================================================ command line
def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse ``type``: an int >= ``low``, else a usage error naming the option (exit status 2)."""
    return arg_type(check_int, int, low=low)


def device_arg(text: str) -> str:
    """An argparse ``type`` for ``--device`` (with ``choices``): ``cuda`` on a machine without CUDA is a usage
    error at once, in :func:`tdnotebooks.runtime.get_device`'s words (torch is imported only then)."""
    if text.startswith("cuda"):
        from tdnotebooks.runtime import get_device

        try:
            get_device(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def out_file(text: str) -> str:
    """An argparse ``type`` for ``--out``: a file path that is not a folder and whose nearest existing parent is a
    folder, checked before the benchmark runs rather than when its results are written at the end."""
    path = Path(text)
    if not text or path.is_dir():
        raise argparse.ArgumentTypeError(f"must be a file path for the JSON results, got the folder {text!r}")
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is None or not parent.is_dir():
        raise argparse.ArgumentTypeError(f"cannot create {text!r}: {parent} is a file, not a folder")
    return text


def add_common_arguments(parser: argparse.ArgumentParser, command: str, *, quick_help: str) -> None:
    """The options every benchmark has: ``--quick``, ``--out`` (default ``bench-results/<command>.json``),
    ``--device`` and ``--threads``."""
    default_out = f"bench-results/{command}.json"
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--out", type=out_file, default=default_out, metavar="FILE",
                        help=f"JSON results (default {default_out})")
    parser.add_argument("--device", type=device_arg, choices=("cpu", "cuda"),
                        help="default: cuda when available, else cpu")
    parser.add_argument("--threads", type=int_at_least(1), metavar="N",
                        help="torch CPU threads, fixed for the whole run (default: 1 with --quick, else torch's "
                             "current setting)")


def run_subcommand(args: argparse.Namespace, config_from_args: Callable[[argparse.Namespace], Any],
                   run_benchmark: Callable[[Any], Mapping[str, Any]],
                   format_report: Callable[[Mapping[str, Any]], str]) -> int:
    """A sub-command's ``run``: build its config (a ValueError is a usage error, exit status 2), run the
    benchmark, print the report and write the JSON to ``args.out``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is bundled: never wait for the hub
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        config = config_from_args(args)
    except ValueError as exc:
        args.parser.error(str(exc))
    results = run_benchmark(config)
    print(format_report(results))
    print(f"\nresults written to {write_results(results, args.out)}")
    return 0
