"""BucketSampler, BatchCap, Residual Batch Merging and Learning Rate Modulation.

Nagarajan & Raghunathan (2023), "TokenDrop + BucketSampler", Algorithm 2. Examples are put in buckets
of similar length (lines 19-23); batches are cut from one bucket at a time (lines 26-33), with a batch
size that grows over the epochs up to what the hardware holds (BatchCap, lines 1-4); the leftovers of
all buckets are merged into as few batches as possible (Residual Batch Merging, lines 5-17). Because
batch sizes now vary from step to step, the learning rate is scaled per batch (LRM, Section 2.2).

Typical use::

    sampler = BucketSampler(lengths=train["length"], bucket_width=5, token_budget=8192, base_batch_size=32)
    loader = DataLoader(train, batch_sampler=sampler, collate_fn=PadToBatchMax(tokenizer))
    modulator = LRModulator(optimizer, base_batch_size=32)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)               # BatchCap and the shuffle both depend on the epoch
        for batch in loader:
            model(**batch).loss.backward()
            modulator.step(len(batch["labels"]))   # instead of optimizer.step()
            scheduler.step(); optimizer.zero_grad()

Compared with the reference code: HWCap comes from a token budget or a profile (:func:`profile_hwcap`),
not a hard-coded list; randomness comes only from a ``torch.Generator`` seeded with (seed, epoch);
``len()`` is exact; the sampler can resume mid-epoch and shard batches across ranks; the LR factor is
applied once per optimizer step and never compounds.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import numpy as np
import torch

from tdnotebooks.padding import PaddingStats, padding_stats

__all__ = [
    "Bucket", "BucketSampler", "LRModulator", "PadToBatchMax", "bucket_upper_lengths", "lr_factor",
    "merge_residual_batches", "profile_hwcap",
]


def _as_array(values: Sequence[int]) -> np.ndarray:
    """A list, tuple, array, tensor or other iterable of per-example values as a numpy array."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values if isinstance(values, (np.ndarray, list, tuple)) else list(values))


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as an int in [low, high] (high inclusive), else a ValueError naming ``name``."""
    allowed = f"[{low}, {high}]" if high is not None else f">= {low}"
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise ValueError(f"{name} must be an int {allowed}, got {value!r}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be an int {allowed}, got {value}")
    return int(value)


# ---------------------------------------------------------------------------------------------------
# Buckets (Algorithm 2, lines 19-23)
# ---------------------------------------------------------------------------------------------------


class Bucket(NamedTuple):
    """One bucket: lengths in ``[min_len, max_len)``; ``hwcap`` is its largest batch (None: unbounded)."""

    min_len: int
    max_len: int  # exclusive
    hwcap: int | None


def bucket_upper_lengths(max_length: int, bucket_width: int = 5) -> list[int]:
    """The longest possible length in each bucket ``[k*w, (k+1)*w)``, for k = 0 .. max_length // w.

    These are the lengths at which :func:`profile_hwcap` measures memory. The last bucket is cut at
    ``max_length``; bucket 0 of width 1 (length 0, always empty) is reported as length 1.
    """
    max_length = _check_int("max_length", max_length, 1)
    bucket_width = _check_int("bucket_width", bucket_width, 1)
    return [max(1, min((k + 1) * bucket_width - 1, max_length)) for k in range(max_length // bucket_width + 1)]


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


# ---------------------------------------------------------------------------------------------------
# BucketSampler
# ---------------------------------------------------------------------------------------------------


class BucketSampler(torch.utils.data.Sampler[list[int]]):
    """Length-bucketed batches with BatchCap and Residual Batch Merging (Algorithm 2); a batch sampler.

    Use as ``DataLoader(ds, batch_sampler=sampler, collate_fn=...)`` and call :meth:`set_epoch` before
    each epoch. Example ``i`` goes to bucket ``lengths[i] // bucket_width``, i.e. ``[k*w, (k+1)*w)``.

    Batch size of bucket ``b`` in epoch ``e`` (BatchCap, lines 1-4)::

        min(HWCap(b), floor(base_batch_size * scaling_factor ** e))      # batch_cap=False: HWCap(b)

    HWCap comes from ``hwcap`` (a list with one size per bucket, or a ``{bucket: size}`` dict whose
    missing buckets are unbounded), or from ``token_budget`` (``max(1, token_budget // longest length
    of the bucket)``), or is unbounded when neither is given.

    Each epoch: shuffle inside every bucket, cut full batches, merge the residuals (``rbm=True``, lines
    5-17; ``rbm=False`` keeps each bucket's residual as its own batch), then shuffle the order of all
    batches. All randomness comes from a ``torch.Generator`` seeded with (``seed``, epoch).

    ``reachable_lengths`` (one int per example, default None = Algorithm 2 exactly) is for TokenDrop +
    BucketSampler: the length each example can be trimmed to, i.e. its length minus all its droppable
    stopword tokens (:func:`tdnotebooks.finetuning.tokendrop.reachable_lengths`). Examples that can be trimmed down to
    their bucket's floor keep Algorithm 2's random order; the few that cannot (too few stopwords) are moved
    behind them, ordered by how far above the floor they stay (a stable sort of ``max(0, reachable -
    floor)`` after the shuffle, so ties stay random). The floor is the bucket's shortest length: its lower
    bound ``k*w`` when some member is that short, higher otherwise (always in bucket 0). Such an example
    would otherwise make a whole batch of trimmable ones wait in padding at its width; now they share
    batches among themselves. Because they come last, a bucket's residual (its leftover, merged by RBM)
    holds them first: which examples are merged is no longer random. Buckets, batch sizes, the number of
    batches and the merging rule are Algorithm 2's. On the bundled data this takes TokenDrop +
    BucketSampler's padding over 3 epochs from 0.8 % / 0.6 % to 0.28 % / 0.42 % (rt_sentiment /
    reviews_long, seed 0, ``python -m tdnotebooks.bench finetune``). Sorting whole buckets by reachable
    length would pad less (0.24 %) but makes batches homogeneous in their stopword share, which cost about
    2 points of dev accuracy in our CPU check (BENCHMARKS.md); this keeps the batches of about 97 % of the
    examples as random as Algorithm 2's. With TokenDrop disabled nothing can be trimmed: do not pass
    reachable lengths then (each bucket would be sorted by length).

    Distributed (``num_replicas`` > 1): the epoch's batch list is padded by repeating its first batches
    until its length is a multiple of ``num_replicas`` (as ``DistributedSampler`` does with examples),
    or, with ``drop_last=True``, its last ``len % num_replicas`` batches are dropped. Rank ``r`` then takes
    batches ``r, r + R, r + 2R, ...``: every rank gets the same number of batches (their sizes differ).
    ``drop_last`` only concerns this remainder (an epoch with fewer batches than ranks then yields
    nothing); the RBM residual batch is always kept.
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
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
        reachable_lengths: Sequence[int] | None = None,
    ) -> None:
        self.lengths = self._check_lengths(lengths)
        self.bucket_width = _check_int("bucket_width", bucket_width, 1)
        longest = int(self.lengths.max())
        self.max_length = longest if max_length is None else _check_int("max_length", max_length, 1)
        if longest > self.max_length:
            where = int(np.argmax(self.lengths > self.max_length))
            raise ValueError(f"lengths must lie in [1, max_length={self.max_length}] (the last bucket), "
                             f"got lengths[{where}] = {int(self.lengths[where])}")
        self.num_buckets = self.max_length // self.bucket_width + 1
        self._hwcaps = self._resolve_hwcap(hwcap, token_budget, longest)
        self.token_budget = token_budget
        self.base_batch_size = _check_int("base_batch_size", base_batch_size, 1)
        if (not isinstance(scaling_factor, numbers.Real) or isinstance(scaling_factor, bool)
                or not 1 <= scaling_factor < math.inf):
            raise ValueError(f"scaling_factor must be a number in [1, inf), got {scaling_factor!r}")
        self.scaling_factor = float(scaling_factor)
        self.batch_cap = bool(batch_cap)
        if not self.batch_cap and any(cap is None for cap in self._hwcaps):
            raise ValueError("batch_cap=False makes HWCap the only limit, so hwcap (for every bucket) or "
                             "token_budget must be given")
        self.rbm, self.shuffle, self.drop_last = bool(rbm), bool(shuffle), bool(drop_last)
        if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.seed = int(seed)
        self.num_replicas = _check_int("num_replicas", num_replicas, 1)
        self.rank = _check_int("rank", rank, 0, self.num_replicas - 1)

        # Lines 19-23: bucket members, kept in index order (the per-epoch shuffle permutes them).
        bucket_ids = self.lengths // self.bucket_width
        order = np.argsort(bucket_ids, kind="stable")
        counts = np.bincount(bucket_ids, minlength=self.num_buckets)
        self._members = [torch.from_numpy(m) for m in np.split(order, np.cumsum(counts)[:-1])]
        # How far above its bucket's floor each example stays when trimmed as far as it can be. The floor is
        # the bucket's shortest length: its lower bound k*w, or higher when no member is that short (bucket 0
        # holds no example of length 0), so that most of every bucket ties at 0.
        self.reachable_lengths = None if reachable_lengths is None else self._check_reachable(reachable_lengths)
        self._excess = None
        if self.reachable_lengths is not None:
            shortest = np.full(self.num_buckets, np.iinfo(np.int64).max)
            np.minimum.at(shortest, bucket_ids, self.lengths)
            self._excess = np.maximum(self.reachable_lengths - shortest[bucket_ids], 0)

        self.epoch = 0
        self._start = 0  # where the next __iter__ begins (set by load_state_dict)
        self._position = 0  # batches of this epoch handed out so far (for state_dict)
        self._cache: tuple[int, list[list[int]]] | None = None

    @staticmethod
    def _check_lengths(lengths: Sequence[int]) -> np.ndarray:
        arr = _as_array(lengths)
        if arr.size == 0:
            raise ValueError("lengths is empty: need at least one example length")
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise ValueError(f"lengths must be a flat sequence of ints >= 1, got dtype {arr.dtype} and "
                             f"shape {arr.shape}")
        if arr.min() < 1:
            where = int(np.argmin(arr))
            raise ValueError(f"lengths must be ints >= 1 (tokens incl. special ones), got lengths[{where}] "
                             f"= {int(arr[where])}")
        return arr.astype(np.int64)

    def _check_reachable(self, reachable: Sequence[int]) -> np.ndarray:
        arr = _as_array(reachable)
        n = len(self.lengths)
        if arr.ndim != 1 or arr.size != n or arr.dtype.kind not in "iu":
            raise ValueError(f"reachable_lengths must be a flat sequence of ints, one per example ({n}), got "
                             f"dtype {arr.dtype} and shape {arr.shape}")
        bad = np.nonzero((arr < 0) | (arr > self.lengths))[0]
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"reachable_lengths[{i}] must be in [0, lengths[{i}]] = [0, {int(self.lengths[i])}], "
                             f"got {int(arr[i])}")
        return arr.astype(np.int64)

    def _resolve_hwcap(self, hwcap: Any, token_budget: Any, longest: int) -> list[int | None]:
        """Per-bucket HWCap (None = unbounded) from ``hwcap`` or ``token_budget``."""
        n = self.num_buckets
        if hwcap is not None and token_budget is not None:
            raise ValueError("give either hwcap (per-bucket batch sizes) or token_budget (tokens per batch), "
                             "not both")
        if token_budget is not None:
            token_budget = _check_int("token_budget", token_budget, 1)
            if token_budget < longest:
                raise ValueError(f"token_budget must be >= the longest length ({longest}) so every example "
                                 f"fits in a batch, got {token_budget}")
            return [max(1, token_budget // upper) for upper in bucket_upper_lengths(self.max_length,
                                                                                    self.bucket_width)]
        if hwcap is None:
            return [None] * n
        if isinstance(hwcap, np.ndarray):
            hwcap = hwcap.tolist()
        if isinstance(hwcap, Mapping):
            caps: list[int | None] = [None] * n
            for bucket, size in hwcap.items():
                bucket = _check_int("hwcap key (bucket index)", bucket, 0, n - 1)
                caps[bucket] = _check_int(f"hwcap[{bucket}]", size, 1)
            return caps
        if isinstance(hwcap, (numbers.Number, str, bytes)) or not isinstance(hwcap, Sequence):
            raise ValueError(f"hwcap must be a list with one batch size per bucket ({n} here) or a "
                             f"{{bucket: size}} dict; for a token budget use token_budget=, got {hwcap!r}")
        if len(hwcap) != n:
            raise ValueError(f"hwcap must have one entry per bucket: {n} buckets of width {self.bucket_width} "
                             f"up to max_length={self.max_length}, got {len(hwcap)} entries")
        return [_check_int(f"hwcap[{i}]", size, 1) for i, size in enumerate(hwcap)]

    # -- Buckets and batch sizes ---------------------------------------------------------------------

    @property
    def buckets(self) -> list[Bucket]:
        """``Bucket(min_len, max_len_exclusive, hwcap)`` for every bucket (hwcap None: unbounded)."""
        w = self.bucket_width
        return [Bucket(k * w, min((k + 1) * w, self.max_length + 1), cap) for k, cap in enumerate(self._hwcaps)]

    @property
    def bucket_counts(self) -> list[int]:
        """Number of examples in each bucket."""
        return [len(m) for m in self._members]

    def bucket_of(self, length: int) -> int:
        """Index of the bucket holding sequences of ``length`` tokens (lines 21-22)."""
        length = _check_int("length", length, 1, self.max_length)
        return length // self.bucket_width

    def batch_size_for(self, bucket: int, epoch: int | None = None) -> int:
        """BatchCap, lines 1-4: ``min(HWCap, floor(base_batch_size * scaling_factor ** epoch))``."""
        bucket = _check_int("bucket", bucket, 0, self.num_buckets - 1)
        epoch = self.epoch if epoch is None else _check_int("epoch", epoch, 0)
        hwcap = self._hwcaps[bucket]
        if not self.batch_cap:
            return hwcap
        try:
            epoch_cap = math.floor(self.base_batch_size * self.scaling_factor ** epoch)
        except OverflowError:  # astronomically many epochs: the cap no longer binds
            epoch_cap = None
        if epoch_cap is None:
            return hwcap if hwcap is not None else len(self.lengths)
        return epoch_cap if hwcap is None else min(hwcap, epoch_cap)

    # -- The epoch's batches --------------------------------------------------------------------------

    def _generator(self, epoch: int) -> torch.Generator:
        digest = hashlib.sha256(f"BucketSampler:{self.seed}:{epoch}".encode()).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))

    def epoch_batches(self, epoch: int | None = None) -> list[list[int]]:
        """All batches of ``epoch`` (default: the current one) in order, before sharding across ranks.

        Lines 26-33 per bucket (shuffle, BatchCap, full batches, residual), line 34 (RBM), then a global
        shuffle of the batch order (not in Algorithm 2; the reference code does it too, otherwise an
        epoch would run through the buckets from short to long). Computed once per epoch and cached.
        """
        epoch = self.epoch if epoch is None else _check_int("epoch", epoch, 0)
        return [list(batch) for batch in self._batches(epoch)]

    def _batches(self, epoch: int) -> list[list[int]]:
        """The cached plan of ``epoch`` (not copied: callers must not modify it)."""
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, self._plan(epoch))
        return self._cache[1]

    def _plan(self, epoch: int) -> list[list[int]]:
        g = self._generator(epoch)
        batches: list[list[int]] = []
        residuals: list[tuple[list[int], int]] = []
        for bucket, members in enumerate(self._members):
            if self.shuffle and len(members) > 1:  # line 27
                members = members[torch.randperm(len(members), generator=g)]
            if self._excess is not None and len(members) > 1:  # stable sort: ties keep the shuffle
                excess = torch.from_numpy(self._excess[members.numpy()])
                members = members[torch.sort(excess, stable=True).indices]
            batch_size = self.batch_size_for(bucket, epoch)  # line 28
            n_full = len(members) // batch_size * batch_size
            if n_full:  # lines 29-32
                batches.extend(chunk.tolist() for chunk in members[:n_full].split(batch_size))
            residuals.append((members[n_full:].tolist(), batch_size))  # line 33
        if self.rbm:  # line 34
            batches.extend(merge_residual_batches(residuals))
        else:
            batches.extend(residual for residual, _ in residuals if residual)
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        return batches

    def _rank_batches(self, epoch: int) -> list[list[int]]:
        """This rank's share: pad (or, with drop_last, trim) to a multiple of num_replicas, then stride."""
        batches = self._batches(epoch)
        replicas = self.num_replicas
        if self.drop_last:
            batches = batches[: len(batches) // replicas * replicas]
        elif len(batches) % replicas:
            extra = replicas - len(batches) % replicas
            batches = batches + [batches[i % len(batches)] for i in range(extra)]
        return batches[self.rank::replicas]

    def num_batches(self, epoch: int | None = None) -> int:
        """Batches this rank yields in a whole ``epoch``: size LR schedules with the sum over epochs."""
        return len(self._rank_batches(self.epoch if epoch is None else _check_int("epoch", epoch, 0)))

    def padding_stats(self, epoch: int | None = None) -> PaddingStats:
        """Real vs padded tokens of ``epoch`` when every batch is padded to its longest member."""
        return padding_stats(self.lengths, self.epoch_batches(epoch))

    # -- Sampler protocol, epochs, resuming -----------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (BatchCap and shuffling depend on it). Keeps a pending resume of this epoch."""
        epoch = _check_int("epoch", epoch, 0)
        if epoch != self.epoch:
            self.epoch, self._start, self._position = epoch, 0, 0

    def __len__(self) -> int:
        """Exact number of batches the next iteration yields (the rest of the epoch after a resume)."""
        return len(self._rank_batches(self.epoch)) - self._start

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._rank_batches(self.epoch)
        start, self._start = self._start, 0
        self._position = start
        for batch in batches[start:]:
            self._position += 1
            yield list(batch)

    def _fingerprint(self) -> str:
        config = (self.bucket_width, self.max_length, tuple(self._hwcaps), self.base_batch_size,
                  self.scaling_factor, self.batch_cap, self.rbm, self.shuffle, self.num_replicas, self.drop_last)
        order = b"" if self._excess is None else b"reachable" + self._excess.tobytes()
        return hashlib.sha256(repr(config).encode() + self.lengths.tobytes() + order).hexdigest()[:16]

    def state_dict(self, batches_done: int | None = None) -> dict[str, Any]:
        """Where this rank is: epoch and batches already yielded in it, plus seed and config fingerprint.

        A ``DataLoader`` with workers fetches batches ahead of the training loop, so the sampler's count
        can run ahead of the steps actually taken; pass the loop's own count as ``batches_done`` then.
        """
        done = self._position if batches_done is None else _check_int("batches_done", batches_done, 0)
        return {"epoch": self.epoch, "batches_yielded": done, "seed": self.seed, "rank": self.rank,
                "num_replicas": self.num_replicas, "fingerprint": self._fingerprint()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume: the next iteration yields exactly the batches of ``state["epoch"]`` not yet yielded."""
        missing = {"epoch", "batches_yielded", "seed", "rank", "num_replicas", "fingerprint"} - set(state)
        if missing:
            raise ValueError(f"state is missing {sorted(missing)}; pass what state_dict() returned")
        if state["seed"] != self.seed:
            raise ValueError(f"state was saved with seed={state['seed']}, this sampler has seed={self.seed}")
        if (state["num_replicas"], state["rank"]) != (self.num_replicas, self.rank):
            raise ValueError(f"state was saved by rank {state['rank']} of {state['num_replicas']}, this "
                             f"sampler is rank {self.rank} of {self.num_replicas}")
        if state["fingerprint"] != self._fingerprint():
            raise ValueError("state was saved by a sampler with other lengths or settings (bucket_width, "
                             "max_length, hwcap/token_budget, base_batch_size, scaling_factor, batch_cap, "
                             "rbm, shuffle, drop_last, reachable_lengths): its batches would differ")
        epoch = _check_int("state['epoch']", state["epoch"], 0)
        total = len(self._rank_batches(epoch))
        done = _check_int("state['batches_yielded']", state["batches_yielded"], 0, total)
        self.epoch, self._start, self._position = epoch, done, done


# ---------------------------------------------------------------------------------------------------
# HWCap by profiling
# ---------------------------------------------------------------------------------------------------


def _largest_fitting_batch(measure: Callable[[int], int | None], memory_limit: float, probe_batch: int,
                           max_batch: int) -> int:
    """Largest batch in [1, max_batch] whose peak memory ``measure(b)`` (None: out of memory) fits.

    Measures ``probe_batch`` and ``2 * probe_batch``, extrapolates linearly (peak memory is affine in
    the batch size at a fixed length), checks the guess and the batch above it, and bisects whatever
    remains. Assumes the peak grows with the batch size. Returns 0 when not even batch 1 fits.
    """
    good, bad = 0, max_batch + 1  # largest batch known to fit, smallest known not to
    peaks: dict[int, int] = {}

    def attempt(batch: int) -> None:
        nonlocal good, bad
        if not good < batch < bad:
            return
        peak = measure(batch)
        if peak is not None and peak <= memory_limit:
            good, peaks[batch] = batch, peak
        else:
            bad = batch

    attempt(min(probe_batch, max_batch))
    attempt(min(2 * probe_batch, max_batch))
    if len(peaks) == 2:
        (b1, p1), (b2, p2) = sorted(peaks.items())
        slope = (p2 - p1) / (b2 - b1)
        guess = bad - 1 if slope <= 0 else b2 + math.floor((memory_limit - p2) / slope)
        guess = max(good + 1, min(guess, bad - 1))
        attempt(guess)
        attempt(guess + 1)
    while bad - good > 1:
        attempt((good + bad) // 2)
    return good


def _train_step(model: torch.nn.Module, batch: int, length: int, vocab_size: int, device: torch.device,
                amp_dtype: torch.dtype | None) -> None:
    """One forward + backward on a dummy (batch, length) input; its tensors die when this returns."""
    input_ids = torch.arange(batch * length, device=device).remainder_(vocab_size).view(batch, length)
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        out = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
        loss = getattr(out, "loss", None)
        if loss is None:
            loss = (out.logits if hasattr(out, "logits") else out[0]).float().mean()
    loss.backward()


def _measure_peak(model: torch.nn.Module, batch: int, length: int, vocab_size: int, device: torch.device,
                  amp_dtype: torch.dtype | None) -> int | None:
    """Peak allocated bytes of one forward + backward (gradients included); None if it ran out of memory."""
    model.zero_grad(set_to_none=True)
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    try:
        _train_step(model, batch, length, vocab_size, device, amp_dtype)
        torch.cuda.synchronize(device)
        peak: int | None = int(torch.cuda.max_memory_allocated(device))
    except torch.cuda.OutOfMemoryError:
        peak = None  # leaving the except block frees the traceback and the tensors it held
    model.zero_grad(set_to_none=True)
    torch.cuda.empty_cache()
    return peak


def profile_hwcap(
    model: torch.nn.Module,
    bucket_lengths: Sequence[int],
    device: str | torch.device | None = None,
    *,
    memory_limit: int | None = None,
    max_batch: int = 4096,
    probe_batch: int = 8,
    vocab_size: int | None = None,
    amp_dtype: torch.dtype | None = None,
    cpu_token_budget: int = 4096,
) -> list[int]:
    """HWCap per bucket: the largest batch whose forward + backward fits in GPU memory.

    ``bucket_lengths``: each bucket's longest length, e.g. ``bucket_upper_lengths(128, 5)``; the result
    (one batch size per entry) is ready for ``BucketSampler(hwcap=...)``. On CUDA the model (moved to
    ``device``, default: where its parameters are) runs in train mode on dummy ``(batch, length)`` inputs
    and ``torch.cuda.max_memory_allocated`` is read; see :func:`_largest_fitting_batch` for the search.
    ``memory_limit`` (bytes of peak allocated memory) defaults to what is allocated now plus 90 % of the
    free memory. Optimizer state is not created by the probe: build it first (one step) or lower the
    limit. The caps are made non-increasing in length. Gradients of ``model`` are cleared.

    Elsewhere (CPU, MPS) memory cannot be measured: a ``UserWarning`` says so and the caps come from a
    token budget, ``max(1, cpu_token_budget // length)`` (capped at ``max_batch``).
    """
    if len(bucket_lengths) == 0:
        raise ValueError("bucket_lengths is empty: pass each bucket's longest length")
    lengths = [_check_int(f"bucket_lengths[{i}]", n, 1) for i, n in enumerate(bucket_lengths)]
    max_batch = _check_int("max_batch", max_batch, 1)
    probe_batch = _check_int("probe_batch", probe_batch, 1)
    cpu_token_budget = _check_int("cpu_token_budget", cpu_token_budget, 1)
    if memory_limit is not None and (not isinstance(memory_limit, numbers.Real) or memory_limit <= 0):
        raise ValueError(f"memory_limit must be a number of bytes > 0, got {memory_limit!r}")
    if device is None:
        device = next(iter(model.parameters()), torch.empty(0)).device
    device = torch.device(device)

    if device.type != "cuda":
        warnings.warn(f"profile_hwcap cannot measure memory on device {device.type!r}; falling back to a "
                      f"token budget: HWCap = cpu_token_budget ({cpu_token_budget}) // length", UserWarning,
                      stacklevel=2)
        return [max(1, min(max_batch, cpu_token_budget // n)) for n in lengths]

    if vocab_size is None:
        vocab_size = getattr(getattr(model, "config", None), "vocab_size", None)
        if vocab_size is None:
            raise ValueError("vocab_size is needed for the dummy inputs: the model has no config.vocab_size")
    vocab_size = _check_int("vocab_size", vocab_size, 1)
    model.to(device)
    was_training = model.training
    model.train()
    if memory_limit is None:
        torch.cuda.empty_cache()
        free, _total = torch.cuda.mem_get_info(device)
        memory_limit = torch.cuda.memory_allocated(device) + 0.9 * free
    caps: dict[int, int] = {}
    ceiling = max_batch  # a longer length never gets a larger batch than a shorter one
    try:
        for length in sorted(set(lengths)):
            def measure(batch: int, length: int = length) -> int | None:
                return _measure_peak(model, batch, length, vocab_size, device, amp_dtype)

            cap = _largest_fitting_batch(measure, memory_limit, probe_batch, ceiling)
            if cap == 0:
                raise ValueError(f"not even a batch of 1 sequence of length {length} fits in "
                                 f"memory_limit={memory_limit / 2**30:.2f} GiB")
            caps[length] = ceiling = cap
    finally:
        model.train(was_training)
    return [caps[n] for n in lengths]


# ---------------------------------------------------------------------------------------------------
# Learning Rate Modulation
# ---------------------------------------------------------------------------------------------------


def lr_factor(batch_size: int, base_batch_size: int) -> float:
    """LRM: ``sqrt(batch_size / base_batch_size)``, so ``lr(batch) = base_lr * lr_factor(...)``."""
    batch_size = _check_int("batch_size", batch_size, 1)
    base_batch_size = _check_int("base_batch_size", base_batch_size, 1)
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
        self.optimizer = optimizer
        self.base_batch_size = _check_int("base_batch_size", base_batch_size, 1)
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


# ---------------------------------------------------------------------------------------------------
# Baseline collator: pad to the batch's longest member, and count what that costs
# ---------------------------------------------------------------------------------------------------


class PadToBatchMax:
    """Collate tokenized examples into tensors padded to the longest one, counting real vs slot tokens.

    Examples are dicts with ``input_ids`` and optionally ``attention_mask``, ``token_type_ids`` and
    ``label``/``labels`` (returned as ``labels``); other keys are ignored. ``pad`` is a pad token id or
    a tokenizer. Counts accumulate over calls (``real_tokens``, ``slot_tokens``, ``num_batches``,
    :attr:`stats`; :meth:`reset_stats`, as in every collator of the package). They are made where
    collation runs: in the main process only with ``num_workers=0``.
    """

    def __init__(self, pad: int | Any, pad_to_multiple_of: int | None = None) -> None:
        pad_id = pad if isinstance(pad, numbers.Integral) else getattr(pad, "pad_token_id", None)
        if pad_id is None:
            raise ValueError(f"pad must be a pad token id or a tokenizer with a pad_token_id, got {pad!r}")
        self.pad_token_id = _check_int("pad", pad_id, 0)
        self.pad_to_multiple_of = (None if pad_to_multiple_of is None
                                   else _check_int("pad_to_multiple_of", pad_to_multiple_of, 1))
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
