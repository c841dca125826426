"""TokenDrop + BucketSampler inside the Hugging Face ``Trainer``.

    trainer = BucketTrainer(model=model, args=TrainingArguments(...), train_dataset=train, eval_dataset=dev,
                            td_config=FinetuneConfig(method="tokendrop_bucket", base_batch_size=32))
    trainer.train()                       # also: torchrun --nproc_per_node N, resume_from_checkpoint=...

What changes compared with a plain ``Trainer`` (and nothing else):

- the training batches come from :func:`tdnotebooks.finetuning.train.make_batching` (BucketSampler with HWCap,
  BatchCap and RBM; TokenDrop collators), re-planned every epoch (sampler *and* TokenDrop collator);
- every epoch has its own number of steps (BatchCap makes later epochs shorter): the LR schedule is sized
  with the exact total (or ``max_steps``), and a run resumed from a checkpoint finds its epoch and batch
  from the per-epoch counts, so it continues exactly where it stopped;
- several processes: one global batch per step, its rows split across the ranks
  (:class:`~tdnotebooks.finetuning.distributed.ShardedCollator`), the loss normalised by the examples of the
  whole optimizer step (all ranks, all accumulated micro-batches);
- LRM: at each optimizer step every group's lr is scaled by ``sqrt(examples in the step / (base batch size x
  gradient_accumulation_steps))`` and restored right after the step, so the scheduler never sees the factor;
- with TokenDrop, training runs with the paper's lower dropout (:func:`tdnotebooks.finetuning.train.tokendrop_dropout_rate`),
  and the model's own rates are restored when ``train`` returns;
- every training log (``logging_steps``) also holds the batching of the steps since the previous one:
  ``batch_size`` (examples per optimizer step, mean), ``padding_fraction`` (slot vs real tokens of their
  batches), ``lrm_factor`` (mean) and ``tokens_per_second`` (real tokens / wall seconds), so
  ``TrainingArguments(report_to=["tensorboard"])`` shows them next to ``loss`` and ``learning_rate``.

``train_dataset`` must come from :func:`tdnotebooks.finetuning.tokendrop.prepare` (it needs ``length``, and
``stopword_spans``/``idx`` for TokenDrop). The batching follows ``td_config`` (its ``base_batch_size``, not
``per_device_train_batch_size``, which only sets the default ``td_config``).

Warning: this subclass overrides two internal methods of ``Trainer`` (``_run_epoch`` and
``_init_training_state``, transformers 5.x) to give every epoch its own length; a test fails loudly if a
transformers release renames them.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch.utils.data import DataLoader
from transformers import Seq2SeqTrainer, Trainer, TrainerCallback

from tdnotebooks.checks import check_split
from tdnotebooks.finetuning.distributed import ShardedCollator
from tdnotebooks.finetuning.lrm import lr_factor
from tdnotebooks.finetuning.tasks import ClassificationTask, FinetuneTask, check_task
from tdnotebooks.finetuning.train import (
    Batching,
    FinetuneConfig,
    make_batching,
    restore_dropout,
    set_dropout,
    tokendrop_dropout_rate,
)

__all__ = ["BucketSeq2SeqTrainer", "BucketTrainer"]


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
        nominal = self.trainer.td_config.base_batch_size * args.gradient_accumulation_steps
        factor = lr_factor(max(1, self.trainer.examples_in_step), nominal)
        self._clean = [group["lr"] for group in optimizer.param_groups]
        for group in optimizer.param_groups:
            group["lr"] *= factor
        self.trainer.lr_factors.append(factor)

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        for group, lr in zip(optimizer.param_groups, self._clean, strict=True):
            group["lr"] = lr


class _LogWindow:
    """Optimizer steps since the last training log: examples, real and slot tokens, the first step's start."""

    def __init__(self) -> None:
        self.steps = self.examples = self.real = self.slots = 0
        self.start: float | None = None

    def add(self, examples: int, real: int, slots: int) -> None:
        self.steps, self.examples = self.steps + 1, self.examples + examples
        self.real, self.slots = self.real + real, self.slots + slots

    def scalars(self, lrm_factor: float) -> dict[str, float]:
        seconds = time.perf_counter() - self.start
        return {"batch_size": self.examples / self.steps, "padding_fraction": 1 - self.real / self.slots if self.slots
                else 0.0, "lrm_factor": lrm_factor, "tokens_per_second": self.real / seconds if seconds > 0 else 0.0}


