"""MLM pretraining: every mode trains, data and masking are deterministic, checkpoints resume exactly
(CPU), a killed run loses at most checkpoint_every steps, and every bad setting raises one clear error."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tdnotebooks.pretraining.train import (
    PRETRAIN_MODES,
    PretrainConfig,
    latest_checkpoint,
    list_checkpoints,
    main,
    mask_tokens,
    pack_blocks,
    pretrain,
    sample_indices,
)

SMALL = dict(steps=6, batch_size=4, block_size=32, num_layers=4, hidden_size=32, num_heads=2, intermediate_size=64,
             max_texts=200, eval_every=3, eval_blocks=8, eval_batch_size=8, fi=2, device="cpu", progress=False)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors, one CPU thread


def run(wordpiece, stop_after=None, **settings):
    return pretrain(PretrainConfig(**{**SMALL, **settings}), tokenizer=wordpiece, stop_after=stop_after)


# ----------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------


def test_pack_blocks_cls_body_sep(wordpiece):
    tok = wordpiece
    blocks = pack_blocks(["to be or not to be", "that is the question"] * 3, tok, block_size=8)
    stream = []
    for text in ["to be or not to be", "that is the question"] * 3:
        stream += [*tok(text, add_special_tokens=False)["input_ids"], tok.sep_token_id]
    assert blocks.shape == (len(stream) // 6, 8)
    assert (blocks[:, 0] == tok.cls_token_id).all() and (blocks[:, -1] == tok.sep_token_id).all()
    assert blocks[:, 1:-1].reshape(-1).tolist() == stream[:blocks.shape[0] * 6]
    assert tok.pad_token_id not in blocks.tolist()
    with pytest.raises(ValueError, match="fewer than block_size - 2"):
        pack_blocks(["hi"], tok, block_size=64)


def test_masking_counts_specials_and_80_10_10(wordpiece):
    tok = wordpiece
    ids = torch.randint(2000, 6000, (400, 34), generator=torch.Generator().manual_seed(0))
    ids[:, 0], ids[:, -1], ids[:, 17] = tok.cls_token_id, tok.sep_token_id, tok.sep_token_id
    inputs, labels = mask_tokens(ids, tok.mask_token_id, len(tok), tok.all_special_ids,
                                 torch.Generator().manual_seed(1))
    chosen = labels != -100
    assert (chosen.sum(1) == round(0.15 * 31)).all()                    # 31 non-special tokens per row
    assert not chosen[:, [0, 17, 33]].any()                             # special tokens never predicted
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])
    n = int(chosen.sum())
    masked = int((inputs[chosen] == tok.mask_token_id).sum())
    kept = int((inputs[chosen] == ids[chosen]).sum())
    assert 0.75 < masked / n < 0.85 and 0.06 < kept / n < 0.14 and 0.06 < (n - masked - kept) / n < 0.14
    again = mask_tokens(ids, tok.mask_token_id, len(tok), tok.all_special_ids, torch.Generator().manual_seed(1))
    assert torch.equal(again[0], inputs) and torch.equal(again[1], labels)


def test_sample_order_is_a_permutation_per_epoch():
    first = sample_indices(0, 10, 10, seed=0)
    second = sample_indices(10, 10, 10, seed=0)
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(10))
    assert first.tolist() != second.tolist()                             # reshuffled per epoch
    assert sample_indices(7, 6, 10, seed=0).tolist() == [*first[7:].tolist(), *second[:3].tolist()]


# ----------------------------------------------------------------------------------------------------------
# Modes
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", PRETRAIN_MODES)
def test_each_mode_trains_a_few_steps(wordpiece, mode):
    from transformers import BertForMaskedLM

    td, history = run(wordpiece, mode=mode, steps=3)
    assert isinstance(td.mlm, BertForMaskedLM)
    assert len(history.steps) == 3 and all(math.isfinite(loss) for loss in history.losses)
    assert [e["step"] for e in history.evals] == [3] and math.isfinite(history.dev_losses[0])
    assert all(s["tokens_per_second"] > 0 and s["seconds"] > 0 for s in history.steps)
    full_steps = [s["is_full_step"] for s in history.steps]
    assert full_steps == ([False, True, False] if mode == "sctd" else [False] * 3)   # fi=2: t mod 2 == 1
    for s in history.steps:
        present = {k for k in ("mlm_dropped", "mlm_full", "kl_global", "kl_local") if s[k] is not None}
        if mode == "baseline":
            assert present == {"mlm_full"} and s["loss"] == s["mlm_full"]
        elif mode == "sctd" and s["is_full_step"]:
            assert present == {"mlm_dropped", "mlm_full", "kl_global", "kl_local"}
            assert s["kl_global"] >= 0 and s["kl_local"] >= 0
        else:
            assert present == {"mlm_dropped"} and s["loss"] == s["mlm_dropped"]
    table = td.importance.table
    moved = bool((table[2000:] != 10.0).any())
    assert moved is (mode in ("token_drop", "sctd"))                     # only importance modes update it
    assert td.config.selection == ("random" if mode == "random_drop" else "importance")


def test_loss_falls(wordpiece):
    _, history = run(wordpiece, mode="token_drop", steps=12, lr=1e-2, warmup=0.0, eval_every=0)
    losses = history.losses
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5      # 10.27 -> 9.52 on CPU


# ----------------------------------------------------------------------------------------------------------
# Checkpoints and resume
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def uninterrupted(wordpiece, tmp_path_factory):
    """6 sctd steps (full passes at 1, 3, 5; dropout on), a checkpoint every 2 steps."""
    directory = tmp_path_factory.mktemp("uninterrupted")
    td, history = run(wordpiece, mode="sctd", checkpoint_every=2, checkpoint_dir=str(directory))
    return td, history, directory


def assert_same_run(a, b):
    (td_a, hist_a), (td_b, hist_b) = a, b
    assert hist_a.losses == hist_b.losses                                # exactly, step by step
    assert [{k: v for k, v in s.items() if k not in ("seconds", "tokens_per_second")} for s in hist_a.steps] == \
        [{k: v for k, v in s.items() if k not in ("seconds", "tokens_per_second")} for s in hist_b.steps]
    assert hist_a.evals == hist_b.evals
    assert torch.equal(td_a.importance.table, td_b.importance.table)
    for name, tensor in td_a.state_dict().items():
        if torch.is_tensor(tensor):
            assert torch.equal(tensor, td_b.state_dict()[name]), name


def test_resume_reproduces_the_uninterrupted_losses(wordpiece, tmp_path, uninterrupted):
    td_full, hist_full, directory = uninterrupted
    assert [step for step, _ in list_checkpoints(directory)] == [4, 6]  # keep_checkpoints=2
    first, _ = run(wordpiece, stop_after=4, mode="sctd", checkpoint_every=2, checkpoint_dir=str(tmp_path))
    resumed = run(wordpiece, mode="sctd", checkpoint_every=2, checkpoint_dir=str(tmp_path), resume=True)
    assert resumed[1].resumed_from == 4 and len(resumed[1].steps) == 6
    assert_same_run((td_full, hist_full), resumed)


def test_killed_run_loses_at_most_checkpoint_every_steps(wordpiece, tmp_path, uninterrupted):
    td_full, hist_full, _ = uninterrupted
    _, killed = run(wordpiece, stop_after=5, mode="sctd", checkpoint_every=2, checkpoint_dir=str(tmp_path))
    assert len(killed.steps) == 5
    # A crash in the middle of writing leaves a temporary folder (ignored, then removed) or, on a file system
    # that renamed before the data was written, an incomplete one (skipped with a warning).
    (tmp_path / ".tmp-step-000006").mkdir()
    (tmp_path / ".tmp-step-000003").mkdir()
    (tmp_path / "step-000008").mkdir()
    with pytest.warns(UserWarning, match=r"skipping the damaged checkpoint .*step-000008 \(no manifest\.json"):
        assert latest_checkpoint(tmp_path).name == "step-000004"        # 5 - 4 = 1 step lost, <= 2

    with pytest.warns(UserWarning, match=r"step-000008"):
        resumed = run(wordpiece, mode="sctd", checkpoint_every=2, checkpoint_dir=str(tmp_path), resume=True)
    assert resumed[1].resumed_from == 4
    assert_same_run((td_full, hist_full), resumed)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 6]         # the incomplete step-000008 is ignored
    assert not list(tmp_path.glob(".tmp-step-*"))                       # stale temporary folders are removed


def test_resume_restores_the_importance_table(wordpiece, uninterrupted):
    td_full, _, directory = uninterrupted
    state = torch.load(directory / "step-000006" / "state.pt", weights_only=True)
    td, history = run(wordpiece, mode="sctd", checkpoint_every=2, checkpoint_dir=str(directory), resume=True)
    assert history.resumed_from == 6 and len(history.steps) == 6         # nothing left to do
    assert torch.equal(td.importance.table, state["model"]["importance.table"])
    assert torch.equal(td.importance.table, td_full.importance.table)
    assert bool((td.importance.table[2000:] != 10.0).any())


def test_resume_needs_the_rng_states(wordpiece, tmp_path, uninterrupted, monkeypatch):
    """The check has teeth: without restoring RNG states (dropout) the resumed losses differ."""
    import tdnotebooks.pretraining.train as pretrain_module

    _, hist_full, _ = uninterrupted
    run(wordpiece, stop_after=4, mode="sctd", checkpoint_every=2, checkpoint_dir=str(tmp_path))
    monkeypatch.setattr(pretrain_module, "set_rng_state", lambda state: None)
    _, history = run(wordpiece, mode="sctd", checkpoint_every=2, checkpoint_dir=str(tmp_path), resume=True)
    assert history.losses[:4] == hist_full.losses[:4] and history.losses[4:] != hist_full.losses[4:]


def test_resume_refuses_other_settings(wordpiece, uninterrupted):
    _, _, directory = uninterrupted
    with pytest.raises(ValueError, match=r"cannot resume .* settings differ \(lr: checkpoint 0.0005, now 0.001\)"):
        run(wordpiece, mode="sctd", lr=1e-3, checkpoint_every=2, checkpoint_dir=str(directory), resume=True)


DAMAGES = {  # a damaged newest checkpoint and the problem its warning names
    "0-byte state.pt": (lambda folder: (folder / "state.pt").write_bytes(b""), r"state\.pt has 0 bytes"),
    "truncated state.pt": (lambda folder: (folder / "state.pt").write_bytes((folder / "state.pt").read_bytes()[:5000]),
                           r"state\.pt has 5000 bytes"),
    "missing rng file": (lambda folder: (folder / "rng-rank0.pt").unlink(), r"rng-rank0\.pt is missing"),
    "missing manifest": (lambda folder: (folder / "manifest.json").unlink(), r"no manifest\.json"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(wordpiece, tmp_path, uninterrupted, damage):
    td_full, hist_full, _ = uninterrupted
    run(wordpiece, stop_after=5, mode="sctd", checkpoint_every=2, checkpoint_dir=str(tmp_path))  # steps 2 and 4
    hurt, problem = DAMAGES[damage]
    hurt(tmp_path / "step-000004")
    with pytest.warns(UserWarning, match=rf"skipping the damaged checkpoint .*step-000004 \(.*{problem}"):
        resumed = run(wordpiece, mode="sctd", checkpoint_every=2, checkpoint_dir=str(tmp_path), resume=True)
    assert resumed[1].resumed_from == 2                                  # 3 steps lost, none wrong
    assert_same_run((td_full, hist_full), resumed)


def test_no_usable_checkpoint_is_one_clear_error(wordpiece, tmp_path):
    run(wordpiece, stop_after=2, mode="sctd", checkpoint_every=2, checkpoint_dir=str(tmp_path))
    (tmp_path / "step-000002" / "rng-rank0.pt").unlink()                # never a silent re-seed
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"no usable checkpoint in checkpoint_dir=.*"
                                                  r"step-000002: rng-rank0\.pt is missing"):
        run(wordpiece, mode="sctd", checkpoint_every=2, checkpoint_dir=str(tmp_path), resume=True)


@pytest.mark.parametrize("settings", [{"resume": True}, {"checkpoint_every": 1}, {"checkpoint_every": 2, "resume": True}])
def test_a_checkpoint_dir_that_is_a_file_fails_before_any_step(wordpiece, tmp_path, settings):
    """Not a fresh start that ignores resume=True, nor a FileExistsError after the steps ran."""
    from transformers import BertForMaskedLM

    from tdnotebooks.models import tiny_bert

    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    model = BertForMaskedLM(tiny_bert(num_layers=4, hidden_size=32, num_heads=2, intermediate_size=64,
                                      max_position_embeddings=128, tokenizer=wordpiece))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"checkpoint_dir must be a folder, got '.*not-a-folder', which is a file"):
        pretrain(PretrainConfig(**{**SMALL, **settings, "checkpoint_dir": str(a_file)}), model=model,
                 tokenizer=wordpiece)
    with pytest.raises(ValueError, match=r"checkpoint_dir='.*not-a-folder/sub' is not writable"):
        pretrain(PretrainConfig(**{**SMALL, **settings, "checkpoint_dir": str(a_file / "sub")}), model=model,
                 tokenizer=wordpiece)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("change, match", [
    ({"hidden_size": 64, "intermediate_size": 128},
     r"hidden_size: checkpoint 32, now 64; intermediate_size: checkpoint 64, now 128\)"),
    ({"num_layers": 3}, r"num_hidden_layers: checkpoint 4, now 3\)"),
])
def test_resume_with_another_model_size_is_one_clear_error(wordpiece, uninterrupted, change, match):
    _, _, directory = uninterrupted
    with pytest.raises(ValueError, match=rf"cannot resume from .*step-000006: the model differs from the one the "
                                         rf"checkpoint was trained with \({match}"):
        run(wordpiece, mode="sctd", checkpoint_every=2, checkpoint_dir=str(directory), resume=True, **change)


@pytest.mark.parametrize("change, match", [
    ({"steps": 8}, r"\(steps: checkpoint 6, now 8\) \(the learning-rate schedule spans steps: to stop earlier use "
                   r"stop_after"),
    ({"max_grad_norm": 0.5}, r"\(max_grad_norm: checkpoint 1.0, now 0.5\)"),
    ({"max_grad_norm": None}, r"\(max_grad_norm: checkpoint 1.0, now None\)"),
    ({"full_pass_at": "start"}, r"\(full_pass_at: checkpoint 'end', now 'start'\)"),
    ({"keep_predicted": "all"}, r"\(keep_predicted: checkpoint 'mask_only', now 'all'\)"),
    ({"kl_reduction": "sum"}, r"\(kl_reduction: checkpoint 'batchmean', now 'sum'\)"),
])
def test_resume_refuses_other_steps_and_another_max_grad_norm(wordpiece, uninterrupted, change, match):
    _, _, directory = uninterrupted
    with pytest.raises(ValueError, match=rf"cannot resume from .*step-000006: settings differ {match}"):
        run(wordpiece, mode="sctd", checkpoint_every=2, checkpoint_dir=str(directory), resume=True, **change)


def test_a_checkpoint_from_before_the_new_settings_resumes_with_their_old_readings(wordpiece, tmp_path):
    """A checkpoint without keep_predicted / full_pass_at ran with every predicted position kept and the full pass
    at t mod Fi == 0: it resumes with those settings, and refuses the new defaults by name."""
    from tdnotebooks.checkpoints import write_manifest

    old = dict(mode="sctd", checkpoint_every=2, checkpoint_dir=str(tmp_path), keep_predicted="all",
               full_pass_at="start")
    run(wordpiece, stop_after=2, **old)
    folder = tmp_path / "step-000002"
    state = torch.load(folder / "state.pt", weights_only=True)
    for name in ("keep_predicted", "full_pass_at"):
        del state["config"][name]
    torch.save(state, folder / "state.pt")
    write_manifest(folder, state["step"], 1)
    with pytest.raises(ValueError, match=r"settings differ \(keep_predicted: checkpoint 'all', now 'mask_only'; "
                                         r"full_pass_at: checkpoint 'start', now 'end'\)"):
        run(wordpiece, mode="sctd", checkpoint_every=2, checkpoint_dir=str(tmp_path), resume=True)
    _, history = run(wordpiece, resume=True, **old)
    assert history.resumed_from == 2 and [s["is_full_step"] for s in history.steps] == [True, False] * 3


def pretend_saved_by(folder, world_size):
    """Make a one-process checkpoint look written by ``world_size`` processes (as if by torchrun)."""
    import shutil

    from tdnotebooks.checkpoints import write_manifest

    state = torch.load(folder / "state.pt", weights_only=True)
    state["world_size"] = world_size
    torch.save(state, folder / "state.pt")
    for rank in range(1, world_size):
        shutil.copy(folder / "rng-rank0.pt", folder / f"rng-rank{rank}.pt")
    write_manifest(folder, state["step"], world_size)


def test_another_world_size_must_keep_the_global_batch(wordpiece, tmp_path):
    run(wordpiece, stop_after=2, mode="sctd", checkpoint_every=2, checkpoint_dir=str(tmp_path))
    pretend_saved_by(tmp_path / "step-000002", 2)                       # 2 processes x 4 blocks per step
    resume = dict(mode="sctd", checkpoint_every=2, checkpoint_dir=str(tmp_path), resume=True)
    with pytest.raises(ValueError, match=r"the global batch would change from 2 process\(es\) x batch_size=4 = 8 "
                                         r"blocks to 1 x 4 = 4; to keep it, resume with batch_size=8 "
                                         r"\(--batch-size 8\) with 1 process\(es\)"):
        run(wordpiece, **resume)
    with pytest.warns(UserWarning, match=r"with 1 process\(es\) x batch_size=8 \(saved with 2 x 4\): the same "
                                         r"global batch of 8 blocks .* not bit-identical"):
        _, history = run(wordpiece, batch_size=8, **resume)
    assert history.resumed_from == 2 and len(history.steps) == 6 and all(map(math.isfinite, history.losses))
    with pytest.raises(ValueError, match=r"from 1 process\(es\) x batch_size=8 = 8 blocks to 1 x 4 = 4; to keep "
                                         r"it, resume with batch_size=8"):
        run(wordpiece, **resume)                                         # the newest checkpoint: 1 x 8


@pytest.mark.slow
def test_two_processes_draw_their_own_dropout_and_resume_in_one_with_the_same_global_batch(wordpiece, tmp_path):
    """torchrun, 2 processes (gloo on CPU): each rank's torch RNG (dropout) is its own, rank 0's as one process
    would have it; their checkpoint resumes in 1 process only with the same global batch, with a warning."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("WORLD_SIZE", None)
    settings = dict(mode="sctd", steps=2, batch_size=2, eval_every=0, checkpoint_every=2)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in {**SMALL, **settings}.items() if k not in ("progress", "device")]
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                           "127.0.0.1", "--master_port", str(port), "-m", "tdnotebooks.pretraining", *flags,
                           "--device=cpu", "--no-progress", f"--checkpoint-dir={tmp_path / 'two'}"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    two = tmp_path / "two" / "step-000002"
    rank0, rank1 = (torch.load(two / f"rng-rank{r}.pt", weights_only=True)["torch"] for r in (0, 1))
    assert not torch.equal(rank0, rank1)                                 # not the same dropout masks on both
    run(wordpiece, **settings, checkpoint_dir=str(tmp_path / "one"))
    one = torch.load(tmp_path / "one" / "step-000002" / "rng-rank0.pt", weights_only=True)["torch"]
    assert torch.equal(rank0, one)                                       # rank 0 draws as one process would

    resume = dict(settings, checkpoint_dir=str(tmp_path / "two"), resume=True)
    with pytest.raises(ValueError, match=r"from 2 process\(es\) x batch_size=2 = 4 blocks to 1 x 2 = 2; to keep "
                                         r"it, resume with batch_size=4 \(--batch-size 4\)"):
        run(wordpiece, **resume)
    with pytest.warns(UserWarning, match=r"the same global batch of 4 blocks"):
        _, history = run(wordpiece, **{**resume, "batch_size": 4})
    assert history.resumed_from == 2 and len(history.steps) == 2


