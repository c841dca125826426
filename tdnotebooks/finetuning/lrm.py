"""Learning Rate Modulation (LRM, Section 2.2): scale the learning rate with each batch's size.

BucketSampler's batches vary in size from step to step (buckets, BatchCap, the merged residuals), so
Nagarajan & Raghunathan (2023) scale the learning rate per batch by ``sqrt(batch_size / base_batch_size)``.
:class:`LRModulator` applies that factor around each optimizer step, once, without touching what an LR
scheduler computes, so nothing compounds.

Example::

    modulator = LRModulator(optimizer, base_batch_size=32)
    for batch in loader:
        model(**batch).loss.backward()
        modulator.step(len(batch["labels"]))   # instead of optimizer.step()
        scheduler.step(); optimizer.zero_grad()
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from tdnotebooks.validation import check_int

__all__ = ["LRModulator", "lr_factor"]


def lr_factor(batch_size: int, base_batch_size: int) -> float:
    """LRM: ``sqrt(batch_size / base_batch_size)``, so ``lr(batch) = base_lr * lr_factor(...)``."""
    batch_size = check_int("batch_size", batch_size, 1)
    base_batch_size = check_int("base_batch_size", base_batch_size, 1)
    return math.sqrt(batch_size / base_batch_size)


class LRModulator:
    """Apply LRM around each optimizer step without ever changing the scheduler's learning rates.

    ``modulator.step(batch_size)`` replaces ``optimizer.step()``: every param group's lr is multiplied by
    :func:`lr_factor` for that one step, then set back to the unmodulated value, so any LR scheduler keeps
    computing from clean values and nothing compounds. With gradient accumulation call it once per
    optimizer step with the total number of examples accumulated. With AMP use
    ``with modulator.modulated(batch_size): scaler.step(optimizer)``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, base_batch_size: int) -> None:
        if not hasattr(optimizer, "param_groups"):
            raise ValueError(f"optimizer must be a torch optimizer (with param_groups), got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_batch_size = check_int("base_batch_size", base_batch_size, 1)
        self.last_factor: float | None = None

    @contextmanager
    def modulated(self, batch_size: int) -> Iterator[float]:
        """Within the block every group's lr is scaled by the factor for ``batch_size``; restored after."""
        factor = lr_factor(batch_size, self.base_batch_size)
        groups = self.optimizer.param_groups
        clean = [group["lr"] for group in groups]
        for group, lr in zip(groups, clean, strict=True):
            group["lr"] = lr * factor
        try:
            yield factor
        finally:
            for group, lr in zip(groups, clean, strict=True):
                group["lr"] = lr
        self.last_factor = factor

    def step(self, batch_size: int, closure: Callable[[], Any] | None = None) -> Any:
        """``optimizer.step(closure)`` with the lr scaled by ``sqrt(batch_size / base_batch_size)``."""
        with self.modulated(batch_size):
            return self.optimizer.step(closure) if closure is not None else self.optimizer.step()
