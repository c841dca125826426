"""Fine-tuning in two processes (torchrun, gloo on CPU): finetune() and BucketTrainer each train one global
batch per step split across the ranks, keep the replicas identical, see every example once per epoch, and
match a one-process run of the same global batches.

``accelerate launch --cpu --num_processes 2`` starts only one process on these machines; torchrun starts two.
The processes are tests/ddp_worker.py; each writes what it saw and digests of its weights.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(kind: str, out: Path, processes: int) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("WORLD_SIZE", None)
    if processes == 1:
        command = [sys.executable, str(WORKER), kind, str(out)]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                   "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(WORKER), kind, str(out)]
    done = subprocess.run(command, env=env, cwd=out.parent, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(processes)]


@pytest.fixture(scope="module", params=["finetune", "trainer"])
def runs(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    return request.param, launch(request.param, root / "one", 1), launch(request.param, root / "two", 2), root


def test_the_replicas_end_with_identical_weights(runs):
    _, _, (rank0, rank1), _ = runs
    assert (rank0["world"], rank1["world"]) == (2, 2)
    assert rank0["weights"] == rank1["weights"]


def test_every_rank_runs_the_same_global_batches_and_every_example_once_per_epoch(runs):
    _, (one,), (rank0, rank1), _ = runs
    assert rank0["global_batches"] == rank1["global_batches"] == one["global_batches"]
    batches = rank0["global_batches"]
    per_epoch = len(batches) // 2 if len(batches) % 2 == 0 else None
    seen = sorted(i for batch in batches for i in batch)
    assert seen == sorted(list(range(40)) * 2)  # 40 examples, 2 epochs, whatever the epochs' batch counts
    # each rank keeps rows r, r + 2, ... of a global batch (ShardedCollator): together, every row once
    for batch in batches:
        assert sorted(batch[0::2] + batch[1::2]) == sorted(batch)
    assert per_epoch is None or per_epoch > 0


def test_each_rank_trains_only_its_half_of_every_global_batch(runs):
    """Not the whole batch on every rank (twice the compute, no speed-up): ceil(B / 2) rows per global batch."""
    _, (one,), (rank0, rank1), _ = runs
    sizes = [len(batch) for batch in rank0["global_batches"]]
    assert one["trained_rows"] == sizes
    assert rank0["trained_rows"] == rank1["trained_rows"] == [-(-size // 2) for size in sizes]


def test_two_processes_match_one_process_of_the_same_global_batches(runs):
    kind, (one,), (rank0, _), root = runs
    assert [s["loss"] for s in rank0["steps"]] == pytest.approx([s["loss"] for s in one["steps"]], rel=1e-5)
    if kind == "trainer":
        assert rank0["global_step"] == one["global_step"]
        assert rank0["lr_factors"] == pytest.approx(one["lr_factors"])  # LRM from the global batch size
    else:
        assert [s["batch_size"] for s in rank0["steps"]] == [s["batch_size"] for s in one["steps"]]
        assert [s["lr"] for s in rank0["steps"]] == pytest.approx([s["lr"] for s in one["steps"]])
    head_one = torch.load(root / "one" / "rank0-head.pt")
    head_two = torch.load(root / "two" / "rank0-head.pt")
    assert all(torch.allclose(head_one[k], head_two[k], atol=1e-6) for k in head_one)