# ----------------------------------------------------------------------------------------------------------
# Bad settings: one clear error each
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, match", [
    ({"keep_fraction": 0.0}, r"keep_fraction must be a number in \(0, 1\], got 0.0"),
    ({"keep_fraction": 1.5}, r"keep_fraction must be a number in \(0, 1\], got 1.5"),
    ({"fi": 0}, r"fi \(the interval Fi\) must be an int >= 1"),
    ({"lam": -1.0}, r"lam \(lambda"),
    ({"start_layer": 2, "end_layer": 2}, r"start_layer must be < end_layer"),
    ({"start_layer": -1}, r"start_layer must be an int >= 0"),
    ({"beta": 1.0}, r"beta must be a number in \[0, 1\), got 1.0"),
    ({"mode": "dropout"}, r"mode must be one of 'baseline', 'token_drop', 'random_drop', 'sctd', got 'dropout'"),
    ({"steps": 0}, r"steps must be an int >= 1"),
    ({"block_size": 4}, r"block_size must be an int >= 8"),
    ({"lr": 0.0}, r"lr must be a number in \(0, inf\)"),
    ({"warmup": 1.0}, r"warmup must be a number in \[0, 1\)"),
    ({"mlm_probability": 1.0}, r"mlm_probability must be a number in \(0, 1\)"),
    ({"kl_target": "cls"}, r"kl_target must be one of"),
    ({"checkpoint_every": 2}, r"checkpoint_dir must be set"),
    ({"resume": True}, r"checkpoint_dir must be set"),
    ({"device": "tpu"}, r"device must be one of 'auto', 'cpu', 'cuda', got 'tpu'"),
    ({"mixed_precision": "fp8"}, r"mixed_precision must be one of"),
    ({"mixed_precision": "fp16", "device": "cpu"}, r"mixed_precision='fp16' needs a CUDA GPU"),
    ({"steps": True}, r"steps must be an int >= 1, got True"),
    ({"max_grad_norm": -1.0}, r"max_grad_norm must be a number in \(0, inf\), got -1.0"),
    ({"num_layers": 1}, r"num_layers must be an int >= 2, got 1"),
    ({"hidden_size": 64.0}, r"hidden_size must be an int >= 8, got 64.0"),
    ({"resume": "yes"}, r"resume must be True or False, got 'yes'"),
    ({"progress": 0}, r"progress must be True or False, got 0"),
    ({"first_layer_full_kv": 1}, r"first_layer_full_kv must be True or False, got 1"),
    ({"kl_reduction": "mean"}, r"kl_reduction must be one of 'batchmean', 'sum', got 'mean'"),
    ({"keep_predicted": "none"}, r"keep_predicted must be one of 'mask_only', 'all', got 'none'"),
    ({"full_pass_at": 0}, r"full_pass_at must be one of 'end', 'start', got 0"),
    ({"corpus": ""}, r"^corpus=.. is not a known corpus; allowed"),
    ({"checkpoint_dir": 3}, r"checkpoint_dir must be None or a folder path as a str, got 3"),
])
def test_bad_settings_raise_one_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PretrainConfig(**{**SMALL, **kwargs})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match=r"device='cuda' was requested but no CUDA GPU is available"):
        PretrainConfig(device="cuda")


