"""What the training loops need to know about a task: its labels, one loss per example, its dev metrics.

:func:`~tdnotebooks.finetuning.train.finetune` and :class:`~tdnotebooks.finetuning.hf_trainer.BucketTrainer`
are the same loop for every task; a :class:`FinetuneTask` supplies the three task-specific pieces:

- which batch keys are labels (taken out before the forward) and which columns a split needs;
- ``example_losses``: one loss per example, so that DDP's weighted sum and gradient accumulation give every
  example the same weight whatever its batch (``distributed`` explains the arithmetic);
- ``evaluate``: the dev metrics recorded after every epoch (``history.epochs``).

Three tasks ship with the package:

- :class:`ClassificationTask` (the default): sequence classification, GLUE-style (this module);
- :class:`~tdnotebooks.finetuning.qa.QATask`: extractive QA, SQuAD-style (answer spans survive TokenDrop);
- :class:`~tdnotebooks.finetuning.seq2seq.Seq2SeqTask`: summarization, T5/BART-style (TokenDrop on the
  encoder inputs only, targets padded with -100).

Example (a task of your own)::

    class MyTask(FinetuneTask):
        name, label_keys, main_metric = "my_task", ("labels",), "dev_score"
        def example_losses(self, outputs, labels, model): ...
        def evaluate(self, model, dev, *, batch_size, pad_token_id, amp_dtype): return {"dev_score": ...}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["ClassificationTask", "FinetuneTask", "check_task"]


class FinetuneTask:
    """The contract between a task and the training loops (subclass it; see the module docstring).

    Attributes:
        name: a short name, recorded in ``history.config["task"]``.
        label_keys: batch keys holding labels: popped before the forward, passed to :meth:`example_losses`.
        main_metric: the key of :meth:`evaluate`'s result that the course and the benchmark report.
    """

    name: str = "task"
    label_keys: tuple[str, ...] = ("labels",)
    main_metric: str = "dev_score"

    def check(self, model: Any, train: Any, dev: Any, pad_token_id: int | None,
              columns: Sequence[str] = ("length",), train_name: str = "train") -> None:
        """Refuse a model or split that cannot work (one clear ValueError, before any step). ``columns``: what
        the batching needs besides ``input_ids`` (e.g. ``stopword_spans`` for TokenDrop). ``dev`` may be None.
        ``train_name``: how the messages call the training split (``BucketTrainer``: ``train_dataset``)."""

    def model_inputs(self, batch: dict[str, torch.Tensor], labels: Mapping[str, torch.Tensor]) -> dict:
        """The keyword arguments of the forward pass (default: the batch without its labels)."""
        return batch

    def example_losses(self, outputs: Any, labels: Mapping[str, torch.Tensor], model: Any) -> torch.Tensor:
        """(B,) losses, one per row: their mean is what the model's own ``loss`` would be for the batch."""
        raise NotImplementedError

    def evaluate(self, model: Any, dev: Any, *, batch_size: int, pad_token_id: int,
                 amp_dtype: torch.dtype | None) -> dict[str, float]:
        """Dev metrics after an epoch, keys starting with ``dev_``; must contain :attr:`main_metric`."""
        raise NotImplementedError


class ClassificationTask(FinetuneTask):
    """Sequence classification (the paper's GLUE setting): ``label`` column, cross-entropy (or MSE / BCE, as
    the model's ``problem_type`` says), dev accuracy and loss from bucketed inference."""

    name = "classification"
    label_keys = ("labels",)
    main_metric = "dev_accuracy"

    def check(self, model: Any, train: Any, dev: Any, pad_token_id: int | None,
              columns: Sequence[str] = ("length",), train_name: str = "train") -> None:
        from tdnotebooks.checks import check_classifier, check_split

        check_classifier(model, pad_token_id)
        check_split(train_name, train, model, columns=columns)
        if dev is not None:
            check_split("dev", dev, model)

    def example_losses(self, outputs: Any, labels: Mapping[str, torch.Tensor], model: Any) -> torch.Tensor:
        from tdnotebooks.finetuning.distributed import example_losses

        return example_losses(outputs.logits, labels["labels"], model.config)

    def evaluate(self, model: Any, dev: Any, *, batch_size: int, pad_token_id: int,
                 amp_dtype: torch.dtype | None) -> dict[str, float]:
        from tdnotebooks.finetuning.inference import predict

        pred = predict(model, dev, batching="bucketed", batch_size=batch_size, pad_token_id=pad_token_id,
                       amp_dtype=amp_dtype)
        gold = torch.as_tensor(dev["label"])
        return {"dev_accuracy": pred.accuracy(dev["label"]),
                "dev_loss": float(torch.nn.functional.cross_entropy(pred.logits, gold))}


def check_task(task: Any) -> FinetuneTask:
    """``task`` itself if it is a :class:`FinetuneTask`; None gives a :class:`ClassificationTask`."""
    if task is None:
        return ClassificationTask()
    if not isinstance(task, FinetuneTask):
        raise ValueError(f"task must be None (classification) or a FinetuneTask (ClassificationTask, "
                         f"tdnotebooks.finetuning.qa.QATask, tdnotebooks.finetuning.seq2seq.Seq2SeqTask), "
                         f"got {type(task).__name__}")
    return task
