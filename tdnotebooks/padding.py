"""What padding costs: count real and padded token slots for any way of batching.

A batch of sequences is padded to its longest member, so a batch with lengths ``l_1..l_B`` occupies
``B * max(l)`` slots of which ``sum(l)`` are real. The padding fraction of a whole epoch is
``1 - sum(real) / sum(slots)``; the ideal speed-up from removing all padding is ``slots / real``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from tdnotebooks.validation import check_int

__all__ = ["PaddingStats", "padding_stats", "random_batches", "padding_cost"]


@dataclass(frozen=True)
class PaddingStats:
    """Token accounting for one epoch of batches."""

    real_tokens: int
    slot_tokens: int  # real + padding: what the model actually computes on
    num_batches: int

    @property
    def pad_tokens(self) -> int:
        return self.slot_tokens - self.real_tokens

    @property
    def padding_fraction(self) -> float:
        return self.pad_tokens / self.slot_tokens if self.slot_tokens else 0.0

    @property
    def ideal_speedup(self) -> float:
        """Slots / real tokens: the speed-up if compute were proportional to tokens and padding vanished."""
        return self.slot_tokens / self.real_tokens if self.real_tokens else 1.0

    def as_dict(self) -> dict:
        return {**asdict(self), "pad_tokens": self.pad_tokens, "padding_fraction": self.padding_fraction,
                "ideal_speedup": self.ideal_speedup}


def padding_stats(lengths: Sequence[int], batches: Iterable[Sequence[int]]) -> PaddingStats:
    """Real vs padded slots when each batch (a list of example indices) is padded to its longest member."""
    lengths = np.asarray(lengths)
    real = slots = n = 0
    for batch in batches:
        batch_lengths = lengths[np.asarray(batch, dtype=np.int64)]
        if batch_lengths.size == 0:
            continue
        real += int(batch_lengths.sum())
        slots += int(batch_lengths.max()) * batch_lengths.size
        n += 1
    return PaddingStats(real, slots, n)


def random_batches(num_examples: int, batch_size: int, seed: int = 0) -> list[list[int]]:
    """The usual baseline: a random permutation cut into batches of ``batch_size`` (last one smaller)."""
    check_int("num_examples", num_examples, low=0)
    batch_size = check_int("batch_size", batch_size, low=1)
    check_int("seed", seed, low=0)
    order = np.random.default_rng(seed).permutation(num_examples)
    return [order[i:i + batch_size].tolist() for i in range(0, num_examples, batch_size)]


def padding_cost(lengths: Sequence[int], batch_size: int, max_length: int, seed: int = 0) -> dict[str, PaddingStats]:
    """Padding under the two common schemes, for lengths truncated at ``max_length``.

    ``"pad_to_max_length"``: every sequence padded to ``max_length`` (static shapes, as in many TF/TPU
    pipelines); ``"pad_to_batch_max"``: random batches padded to their longest member (dynamic padding,
    the paper's RandomSampler baseline).
    """
    check_int("max_length", max_length, low=1)
    if len(lengths) == 0:
        raise ValueError("lengths is empty: nothing to batch")
    clipped = np.minimum(np.asarray(lengths), max_length)
    batches = random_batches(len(clipped), batch_size, seed)
    real = int(clipped.sum())
    return {
        "pad_to_max_length": PaddingStats(real, max_length * len(clipped), len(batches)),
        "pad_to_batch_max": padding_stats(clipped, batches),
    }
