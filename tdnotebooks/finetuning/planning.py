"""Algorithm 2 as a pure function: one epoch's batches from (lengths, settings, seed, epoch).

Nagarajan & Raghunathan (2023), "TokenDrop + BucketSampler", Algorithm 2. Examples are put in buckets of
similar length (lines 19-23); batches are cut from one bucket at a time (lines 26-33), with a batch size
that grows over the epochs up to what the hardware holds (BatchCap, lines 1-4); the leftovers of all
buckets are merged into as few batches as possible (Residual Batch Merging, lines 5-17).

With TokenDrop (``reachable_lengths``) the merging is TokenDrop-aware by default (``rbm_by_reachable``,
:func:`merge_by_reachable`): a merged batch gathers examples that can all be trimmed to one common width,
so the collator trims it instead of padding it, on any length distribution.

This module only plans: :class:`BucketSpec` checks the lengths and settings once and sorts the examples
into buckets; :func:`epoch_batches` turns a spec, a seed and an epoch into that epoch's list of batches
(lists of example indices), the same list every time. :class:`~tdnotebooks.finetuning.bucketing.BucketSampler`
serves these lists to a ``DataLoader`` (as Hugging Face's ``LengthGroupedSampler`` serves
``get_length_grouped_indices``); read padding or step counts off the plan without building a sampler.

Example::

    spec = BucketSpec(train["length"], bucket_width=5, token_budget=8192, base_batch_size=32)
    batches = epoch_batches(spec, seed=0, epoch=1)       # epoch 1: batches of up to 64 (BatchCap)
    padding_stats(train["length"], batches)               # tdnotebooks.padding

Compared with the reference code: HWCap comes from a token budget or a profile
(:func:`~tdnotebooks.finetuning.hwcap.profile_hwcap`), not a hard-coded list; randomness comes only from a
``torch.Generator`` seeded with (seed, epoch).
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from tdnotebooks.validation import check_bool, check_int, check_number

__all__ = ["WIDEN_PADDING", "Bucket", "BucketSpec", "bucket_upper_lengths", "epoch_batches", "merge_by_reachable",
           "merge_residual_batches"]


def _as_array(values: Sequence[int]) -> np.ndarray:
    """A list, tuple, array, tensor or other iterable of per-example values as a numpy array."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values if isinstance(values, (np.ndarray, list, tuple)) else list(values))


# ---------------------------------------------------------------------------------------------------
# Buckets (Algorithm 2, lines 19-23) and their HWCap
# ---------------------------------------------------------------------------------------------------


class Bucket(NamedTuple):
    """One bucket: lengths in ``[min_len, max_len)``; ``hwcap`` is its largest batch (None: unbounded)."""

    min_len: int
    max_len: int  # exclusive
    hwcap: int | None


