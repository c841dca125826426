"""Checkpoints that both training loops share: ``step-NNNNNN`` folders written atomically, one RNG file per
process, a manifest that proves a checkpoint complete, and the newest complete one found again on resume.

A checkpoint folder holds ``state.pt`` (whatever the loop passes: weights, optimizer, scheduler, position,
history, config, architecture; written by the main process), ``rng-rank{r}.pt`` (Python, numpy, torch and
CUDA RNG states of process r, which drive dropout) and ``manifest.json``, written last::

    {"format": 1, "step": 40, "world_size": 2,
     "files": {"rng-rank0.pt": {"bytes": 1563, "sha256": "9f2c..."}, "rng-rank1.pt": {...},
               "state.pt": {"bytes": 4405120, "sha256": "03be..."}}}

Everything is written into ``.tmp-step-NNNNNN``, flushed to disk (``fsync`` of each file and of the folder),
and renamed only after every process wrote its part and the manifest is on disk; so a run killed while
saving leaves the previous checkpoint intact, and a renamed folder never holds unwritten data. A checkpoint is
*complete* when its manifest is there and every file it lists has its size and sha256.
:func:`latest_checkpoint` returns the newest complete one, warns about each damaged one it skips (a 0-byte or
truncated file, a missing RNG file, no manifest) and raises when checkpoints exist but none is usable.
Stale ``.tmp-step-*`` folders (a killed save) are removed by the main process at the next save and by
:func:`check_checkpoint_dir`.

Example::

    check_checkpoint_dir("ckpt")                     # before step 0: a folder this process can write to
    save_checkpoint("ckpt", step=40, state={"model": model.state_dict(), ...}, accelerator=accelerator)
    path = latest_checkpoint("ckpt")                 # ckpt/step-000040 (None: no checkpoint yet)
    state, rng = load_checkpoint(path, rank=0)       # rng: None when the checkpoint had fewer processes
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import re
import shutil
import socket
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tdnotebooks.validation import check_int

__all__ = [
    "ARCHITECTURE_KEYS", "CHECKPOINT_RE", "MANIFEST", "check_architecture", "check_checkpoint_dir",
    "checkpoint_problems", "latest_checkpoint", "list_checkpoints", "load_checkpoint", "model_architecture",
    "rng_state", "save_checkpoint", "set_rng_state", "write_manifest",
]

CHECKPOINT_RE = re.compile(r"^step-(\d+)$")
TMP_PREFIX = ".tmp-step-"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
# The model config's fields that fix the shapes of the weights (num_labels only for classifiers).
ARCHITECTURE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "vocab_size", "max_position_embeddings")


# ----------------------------------------------------------------------------------------------------------
# The folder
# ----------------------------------------------------------------------------------------------------------


def check_checkpoint_dir(path: str | os.PathLike, clean: bool = True) -> Path:
    """Before step 0: ``path`` is a folder (created if missing) that this process can write to.

    ``clean``: also remove stale ``.tmp-step-*`` folders of a killed save (only the main process should;
    the others pass False). Raises one ``ValueError`` naming ``checkpoint_dir`` otherwise.
    """
    root = Path(path)
    if root.exists() and not root.is_dir():
        raise ValueError(f"checkpoint_dir must be a folder, got {os.fspath(path)!r}, which is a file")
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{socket.gethostname()}-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ValueError(f"checkpoint_dir={os.fspath(path)!r} is not writable: {error.strerror or error}") from None
    if clean:
        _remove_stale_tmp(root)
    return root


def _remove_stale_tmp(root: Path) -> None:
    for tmp in root.glob(TMP_PREFIX + "*"):
        shutil.rmtree(tmp, ignore_errors=True)


def _step_folders(root: Path) -> list[tuple[int, Path]]:
    """Every ``step-NNNNNN`` folder, complete or not, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := CHECKPOINT_RE.match(p.name)) and p.is_dir()]
    return sorted(found)