@pytest.mark.parametrize("kwargs, match", [
    ({"start_layer": 4}, r"start_layer must be in \[0, 3\] for 4 layers, got 4"),
    ({"end_layer": 5}, r"end_layer must be in \[start_layer \+ 1, 4\]"),
    ({"block_size": 256}, r"block_size must be <= the model's max_position_embeddings \(128\)"),
])
def test_settings_that_do_not_fit_the_model(wordpiece, kwargs, match):
    from transformers import BertForMaskedLM

    from tdnotebooks.models import tiny_bert

    model = BertForMaskedLM(tiny_bert(num_layers=4, hidden_size=32, num_heads=2, intermediate_size=64,
                                      max_position_embeddings=128, tokenizer=wordpiece))
    with pytest.raises(ValueError, match=match):
        pretrain(PretrainConfig(**{**SMALL, **kwargs}), model=model, tokenizer=wordpiece)


def test_model_without_the_bert_layout(wordpiece):
    with pytest.raises(ValueError, match=r"model must be a Hugging Face BertForMaskedLM-style model"):
        pretrain(PretrainConfig(**SMALL), model=nn.Linear(4, 4), tokenizer=wordpiece)


def test_data_helpers_check_their_arguments(wordpiece):
    from tdnotebooks.pretraining.train import evaluate, pack_blocks, sample_indices

    with pytest.raises(ValueError, match="block_size must be an int >= 3, got 2"):
        pack_blocks(["to be or not to be"], wordpiece, block_size=2)
    with pytest.raises(ValueError, match="num_blocks must be an int >= 1, got 0"):
        sample_indices(0, 4, 0, seed=0)
    with pytest.raises(ValueError, match="seed must be an int >= 0, got -1"):
        sample_indices(0, 4, 10, seed=-1)
    with pytest.raises(ValueError, match=r"probability must be a number in \(0, 1\), got 1.5"):
        mask_tokens(torch.zeros(1, 8, dtype=torch.long), wordpiece.mask_token_id, len(wordpiece),
                    wordpiece.all_special_ids, torch.Generator().manual_seed(0), probability=1.5)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        evaluate(None, torch.zeros(1, 8), torch.zeros(1, 8), batch_size=0)


