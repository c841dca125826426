"""finetune() on the paths real training takes: gradient accumulation with odd batch counts, checkpoints and an
exact resume in any epoch (TokenDrop on), and the sharded collation that several processes use."""

import math

import pytest
import torch

from tdnotebooks.finetuning.collate import PadToBatchMax
from tdnotebooks.finetuning.distributed import ShardedCollator, example_losses
from tdnotebooks.finetuning.train import finetune, set_dropout


@pytest.fixture(scope="module")
def task(wordpiece):
    from tdnotebooks.data import load_task
    from tdnotebooks.finetuning.tokendrop import prepare

    rt = load_task("rt_sentiment")
    train = prepare(rt["train"].shuffle(seed=1).select(range(72)), wordpiece, max_length=40)
    dev = prepare(rt["dev"].shuffle(seed=1).select(range(16)), wordpiece, max_length=40)
    return train, dev


def tiny_model(dropout: float | None = None):
    from tdnotebooks.models import load_pretrained

    torch.manual_seed(0)
    model = load_pretrained(kind="classifier", num_layers=1)
    if dropout is not None:
        set_dropout(model, dropout)
    return model


FAST = {"freeze_embeddings": True, "progress": False}


def same_weights(a, b, **tolerance) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    if tolerance:
        return all(torch.allclose(sa[k].float(), sb[k].float(), **tolerance) for k in sa)
    return all(torch.equal(sa[k], sb[k]) for k in sa)


# ----------------------------------------------------------------------------------------------------------
# Gradient accumulation
# ----------------------------------------------------------------------------------------------------------


def test_accumulation_steps_the_odd_last_micro_batch_of_every_epoch(task):
    train, dev = task  # 72 examples in batches of 16: 5 batches (the last of 8), so 3 steps of 2, 2 and 1
    history = finetune(tiny_model(), train, dev, method="random", epochs=2, base_batch_size=16, grad_accum_steps=2,
                       **FAST)
    assert [s["batch_size"] for s in history.steps] == [32, 32, 8] * 2
    assert [s["epoch"] for s in history.steps] == [0, 0, 0, 1, 1, 1]
    assert history.config["train_dropout"] is None


def test_an_accumulated_step_equals_one_step_over_the_union_of_its_micro_batches(task):
    """Batches of 8 accumulated in pairs = batches of 16 (the random order is cut in consecutive chunks):
    the same steps, the same examples, the same example-weighted mean loss, so the same weights."""
    train, dev = task
    kwargs = dict(method="random", epochs=2, warmup_ratio=0.0, lr=2e-4, **FAST)
    accumulated, big = tiny_model(dropout=0.0), tiny_model(dropout=0.0)
    h_acc = finetune(accumulated, train, dev, base_batch_size=8, grad_accum_steps=2, **kwargs)
    h_big = finetune(big, train, dev, base_batch_size=16, **kwargs)
    assert [s["batch_size"] for s in h_acc.steps] == [s["batch_size"] for s in h_big.steps] == [16] * 4 + [8] + \
        [16] * 4 + [8]
    assert [s["loss"] for s in h_acc.steps] == pytest.approx([s["loss"] for s in h_big.steps], rel=1e-4)
    assert same_weights(accumulated, big, atol=2e-6, rtol=1e-4)


def test_lrm_scales_by_the_accumulated_examples_over_the_nominal_step(task):
    train, dev = task
    history = finetune(tiny_model(), train, dev, method="bucket", epochs=2, base_batch_size=4, token_budget=512,
                       grad_accum_steps=3, warmup_ratio=0.0, lr=1e-4, **FAST)
    total = len(history.steps)
    for s in history.steps:
        scheduled = 1e-4 * (total - s["step"]) / total
        assert s["lr"] == pytest.approx(scheduled * math.sqrt(s["batch_size"] / (4 * 3)), rel=1e-6)
    per_epoch = [sum(s["batch_size"] for s in history.steps if s["epoch"] == e) for e in (0, 1)]
    assert per_epoch == [len(train), len(train)]


# ----------------------------------------------------------------------------------------------------------
# Checkpoints and exact resume
# ----------------------------------------------------------------------------------------------------------

RESUMABLE = dict(method="tokendrop_bucket", epochs=3, base_batch_size=4, token_budget=512, grad_accum_steps=2,
                 tokendrop_dropout=0.1, lr=1e-4, **FAST)  # dropout on: the resume must restore its RNG


@pytest.fixture(scope="module")
def uninterrupted(task, tmp_path_factory):
    train, dev = task
    model = tiny_model()
    history = finetune(model, train, dev, checkpoint_dir=str(tmp_path_factory.mktemp("full")), checkpoint_every=3,
                       **RESUMABLE)
    return model, history