def _check_model_and_data(trainer: Trainer, td_config: FinetuneConfig, task: FinetuneTask) -> int:
    """The model, the tokenizer's pad id and the datasets against each other, before any step; the pad id."""
    pad_id = getattr(trainer.processing_class, "pad_token_id", None)
    if pad_id is None:
        raise ValueError("processing_class must be the tokenizer, with a pad token: BucketTrainer pads its batches "
                         f"with its pad_token_id, got {type(trainer.processing_class).__name__} with pad_token_id "
                         "None; set tokenizer.pad_token (e.g. = tokenizer.eos_token) and pass "
                         "processing_class=tokenizer")
    uses_token_drop = td_config.method == "tokendrop_bucket" or td_config.token_drop_rate > 0
    needed = ("length", "stopword_spans", "idx") if uses_token_drop else ("length",)
    task.check(trainer.model, trainer.train_dataset, None, pad_id, needed, train_name="train_dataset")
    evals = trainer.eval_dataset if isinstance(trainer.eval_dataset, dict) else {"": trainer.eval_dataset}
    for key, split in evals.items():   # Trainer's own collator pads these: only what the model must read
        if "input_ids" in getattr(split, "column_names", ()):
            labels = isinstance(task, ClassificationTask) and any(c in split.column_names for c in ("label", "labels"))
            check_split(f"eval_dataset{f'[{key!r}]' if key else ''}", split, trainer.model, columns=(),
                        labels=labels)
    return pad_id


