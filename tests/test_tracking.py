"""Experiment tracking: pretrain, finetune and BucketTrainer report to TensorBoard through accelerate's and
Trainer's trackers; the event files hold the history's values, tracking leaves the arithmetic alone, and a
bad ``report_to`` is one clear error (config and command line)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from tdnotebooks.finetuning.train import FinetuneConfig, finetune  # noqa: E402
from tdnotebooks.pretraining.train import PretrainConfig, main, pretrain  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors, one CPU thread

PRETRAIN = dict(mode="sctd", steps=4, batch_size=2, block_size=32, num_layers=2, hidden_size=32, num_heads=2,
                intermediate_size=64, max_texts=100, eval_every=2, eval_blocks=4, eval_batch_size=4, fi=2,
                device="cpu", progress=False)
FINETUNE = dict(method="tokendrop_bucket", epochs=1, base_batch_size=8, token_budget=256, freeze_embeddings=True,
                progress=False)
TERMS = ("mlm_dropped", "mlm_full", "kl_global", "kl_local")  # Eq. 4: MLM*, MLM, KL_g, KL_l


def scalars(folder) -> dict[str, dict[int, float]]:
    """Every scalar tag of the event files in ``folder``: {tag: {step: value}}."""
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def f32(value: float) -> float:
    """TensorBoard stores scalars as float32."""
    return float(np.float32(value))


@pytest.fixture(scope="module")
def tiny_task(wordpiece):
    from tdnotebooks.data import load_task
    from tdnotebooks.finetuning.tokendrop import prepare

    rt = load_task("rt_sentiment")
    return (prepare(rt["train"].shuffle(seed=0).select(range(48)), wordpiece, max_length=32),
            prepare(rt["dev"].shuffle(seed=0).select(range(16)), wordpiece, max_length=32))


def tiny_model():
    from tdnotebooks.models import load_pretrained

    torch.manual_seed(0)
    return load_pretrained(kind="classifier", num_layers=1)


@pytest.fixture(scope="module")
def pretrained(wordpiece, tmp_path_factory):
    logs = tmp_path_factory.mktemp("pretrain-runs")
    _, tracked = pretrain(PretrainConfig(**PRETRAIN, logging_dir=str(logs), run_name="sctd"), tokenizer=wordpiece)
    _, quiet = pretrain(PretrainConfig(**PRETRAIN, report_to=None), tokenizer=wordpiece)
    return scalars(logs / "sctd"), tracked, quiet


@pytest.fixture(scope="module")
def finetuned(tiny_task, tmp_path_factory):
    train, dev = tiny_task
    logs = tmp_path_factory.mktemp("finetune-runs")
    tracked = finetune(tiny_model(), train, dev, **FINETUNE, logging_dir=logs, run_name="td")
    quiet = finetune(tiny_model(), train, dev, **FINETUNE, report_to="none")
    return scalars(logs / "td"), tracked, quiet


def test_pretrain_logs_every_step_and_the_eq4_terms(pretrained):
    logged, history, _ = pretrained
    steps = range(1, len(history.steps) + 1)  # x axis: optimizer steps done
    assert logged["train/loss"] == {n: f32(s["loss"]) for n, s in zip(steps, history.steps, strict=True)}
    assert logged["train/learning_rate"] == {n: f32(s["lr"]) for n, s in zip(steps, history.steps, strict=True)}
    for term in TERMS:  # the full pass runs every fi=2 steps: MLM, KL_g, KL_l only there
        assert logged[f"train/{term}"] == {n: f32(s[term]) for n, s in zip(steps, history.steps, strict=True)
                                           if s[term] is not None}, term
    assert len(logged["train/kl_global"]) == 2 and len(logged["train/mlm_dropped"]) == 4
    assert logged["train/batch_size"] == dict.fromkeys(steps, 2.0)
    assert logged["train/padding_fraction"] == dict.fromkeys(steps, 0.0)  # packed blocks
    assert logged["train/tokens_per_second"] == {n: f32(s["tokens_per_second"])
                                                 for n, s in zip(steps, history.steps, strict=True)}
    assert logged["eval/mlm_loss"] == {e["step"]: f32(e["dev_mlm_loss"]) for e in history.evals}
    assert len(history.evals) == 2


def test_finetune_logs_the_batching_of_every_step_and_the_dev_metrics(finetuned):
    logged, history, _ = finetuned
    steps = range(1, len(history.steps) + 1)
    for tag, key in (("loss", "loss"), ("learning_rate", "lr"), ("lrm_factor", "lrm_factor"),
                     ("batch_size", "batch_size"), ("padding_fraction", "padding_fraction"), ("seq_len", "seq_len")):
        assert logged[f"train/{tag}"] == {n: f32(s[key]) for n, s in zip(steps, history.steps, strict=True)}, tag
    assert len({s["batch_size"] for s in history.steps}) > 1  # LRM had something to do
    assert all(s["lr"] == pytest.approx(s["lrm_factor"] * (s["lr"] / s["lrm_factor"])) for s in history.steps)
    assert sum(s["real_tokens"] for s in history.steps) == history.epochs[0]["real_tokens"]
    assert sum(s["slot_tokens"] for s in history.steps) == history.epochs[0]["slot_tokens"]
    speeds = logged["train/tokens_per_second"]
    assert sorted(speeds) == list(steps) and all(v > 0 and math.isfinite(v) for v in speeds.values())
    end = len(history.steps)  # the epoch's dev metrics at the step it ended
    assert logged["eval/accuracy"] == {end: f32(history.epochs[0]["dev_accuracy"])}
    assert logged["eval/loss"] == {end: f32(history.epochs[0]["dev_loss"])}


def test_tracking_leaves_the_losses_bit_identical(pretrained, finetuned):
    _, tracked, quiet = pretrained
    assert tracked.losses == quiet.losses and tracked.dev_losses == quiet.dev_losses
    _, tracked, quiet = finetuned
    assert [s["loss"] for s in tracked.steps] == [s["loss"] for s in quiet.steps]
    assert tracked.epochs[0]["dev_loss"] == quiet.epochs[0]["dev_loss"]


def test_without_a_logging_dir_the_default_writes_nothing(wordpiece, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = PretrainConfig(**{**PRETRAIN, "steps": 1, "eval_every": 0})
    assert config.report_to == "tensorboard" and config.trackers() == []
    pretrain(config, tokenizer=wordpiece)
    assert list(tmp_path.iterdir()) == []


def test_bucket_trainer_logs_the_batching_to_tensorboard(tiny_task, wordpiece, tmp_path, monkeypatch):
    from transformers import TrainingArguments

    from tdnotebooks.finetuning.hf_trainer import BucketTrainer
    from tdnotebooks.padding import padding_stats

    train, _ = tiny_task
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    model = tiny_model()
    model.get_input_embeddings().weight.requires_grad_(False)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, learning_rate=1e-4,
                             num_train_epochs=2, warmup_steps=0, save_strategy="no", logging_steps=1,
                             report_to=["tensorboard"], use_cpu=True, disable_tqdm=True)
    trainer = BucketTrainer(model=model, args=args, train_dataset=train, processing_class=wordpiece,
                            td_config=FinetuneConfig(method="bucket", base_batch_size=4, token_budget=256))
    trainer.train()
    batches = [b for e in range(2) for b in (trainer.batching.set_epoch(e), trainer.batching.batch_sampler)[1]]
    # the steps, in order (no gradient accumulation); BatchCap doubles in epoch 1
    assert trainer.state.global_step == len(batches) and len({len(b) for b in batches}) > 1
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [entry["batch_size"] for entry in logs] == [len(b) for b in batches]
    assert [entry["padding_fraction"] for entry in logs] == pytest.approx(
        [padding_stats(train["length"], [b]).padding_fraction for b in batches])
    assert [entry["lrm_factor"] for entry in logs] == pytest.approx(trainer.lr_factors)
    assert all(entry["tokens_per_second"] > 0 for entry in logs)
    logged = scalars(tmp_path / "tb")  # through Trainer's own TensorBoardCallback
    for key in ("batch_size", "padding_fraction", "lrm_factor", "tokens_per_second", "loss", "learning_rate"):
        assert logged[f"train/{key}"] == {e["step"]: f32(e[key]) for e in logs}, key


@pytest.mark.parametrize("config", [FinetuneConfig, PretrainConfig])
@pytest.mark.parametrize("kwargs, match", [
    ({"report_to": 3}, r"^report_to must be None, 'none', 'all' or tracker names .* got 3$"),
    ({"report_to": "tensorbord"}, r"^report_to must be None, 'none', 'all' or tracker names among 'tensorboard', "
                                  r"'wandb', .*; got 'tensorbord'$"),
    ({"report_to": ["tensorboard", None]}, r"^report_to must be None"),
    ({"report_to": "none,wandb"}, r"^report_to='none' cannot be combined"),
    ({"logging_dir": 3}, r"^logging_dir must be None or a folder path"),
    ({"run_name": ""}, r"^run_name must be None or a non-empty str, got ''$"),
])
def test_bad_tracking_settings_are_one_clear_error(config, kwargs, match):
    with pytest.raises(ValueError, match=match):
        config(**kwargs)


@pytest.mark.parametrize("config", [FinetuneConfig, PretrainConfig])
def test_a_tracker_that_is_not_installed_is_refused_before_any_work(config, monkeypatch, tmp_path):
    import accelerate.tracking

    if "mlflow" not in [str(t) for t in accelerate.tracking.get_available_trackers()]:
        with pytest.raises(ValueError, match=r"^report_to='mlflow' needs the mlflow package, which is not installed "
                                             r"\(pip install mlflow\); or use report_to=None$"):
            config(report_to="mlflow")
    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: [])  # as without tensorboard
    assert config().trackers() == []  # the default without a logging_dir: nothing to run, nothing to refuse
    with pytest.raises(ValueError, match=r"^report_to='tensorboard' needs the tensorboard package"):
        config(logging_dir=str(tmp_path))
    assert config(report_to="all", logging_dir=str(tmp_path)).trackers() == []  # "all": whatever is installed


def test_report_to_names_lists_and_all():
    assert FinetuneConfig(report_to=None).trackers() == FinetuneConfig(report_to="none").trackers() == []
    assert FinetuneConfig(report_to=["tensorboard"], logging_dir="runs").trackers() == ["tensorboard"]
    assert FinetuneConfig(report_to="TensorBoard, tensorboard", logging_dir="runs").trackers() == ["tensorboard"]
    assert "tensorboard" in PretrainConfig(report_to="all", logging_dir="runs").trackers()
    assert "tensorboard" not in PretrainConfig(report_to="all").trackers()  # no folder for its files


TINY_CLI = ["--steps", "2", "--batch-size", "2", "--block-size", "32", "--num-layers", "2", "--hidden-size", "32",
            "--num-heads", "2", "--intermediate-size", "64", "--max-texts", "100", "--eval-every", "0", "--device",
            "cpu", "--no-progress"]


def test_cli_tracking_flags(tmp_path, capsys):
    history = main([*TINY_CLI, "--report-to", "tensorboard", "--logging-dir", str(tmp_path), "--run-name", "cli"])
    assert history.config["report_to"] == "tensorboard" and history.config["run_name"] == "cli"
    assert scalars(tmp_path / "cli")["train/loss"] == {1: f32(history.losses[0]), 2: f32(history.losses[1])}
    assert main([*TINY_CLI, "--report-to", "none"]).config["report_to"] is None
    for flags, message in ((["--report-to", "tensorbord"], "argument --report-to: report_to must be None"),
                           (["--run-name", ""], "argument --run-name: run_name must be None or a non-empty str")):
        with pytest.raises(SystemExit) as exited:
            main([*TINY_CLI, *flags])
        assert exited.value.code == 2 and message in capsys.readouterr().err
    assert "--report-to" in main.__globals__["_parser"]().format_help()
