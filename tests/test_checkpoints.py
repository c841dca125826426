"""tdnotebooks.checkpoints: a manifest proves a checkpoint complete, a damaged newest one is skipped with a
warning, stale temporary folders go, a bad checkpoint_dir is one clear error; and a pretraining run killed
with SIGKILL (between steps and while a checkpoint is being written) resumes bit-identical."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tdnotebooks.checkpoints import (
    MANIFEST,
    check_architecture,
    check_checkpoint_dir,
    checkpoint_problems,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)


class OneProcess:
    """What save_checkpoint needs of an accelerate.Accelerator, for one process."""

    is_main_process, process_index, num_processes = True, 0, 1

    def wait_for_everyone(self) -> None:
        pass


def save(root: Path, step: int, keep: int | None = None) -> Path:
    return save_checkpoint(root, step, {"step": step, "weights": torch.arange(1000.0) * step}, OneProcess(), keep=keep)


def truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


DAMAGES = {
    "0-byte state.pt": (lambda folder: (folder / "state.pt").write_bytes(b""), r"state\.pt has 0 bytes"),
    "truncated state.pt": (lambda folder: truncate(folder / "state.pt"), r"state\.pt has \d+ bytes, the manifest"),
    "missing rng file": (lambda folder: (folder / "rng-rank0.pt").unlink(), r"rng-rank0\.pt is missing"),
    "missing manifest": (lambda folder: (folder / MANIFEST).unlink(), r"no manifest\.json"),
    "a changed byte": (lambda folder: (folder / "state.pt").write_bytes(
        bytes(b ^ (i == 100) for i, b in enumerate((folder / "state.pt").read_bytes()))),
        r"state\.pt does not match its sha256"),
}


def test_the_manifest_lists_every_file_with_its_size_and_sha256(tmp_path):
    import hashlib

    folder = save(tmp_path, 3)
    assert folder.name == "step-000003" and not list(tmp_path.glob(".tmp-*"))
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["format"] == 1 and manifest["step"] == 3 and manifest["world_size"] == 1
    assert sorted(manifest["files"]) == ["rng-rank0.pt", "state.pt"]
    for name, entry in manifest["files"].items():
        data = (folder / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert checkpoint_problems(folder) == []
    state, rng = load_checkpoint(folder)
    assert state["step"] == 3 and set(rng) >= {"python", "numpy", "torch"}
    assert load_checkpoint(folder, rank=1)[1] is None         # a process the checkpoint did not have


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_newest_checkpoint_is_skipped_with_a_warning(tmp_path, damage):
    save(tmp_path, 2)
    newest = save(tmp_path, 4)
    hurt, problem = DAMAGES[damage]
    hurt(newest)
    assert checkpoint_problems(newest) and checkpoint_problems(tmp_path / "step-000002") == []
    with pytest.warns(UserWarning, match=rf"skipping the damaged checkpoint .*step-000004 \(.*{problem}"):
        assert latest_checkpoint(tmp_path) == tmp_path / "step-000002"


@pytest.mark.parametrize("damage", DAMAGES)
def test_no_usable_checkpoint_is_one_clear_error(tmp_path, damage):
    hurt, problem = DAMAGES[damage]
    hurt(save(tmp_path, 2))
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=rf"no usable checkpoint in checkpoint_dir=.*"
                                                  rf"step-000002: .*{problem}"):
        latest_checkpoint(tmp_path)


def test_no_checkpoint_at_all_is_none(tmp_path):
    assert latest_checkpoint(tmp_path) is None and latest_checkpoint(tmp_path / "missing") is None
    (tmp_path / ".tmp-step-000002").mkdir()                   # a save killed before its rename: not one
    assert latest_checkpoint(tmp_path) is None


@pytest.mark.parametrize("damage, problem", [
    ("truncated state.pt", r"state\.pt is damaged"), ("0-byte state.pt", r"state\.pt is damaged"),
    ("missing rng file", r"rng-rank0\.pt is missing .*not be exact"), ("missing manifest", r"no manifest\.json"),
])
def test_loading_a_damaged_folder_names_the_file(tmp_path, damage, problem):
    """Not 'PytorchStreamReader failed reading zip archive', a bare EOFError or a silent re-seed."""
    folder = save(tmp_path, 2)
    DAMAGES[damage][0](folder)
    with pytest.raises(ValueError, match=rf"cannot resume from .*step-000002: {problem}"):
        load_checkpoint(folder)


def test_stale_temporary_folders_are_removed_at_the_next_save_and_at_start(tmp_path):
    for name in (".tmp-step-000001", ".tmp-step-000007"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "state.pt").write_bytes(b"half")
    check_checkpoint_dir(tmp_path, clean=False)               # not the main process: leaves them
    assert len(list(tmp_path.glob(".tmp-step-*"))) == 2
    save(tmp_path, 2)
    assert not list(tmp_path.glob(".tmp-step-*"))
    (tmp_path / ".tmp-step-000009").mkdir()
    check_checkpoint_dir(tmp_path)                            # the main process at start
    assert not list(tmp_path.glob(".tmp-step-*"))
    assert [step for step, _ in list_checkpoints(tmp_path)] == [2]


def test_keep_counts_complete_checkpoints_and_removes_older_damaged_ones(tmp_path):
    save(tmp_path, 1)
    (tmp_path / "step-000002").mkdir()                        # damaged (no manifest), older than the kept ones
    for step in (3, 4):
        save(tmp_path, step, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000003", "step-000004"]


def test_checkpoint_dir_must_be_a_writable_folder(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match=r"checkpoint_dir must be a folder, got '.*a-file', which is a file"):
        check_checkpoint_dir(a_file)
    with pytest.raises(ValueError, match=r"checkpoint_dir='.*a-file/sub' is not writable"):
        check_checkpoint_dir(a_file / "sub")
    assert check_checkpoint_dir(tmp_path / "new" / "ckpt").is_dir()     # created
    assert list((tmp_path / "new" / "ckpt").iterdir()) == []            # the write probe is gone


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write into a read-only folder")
def test_a_read_only_checkpoint_dir_is_refused(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(ValueError, match=r"checkpoint_dir='.*' is not writable"):
            check_checkpoint_dir(tmp_path)
    finally:
        tmp_path.chmod(0o700)


def test_another_architecture_is_one_error_listing_the_differences():
    from types import SimpleNamespace

    saved = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2,
             "intermediate_size": 64, "vocab_size": 30522, "max_position_embeddings": 128, "num_labels": 2}
    model = SimpleNamespace(config=SimpleNamespace(**{**saved, "hidden_size": 64, "num_hidden_layers": 2,
                                                      "num_labels": 3}))
    with pytest.raises(ValueError, match=r"cannot resume from ckpt/step-000002: the model differs .*"
                                         r"\(hidden_size: checkpoint 32, now 64; num_hidden_layers: checkpoint 4, "
                                         r"now 2; num_labels: checkpoint 2, now 3\)"):
        check_architecture("ckpt/step-000002", saved, model, classifier=True)
    check_architecture("ckpt/step-000002", saved, model.__class__(config=SimpleNamespace(**saved)), classifier=True)


# ----------------------------------------------------------------------------------------------------------
# A real interruption: python -m tdnotebooks.pretraining killed with SIGKILL, resumed
# ----------------------------------------------------------------------------------------------------------

STEPS = 10
CLI = ["--mode", "sctd", "--steps", str(STEPS), "--batch-size", "4", "--block-size", "32", "--num-layers", "2",
       "--hidden-size", "32", "--num-heads", "2", "--intermediate-size", "64", "--max-texts", "200", "--fi", "2",
       "--eval-every", "0", "--device", "cpu", "--no-progress", "--checkpoint-every", "1"]


def start(checkpoint_dir: Path, out: Path, resume: bool) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(name, None)
    command = [sys.executable, "-m", "tdnotebooks.pretraining", *CLI, "--checkpoint-dir", str(checkpoint_dir),
               "--output-dir", str(out), *(["--resume"] if resume else [])]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_when(process: subprocess.Popen, seen, timeout: float = 60) -> bool:
    """SIGKILL ``process`` as soon as ``seen()`` is true; False if it ended first."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if seen():
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
    process.wait()
    return False