def comparable(history):
    """Everything but wall-clock seconds."""
    epochs = [{k: v for k, v in e.items() if k != "train_seconds"} for e in history.epochs]
    return history.steps, epochs


@pytest.mark.parametrize("killed_after", ["mid epoch 2", "end of epoch 1", "mid epoch 0"])
def test_a_resumed_run_is_bit_identical_to_the_uninterrupted_one(task, tmp_path, uninterrupted, killed_after):
    train, dev = task
    full_model, full = uninterrupted
    steps_per_epoch = [sum(1 for s in full.steps if s["epoch"] == e) for e in range(3)]
    stop = {"mid epoch 2": sum(steps_per_epoch[:2]) + 1, "end of epoch 1": sum(steps_per_epoch[:2]),
            "mid epoch 0": 2}[killed_after]
    first = finetune(tiny_model(), train, dev, checkpoint_dir=str(tmp_path), checkpoint_every=1,
                     stop_after=stop, **RESUMABLE)
    assert len(first.steps) == stop
    model = tiny_model()  # a fresh process would build the model again; the checkpoint replaces its weights
    resumed = finetune(model, train, dev, checkpoint_dir=str(tmp_path), checkpoint_every=1, resume=True,
                       **RESUMABLE)
    # the last step of an epoch is checkpointed after the epoch's evaluation, which the kill cut off
    assert resumed.config["resumed_from"] == (stop - 1 if killed_after == "end of epoch 1" else stop)
    assert comparable(resumed) == comparable(full)  # batches, widths (token drops), losses, lr, padding counts
    assert same_weights(model, full_model)


def test_resume_with_nothing_left_returns_the_finished_history(task, tmp_path):
    train, dev = task
    kwargs = dict(RESUMABLE, epochs=1, checkpoint_dir=str(tmp_path), checkpoint_every=100)
    done = finetune(tiny_model(), train, dev, **kwargs)
    again = finetune(tiny_model(), train, dev, resume=True, **kwargs)
    assert comparable(again) == comparable(done) and again.config["resumed_from"] == len(done.steps)


def test_resume_refuses_other_settings_and_other_data(task, tmp_path):
    train, dev = task
    finetune(tiny_model(), train, dev, checkpoint_dir=str(tmp_path), checkpoint_every=1, stop_after=2, **RESUMABLE)
    with pytest.raises(ValueError, match=r"cannot resume .* settings differ \(lr: checkpoint 0.0001, now 0.0002\)"):
        finetune(tiny_model(), train, dev, checkpoint_dir=str(tmp_path), resume=True, **{**RESUMABLE, "lr": 2e-4})
    with pytest.raises(ValueError, match=r"cannot resume .*train: checkpoint 72 examples, now 71"):
        finetune(tiny_model(), train.select(range(71)), dev, checkpoint_dir=str(tmp_path), resume=True, **RESUMABLE)


def test_a_bad_checkpoint_dir_is_refused_before_any_step(task, tmp_path):
    train, dev = task
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for settings in ({"checkpoint_every": 1}, {"resume": True}, {"resume": True, "checkpoint_every": 1}):
        with pytest.raises(ValueError, match="checkpoint_dir must be a folder, got .*not-a-folder.*, which is a file"):
            finetune(model, train, dev, checkpoint_dir=str(a_file), **settings, **RESUMABLE)
    with pytest.raises(ValueError, match=r"checkpoint_dir='.*not-a-folder/sub' is not writable"):
        finetune(model, train, dev, checkpoint_dir=str(a_file / "sub"), checkpoint_every=1, **RESUMABLE)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="checkpoint_every and resume=True need checkpoint_dir"):
        finetune(model, train, dev, checkpoint_every=1, **RESUMABLE)


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(task, tmp_path, uninterrupted):
    from tdnotebooks.checkpoints import list_checkpoints

    train, dev = task
    full_model, full = uninterrupted
    finetune(tiny_model(), train, dev, checkpoint_dir=str(tmp_path), checkpoint_every=2, stop_after=5, **RESUMABLE)
    *_, (previous, _), (newest, folder) = list_checkpoints(tmp_path)
    (folder / "state.pt").write_bytes(b"")                           # a crash that left a renamed, empty file
    model = tiny_model()
    with pytest.warns(UserWarning, match=rf"skipping the damaged checkpoint .*step-{newest:06d} \(state\.pt has 0 "
                                         r"bytes, the manifest says \d+\)"):
        resumed = finetune(model, train, dev, checkpoint_dir=str(tmp_path), checkpoint_every=2, resume=True,
                           **RESUMABLE)
    assert resumed.config["resumed_from"] == previous
    assert comparable(resumed) == comparable(full) and same_weights(model, full_model)


