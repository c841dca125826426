"""What a fine-tuning run will feed the model, epoch by epoch, without a model: its batches and their padding.

:func:`plan_epochs` builds the batch sampler and collator that :func:`~tdnotebooks.finetuning.train.finetune`
would build for a :class:`~tdnotebooks.finetuning.train.FinetuneConfig` (:func:`~tdnotebooks.finetuning.train.make_batching`)
and runs every batch of every epoch through the collator, so TokenDrop's dropped stopwords and the trimmed
widths count exactly as in training. Seconds even on a CPU for a whole training split. Used in notebook 03
and by the fine-tuning benchmark's padding-at-scale pass (:mod:`tdnotebooks.bench.finetune`).

Example::

    plans = plan_epochs(FinetuneConfig(method="tokendrop_bucket", epochs=3), train, tokenizer.pad_token_id)
    for epoch, (batches, padding) in enumerate(plans):
        print(epoch, len(batches), padding.padding_fraction)
"""

from __future__ import annotations

from typing import Any, NamedTuple

from tdnotebooks.finetuning.train import FinetuneConfig, make_batching
from tdnotebooks.padding import PaddingStats
from tdnotebooks.validation import check_int

__all__ = ["EpochPlan", "plan_epochs"]


class EpochPlan(NamedTuple):
    """One epoch: its batches (lists of example indices, in training order) and their collated padding."""

    batches: list[list[int]]
    padding: PaddingStats


def _rows(train: Any) -> list[Any]:
    """The examples as a list of dicts (a ``datasets.Dataset`` converted at once, not one lookup per example)."""
    if hasattr(train, "to_list") and hasattr(train, "remove_columns"):
        return train.remove_columns([c for c in ("text",) if c in train.column_names]).to_list()
    return [train[i] for i in range(len(train))]


def plan_epochs(config: FinetuneConfig, train: Any, pad_token_id: int, epochs: int | None = None
                ) -> list[EpochPlan]:
    """The batches and padding of each of ``epochs`` epochs (default ``config.epochs``) that ``finetune`` makes.

    Args:
        config: the run's settings; ``method``, the batching fields and ``seed`` decide the batches.
        train: a split from :func:`tdnotebooks.finetuning.tokendrop.prepare` (``input_ids``, ``length``,
            ``stopword_spans``, ``idx``, ``label``).
        pad_token_id: the tokenizer's pad token id.
        epochs: how many epochs to plan, from epoch 0.

    Returns one :class:`EpochPlan` ``(batches, padding)`` per epoch: the batches the sampler yields after
    ``set_epoch(epoch)``, and the real tokens, token slots and batches the collator counted on them. A run of
    ``finetune(model, train, dev, config)`` trains on exactly these batches (``history.epochs[k]`` holds the
    same counts); the planning is a function of ``config`` and ``train`` alone.
    """
    if not isinstance(config, FinetuneConfig):
        raise ValueError(f"config must be a FinetuneConfig, got {type(config).__name__}")
    epochs = config.epochs if epochs is None else check_int("epochs", epochs, 1)
    pad_token_id = check_int("pad_token_id", pad_token_id, 0)
    batching = make_batching(config, train, pad_token_id)
    rows = _rows(train)
    plans = []
    for epoch in range(epochs):
        batching.set_epoch(epoch)
        batching.collate.reset_stats()
        batches = [list(batch) for batch in batching.batch_sampler]
        for batch in batches:
            batching.collate([rows[i] for i in batch])
        plans.append(EpochPlan(batches, batching.collate.stats))
    return plans
