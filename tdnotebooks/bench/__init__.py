"""Benchmarks: ``python -m tdnotebooks.bench <command> [options]``.

Each sub-command lives in its own module or package (``finetune/``, ``pretrain/``), listed in
:data:`SUBCOMMANDS`, which exposes

- ``HELP``: a one-line description for ``--help``;
- ``add_arguments(parser)``: adds its options to its ``argparse`` sub-parser;
- ``run(args) -> int``: runs it and returns the exit status. ``args.parser`` is the sub-parser, so
  ``run`` can reject a bad combination of options with ``args.parser.error(message)`` (exit status 2).

Adding a benchmark = one module with these three names + one line in :data:`SUBCOMMANDS`. Modules
import torch and the models inside ``run``, so ``--help`` and argument errors come back at once. What
several benchmarks share (environment, tables, JSON, the ``run`` plumbing) is in :mod:`tdnotebooks.bench.common`.
"""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Sequence

__all__ = ["SUBCOMMANDS", "build_parser", "main"]

SUBCOMMANDS: dict[str, str] = {
    "finetune": "tdnotebooks.bench.finetune",
    "pretrain": "tdnotebooks.bench.pretrain",
    "gpu": "tdnotebooks.bench.gpu",
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per entry of :data:`SUBCOMMANDS`."""
    parser = argparse.ArgumentParser(prog="python -m tdnotebooks.bench",
                                     description="Benchmarks of tdnotebooks (ratios measured in one run).")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sub = commands.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run, parser=sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: the command line) and run the chosen sub-command."""
    args = build_parser().parse_args(argv)
    _quiet_library_progress_bars()
    return int(args.run(args) or 0)


def _quiet_library_progress_bars() -> None:
    """The report goes to stdout; datasets' map and the hub's weight-loading bars would only clutter it.

    Through the libraries' environment switches, read when they are imported, so that a sub-command that
    refuses to run (``gpu`` without CUDA) answers before importing them."""
    import sys

    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "datasets" in sys.modules:  # already imported (tests, notebooks): switch its bars off directly
        sys.modules["datasets"].disable_progress_bars()
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()
