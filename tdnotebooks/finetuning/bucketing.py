"""BucketSampler: serves the batches of Algorithm 2's epoch plan to a ``DataLoader``.

The batches themselves come from :func:`tdnotebooks.finetuning.planning.epoch_batches`, a pure function of
(lengths, settings, seed, epoch); the sampler only holds the state around it (the epoch, where a resumed
epoch starts), as Hugging Face's ``LengthGroupedSampler`` does around ``get_length_grouped_indices`` and
fairseq's ``EpochBatchIterator`` around ``batch_by_size``.

Typical use (used in notebooks 01 and 03)::

    sampler = BucketSampler(lengths=train["length"], bucket_width=5, token_budget=8192, base_batch_size=32)
    loader = DataLoader(train, batch_sampler=sampler, collate_fn=PadToBatchMax(tokenizer))
    modulator = LRModulator(optimizer, base_batch_size=32)       # tdnotebooks.finetuning.lrm
    for epoch in range(epochs):
        sampler.set_epoch(epoch)               # BatchCap and the shuffle both depend on the epoch
        for batch in loader:
            model(**batch).loss.backward()
            modulator.step(len(batch["labels"]))   # instead of optimizer.step()
            scheduler.step(); optimizer.zero_grad()

Several processes (DDP): every rank iterates the same sampler (same seed), so every rank sees the same global
batch at every step, and :class:`~tdnotebooks.finetuning.distributed.ShardedCollator` keeps each rank's rows
of it: one bucket, one shape and one global batch size (for LRM) per step on all ranks.

Compared with the reference code: ``len()`` is exact, and the sampler can resume mid-epoch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from tdnotebooks.finetuning.planning import Bucket, BucketSpec, epoch_batches
from tdnotebooks.padding import PaddingStats, padding_stats
from tdnotebooks.validation import check_int

__all__ = ["BucketSampler"]


class BucketSampler(torch.utils.data.Sampler[list[int]]):
    """Length-bucketed batches with BatchCap and Residual Batch Merging (Algorithm 2); a batch sampler.

    Use as ``DataLoader(ds, batch_sampler=sampler, collate_fn=...)``.

    Args:
        lengths: tokens per example.
        settings: Algorithm 2's settings, the keyword arguments of
            :class:`~tdnotebooks.finetuning.planning.BucketSpec` (``bucket_width=5``, ``max_length``, ``hwcap``
            or ``token_budget``, ``base_batch_size=32``, ``scaling_factor=2.0``, ``batch_cap=True``,
            ``rbm=True``, ``shuffle=True``, ``reachable_lengths``, ``rbm_by_reachable=True``); the spec is
            kept as :attr:`spec`. With
            TokenDrop disabled nothing can be trimmed: do not pass reachable lengths then (each bucket
            would be sorted by length).
        seed: the batches of epoch ``e`` are ``epoch_batches(spec, seed=seed, epoch=e)``.

    Example:
        >>> sampler = BucketSampler([3, 3, 7, 7, 7, 12], bucket_width=5, base_batch_size=2, seed=0)
        >>> sampler.set_epoch(1)
        >>> sorted(map(len, sampler))        # epoch 1: batches of up to 2 * 2; the leftovers merged (RBM)
        [2, 4]

    .. warning:: Call :meth:`set_epoch` before each epoch: otherwise every epoch repeats epoch 0's batches
       (and BatchCap never grows). The sampler does not shard: under DDP give every rank the same sampler and
       shard each batch's rows with :class:`~tdnotebooks.finetuning.distributed.ShardedCollator`.
    """

    def __init__(self, lengths: Sequence[int], *, seed: int = 0, **settings: Any) -> None:
        sharding = sorted({"num_replicas", "rank", "drop_last"} & set(settings))
        if sharding:
            raise ValueError(f"BucketSampler takes no {', '.join(sharding)}: it does not shard. Under DDP every rank "
                             "iterates the same sampler and ShardedCollator(collate, num_replicas, rank) "
                             "(tdnotebooks.finetuning.distributed) keeps each rank's rows of every global batch")
        self.spec = BucketSpec(lengths, **settings)
        self.seed = check_int("seed", seed)
        self.epoch = 0
        self._start = 0  # where the next __iter__ begins (set by load_state_dict)
        self._position = 0  # batches of this epoch handed out so far (for state_dict)
        self._cache: tuple[int, list[list[int]]] | None = None

    # -- The plan, read through the spec ----------------------------------------------------------------

    @property
    def lengths(self) -> Any:
        return self.spec.lengths

    @property
    def num_buckets(self) -> int:
        return self.spec.num_buckets

    @property
    def buckets(self) -> list[Bucket]:
        return self.spec.buckets

    @property
    def bucket_counts(self) -> list[int]:
        return self.spec.bucket_counts

    def bucket_of(self, length: int) -> int:
        return self.spec.bucket_of(length)

    def batch_size_for(self, bucket: int, epoch: int | None = None) -> int:
        """BatchCap (lines 1-4) of ``bucket`` in ``epoch`` (default: the current one)."""
        return self.spec.batch_size(bucket, self.epoch if epoch is None else epoch)

    def epoch_batches(self, epoch: int | None = None) -> list[list[int]]:
        """All batches of ``epoch`` (default: the current one) in order."""
        epoch = self.epoch if epoch is None else check_int("epoch", epoch, 0)
        return [list(batch) for batch in self._batches(epoch)]

    def _batches(self, epoch: int) -> list[list[int]]:
        """The cached plan of ``epoch`` (not copied: callers must not modify it)."""
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, epoch_batches(self.spec, seed=self.seed, epoch=epoch))
        return self._cache[1]

    def num_batches(self, epoch: int | None = None) -> int:
        """Batches in a whole ``epoch``: size LR schedules with the sum over epochs."""
        return len(self._batches(self.epoch if epoch is None else check_int("epoch", epoch, 0)))

    def padding_stats(self, epoch: int | None = None) -> PaddingStats:
        """Real vs padded tokens of ``epoch`` when every batch is padded to its longest member."""
        return padding_stats(self.spec.lengths, self.epoch_batches(epoch))

    # -- Sampler protocol, epochs, resuming -------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (BatchCap and shuffling depend on it). Keeps a pending resume of this epoch."""
        epoch = check_int("epoch", epoch, 0)
        if epoch != self.epoch:
            self.epoch, self._start, self._position = epoch, 0, 0

    def __len__(self) -> int:
        """Exact number of batches the next iteration yields (the rest of the epoch after a resume)."""
        return len(self._batches(self.epoch)) - self._start

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches(self.epoch)
        start, self._start = self._start, 0
        self._position = start
        for batch in batches[start:]:
            self._position += 1
            yield list(batch)

    def _fingerprint(self) -> str:
        config = self.spec.settings_key()
        excess = self.spec.excess
        order = b"" if excess is None else b"reachable" + excess.tobytes()
        return hashlib.sha256(repr(config).encode() + self.spec.lengths.tobytes() + order).hexdigest()[:16]

    def state_dict(self, batches_done: int | None = None) -> dict[str, Any]:
        """Where the sampler is: epoch and batches already yielded in it, plus seed and config fingerprint.

        A ``DataLoader`` with workers fetches batches ahead of the training loop, so the sampler's count
        can run ahead of the steps actually taken; pass the loop's own count as ``batches_done`` then.
        """
        done = self._position if batches_done is None else check_int("batches_done", batches_done, 0)
        return {"epoch": self.epoch, "batches_yielded": done, "seed": self.seed, "fingerprint": self._fingerprint()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume: the next iteration yields exactly the batches of ``state["epoch"]`` not yet yielded."""
        missing = {"epoch", "batches_yielded", "seed", "fingerprint"} - set(state)
        if missing:
            raise ValueError(f"state is missing {sorted(missing)}; pass what state_dict() returned")
        if state["seed"] != self.seed:
            raise ValueError(f"state was saved with seed={state['seed']}, this sampler has seed={self.seed}")
        if state["fingerprint"] != self._fingerprint():
            raise ValueError("state was saved by a sampler with other lengths or settings (bucket_width, "
                             "max_length, hwcap/token_budget, base_batch_size, scaling_factor, batch_cap, "
                             "rbm, shuffle, reachable_lengths, rbm_by_reachable): its batches would differ")
        epoch = check_int("state['epoch']", state["epoch"], 0)
        total = len(self._batches(epoch))
        done = check_int("state['batches_yielded']", state["batches_yielded"], 0, total)
        self.epoch, self._start, self._position = epoch, done, done
