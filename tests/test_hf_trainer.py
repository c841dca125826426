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
    args = {"num_train_epochs": 2, "save_strategy": "no", "logging_strategy": "no", **args}
    targs = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, learning_rate=1e-4,
                              warmup_steps=0, report_to=[], use_cpu=True, disable_tqdm=True, **args)
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


class GlobalBatchLog:
    """Wraps the trainer's collator: the example ids and trimmed width of every global batch."""

    def __init__(self, trainer):
        self.inner, self.batches = trainer.batching.collate, []
        trainer.batching.collate = self

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, examples):
        batch = self.inner(examples)
        self.batches.append(([int(ex["idx"]) for ex in examples], int(batch["input_ids"].shape[1])))
        return batch


def planned_steps(trainer, epochs, accum):
    """Examples per optimizer step, in order, from the plan: the epoch's batches grouped by ``accum``."""
    steps = []
    for epoch in range(epochs):
        trainer.batching.set_epoch(epoch)
        sizes = [len(b) for b in trainer.batching.batch_sampler]
        steps += [sum(sizes[i:i + accum]) for i in range(0, len(sizes), accum)]
    return steps


def test_gradient_accumulation_steps_every_micro_batch_with_lrm_from_the_step_examples(tmp_path, prepared, wordpiece):
    trainer = make_trainer(tmp_path, prepared, wordpiece, gradient_accumulation_steps=3)
    expected = planned_steps(trainer, 2, 3)
    assert any(trainer.batching.num_batches(e) % 3 for e in range(2))  # an epoch's last step is shorter
    trainer.train()
    assert trainer.state.global_step == len(expected)
    assert trainer.lr_factors == pytest.approx([math.sqrt(n / (4 * 3)) for n in expected])
    assert sum(expected) == 2 * len(prepared)  # every example stepped in both epochs
    assert trainer.lr_scheduler.get_last_lr()[0] == pytest.approx(0.0)


def test_max_steps_sizes_the_schedule(tmp_path, prepared, wordpiece):
    trainer = make_trainer(tmp_path, prepared, wordpiece, max_steps=5)
    trainer.train()
    assert trainer.state.global_step == 5
    assert trainer.lr_scheduler.get_last_lr()[0] == pytest.approx(0.0)  # the decay ends at step 5, not later


def test_max_steps_beyond_the_epochs_runs_more_epochs_of_the_plan(tmp_path, prepared, wordpiece):
    trainer = make_trainer(tmp_path, prepared, wordpiece, max_steps=30)
    per_epoch = [trainer.update_steps_in_epoch(e) for e in range(4)]
    assert sum(per_epoch[:2]) < 30  # two epochs are not enough
    trainer.train()
    assert trainer.state.global_step == 30


@pytest.mark.parametrize("epoch", [0, 2])
def test_a_resumed_run_continues_with_the_same_batches_drops_and_weights(tmp_path, prepared, wordpiece, epoch):
    """Trainer alone takes epoch 0's length for every epoch: resumed in epoch 2 it skips to the wrong batch
    (BatchCap makes later epochs shorter); resumed in epoch 0 the TokenDrop collator stays at the last epoch
    the schedule was sized with, so it drops other words."""
    kwargs = dict(method="tokendrop_bucket", num_train_epochs=3)
    full = make_trainer(tmp_path / "full", prepared, wordpiece, **kwargs)
    steps = [full.update_steps_in_epoch(e) for e in range(3)]
    save_at = sum(steps[:epoch]) + 1  # one step into the epoch
    full.args.save_strategy, full.args.save_steps = "steps", save_at
    full_log = GlobalBatchLog(full)
    full.train()
    resumed = make_trainer(tmp_path / "full", prepared, wordpiece, **kwargs)
    resumed_log = GlobalBatchLog(resumed)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / f"checkpoint-{save_at}"))
    assert resumed.state.global_step == full.state.global_step == sum(steps)
    assert resumed_log.batches == full_log.batches[save_at:]  # the same examples, trimmed to the same widths
    full_state, resumed_state = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(full_state[k], resumed_state[k]) for k in full_state)


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