def new_tmp_folders(root: Path, since_ns: int) -> bool:
    """A .tmp-step-* folder made after ``since_ns`` (not a stale one of an earlier kill)."""
    for entry in os.scandir(root):
        try:
            if entry.name.startswith(".tmp-step-") and entry.stat().st_mtime_ns > since_ns:
                return True
        except FileNotFoundError:                               # renamed meanwhile
            pass
    return False


def finished(process: subprocess.Popen) -> None:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-3000:]


def final_run(out: Path) -> tuple[list[dict], dict]:
    from safetensors.torch import load_file

    history = json.loads((out / "history.json").read_text())
    steps = [{k: v for k, v in s.items() if k not in ("seconds", "tokens_per_second")} for s in history["steps"]]
    return steps, load_file(out / "model.safetensors")


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_bit_identical(tmp_path):
    """Killed after a random step, then killed while a checkpoint is being written, then resumed to the end:
    the same per-step losses and the same final weights as one uninterrupted run."""
    reference = start(tmp_path / "ref-ckpt", tmp_path / "ref", resume=False)
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    # 1. killed between steps: once checkpoint k (drawn with a fixed seed) is on disk
    k = random.Random(16).randint(2, STEPS - 4)
    process = start(ckpt, out, resume=False)
    assert kill_when(process, lambda: (ckpt / f"step-{k:06d}").is_dir())
    # 2. killed while writing: as soon as a .tmp-step-* folder appears (a few tries: the window is short)
    caught = False
    for _ in range(4):
        started = time.time_ns()
        process = start(ckpt, out, resume=True)
        assert kill_when(process, lambda started=started: new_tmp_folders(ckpt, started))
        if new_tmp_folders(ckpt, started):
            caught = True                                       # killed with the checkpoint half written
            break
    assert caught, "never killed while a checkpoint was being written"
    # 3. resumed to the end; the stale .tmp folder is removed
    process = start(ckpt, out, resume=True)
    finished(process)
    finished(reference)
    assert not list(ckpt.glob(".tmp-step-*"))
    steps, weights = final_run(out)
    ref_steps, ref_weights = final_run(tmp_path / "ref")
    assert len(steps) == STEPS and steps == ref_steps          # losses (and every logged term), bit for bit
    assert weights.keys() == ref_weights.keys()
    assert all(torch.equal(weights[name], ref_weights[name]) for name in weights)
    history = json.loads((out / "history.json").read_text())
    assert history["resumed_from"] is not None and history["resumed_from"] < STEPS
