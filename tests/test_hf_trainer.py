"""BucketTrainer: HF Trainer with BucketSampler batches, exact LR schedule length and LRM."""

import math

import pytest
import torch
from transformers import TrainerCallback, TrainingArguments

from tdnotebooks.finetuning.hf_trainer import BucketTrainer
from tdnotebooks.finetuning.train import FinetuneConfig


class Recorder(TrainerCallback):
    def __init__(self):
        self.seen = []

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        self.seen.append((optimizer.param_groups[0]["lr"], lr_scheduler.get_last_lr()[0]))


@pytest.fixture(scope="module")
def prepared(wordpiece):
    from tdnotebooks.data import load_task
    from tdnotebooks.finetuning.tokendrop import prepare

    return prepare(load_task("rt_sentiment")["train"].select(range(64)), wordpiece, max_length=32)


def make_trainer(tmp_path, prepared, wordpiece, method="bucket", **args):
    from tdnotebooks.models import load_pretrained

    torch.manual_seed(0)
    model = load_pretrained(kind="classifier", num_layers=1)
    model.get_input_embeddings().weight.requires_grad_(False)
    targs = TrainingArguments(output_dir=str(tmp_path), num_train_epochs=2, per_device_train_batch_size=4,
                              learning_rate=1e-4, warmup_steps=0, report_to=[], save_strategy="no",
                              logging_strategy="no", use_cpu=True, disable_tqdm=True, **args)
    config = FinetuneConfig(method=method, base_batch_size=4, token_budget=256)
    return BucketTrainer(model=model, args=targs, train_dataset=prepared, processing_class=wordpiece,
                         td_config=config)


def test_bucket_trainer_applies_lrm_per_step_and_sizes_the_schedule_exactly(tmp_path, prepared, wordpiece):
    trainer = make_trainer(tmp_path, prepared, wordpiece)
    recorder = Recorder()
    trainer.add_callback(recorder)
    expected_steps = trainer.batching.num_batches(0) + trainer.batching.num_batches(1)
    trainer.train()
    assert trainer.state.global_step == expected_steps == len(recorder.seen)
    assert trainer.lr_scheduler.get_last_lr()[0] == pytest.approx(0.0)  # the schedule ended exactly at the end
    sizes = [len(b) for e in range(2) for b in (trainer.batching.set_epoch(e), trainer.batching.batch_sampler)[1]]
    ratios = [seen / clean for seen, clean in recorder.seen]
    # batches are shuffled within an epoch; compare the multisets of factors per run
    assert sorted(ratios) == pytest.approx(sorted(math.sqrt(s / 4) for s in sizes))
    assert len(set(sizes)) > 1
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.0)  # restored after every step


def test_tokendrop_bucket_trains_through_trainer(tmp_path, prepared, wordpiece):
    trainer = make_trainer(tmp_path, prepared, wordpiece, method="tokendrop_bucket")
    dropouts = [m for m in trainer.model.modules() if isinstance(m, torch.nn.Dropout)]
    seen = set()  # every dropout rate at each training forward pass (attention dropout is read as module.p)
    trainer.model.register_forward_pre_hook(lambda m, args: seen.update(d.p for d in dropouts) if m.training else None)
    trainer.train()
    stats = trainer.batching.collate.stats
    assert stats.num_batches == trainer.state.global_step and stats.padding_fraction < 0.05
    assert trainer.train_dropout == 0.0 and seen == {0.0}  # the paper's dropout for small data with TokenDrop
    assert {m.p for m in dropouts} == {0.1}  # and the model's own afterwards


def test_gradient_accumulation_is_refused_for_bucket_methods(tmp_path, prepared, wordpiece):
    with pytest.raises(ValueError, match="gradient_accumulation_steps must be 1"):
        make_trainer(tmp_path, prepared, wordpiece, gradient_accumulation_steps=2)


def test_model_init_models_train_with_the_tokendrop_dropout_too(tmp_path, prepared, wordpiece):
    """With model_init, Trainer.train builds a fresh model: its dropout is lowered too, then restored."""
    from tdnotebooks.models import load_pretrained

    built, seen = [], set()

    def model_init():
        torch.manual_seed(0)
        model = load_pretrained(kind="classifier", num_layers=1)
        model.get_input_embeddings().weight.requires_grad_(False)
        dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
        model.register_forward_pre_hook(lambda m, args: seen.update(d.p for d in dropouts) if m.training else None)
        built.append(model)
        return model

    targs = TrainingArguments(output_dir=str(tmp_path), num_train_epochs=1, per_device_train_batch_size=4,
                              learning_rate=1e-4, warmup_steps=0, report_to=[], save_strategy="no",
                              logging_strategy="no", use_cpu=True, disable_tqdm=True)
    trainer = BucketTrainer(model_init=model_init, args=targs, train_dataset=prepared, processing_class=wordpiece,
                            td_config=FinetuneConfig(method="tokendrop_bucket", base_batch_size=4, token_budget=256))
    trainer.train()
    assert len(built) == 2 and trainer.model is built[-1]  # one model from __init__, a fresh one from train
    assert seen == {0.0}
    assert {m.p for m in trainer.model.modules() if isinstance(m, torch.nn.Dropout)} == {0.1}


def test_td_config_must_be_a_finetune_config(tmp_path, prepared, wordpiece):
    targs = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    with pytest.raises(ValueError, match="td_config must be None or a FinetuneConfig, got dict"):
        BucketTrainer(model=torch.nn.Linear(1, 1), args=targs, train_dataset=prepared, processing_class=wordpiece,
                      td_config={"method": "bucket"})