def bucket_upper_lengths(max_length: int, bucket_width: int = 5) -> list[int]:
    """The longest possible length in each bucket ``[k*w, (k+1)*w)``, for k = 0 .. max_length // w.

    These are the lengths at which :func:`~tdnotebooks.finetuning.hwcap.profile_hwcap` measures memory. The
    last bucket is cut at ``max_length``; bucket 0 of width 1 (length 0, always empty) is reported as length 1.
    """
    max_length = check_int("max_length", max_length, 1)
    bucket_width = check_int("bucket_width", bucket_width, 1)
    return [max(1, min((k + 1) * bucket_width - 1, max_length)) for k in range(max_length // bucket_width + 1)]


def _check_lengths(lengths: Sequence[int]) -> np.ndarray:
    if lengths is None or isinstance(lengths, (str, bytes)) or not hasattr(lengths, "__iter__"):
        raise ValueError(f"lengths must be a sequence of ints >= 1, the tokens of each example (e.g. "
                         f"train['length'] of a split made by tdnotebooks.finetuning.prepare), got {lengths!r}")
    arr = _as_array(lengths)
    if arr.size == 0:
        raise ValueError("lengths is empty: need at least one example length")
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise ValueError(f"lengths must be a flat sequence of ints >= 1, got dtype {arr.dtype} and shape {arr.shape}")
    if arr.min() < 1:
        where = int(np.argmin(arr))
        raise ValueError(f"lengths must be ints >= 1 (tokens incl. special ones), got lengths[{where}] "
                         f"= {int(arr[where])}")
    return arr.astype(np.int64)


def _check_reachable(reachable: Sequence[int], lengths: np.ndarray) -> np.ndarray:
    arr = _as_array(reachable)
    n = len(lengths)
    if arr.ndim != 1 or arr.size != n or arr.dtype.kind not in "iu":
        raise ValueError(f"reachable_lengths must be a flat sequence of ints, one per example ({n}), got "
                         f"dtype {arr.dtype} and shape {arr.shape}")
    bad = np.nonzero((arr < 0) | (arr > lengths))[0]
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"reachable_lengths[{i}] must be in [0, lengths[{i}]] = [0, {int(lengths[i])}], "
                         f"got {int(arr[i])}")
    return arr.astype(np.int64)


def _resolve_hwcap(hwcap: Any, token_budget: Any, max_length: int, bucket_width: int, longest: int
                   ) -> list[int | None]:
    """Per-bucket HWCap (None = unbounded) from ``hwcap`` (a list or a ``{bucket: size}`` dict) or
    ``token_budget`` (``max(1, token_budget // longest length of the bucket)``)."""
    n = max_length // bucket_width + 1
    if hwcap is not None and token_budget is not None:
        raise ValueError("give either hwcap (per-bucket batch sizes) or token_budget (tokens per batch), not both")
    if token_budget is not None:
        token_budget = check_int("token_budget", token_budget, 1)
        if token_budget < longest:
            raise ValueError(f"token_budget must be >= the longest length ({longest}) so every example fits in a "
                             f"batch, got {token_budget}")
        return [max(1, token_budget // upper) for upper in bucket_upper_lengths(max_length, bucket_width)]
    if hwcap is None:
        return [None] * n
    if isinstance(hwcap, np.ndarray):
        hwcap = hwcap.tolist()
    if isinstance(hwcap, Mapping):
        caps: list[int | None] = [None] * n
        for bucket, size in hwcap.items():
            bucket = check_int("hwcap key (bucket index)", bucket, 0, n - 1)
            caps[bucket] = check_int(f"hwcap[{bucket}]", size, 1)
        return caps
    if isinstance(hwcap, (str, bytes)) or not isinstance(hwcap, Sequence):
        raise ValueError(f"hwcap must be a list with one batch size per bucket ({n} here) or a {{bucket: size}} "
                         f"dict; for a token budget use token_budget=, got {hwcap!r}")
    if len(hwcap) != n:
        raise ValueError(f"hwcap must have one entry per bucket: {n} buckets of width {bucket_width} up to "
                         f"max_length={max_length}, got {len(hwcap)} entries")
    return [check_int(f"hwcap[{i}]", size, 1) for i, size in enumerate(hwcap)]


class BucketSpec:
    """Everything an epoch's batches depend on except (seed, epoch): the lengths and Algorithm 2's settings,
    checked once, with the examples sorted into buckets. Treat it as read-only.

    Args:
        lengths: tokens per example (special tokens included), each in ``[1, max_length]``. Example ``i``
            goes to bucket ``lengths[i] // bucket_width``, i.e. ``[k*w, (k+1)*w)`` (lines 19-23).
        bucket_width: ``w``, the paper's 5.
        max_length: the longest length a bucket holds (default: the longest of ``lengths``).
        hwcap: HWCap, a list with one batch size per bucket or a ``{bucket: size}`` dict whose missing
            buckets are unbounded (e.g. from :func:`~tdnotebooks.finetuning.hwcap.profile_hwcap`).
        token_budget: instead of ``hwcap``: ``HWCap = max(1, token_budget // longest length of the bucket)``.
            Neither given: unbounded.
        base_batch_size, scaling_factor, batch_cap: BatchCap (lines 1-4), see :meth:`batch_size`.
        rbm: merge the buckets' residuals (lines 5-17); False keeps each residual as its own batch.
        shuffle: shuffle inside every bucket (line 27) and the order of all batches.
        reachable_lengths: None (Algorithm 2 exactly), or for TokenDrop + BucketSampler the length each
            example can be trimmed to (its length minus all its droppable stopword tokens,
            :func:`tdnotebooks.finetuning.tokendrop.reachable_lengths`); see :func:`epoch_batches`.
        rbm_by_reachable: with ``reachable_lengths`` and ``rbm``: merge the residuals, and every member that
            cannot be trimmed to its bucket's floor, by the widths they can be trimmed to
            (:func:`merge_by_reachable`) instead of in bucket order (lines 5-17). Ignored without
            ``reachable_lengths``. False: Algorithm 2's merging (and batches) with TokenDrop too.

    .. warning:: Pass ``reachable_lengths`` only when the collator trims with the same TokenDrop
       (``TokenDropBucketCollator(trim_to="reachable")``, as ``finetune`` does): the merged batches then
       span many lengths and are padding-free only because the collator trims them. Padded by a plain
       collator they would pad more than Algorithm 2's.

    Example:
        >>> spec = BucketSpec([3, 7, 12], bucket_width=5, token_budget=60)
        >>> [bucket.hwcap for bucket in spec.buckets]       # 60 // 4, 60 // 9, 60 // 12
        [15, 6, 5]
    """

    def __init__(
        self,
        lengths: Sequence[int],
        *,
        bucket_width: int = 5,
        max_length: int | None = None,
        hwcap: Sequence[int] | Mapping[int, int] | None = None,
        token_budget: int | None = None,
        base_batch_size: int = 32,
        scaling_factor: float = 2.0,
        batch_cap: bool = True,
        rbm: bool = True,
        shuffle: bool = True,
        reachable_lengths: Sequence[int] | None = None,
        rbm_by_reachable: bool = True,
    ) -> None:
        self.lengths = _check_lengths(lengths)
        self.bucket_width = check_int("bucket_width", bucket_width, 1)
        longest = int(self.lengths.max())
        self.max_length = longest if max_length is None else check_int("max_length", max_length, 1)
        if longest > self.max_length:
            where = int(np.argmax(self.lengths > self.max_length))
            raise ValueError(f"lengths must lie in [1, max_length={self.max_length}] (the last bucket), "
                             f"got lengths[{where}] = {int(self.lengths[where])}")
        self.num_buckets = self.max_length // self.bucket_width + 1
        self.hwcaps = _resolve_hwcap(hwcap, token_budget, self.max_length, self.bucket_width, longest)
        self.token_budget = token_budget
        self.base_batch_size = check_int("base_batch_size", base_batch_size, 1)
        self.scaling_factor = check_number("scaling_factor", scaling_factor, 1, math.inf, high_open=True)
        self.batch_cap = check_bool("batch_cap", batch_cap)
        if not self.batch_cap and any(cap is None for cap in self.hwcaps):
            raise ValueError("batch_cap=False makes HWCap the only limit, so hwcap (for every bucket) or "
                             "token_budget must be given")
        self.rbm = check_bool("rbm", rbm)
        self.rbm_by_reachable = check_bool("rbm_by_reachable", rbm_by_reachable)
        self.shuffle = check_bool("shuffle", shuffle)

        # Lines 19-23: bucket members, kept in index order (the per-epoch shuffle permutes them).
        bucket_ids = self.lengths // self.bucket_width
        order = np.argsort(bucket_ids, kind="stable")
        counts = np.bincount(bucket_ids, minlength=self.num_buckets)
        self.members: tuple[np.ndarray, ...] = tuple(np.split(order, np.cumsum(counts)[:-1]))
        # How far above its bucket's floor each example stays when trimmed as far as it can be. The floor is the
        # bucket's shortest length: its lower bound k*w, or higher when no member is that short (bucket 0 holds
        # no example of length 0), so that most of every bucket ties at 0.
        self.reachable_lengths = (None if reachable_lengths is None
                                  else _check_reachable(reachable_lengths, self.lengths))
        self.excess: np.ndarray | None = None
        if self.reachable_lengths is not None:
            shortest = np.full(self.num_buckets, np.iinfo(np.int64).max)
            np.minimum.at(shortest, bucket_ids, self.lengths)
            self.excess = np.maximum(self.reachable_lengths - shortest[bucket_ids], 0)

    @property
    def buckets(self) -> list[Bucket]:
        """``Bucket(min_len, max_len_exclusive, hwcap)`` for every bucket (hwcap None: unbounded)."""
        w = self.bucket_width
        return [Bucket(k * w, min((k + 1) * w, self.max_length + 1), cap) for k, cap in enumerate(self.hwcaps)]

    @property
    def bucket_counts(self) -> list[int]:
        """Number of examples in each bucket."""
        return [len(m) for m in self.members]

    def bucket_of(self, length: int) -> int:
        """Index of the bucket holding sequences of ``length`` tokens (lines 21-22)."""
        return check_int("length", length, 1, self.max_length) // self.bucket_width

    def batch_size(self, bucket: int, epoch: int) -> int:
        """BatchCap, lines 1-4: ``min(HWCap, floor(base_batch_size * scaling_factor ** epoch))``.

        With ``batch_cap=False``: HWCap alone.
        """
        return self._batch_size(check_int("bucket", bucket, 0, self.num_buckets - 1), check_int("epoch", epoch, 0))

    def _batch_size(self, bucket: int, epoch: int) -> int:
        hwcap = self.hwcaps[bucket]
        if not self.batch_cap:
            return hwcap
        try:
            epoch_cap = math.floor(self.base_batch_size * self.scaling_factor ** epoch)
        except OverflowError:  # astronomically many epochs: the cap no longer binds
            return hwcap if hwcap is not None else len(self.lengths)
        return epoch_cap if hwcap is None else min(hwcap, epoch_cap)

    def settings_key(self) -> tuple:
        """The settings that decide the batches, for fingerprints (lengths and reachable lengths come apart)."""
        return (self.bucket_width, self.max_length, tuple(self.hwcaps), self.base_batch_size, self.scaling_factor,
                self.batch_cap, self.rbm, self.shuffle, self.rbm_by_reachable)


# ---------------------------------------------------------------------------------------------------
# Residual Batch Merging (Algorithm 2, lines 5-17)
# ---------------------------------------------------------------------------------------------------


def merge_residual_batches(residuals: Sequence[tuple[Sequence[int], int]]) -> list[list[int]]:
    """Residual Batch Merging, Algorithm 2 lines 5-17.

    ``residuals``: one ``(leftover indices, bucket_batch_size)`` pair per bucket, in increasing length
    order (empty leftovers included, as in the algorithm). Samples are appended one by one to a running
    batch, which is closed when it reaches the batch size of the bucket being read (lines 13-15) or,
    before a bucket is read, when it already holds at least that bucket's batch size (lines 8-10).
    Hence every merged batch holds at most the batch size of its longest member's bucket, and only the
    final one (lines 16-17) can be smaller than that without having met a later bucket's size.
    """
    for i, (_, batch_size) in enumerate(residuals):
        check_int(f"residuals[{i}]'s batch size", batch_size, low=1)
    merged: list[list[int]] = []
    new_batch: list[int] = []
    for residual, batch_size in residuals:  # line 7
        if len(new_batch) >= batch_size:  # lines 8-10: "full" for the longer bucket that follows
            merged.append(new_batch)
            new_batch = []
        for index in residual:  # lines 11-12
            new_batch.append(int(index))
            if len(new_batch) % batch_size == 0:  # lines 13-15
                merged.append(new_batch)
                new_batch = []
    if new_batch:  # lines 16-17: the one residual batch left in the epoch
        merged.append(new_batch)
    return merged


# Widening a merged batch that cannot be filled at its width may pad it by at most this share of its slots.
WIDEN_PADDING = 0.0025


def merge_by_reachable(pool: Sequence[int], lengths: Sequence[int], reachable: Sequence[int],
                       batch_sizes: Sequence[int], bucket_width: int,
                       widen_padding: float = WIDEN_PADDING) -> list[list[int]]:
    """TokenDrop-aware Residual Batch Merging: batches of ``pool`` that the collator trims instead of pads.

    Example ``i`` fits in a batch of width ``w`` without padding when ``reachable[i] <= w <= lengths[i]``:
    TokenDrop cuts it down to ``w`` (``TokenDropBucketCollator(trim_to="reachable")`` trims a batch to
    ``max(shortest length, largest reachable length)``). Algorithm 2 merges residuals in bucket order, which
    ignores this: a merged batch spans several buckets and its shorter members are padded up to what its
    stopword-poor members can reach. Here, batch after batch:

    1. the shortest example left sets the width ``w`` (its length: the widest it can take unpadded);
    2. examples that can be trimmed to ``w`` join by increasing length (the least trimmed first), then by
       increasing reachable length, ties in ``pool`` order, until the batch holds the batch size of its
       longest member's bucket (``batch_sizes[lengths[i] // bucket_width]``, as in lines 8-15): its HWCap
       (rows and, with a token budget, tokens at its longest length) and BatchCap always hold;
    3. when no example left can be trimmed to ``w`` and the batch is not full, ``w`` widens to the smallest
       reachable length left, but only while the padding this costs (members shorter than ``w``) stays
       within ``widen_padding`` of the batch's slots; otherwise the batch is closed as it is.

    Every example of ``pool`` lands in exactly one batch. Batches are never larger than Algorithm 2's, and
    may be smaller (more batches) where no example can be trimmed to a width; step 3 bounds how many.

    Args:
        pool: the example indices to merge, in the order ties keep (shuffled, for random batches).
        lengths, reachable: per example (indexed by the entries of ``pool``), its length and the shortest
            length TokenDrop can trim it to (``reachable <= length``).
        batch_sizes: the epoch's batch size of every bucket (BatchCap and HWCap, line 28).
        bucket_width: bucket ``k`` holds lengths ``[k*w, (k+1)*w)``.
        widen_padding: the padding, as a share of a batch's slots, a batch may take on to grow (0: none).

    Example:
        >>> lengths = [10, 12, 12, 14, 30]
        >>> reachable = [10, 9, 12, 12, 29]
        >>> merge_by_reachable(range(5), lengths, reachable, batch_sizes=[4] * 7, bucket_width=5)
        [[0, 1], [2, 3], [4]]
    """
    order = sorted((int(i) for i in pool), key=lambda i: int(reachable[i]))  # stable: ties keep pool order
    queues: dict[int, deque[int]] = {}  # per length, in increasing reachable length
    for i in order:
        queues.setdefault(int(lengths[i]), deque()).append(i)
    merged: list[list[int]] = []
    left = len(order)
    while left:
        sizes = sorted(size for size, queue in queues.items() if queue)
        width, batch, longest = sizes[0], [], -1  # step 1; longest: the bucket of the longest member
        while True:
            taken, top, full = [], longest, False
            for size in sizes:  # step 2
                queue = queues[size]
                while queue and reachable[queue[0]] <= width:
                    if len(batch) + len(taken) >= batch_sizes[max(top, size // bucket_width)]:
                        full = True  # full for the longest bucket it would hold (lines 8-15)
                        break
                    taken.append(queue.popleft())
                    top = max(top, size // bucket_width)
                if full:
                    break
            padding = sum(max(0, width - int(lengths[i])) for i in batch + taken)
            if not taken or padding > widen_padding * width * (len(batch) + len(taken)):
                for i in reversed(taken):  # step 3 refused: put them back, close the batch
                    queues[int(lengths[i])].appendleft(i)
                break
            batch, longest = batch + taken, top
            if full or len(batch) == left:
                break
            width = min(int(reachable[queues[size][0]]) for size in sizes if queues[size])  # step 3
        left -= len(batch)
        merged.append(batch)
    return merged


# ---------------------------------------------------------------------------------------------------
# One epoch (Algorithm 2, lines 24-34)
# ---------------------------------------------------------------------------------------------------


def _generator(seed: int, epoch: int) -> torch.Generator:
    """The epoch's only source of randomness, seeded from (seed, epoch)."""
    digest = hashlib.sha256(f"BucketSampler:{seed}:{epoch}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def epoch_batches(spec: BucketSpec, *, seed: int, epoch: int) -> list[list[int]]:
    """All batches of ``epoch`` in order: a pure function of (``spec``, ``seed``, ``epoch``).

    Per bucket, lines 26-33: shuffle the members (line 27), take the epoch's batch size (BatchCap, line 28),
    cut full batches (lines 29-32) and keep the leftovers as the bucket's residual (line 33). Then line 34:
    merge the residuals (RBM, :func:`merge_residual_batches`), and shuffle the order of all batches (not in
    Algorithm 2; the reference code does it too, otherwise an epoch would run from short to long buckets).

    With ``spec.reachable_lengths``, the members of each bucket that can be trimmed down to the bucket's
    floor keep Algorithm 2's random order and the few that cannot (too few stopwords) move behind them,
    ordered by how far above the floor they stay (a stable sort after the shuffle, so ties stay random).
    With ``spec.rbm_by_reachable`` (the default) too, full batches are cut from the trimmable members only,
    and everything else (their leftovers and every member that cannot reach the floor) is merged by
    :func:`merge_by_reachable` into batches the collator can trim to one width. Without it they share the
    bucket's last batches and the residual, and the merging rule stays Algorithm 2's.

    Example:
        >>> spec = BucketSpec([1, 1, 1, 2, 2, 3, 4, 5, 5, 6], bucket_width=2, hwcap=[2, 4, 2, 1], shuffle=False)
        >>> epoch_batches(spec, seed=0, epoch=0)
        [[0, 1], [6, 7], [9], [2, 3, 4, 5], [8]]
    """
    if not isinstance(spec, BucketSpec):
        raise ValueError(f"spec must be a BucketSpec, got {type(spec).__name__}")
    seed, epoch = check_int("seed", seed), check_int("epoch", epoch, 0)
    g = _generator(seed, epoch)
    by_reachable = spec.rbm and spec.rbm_by_reachable and spec.excess is not None
    batch_sizes = [spec._batch_size(bucket, epoch) for bucket in range(spec.num_buckets)]  # line 28
    batches: list[list[int]] = []
    residuals: list[tuple[list[int], int]] = []
    for bucket, indices in enumerate(spec.members):
        members = torch.from_numpy(indices)
        if spec.shuffle and len(members) > 1:  # line 27
            members = members[torch.randperm(len(members), generator=g)]
        batch_size = batch_sizes[bucket]
        if spec.excess is not None and len(members) > 1:  # stable sort: ties keep the shuffle
            excess = torch.from_numpy(spec.excess[members.numpy()])
            members = members[torch.sort(excess, stable=True).indices]
        # Lines 29-32; with rbm_by_reachable only the members that reach the floor make full batches.
        ready = int((spec.excess[members.numpy()] == 0).sum()) if by_reachable else len(members)
        n_full = ready // batch_size * batch_size
        if n_full:
            batches.extend(chunk.tolist() for chunk in members[:n_full].split(batch_size))
        residuals.append((members[n_full:].tolist(), batch_size))  # line 33
    if by_reachable:
        pool = [i for residual, _ in residuals for i in residual]
        batches.extend(merge_by_reachable(pool, spec.lengths, spec.reachable_lengths, batch_sizes,
                                          spec.bucket_width))
    elif spec.rbm:  # line 34
        batches.extend(merge_residual_batches(residuals))
    else:
        batches.extend(residual for residual, _ in residuals if residual)
    if spec.shuffle:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
    return batches
