"""Checkpoints that both training loops share: ``step-NNNNNN`` folders written atomically, one RNG file per
process, the newest complete one found again on resume.

A checkpoint folder holds ``state.pt`` (whatever the loop passes: weights, optimizer, scheduler, position,
history, config; written by the main process) and ``rng-rank{r}.pt`` (Python, numpy, torch and CUDA RNG
states of process r, which drive dropout). It is written into ``.tmp-step-NNNNNN`` and renamed only after
every process wrote its part, so a run killed while saving leaves the previous checkpoint intact.

Example::

    save_checkpoint("ckpt", step=40, state={"model": model.state_dict(), ...}, accelerator=accelerator)
    path = latest_checkpoint("ckpt")                 # ckpt/step-000040
    state, rng = load_checkpoint(path, rank=0)       # rng: None when this rank's file is missing
"""

from __future__ import annotations

import os
import random
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tdnotebooks.validation import check_int

__all__ = [
    "CHECKPOINT_RE", "latest_checkpoint", "list_checkpoints", "load_checkpoint", "rng_state", "save_checkpoint",
    "set_rng_state",
]

CHECKPOINT_RE = re.compile(r"^step-(\d+)$")


def list_checkpoints(checkpoint_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints ``step-NNNNNN`` in ``checkpoint_dir`` as (step, folder), oldest first."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = CHECKPOINT_RE.match(path.name)
        if match and (path / "state.pt").is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(checkpoint_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    found = list_checkpoints(checkpoint_dir)
    return found[-1][1] if found else None


def rng_state() -> dict:
    """This process's Python, numpy, torch (and CUDA) RNG states."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (name, keys.tolist(), pos, has_gauss, cached),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(checkpoint_dir: str | os.PathLike, step: int, state: Mapping[str, Any], accelerator: Any,
                    keep: int | None = None) -> Path:
    """Write ``checkpoint_dir/step-NNNNNN`` atomically; every process must call it (it synchronises).

    ``state`` is saved by the main process as ``state.pt``; every process saves its RNG states. ``keep``:
    how many of the newest checkpoints to keep (None: all).
    """
    step = check_int("step", step, 0)
    root = Path(checkpoint_dir)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    accelerator.wait_for_everyone()
    torch.save(rng_state(), tmp / f"rng-rank{accelerator.process_index}.pt")
    if accelerator.is_main_process:
        torch.save(dict(state), tmp / "state.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        if keep is not None:
            for _, old in list_checkpoints(root)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(path: str | os.PathLike, rank: int = 0) -> tuple[dict, dict | None]:
    """``(state, rng)`` of a checkpoint folder; ``rng`` is None when process ``rank`` left no RNG file."""
    path = Path(path)
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    rng_file = path / f"rng-rank{rank}.pt"
    rng = torch.load(rng_file, weights_only=True) if rng_file.is_file() else None
    return state, rng