def test_stop_after_must_be_positive(wordpiece):
    with pytest.raises(ValueError, match=r"stop_after must be an int >= 1"):
        run(wordpiece, stop_after=0)


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------


def test_cli_runs_and_saves_a_plain_bert(capsys, tmp_path):
    from transformers import BertForMaskedLM

    out = tmp_path / "out"
    history = main(["--mode", "sctd", "--steps", "2", "--batch-size", "2", "--block-size", "32", "--hidden-size",
                    "32", "--num-heads", "2", "--intermediate-size", "64", "--max-texts", "100", "--eval-every",
                    "0", "--lambda", "0.1", "--fi", "1", "--start-layer", "none", "--device", "cpu",
                    "--no-progress", "--stop-gradient", "--output-dir", str(out)])
    config = history.config
    assert config["lam"] == 0.1 and config["fi"] == 1 and config["start_layer"] is None
    assert config["stop_gradient"] is True and config["progress"] is False
    assert [s["is_full_step"] for s in history.steps] == [True, True]
    assert "sctd: 2 steps" in capsys.readouterr().out
    loaded = BertForMaskedLM.from_pretrained(out)                       # a plain Hugging Face model
    assert loaded.config.hidden_size == 32 and loaded.config.num_hidden_layers == 4
    assert (out / "history.json").is_file() and (out / "tokenizer.json").is_file()
    with pytest.raises(SystemExit):
        main(["--mode", "dropout"])


TINY_CLI = ["--steps", "1", "--batch-size", "2", "--block-size", "32", "--num-layers", "2", "--hidden-size", "32",
            "--num-heads", "2", "--intermediate-size", "64", "--max-texts", "100", "--eval-every", "0", "--device",
            "cpu", "--no-progress"]


@pytest.mark.parametrize("flags", [["--resume"], ["--checkpoint-every", "1"]])
def test_cli_checkpoint_dir_that_is_a_file_is_a_usage_error(capsys, tmp_path, flags):
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    with pytest.raises(SystemExit) as exited:
        main([*TINY_CLI, *flags, "--checkpoint-dir", str(a_file)])
    assert exited.value.code == 2
    assert "checkpoint_dir must be a folder" in capsys.readouterr().err and a_file.read_text() == "x"
    with pytest.raises(SystemExit) as exited:
        main([*TINY_CLI, "--resume"])                                    # resume without a checkpoint_dir
    assert exited.value.code == 2 and "checkpoint_dir must be set" in capsys.readouterr().err