class BucketTrainer(Trainer):
    """``transformers.Trainer`` with BucketSampler/TokenDrop batching and Learning Rate Modulation.

    Args:
        task: the labels, the loss per example (:mod:`tdnotebooks.finetuning.tasks`); None: classification.
            Evaluation stays ``Trainer``'s own (QA and ROUGE metrics: ``task.evaluate(trainer.model, dev, ...)``).
        td_config: the batching (``method``, bucket settings, TokenDrop, LRM, dropout); default
            ``FinetuneConfig(method="bucket", base_batch_size=args.per_device_train_batch_size)``. Its
            optimizer settings (lr, epochs, ...) are not used: ``TrainingArguments`` sets those.
        *args, **kwargs: as for ``Trainer``; ``processing_class`` must be the tokenizer (its pad token pads
            the batches). The model, the tokenizer and the datasets are checked against each other first
            (:mod:`tdnotebooks.checks`).

    After training, :attr:`lr_factors` holds the LRM factor of every optimizer step.
    """

    def __init__(self, *args: Any, td_config: FinetuneConfig | None = None, task: FinetuneTask | None = None,
                 **kwargs: Any) -> None:
        if td_config is not None and not isinstance(td_config, FinetuneConfig):
            raise ValueError(f"td_config must be None or a FinetuneConfig, got {type(td_config).__name__}")
        self.task = check_task(task)
        super().__init__(*args, **kwargs)
        if self.train_dataset is None:
            raise ValueError("train_dataset is required: a split made by tdnotebooks.finetuning.prepare")
        self.td_config = td_config or FinetuneConfig(method="bucket",
                                                     base_batch_size=self.args.per_device_train_batch_size)
        pad_id = _check_model_and_data(self, self.td_config, self.task)
        self.batching: Batching = make_batching(self.td_config, self.train_dataset, pad_id)
        self.loss_is_scaled_for_ga = True  # compute_loss normalises by the examples of the whole step
        self.examples_in_step = 0  # N of the optimizer step being run: all ranks, all micro-batches
        self.lr_factors: list[float] = []
        self._window = _LogWindow()  # the batching since the last training log
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

    # -- Batches: one global batch per step, this rank's rows of it ------------------------------------

    def get_train_dataloader(self) -> DataLoader:
        self.batching.set_epoch(0)
        collate = ShardedCollator(self.batching.collate, self.args.world_size, self.args.process_index)
        loader = _EpochLoader(self.train_dataset, batch_sampler=self.batching.batch_sampler, collate_fn=collate,
                              num_workers=0, generator=torch.Generator())
        loader.batching = self.batching
        return loader

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: Any) -> tuple[list, Any]:
        stats = self.batching.collate.stats  # the global batches' tokens: every rank collates them whole
        if self._window.start is None:
            self._window.start = time.perf_counter()
        batch_samples, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        self.examples_in_step = sum(int(batch["global_batch_size"]) for batch in batch_samples)
        after = self.batching.collate.stats
        if batch_samples:
            self._window.add(self.examples_in_step, after.real_tokens - stats.real_tokens,
                             after.slot_tokens - stats.slot_tokens)
        return batch_samples, num_items

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """``Trainer.log``, a training log (one with ``loss``) extended by the batching of its steps."""
        if "loss" in logs and self._window.steps:
            factors = self.lr_factors[len(self.lr_factors) - self._window.steps:] if self.lr_factors else []
            logs = {**logs, **self._window.scalars(sum(factors) / len(factors) if factors else 1.0)}
            self._window = _LogWindow()
        super().log(logs, *args, **kwargs)

    def compute_loss(self, model: Any, inputs: dict, return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        """Training batches: sum of this rank's per-example losses x world size / examples in the step, so that
        DDP's gradient mean is the gradient of the mean over the step. Evaluation: ``Trainer``'s own."""
        if "example_weight" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs = dict(inputs)
        weight = inputs.pop("example_weight")
        inputs.pop("global_batch_size")
        labels = {key: inputs.pop(key) for key in self.task.label_keys}
        outputs = model(**self.task.model_inputs(inputs, labels))
        losses = self.task.example_losses(outputs, labels, self.accelerator.unwrap_model(model))
        loss = (weight * losses).sum() * self.args.world_size / self.examples_in_step
        return (loss, outputs) if return_outputs else loss

    # -- Epochs of different lengths -------------------------------------------------------------------

    def update_steps_in_epoch(self, epoch: int) -> int:
        """Optimizer steps of ``epoch``: its batches over ``gradient_accumulation_steps``, rounded up."""
        return math.ceil(self.batching.num_batches(epoch) / self.args.gradient_accumulation_steps)

    def total_optimizer_steps(self) -> int:
        """Exact number of optimizer steps of the run: ``max_steps`` if set, else all epochs' steps."""
        if self.args.max_steps > 0:
            return self.args.max_steps
        return sum(self.update_steps_in_epoch(e) for e in range(math.ceil(self.args.num_train_epochs)))

    def _epochs_for(self, steps: int) -> int:
        """How many epochs it takes to run ``steps`` optimizer steps."""
        epochs = 0
        while steps > 0:
            steps -= self.update_steps_in_epoch(epochs)
            epochs += 1
        return epochs

    def set_initial_training_values(self, args: Any, dataloader: Any) -> tuple:
        values = list(super().set_initial_training_values(args, dataloader))
        max_steps = self.total_optimizer_steps()
        values[0] = self._epochs_for(max_steps)  # num_train_epochs
        values[-1] = max_steps
        return tuple(values)

    def _init_training_state(self, max_steps: int, num_update_steps_per_epoch: int, num_train_epochs: int,
                             resume_from_checkpoint: Any, trial: Any) -> tuple[int, int]:
        epochs_trained, steps_trained = super()._init_training_state(
            max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial)
        if resume_from_checkpoint is not None and self.state.global_step > 0:  # Trainer assumed equal epochs
            remaining, epochs_trained = self.state.global_step, 0
            while remaining >= self.update_steps_in_epoch(epochs_trained):
                remaining -= self.update_steps_in_epoch(epochs_trained)
                epochs_trained += 1
            steps_trained = 0 if self.args.ignore_data_skip else remaining * self.args.gradient_accumulation_steps
        return epochs_trained, steps_trained

    def _run_epoch(self, *args: Any, **kwargs: Any) -> Any:
        if "epoch" not in kwargs:
            raise RuntimeError("BucketTrainer expects Trainer._run_epoch(epoch=..., ...) with keyword arguments "
                               "(transformers 5.x); this transformers version calls it differently")
        epoch = kwargs["epoch"]
        self.batching.set_epoch(epoch)  # the sampler and the TokenDrop collator, also on a resumed epoch
        kwargs["steps_in_epoch"] = self.batching.num_batches(epoch)
        kwargs["num_update_steps_per_epoch"] = self.update_steps_in_epoch(epoch)
        return super()._run_epoch(*args, **kwargs)


class BucketSeq2SeqTrainer(BucketTrainer, Seq2SeqTrainer):
    """:class:`BucketTrainer`'s batching in ``Seq2SeqTrainer`` (``predict_with_generate`` and the rest stay
    Hugging Face's): pass ``task=tdnotebooks.finetuning.seq2seq.Seq2SeqTask(tokenizer)`` and a train split from
    :func:`~tdnotebooks.finetuning.seq2seq.prepare_seq2seq`. Buckets and TokenDrop act on the encoder inputs; the
    targets are padded with -100 and the model builds the decoder inputs from them. Its own ``evaluate`` /
    ``predict`` batch ``eval_dataset`` with ``data_collator``: pass ``DataCollatorForSeq2Seq(tokenizer, model)``
    (targets of different lengths), or score with ``task.evaluate(trainer.model, dev, ...)`` (loss and ROUGE)."""