@pytest.fixture(scope="module")
def one_step(task, tmp_path_factory):
    """A checkpoint after one optimizer step."""
    train, dev = task
    directory = tmp_path_factory.mktemp("one-step")
    finetune(tiny_model(), train, dev, checkpoint_dir=str(directory), checkpoint_every=1, stop_after=1, **RESUMABLE)
    return directory


def test_a_missing_rng_file_is_an_error_not_a_silent_reseed(task, tmp_path, one_step):
    import shutil

    train, dev = task
    shutil.copytree(one_step, tmp_path, dirs_exist_ok=True)
    (tmp_path / "step-000001" / "rng-rank0.pt").unlink()
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"no usable checkpoint in checkpoint_dir=.*"
                                                  r"step-000001: rng-rank0\.pt is missing"):
        finetune(tiny_model(), train, dev, checkpoint_dir=str(tmp_path), resume=True, **RESUMABLE)


@pytest.mark.parametrize("model_settings, match", [
    ({"num_layers": 2}, r"num_hidden_layers: checkpoint 1, now 2"),
    ({"num_layers": 1, "num_labels": 3}, r"num_labels: checkpoint 2, now 3"),
])
def test_resume_with_another_architecture_is_one_clear_error(task, one_step, model_settings, match):
    from tdnotebooks.models import load_pretrained

    train, dev = task
    model = load_pretrained(kind="classifier", **model_settings)
    with pytest.raises(ValueError, match=rf"cannot resume from .*step-000001: the model differs from the one the "
                                         rf"checkpoint was trained with \({match}\)"):
        finetune(model, train, dev, checkpoint_dir=str(one_step), resume=True, **RESUMABLE)


def test_another_world_size_resumes_the_same_global_batches_with_a_warning(task, tmp_path, uninterrupted):
    """One global batch per step, split across the ranks: its size does not depend on the world size, so a
    checkpoint of 2 processes goes on in 1 (dropout masks drawn afresh, hence other losses)."""
    import shutil

    from tdnotebooks.checkpoints import write_manifest

    train, dev = task
    _, full = uninterrupted
    finetune(tiny_model(), train, dev, checkpoint_dir=str(tmp_path), checkpoint_every=2, stop_after=2, **RESUMABLE)
    folder = tmp_path / "step-000002"                                # as if torchrun had written it
    state = torch.load(folder / "state.pt", weights_only=True)
    state["world_size"] = 2
    torch.save(state, folder / "state.pt")
    shutil.copy(folder / "rng-rank0.pt", folder / "rng-rank1.pt")
    write_manifest(folder, 2, world_size=2)
    with pytest.warns(UserWarning, match=r"with 1 process\(es\) \(saved with 2\): the global batches are the same"):
        resumed = finetune(tiny_model(), train, dev, checkpoint_dir=str(tmp_path), checkpoint_every=2, resume=True,
                           **RESUMABLE)
    assert resumed.config["resumed_from"] == 2
    same = ("step", "epoch", "batch_size", "seq_len", "lr")
    assert [{k: s[k] for k in same} for s in resumed.steps] == [{k: s[k] for k in same} for s in full.steps]


# ----------------------------------------------------------------------------------------------------------
# Several processes: one global batch, its rows split across ranks
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("replicas", [1, 2, 3, 4])
@pytest.mark.parametrize("size", [1, 2, 3, 5, 8])
def test_sharded_collation_splits_each_global_batch_evenly_and_counts_every_example_once(replicas, size):
    examples = [{"input_ids": list(range(1, 3 + i % 4)), "label": i} for i in range(size)]
    inner = PadToBatchMax(0)
    shards = [ShardedCollator(inner, replicas, rank)(examples) for rank in range(replicas)]
    whole = PadToBatchMax(0)(examples)
    assert {tuple(s["input_ids"].shape) for s in shards} == {(math.ceil(size / replicas), whole["input_ids"].shape[1])}
    kept = sorted(int(label) for s in shards for label, w in zip(s["labels"], s["example_weight"], strict=True) if w)
    assert kept == list(range(size))  # every example once, across ranks
    assert all(int(s["global_batch_size"]) == size for s in shards)
    assert inner.stats.num_batches == replicas  # the wrapped collator saw the whole global batch on every rank


def test_example_losses_average_to_the_models_own_loss():
    from tdnotebooks.models import load_pretrained

    torch.manual_seed(0)
    for num_labels, labels in ((2, torch.tensor([0, 1, 1])), (1, torch.tensor([0.5, -1.0, 2.0]))):
        model = load_pretrained(kind="classifier", num_layers=1, num_labels=num_labels).eval()
        ids = torch.tensor([[101, 2023, 102], [101, 2003, 102], [101, 1037, 102]])
        with torch.no_grad():
            out = model(input_ids=ids, labels=labels)
        assert float(example_losses(out.logits, labels, model.config).mean()) == pytest.approx(float(out.loss), rel=1e-6)
