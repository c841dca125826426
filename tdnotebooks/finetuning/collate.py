"""The baseline collator: pad every batch to its longest member, and count what that costs.

Used by the RandomSampler, group_by_length and BucketSampler methods of
:func:`~tdnotebooks.finetuning.train.finetune` and by bucketed inference; the TokenDrop collators
(:mod:`tdnotebooks.finetuning.tokendrop`) count padding the same way.

Example::

    collate = PadToBatchMax(tokenizer)
    loader = DataLoader(train, batch_sampler=sampler, collate_fn=collate)
    ...
    collate.stats.padding_fraction
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from tdnotebooks.padding import PaddingStats
from tdnotebooks.validation import check_int, is_int

__all__ = ["PadToBatchMax"]


class PadToBatchMax:
    """Collate tokenized examples into tensors padded to the longest one, counting real vs slot tokens.

    Examples are dicts with ``input_ids`` and optionally ``attention_mask``, ``token_type_ids`` and
    ``label``/``labels`` (returned as ``labels``); other keys are ignored. ``pad`` is a pad token id or
    a tokenizer. Counts accumulate over calls (``real_tokens``, ``slot_tokens``, ``num_batches``,
    :attr:`stats`; :meth:`reset_stats`, as in every collator of the package). They are made where
    collation runs: in the main process only with ``num_workers=0``.
    """

    def __init__(self, pad: int | Any, pad_to_multiple_of: int | None = None) -> None:
        pad_id = pad if is_int(pad) else getattr(pad, "pad_token_id", None)
        if pad_id is None:
            raise ValueError(f"pad must be a pad token id or a tokenizer with a pad_token_id, got {pad!r}")
        self.pad_token_id = check_int("pad", pad_id, 0)
        self.pad_to_multiple_of = (None if pad_to_multiple_of is None
                                   else check_int("pad_to_multiple_of", pad_to_multiple_of, 1))
        self.reset_stats()

    def reset_stats(self) -> None:
        """Zero the running counts of real/slot tokens and batches."""
        self.real_tokens = self.slot_tokens = self.num_batches = 0

    @property
    def stats(self) -> PaddingStats:
        return PaddingStats(self.real_tokens, self.slot_tokens, self.num_batches)

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if len(examples) == 0:
            raise ValueError("examples is empty: nothing to collate")
        ids = [torch.as_tensor(ex["input_ids"], dtype=torch.long) for ex in examples]
        width = max(len(x) for x in ids)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = {"input_ids": torch.full((len(ids), width), self.pad_token_id, dtype=torch.long),
                 "attention_mask": torch.zeros((len(ids), width), dtype=torch.long)}
        if "token_type_ids" in examples[0]:
            batch["token_type_ids"] = torch.zeros((len(ids), width), dtype=torch.long)
        for i, (ex, x) in enumerate(zip(examples, ids, strict=True)):
            batch["input_ids"][i, : len(x)] = x
            mask = ex.get("attention_mask")
            batch["attention_mask"][i, : len(x)] = 1 if mask is None else torch.as_tensor(mask)
            if "token_type_ids" in batch:
                batch["token_type_ids"][i, : len(x)] = torch.as_tensor(ex["token_type_ids"])
        label_key = "labels" if "labels" in examples[0] else "label" if "label" in examples[0] else None
        if label_key is not None:
            batch["labels"] = torch.as_tensor([ex[label_key] for ex in examples])
        self.real_tokens += int(batch["attention_mask"].sum())
        self.slot_tokens += batch["input_ids"].numel()
        self.num_batches += 1
        return batch
