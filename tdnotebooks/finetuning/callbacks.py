"""Hooks into :func:`~tdnotebooks.finetuning.train.finetune`, so a benchmark or a logger can observe a run
without patching the loop. Light on purpose (no torch import): ``python -m tdnotebooks.bench --help`` stays fast.

Example:
    >>> class PrintLoss(FinetuneCallback):
    ...     def on_step_end(self, record):
    ...         print(record["step"], record["loss"])
    >>> # finetune(model, train, dev, callbacks=[PrintLoss()])
"""

from __future__ import annotations

from typing import Any

__all__ = ["FinetuneCallback"]


class FinetuneCallback:
    """Observe a :func:`~tdnotebooks.finetuning.train.finetune` run, like Hugging Face's ``TrainerCallback``: subclass, override the hooks
    you need, pass instances as ``finetune(..., callbacks=[...])``. Hooks must not change the run's arithmetic
    (the benchmark uses them to time the collator and the evaluation)."""

    def on_batching(self, batching: Any) -> None:
        """The run's :class:`~tdnotebooks.finetuning.train.Batching`, before its loader is built (``batching.collate`` may be wrapped)."""

    def on_step_end(self, record: dict) -> None:
        """After each optimizer step, with the record appended to ``history.steps``."""

    def on_evaluate_begin(self, epoch: int) -> None:
        """Before the dev set is evaluated at the end of ``epoch``."""

    def on_evaluate_end(self, epoch: int) -> None:
        """After the dev set was evaluated at the end of ``epoch``."""

    def on_epoch_end(self, record: dict) -> None:
        """After each epoch, with the record appended to ``history.epochs``."""
