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

__all__ = ["IGNORE_INDEX", "POSITION_KEYS", "PadToBatchMax", "collate_labels", "shift_positions"]

IGNORE_INDEX = -100  # label of a target position the loss ignores (Hugging Face convention)
POSITION_KEYS = ("start_positions", "end_positions")  # extractive QA: token positions of the answer span


def shift_positions(position: int, dropped_spans: Sequence[Sequence[int]], key: str = "position") -> int:
    """Where token ``position`` is after the ``[start, end)`` token ranges ``dropped_spans`` were removed.

    A labelled position inside a dropped range is an error: the answer span would be gone (QA's ``prepare``
    never offers answer tokens to TokenDrop, so this cannot happen with its data).
    """
    shift = 0
    for start, end in dropped_spans:
        if start <= position < end:
            raise ValueError(f"{key}={position} was dropped by TokenDrop (span [{start}, {end})); the answer "
                             "tokens must not be droppable: prepare QA data with tdnotebooks.finetuning.qa.prepare_qa")
        if end <= position:
            shift += end - start
    return position - shift


def collate_labels(examples: Sequence[Mapping[str, Any]],
                   dropped_spans: Sequence[Sequence[Sequence[int]]] | None = None) -> dict[str, torch.Tensor]:
    """The label tensors of a batch, for every task of the package.

    - ``label`` or ``labels`` holding one value per example (classification) -> ``labels`` (B,);
    - ``labels`` holding a list per example (seq2seq targets) -> ``labels`` (B, T) padded with -100 to the
      batch's longest target (the decoder inputs are built from them by the model);
    - ``start_positions`` / ``end_positions`` (extractive QA) -> (B,) each, moved left by the tokens TokenDrop
      removed before them (``dropped_spans``: per example, the dropped ``[start, end)`` token ranges).
    """
    out: dict[str, torch.Tensor] = {}
    first = examples[0]
    label_key = "labels" if "labels" in first else "label" if "label" in first else None
    if label_key is not None:
        values = [ex[label_key] for ex in examples]
        if isinstance(values[0], (list, tuple)) or (torch.is_tensor(values[0]) and values[0].dim() == 1):
            width = max(len(v) for v in values)
            out["labels"] = torch.tensor([list(v) + [IGNORE_INDEX] * (width - len(v)) for v in values],
                                         dtype=torch.long)
        else:
            out["labels"] = torch.as_tensor(values)
    for key in POSITION_KEYS:
        if key in first:
            spans = dropped_spans if dropped_spans is not None else [()] * len(examples)
            out[key] = torch.tensor([shift_positions(int(ex[key]), dropped, key)
                                     for ex, dropped in zip(examples, spans, strict=True)], dtype=torch.long)
    return out


class PadToBatchMax:
    """Collate tokenized examples into tensors padded to the longest one, counting real vs slot tokens.

    Examples are dicts with ``input_ids`` and optionally ``attention_mask``, ``token_type_ids`` and
    labels (:func:`collate_labels`: class labels, seq2seq targets padded with -100, QA answer positions);
    other keys are ignored. ``pad`` is a pad token id or
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
        batch.update(collate_labels(examples))
        self.real_tokens += int(batch["attention_mask"].sum())
        self.slot_tokens += batch["input_ids"].numel()
        self.num_batches += 1
        return batch