def list_checkpoints(checkpoint_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Checkpoints ``step-NNNNNN`` of ``checkpoint_dir`` whose save finished (a manifest) as (step, folder),
    oldest first. Cheap: the files are checked by :func:`latest_checkpoint` / :func:`checkpoint_problems`."""
    return [(step, path) for step, path in _step_folders(Path(checkpoint_dir)) if (path / MANIFEST).is_file()]


# ----------------------------------------------------------------------------------------------------------
# The manifest: which files, their sizes and digests
# ----------------------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    """Make a folder's entries (new files, a rename) durable; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:                                  # Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _save_synced(obj: Any, path: Path) -> None:
    """``torch.save`` that returns only once the bytes are on disk."""
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def write_manifest(folder: str | os.PathLike, step: int, world_size: int) -> Path:
    """Write ``folder/manifest.json``: every other file of the folder with its size and sha256 (synced).

    :func:`save_checkpoint` calls it last, before the rename; call it yourself only on a folder you changed
    on purpose (a test that edits a checkpoint)."""
    folder = Path(folder)
    files = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)}
             for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    manifest = {"format": MANIFEST_FORMAT, "step": int(step), "world_size": int(world_size), "files": files}
    path = folder / MANIFEST
    with open(path, "w") as f:
        json.dump(manifest, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(folder)
    return path


def _read_manifest(folder: Path) -> dict:
    """The manifest, or ValueError saying why it cannot be used."""
    path = folder / MANIFEST
    if not path.is_file():
        raise ValueError(f"no {MANIFEST} (its save did not finish, or an older tdnotebooks wrote it)")
    try:
        manifest = json.loads(path.read_text())
        files, world = manifest["files"], int(manifest["world_size"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{MANIFEST} is unreadable ({error})") from None
    expected = ["state.pt", *(f"rng-rank{r}.pt" for r in range(world))]
    unlisted = [name for name in expected if name not in files]
    if unlisted:
        raise ValueError(f"{MANIFEST} does not list {', '.join(unlisted)}")
    return manifest


def checkpoint_problems(path: str | os.PathLike) -> list[str]:
    """What is wrong with a checkpoint folder (empty: complete): a missing or unreadable manifest, a listed
    file that is missing, has another size (0-byte, truncated) or another sha256."""
    folder = Path(path)
    try:
        manifest = _read_manifest(folder)
    except ValueError as error:
        return [str(error)]
    problems = []
    for name, expected in manifest["files"].items():
        file = folder / name
        if not file.is_file():
            problems.append(f"{name} is missing")
        elif file.stat().st_size != expected["bytes"]:
            problems.append(f"{name} has {file.stat().st_size} bytes, the manifest says {expected['bytes']}")
        elif _sha256(file) != expected["sha256"]:
            problems.append(f"{name} does not match its sha256 in the manifest")
    return problems


def latest_checkpoint(checkpoint_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint folder of ``checkpoint_dir``; None when there is no checkpoint at all.

    A damaged newer one (see :func:`checkpoint_problems`) is skipped with a warning naming the folder and
    what is wrong; when checkpoints exist but none is complete, a ``ValueError`` lists them all."""
    root = Path(checkpoint_dir)
    damaged = []
    for _, folder in reversed(_step_folders(root)):
        problems = checkpoint_problems(folder)
        if not problems:
            return folder
        damaged.append(f"{folder}: {'; '.join(problems)}")
        warnings.warn(f"skipping the damaged checkpoint {folder} ({'; '.join(problems)}); "
                      "trying the previous one", stacklevel=2)
    if damaged:
        raise ValueError(f"no usable checkpoint in checkpoint_dir={os.fspath(checkpoint_dir)!r}, every one is "
                         f"damaged ({' | '.join(damaged)}); remove them to start afresh, or use another "
                         "checkpoint_dir")
    return None


# ----------------------------------------------------------------------------------------------------------
# RNG states
# ----------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------
# Save and load
# ----------------------------------------------------------------------------------------------------------


def save_checkpoint(checkpoint_dir: str | os.PathLike, step: int, state: Mapping[str, Any], accelerator: Any,
                    keep: int | None = None) -> Path:
    """Write ``checkpoint_dir/step-NNNNNN`` atomically; every process must call it (it synchronises).

    ``state`` is saved by the main process as ``state.pt``; every process saves its RNG states; the main
    process then writes the manifest, syncs and renames. ``keep``: how many of the newest complete
    checkpoints to keep (None: all); older step folders, damaged or not, are removed.
    """
    step = check_int("step", step, 0)
    root = Path(checkpoint_dir)
    final = root / f"step-{step:06d}"
    tmp = root / f"{TMP_PREFIX}{step:06d}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale_tmp(root)                  # this step's and any other killed save's
        tmp.mkdir()
    accelerator.wait_for_everyone()
    _save_synced(rng_state(), tmp / f"rng-rank{accelerator.process_index}.pt")
    if accelerator.is_main_process:
        _save_synced(dict(state), tmp / "state.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_manifest(tmp, step, accelerator.num_processes)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        if keep is not None:
            complete = list_checkpoints(root)
            if len(complete) > keep:
                oldest_kept = complete[-keep][0]
                for old_step, old in _step_folders(root):
                    if old_step < oldest_kept:
                        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(path: str | os.PathLike, rank: int = 0) -> tuple[dict, dict | None]:
    """``(state, rng)`` of a checkpoint folder. ``rng`` is None only when the checkpoint was written by fewer
    processes than ``rank + 1`` (a change of world size); a missing or unreadable file listed in the
    manifest raises a ``ValueError`` naming it (never a silent re-seed)."""
    path = Path(path)
    manifest = _read_manifest_or_raise(path)
    state = _load_file(path / "state.pt")
    rng_file = path / f"rng-rank{rank}.pt"
    if rank >= int(manifest["world_size"]):
        return state, None
    if not rng_file.is_file():
        raise ValueError(f"cannot resume from {path}: {rng_file.name} is missing (the RNG states of process "
                         f"{rank}, written by every save); without it the resume would not be exact")
    return state, _load_file(rng_file)


def _read_manifest_or_raise(path: Path) -> dict:
    try:
        return _read_manifest(path)
    except ValueError as error:
        raise ValueError(f"cannot resume from {path}: {error}") from None


def _load_file(file: Path) -> dict:
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"cannot resume from {file.parent}: {file.name} is missing") from None
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as error:     # truncated zip, 0 bytes, unpickling
        raise ValueError(f"cannot resume from {file.parent}: {file.name} is damaged ({error})") from None


# ----------------------------------------------------------------------------------------------------------
# The architecture a checkpoint's weights fit
# ----------------------------------------------------------------------------------------------------------


def model_architecture(model: Any, classifier: bool = False) -> dict:
    """The fields of ``model.config`` that fix its weights' shapes (:data:`ARCHITECTURE_KEYS`, plus
    ``num_labels`` for a classifier); saved in every checkpoint and compared on resume."""
    config = getattr(model, "config", None)
    keys = (*ARCHITECTURE_KEYS, "num_labels") if classifier else ARCHITECTURE_KEYS
    return {key: getattr(config, key, None) for key in keys}


def check_architecture(path: str | os.PathLike, saved: Mapping[str, Any] | None, model: Any,
                       classifier: bool = False) -> None:
    """One ``ValueError`` listing every architecture field in which ``model`` differs from the checkpoint's
    (before any ``load_state_dict``, which would dump one size-mismatch error per tensor)."""
    if saved is None:
        return
    now = model_architecture(model, classifier)
    differs = [f"{key}: checkpoint {saved.get(key)!r}, now {value!r}" for key, value in now.items()
               if key in saved and saved.get(key) != value]
    if differs:
        raise ValueError(f"cannot resume from {path}: the model differs from the one the checkpoint was trained "
                         f"with ({'; '.join(differs)}); build that model again (same sizes), or use another "
                         "checkpoint_dir")

