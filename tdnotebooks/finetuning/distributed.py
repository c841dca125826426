"""Several processes (DDP): one global batch per step, its rows split evenly across the ranks.

Algorithm 2 plans *global* batches: one bucket, one HWCap/BatchCap size, one trimmed width per step. Under
DDP every rank iterates the same plan (the samplers are seeded, not sharded) and :class:`ShardedCollator`
collates the whole global batch (so TokenDrop trims it to one width, as in a single process), then keeps
rank ``r``'s rows ``r, r + R, r + 2R, ...``. A global batch of ``B`` rows gives every rank ``ceil(B / R)``
rows; ranks with one row fewer get a *filler* row (a copy of one of their own, or of row 0) with weight 0.
So at every step all ranks run the same bucket with the same tensor shapes, every example counts once per
epoch, and the loss each rank backpropagates is

    R * sum_i(weight_i * loss_i) / N          (N: real examples in the optimizer step, all ranks and micro-batches)

which DDP's gradient averaging (a mean over R ranks) turns into the gradient of the mean loss over the N
examples: the gradient of a one-process run of the same global batches. LRM uses N too (every rank sees it).

Example (your own loop; ``finetune`` and ``BucketTrainer`` do all of this)::

    collate = ShardedCollator(TokenDropBucketCollator(...), num_replicas=world_size, rank=rank)
    loader = DataLoader(train, batch_sampler=sampler, collate_fn=collate)     # the same sampler on every rank
    for batch in loader:
        weight, n = batch.pop("example_weight"), int(batch.pop("global_batch_size"))
        logits = ddp_model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        loss = world_size * (weight * example_losses(logits, batch["labels"], model.config)).sum() / n
        loss.backward(); modulator.step(n)                                      # LRM with the global size
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.nn import functional as F

from tdnotebooks.validation import check_int

__all__ = ["ShardedCollator", "example_losses"]


class ShardedCollator:
    """Collate a whole global batch with ``collate``, return rank ``rank``'s rows of it (see module docstring).

    Adds two keys: ``example_weight`` (float, 1 for this rank's examples, 0 for a filler row) and
    ``global_batch_size`` (a 0-d long tensor: the rows of the global batch). With ``num_replicas=1`` every
    row is kept with weight 1. Padding statistics, ``set_epoch`` and ``reset_stats`` are the wrapped
    collator's, which sees every global batch: they equal a one-process run's on every rank.

    Args:
        collate: a collator returning a dict of tensors whose first dimension is the batch (``PadToBatchMax``,
            ``TokenDropCollator``, ``TokenDropBucketCollator``).
        num_replicas: the number of processes (world size).
        rank: this process's index in ``[0, num_replicas)``.
    """

    def __init__(self, collate: Any, num_replicas: int = 1, rank: int = 0) -> None:
        if not callable(collate):
            raise ValueError(f"collate must be a callable collator, got {type(collate).__name__}")
        self.collate = collate
        self.num_replicas = check_int("num_replicas", num_replicas, low=1)
        self.rank = check_int("rank", rank, low=0, high=self.num_replicas - 1)

    def __getattr__(self, name: str) -> Any:  # stats, set_epoch, reset_stats, dropped_tokens, ...
        if name == "collate":
            raise AttributeError(name)
        return getattr(self.collate, name)

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.collate(examples)
        size = len(examples)
        mine = list(range(self.rank, size, self.num_replicas))
        per_rank = math.ceil(size / self.num_replicas)
        weight = [1.0] * len(mine) + [0.0] * (per_rank - len(mine))
        rows = mine + [mine[0] if mine else 0] * (per_rank - len(mine))
        index = torch.tensor(rows, dtype=torch.long)
        out = {key: value.index_select(0, index) if torch.is_tensor(value) and value.dim() > 0
               and value.shape[0] == size else value for key, value in batch.items()}
        out["example_weight"] = torch.tensor(weight)
        out["global_batch_size"] = torch.tensor(size)
        return out


def example_losses(logits: torch.Tensor, labels: torch.Tensor, model_config: Any) -> torch.Tensor:
    """One loss per example, as Hugging Face's sequence classifiers compute their (mean) loss.

    ``model_config.problem_type`` (or, when unset, ``num_labels`` and the labels' dtype, as HF infers it):
    regression (MSE), single-label classification (cross-entropy) or multi-label (BCE with logits, averaged
    over the labels of an example). The mean of the result is the model's own ``loss``.
    """
    num_labels = model_config.num_labels
    problem = model_config.problem_type
    if problem is None:
        if num_labels == 1:
            problem = "regression"
        elif labels.dtype in (torch.long, torch.int):
            problem = "single_label_classification"
        else:
            problem = "multi_label_classification"
    logits = logits.float()
    if problem == "regression" and num_labels == 1:
        return F.mse_loss(logits.view(-1), labels.float().view(-1), reduction="none")
    if problem == "regression":
        return F.mse_loss(logits, labels.float(), reduction="none").mean(1)
    if problem == "single_label_classification":
        return F.cross_entropy(logits.view(-1, num_labels), labels.view(-1), reduction="none")
    if problem == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none").mean(1)
    raise ValueError(f"model_config.problem_type must be 'regression', 'single_label_classification' or "
                     f"'multi_label_classification', got {problem!r}")
