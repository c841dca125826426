"""TokenDrop + BucketSampler inside the Hugging Face ``Trainer``.

    trainer = BucketTrainer(model=model, args=TrainingArguments(...), train_dataset=train, eval_dataset=dev,
                            td_config=FinetuneConfig(method="tokendrop_bucket", base_batch_size=32))
    trainer.train()

What changes compared with a plain ``Trainer`` (and nothing else):

- the training batches come from :func:`tdnotebooks.finetuning.train.make_batching` (BucketSampler with HWCap,
  BatchCap and RBM; TokenDrop collators), re-planned every epoch through ``set_epoch``;
- the LR schedule is sized with the exact number of optimizer steps of all epochs (with BatchCap the
  later epochs have fewer, larger batches, so ``len(dataloader) * epochs`` would be wrong);
- LRM: at each optimizer step every group's lr is scaled by ``sqrt(examples in the step / base batch size)``
  and restored right after the step, so the scheduler never sees (or compounds) the factor;
- with TokenDrop, training runs with the paper's lower dropout (:func:`tdnotebooks.finetuning.train.tokendrop_dropout_rate`),
  and the model's own rates are restored when ``train`` returns.

``train_dataset`` must come from :func:`tdnotebooks.finetuning.tokendrop.prepare` (it needs ``length``, and
``stopword_spans``/``idx`` for TokenDrop). Variable-size batches and gradient accumulation do not mix in
``Trainer`` (it sizes epochs once), so ``gradient_accumulation_steps`` must be 1 for the bucket methods.
"""

from __future__ import annotations

import math
from typing import Any

from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback

from tdnotebooks.finetuning.lrm import lr_factor
from tdnotebooks.finetuning.train import (
    Batching,
    FinetuneConfig,
    make_batching,
    restore_dropout,
    set_dropout,
    tokendrop_dropout_rate,
)

__all__ = ["BucketTrainer"]


class _EpochLoader(DataLoader):
    """A DataLoader whose ``set_epoch`` (called by Trainer every epoch) re-plans the batches."""

    def set_epoch(self, epoch: int) -> None:
        self.batching.set_epoch(epoch)


class _LRMCallback(TrainerCallback):
    """Scale lr by the LRM factor around each optimizer step, then restore it."""

    def __init__(self, trainer: BucketTrainer) -> None:
        self.trainer = trainer
        self._clean: list[float] = []

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        factor = lr_factor(max(1, self.trainer.examples_in_step), self.trainer.td_config.base_batch_size)
        self._clean = [group["lr"] for group in optimizer.param_groups]
        for group in optimizer.param_groups:
            group["lr"] *= factor
        self.trainer.last_lr_factor = factor

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        for group, lr in zip(optimizer.param_groups, self._clean, strict=True):
            group["lr"] = lr
        self.trainer.examples_in_step = 0


class BucketTrainer(Trainer):
    """``transformers.Trainer`` with BucketSampler/TokenDrop batching and Learning Rate Modulation."""

    def __init__(self, *args: Any, td_config: FinetuneConfig | None = None, **kwargs: Any) -> None:
        if td_config is not None and not isinstance(td_config, FinetuneConfig):
            raise ValueError(f"td_config must be None or a FinetuneConfig, got {type(td_config).__name__}")
        super().__init__(*args, **kwargs)
        if self.train_dataset is None or "length" not in self.train_dataset.column_names:
            raise ValueError("train_dataset must be tokenized with a 'length' column (use tdnotebooks.finetuning.tokendrop.prepare)")
        self.td_config = td_config or FinetuneConfig(method="bucket",
                                                     base_batch_size=self.args.per_device_train_batch_size)
        tokenizer = self.processing_class
        pad_id = getattr(tokenizer, "pad_token_id", None)
        self.batching: Batching = make_batching(self.td_config, self.train_dataset, pad_id or 0)
        if self.batching.variable_batch_size and self.args.gradient_accumulation_steps != 1:
            raise ValueError("gradient_accumulation_steps must be 1 with a bucket method: Trainer sizes epochs "
                             f"once, but BatchCap changes the number of batches per epoch (got "
                             f"{self.args.gradient_accumulation_steps})")
        self.examples_in_step = 0
        self.last_lr_factor: float | None = None
        if self.td_config.lrm and self.batching.variable_batch_size:
            self.add_callback(_LRMCallback(self))

    @property
    def train_dropout(self) -> float | None:
        """The dropout rate ``train`` uses (None: the model's own), from ``td_config.tokendrop_dropout``."""
        return tokendrop_dropout_rate(self.td_config, len(self.train_dataset))

    def train(self, *args: Any, **kwargs: Any) -> Any:
        # With model_init, Trainer.train builds a fresh model through call_model_init, which lowers its dropout.
        self._dropout_saved = [] if self.model_init is not None else set_dropout(self.model, self.train_dropout)
        try:
            return super().train(*args, **kwargs)
        finally:
            restore_dropout(self._dropout_saved)
            self._dropout_saved = []

    def call_model_init(self, trial: Any = None) -> Any:
        model = super().call_model_init(trial)
        if hasattr(self, "td_config"):  # not during Trainer.__init__, which builds a model before td_config
            restore_dropout(getattr(self, "_dropout_saved", []))
            self._dropout_saved = set_dropout(model, self.train_dropout)
        return model

    def get_train_dataloader(self) -> DataLoader:
        # Trainer reads len() once, as the steps of every epoch: give it epoch 0's, the longest (BatchCap
        # only shrinks later epochs); a later, shorter epoch simply runs out of batches early.
        self.batching.set_epoch(0)
        loader = _EpochLoader(self.train_dataset, batch_sampler=self.batching.batch_sampler,
                              collate_fn=self.batching.collate, num_workers=0)
        loader.batching = self.batching
        return loader

    def total_optimizer_steps(self) -> int:
        """Exact number of optimizer steps over all epochs (BatchCap makes later epochs shorter)."""
        epochs = math.ceil(self.args.num_train_epochs)
        return sum(self.batching.num_batches(e) for e in range(epochs))

    def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
        return super().create_scheduler(self.total_optimizer_steps(), optimizer)

    def training_step(self, model: Any, inputs: dict, num_items_in_batch: Any = None) -> Any:
        self.examples_in_step += int(inputs["input_ids"].shape[0])
        return super().training_step(model, inputs, num_items_in_batch)
