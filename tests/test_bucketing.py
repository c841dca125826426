"""Tests for Algorithm 2 and around it: the pure epoch plan (tdnotebooks.finetuning.planning) and the BucketSampler
that serves it (bucketing), BatchCap, RBM, LRM (lrm), HWCap profiling (hwcap), collation (collate)."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tdnotebooks.finetuning.bucketing import BucketSampler
from tdnotebooks.finetuning.collate import PadToBatchMax
from tdnotebooks.finetuning.hwcap import _largest_fitting_batch, profile_hwcap
from tdnotebooks.finetuning.lrm import LRModulator, lr_factor
from tdnotebooks.finetuning.planning import (
    Bucket,
    BucketSpec,
    bucket_upper_lengths,
    epoch_batches,
    merge_residual_batches,
)
from tdnotebooks.padding import padding_stats, random_batches

FAST = settings(max_examples=60, deadline=None, database=None)


# ---------------------------------------------------------------------------------------------------
# Random configurations, and the spec's batch size computed independently of the sampler
# ---------------------------------------------------------------------------------------------------


@dataclass
class Config:
    kwargs: dict
    epoch: int

    @property
    def lengths(self) -> list[int]:
        return self.kwargs["lengths"]

    @property
    def width(self) -> int:
        return self.kwargs["bucket_width"]

    @property
    def max_length(self) -> int:
        return self.kwargs["max_length"] or max(self.lengths)

    @property
    def num_buckets(self) -> int:
        return self.max_length // self.width + 1

    def bucket(self, index: int) -> int:
        return self.lengths[index] // self.width

    def hwcap(self, b: int) -> float:
        kw = self.kwargs
        if kw.get("token_budget") is not None:
            longest = max(1, min((b + 1) * self.width - 1, self.max_length))
            return max(1, kw["token_budget"] // longest)
        caps = kw.get("hwcap")
        if caps is None:
            return math.inf
        if isinstance(caps, dict):
            return caps.get(b, math.inf)
        return caps[b]

    def batch_size(self, b: int) -> int:
        """BatchCap: min(HWCap, floor(base * scaling ** epoch)), or HWCap with batch_cap=False."""
        kw = self.kwargs
        if not kw.get("batch_cap", True):
            return self.hwcap(b)
        return min(self.hwcap(b), math.floor(kw["base_batch_size"] * kw["scaling_factor"] ** self.epoch))


@st.composite
def configs(draw, max_size: int = 120) -> Config:
    lengths = draw(st.lists(st.integers(1, 40), min_size=1, max_size=max_size))
    width = draw(st.integers(1, 8))
    max_length = draw(st.sampled_from([None, max(lengths) + draw(st.integers(0, 6))]))
    kwargs = dict(lengths=lengths, bucket_width=width, max_length=max_length,
                  base_batch_size=draw(st.integers(1, 16)), scaling_factor=draw(st.sampled_from([1, 1.5, 2.0, 3])),
                  rbm=draw(st.booleans()), seed=draw(st.integers(0, 2**40)))
    num_buckets = (max_length or max(lengths)) // width + 1
    cap_kind = draw(st.sampled_from(["list", "dict", "budget", "none"]))
    if cap_kind == "list":
        kwargs["hwcap"] = draw(st.lists(st.integers(1, 24), min_size=num_buckets, max_size=num_buckets))
    elif cap_kind == "dict":
        kwargs["hwcap"] = draw(st.dictionaries(st.integers(0, num_buckets - 1), st.integers(1, 24)))
    elif cap_kind == "budget":
        kwargs["token_budget"] = draw(st.integers(max(lengths), 300))
    if cap_kind in ("list", "budget"):
        kwargs["batch_cap"] = draw(st.booleans())
    return Config(kwargs, draw(st.integers(0, 5)))


def make(cfg: Config, **extra) -> BucketSampler:
    sampler = BucketSampler(**{**cfg.kwargs, **extra})
    sampler.set_epoch(cfg.epoch)
    return sampler


# ---------------------------------------------------------------------------------------------------
# Property tests: Algorithm 2's guarantees on random inputs
# ---------------------------------------------------------------------------------------------------


@FAST
@given(cfg=configs())
def test_epoch_is_a_partition_with_capped_batches(cfg):
    sampler = make(cfg)
    expected_len = len(sampler)
    batches = list(sampler)
    assert expected_len == len(batches)
    assert sorted(i for b in batches for i in b) == list(range(len(cfg.lengths)))
    for batch in batches:
        top = max(cfg.bucket(i) for i in batch)  # bucket of the longest member
        assert 1 <= len(batch) <= cfg.batch_size(top)


@FAST
@given(cfg=configs())
def test_without_rbm_every_bucket_gives_full_batches_plus_its_own_residual(cfg):
    batches = list(make(cfg, rbm=False))
    for b in range(cfg.num_buckets):
        n = sum(1 for i in range(len(cfg.lengths)) if cfg.bucket(i) == b)
        mine = [batch for batch in batches if cfg.bucket(batch[0]) == b]
        assert all(cfg.bucket(i) == b for batch in mine for i in batch)  # one bucket per batch
        if n:
            size = min(cfg.batch_size(b), n)
            q, r = divmod(n, size)
            assert sorted(len(batch) for batch in mine) == [r] * (r > 0) + [size] * q


@FAST
@given(cfg=configs())
def test_rbm_leaves_at_most_one_residual_batch(cfg):
    """Algorithm 2 with RBM: each bucket's full batches stay single-bucket, and every batch is "full":

    it holds exactly its top bucket's batch size (lines 13-15), or it was closed before a longer bucket
    whose batch size it already reached (lines 8-10) -- except at most one, the final batch (lines 16-17).
    """
    batches = list(make(cfg, rbm=True))
    nb = cfg.num_buckets
    sizes = [cfg.batch_size(b) for b in range(nb)]
    short = []
    for batch in batches:
        top = max(cfg.bucket(i) for i in batch)
        full = len(batch) == sizes[top] or any(len(batch) >= sizes[c] for c in range(top + 1, nb))
        if not full:
            short.append(batch)
    assert len(short) <= 1
    for b in range(nb):
        n = sum(1 for i in range(len(cfg.lengths)) if cfg.bucket(i) == b)
        single = [x for x in batches if len(x) == sizes[b] and all(cfg.bucket(i) == b for i in x)]
        assert len(single) >= n // sizes[b]


@FAST
@given(cfg=configs())
def test_same_seed_and_epoch_give_identical_batches(cfg):
    first = list(make(cfg))
    assert list(make(cfg)) == first  # a fresh sampler
    sampler = make(cfg)
    sampler.set_epoch(cfg.epoch + 1)
    sampler.set_epoch(cfg.epoch)
    assert list(sampler) == first  # after visiting another epoch (cache invalidated)
    assert list(sampler) == first  # iterating twice


@FAST
@given(cfg=configs(), data=st.data())
def test_resume_mid_epoch_yields_exactly_the_remaining_batches(cfg, data):
    full = list(make(cfg))
    k = data.draw(st.integers(0, len(full)))
    sampler = make(cfg)
    it = iter(sampler)
    assert list(itertools.islice(it, k)) == full[:k]
    state = sampler.state_dict()
    assert state["epoch"] == cfg.epoch and state["batches_yielded"] == k

    resumed = BucketSampler(**cfg.kwargs)
    resumed.load_state_dict(state)
    resumed.set_epoch(cfg.epoch)  # the usual loop calls set_epoch again: the resume must survive it
    assert len(resumed) == len(full) - k
    assert list(resumed) == full[k:]
    assert list(resumed) == full  # the following iteration is a whole epoch again


@pytest.mark.parametrize("sharding", [dict(num_replicas=2), dict(rank=1), dict(drop_last=True)])
def test_the_sampler_does_not_shard_and_says_where_sharding_lives(sharding):
    """Under DDP every rank iterates the same global batches; ShardedCollator splits each one's rows."""
    with pytest.raises(ValueError, match=rf"takes no {next(iter(sharding))}: it does not shard.*ShardedCollator"):
        BucketSampler([3, 4, 8], **sharding)


# ---------------------------------------------------------------------------------------------------
# The pure epoch plan: the sampler serves exactly epoch_batches(spec, seed, epoch)
# ---------------------------------------------------------------------------------------------------

SPEC_KEYS = ("bucket_width", "max_length", "hwcap", "token_budget", "base_batch_size", "scaling_factor",
             "batch_cap", "rbm", "shuffle", "reachable_lengths")


@FAST
@given(case=st.tuples(configs(), st.booleans()), seeds=st.lists(st.integers(0, 2**40), min_size=1, max_size=3))
def test_the_sampler_yields_the_pure_plan_for_every_epoch_and_seed(case, seeds):
    cfg, with_reachable = case
    settings = {k: v for k, v in cfg.kwargs.items() if k in SPEC_KEYS}
    if with_reachable:
        settings["reachable_lengths"] = [n // 2 for n in cfg.lengths]
    spec = BucketSpec(cfg.lengths, **settings)
    for seed in seeds:
        sampler = BucketSampler(cfg.lengths, **settings, seed=seed)
        for epoch in range(4):
            sampler.set_epoch(epoch)
            planned = epoch_batches(spec, seed=seed, epoch=epoch)
            assert list(sampler) == planned == sampler.epoch_batches()
            assert epoch_batches(spec, seed=seed, epoch=epoch) == planned  # pure: same inputs, same batches


def test_the_pure_plan_checks_seed_and_epoch():
    spec = BucketSpec([3, 4, 9])
    with pytest.raises(ValueError, match="epoch must be an int >= 0"):
        epoch_batches(spec, seed=0, epoch=-1)
    with pytest.raises(ValueError, match="seed must be an int"):
        epoch_batches(spec, seed=0.5, epoch=0)
    assert spec.batch_size(0, 3) == 32 * 8 and spec.bucket_counts == [2, 1]


# ---------------------------------------------------------------------------------------------------
# reachable_lengths (TokenDrop + BucketSampler: examples with too few stopwords share batches)
# ---------------------------------------------------------------------------------------------------


@st.composite
def configs_with_reachable(draw) -> tuple[Config, list[int]]:
    cfg = draw(configs())
    reachable = [draw(st.integers(0, n)) for n in cfg.lengths]
    return cfg, reachable


def excess(cfg: Config, reachable: list[int], i: int) -> int:
    """How far above its bucket's floor (the bucket's shortest length) example i stays when trimmed as far as
    it can be."""
    shortest = min(cfg.lengths[j] for j in range(len(reachable)) if cfg.bucket(j) == cfg.bucket(i))
    return max(0, reachable[i] - shortest)


@FAST
@given(case=configs_with_reachable())
def test_reachable_lengths_change_who_shares_a_batch_not_the_batch_sizes(case):
    """With Algorithm 2's merging (rbm_by_reachable=False) only the order inside each bucket changes:
    Algorithm 2's batch sizes (full, residual, merged) stay. The default merging is tested in
    test_padding_any_corpus.py."""
    cfg, reachable = case
    sampler = make(cfg, reachable_lengths=reachable, rbm_by_reachable=False)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(cfg.lengths)))
    assert sorted(map(len, batches)) == sorted(map(len, make(cfg).epoch_batches()))
    assert list(make(cfg, reachable_lengths=reachable, rbm_by_reachable=False)) == batches  # (seed, epoch)


@FAST
@given(case=configs_with_reachable())
def test_examples_that_cannot_reach_their_bucket_bound_come_last_in_their_bucket(case):
    """The stable sort happens before batches are cut: a bucket's batches hold consecutive ranges of the
    excess over the bucket's lower bound, so every example that can reach the bound is batched before any
    that cannot."""
    cfg, reachable = case
    batches = make(cfg, reachable_lengths=reachable, rbm=False).epoch_batches()
    for b in range(cfg.num_buckets):
        mine = sorted(([excess(cfg, reachable, i) for i in batch] for batch in batches if cfg.bucket(batch[0]) == b),
                      key=lambda values: (min(values), max(values)))  # ties on min: [0, 0] before [0, 2]
        for low, high in itertools.pairwise(mine):
            assert max(low) <= min(high)


@FAST
@given(case=configs_with_reachable(), data=st.data())
def test_reachable_lengths_resume_and_shard_like_algorithm_2(case, data):
    cfg, reachable = case
    full = make(cfg, reachable_lengths=reachable).epoch_batches()
    k = data.draw(st.integers(0, len(full)))
    first = make(cfg, reachable_lengths=reachable)
    taken = list(itertools.islice(iter(first), k))
    resumed = make(cfg, reachable_lengths=reachable)
    resumed.load_state_dict(first.state_dict())
    assert taken + list(resumed) == full


def test_the_floor_is_the_buckets_shortest_length():
    # bucket 0 (lengths 0-4) never holds length 0: its floor is its shortest length, 3. Every example that can
    # be trimmed to 3 keeps Algorithm 2's random place; only index 6 (4 tokens, no stopword) comes last.
    lengths, reachable = [4, 4, 4, 4, 3, 3, 4], [2, 2, 3, 2, 2, 3, 4]
    kwargs = dict(bucket_width=5, base_batch_size=2, scaling_factor=1, rbm=False)
    plain = BucketSampler(lengths, **kwargs)
    sampler = BucketSampler(lengths, reachable_lengths=reachable, **kwargs)
    assert [6] in sampler.epoch_batches(0)  # 7 examples, batches of 2: the last one cut is the residual [6]
    assert BucketSampler(lengths[:6], reachable_lengths=reachable[:6], **kwargs).epoch_batches(0) == \
        BucketSampler(lengths[:6], **kwargs).epoch_batches(0)
    assert len({tuple(map(tuple, sampler.epoch_batches(e))) for e in range(8)}) > 1  # the rest stays random
    assert any([6] not in plain.epoch_batches(e) for e in range(8))  # without it, 6 lands anywhere


@FAST
@given(cfg=configs())
def test_when_every_example_reaches_its_bucket_bound_the_batches_are_algorithm_2s(cfg):
    reachable = [cfg.bucket(i) * cfg.width for i in range(len(cfg.lengths))]  # all exactly at the bound
    plain = make(cfg).epoch_batches()
    assert make(cfg, reachable_lengths=reachable, rbm_by_reachable=False).epoch_batches() == plain
    assert make(cfg, reachable_lengths=[0] * len(cfg.lengths), rbm_by_reachable=False).epoch_batches() == plain

    # The default cuts the same full batches from every bucket; only the leftovers are merged otherwise.
    def full(batches: list[list[int]]) -> list[list[int]]:
        return sorted(b for b in batches if len({cfg.bucket(i) for i in b}) == 1
                      and len(b) == cfg.batch_size(cfg.bucket(b[0])))

    assert full(make(cfg, reachable_lengths=reachable).epoch_batches()) == full(plain)


# ---------------------------------------------------------------------------------------------------
# BatchCap, buckets, RBM by hand
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("epoch, expected", [(0, [4, 4, 4, 3]), (1, [8, 8, 6, 3]), (2, [16, 10, 6, 3]),
                                             (5, [20, 10, 6, 3])])
def test_batch_cap_is_min_of_hwcap_and_scaled_base(epoch, expected):
    sampler = BucketSampler([1, 5, 9, 12], bucket_width=4, hwcap=[20, 10, 6, 3], base_batch_size=4,
                            scaling_factor=2.0)
    assert [sampler.batch_size_for(b, epoch) for b in range(4)] == expected
    sampler.set_epoch(epoch)
    assert [sampler.batch_size_for(b) for b in range(4)] == expected


def test_batch_cap_floors_fractional_caps_and_can_be_switched_off():
    lengths = [3] * 100
    sampler = BucketSampler(lengths, hwcap=[64], base_batch_size=5, scaling_factor=1.5, rbm=False)
    assert [sampler.batch_size_for(0, e) for e in range(4)] == [5, 7, 11, 16]  # 5, 7.5, 11.25, 16.875
    sampler.set_epoch(2)
    assert sorted({len(b) for b in sampler}) == [1, 11]  # 9 batches of 11 and the residual 1
    fixed = BucketSampler(lengths, hwcap=[64], base_batch_size=5, scaling_factor=1)
    assert {fixed.batch_size_for(0, e) for e in range(6)} == {5}
    off = BucketSampler(lengths, hwcap=[64], batch_cap=False, rbm=False)
    assert sorted(len(b) for b in off) == [36, 64]


def test_token_budget_sets_hwcap_from_each_buckets_longest_length():
    sampler = BucketSampler([1, 7, 12], bucket_width=5, max_length=12, token_budget=60)
    assert sampler.buckets == [Bucket(0, 5, 15), Bucket(5, 10, 6), Bucket(10, 13, 5)]  # 60 // 4, 60 // 9, 60 // 12
    assert bucket_upper_lengths(12, 5) == [4, 9, 12]
    assert bucket_upper_lengths(128, 5)[-2:] == [124, 128] and len(bucket_upper_lengths(128, 5)) == 26
    assert [sampler.bucket_of(n) for n in (1, 4, 5, 9, 10, 12)] == [0, 0, 1, 1, 2, 2]
    assert sampler.bucket_counts == [1, 1, 1]
    dict_caps = BucketSampler([1, 7, 12], bucket_width=5, hwcap={1: 3})
    assert [b.hwcap for b in dict_caps.buckets] == [None, 3, None]
    with pytest.raises(ValueError, match="length"):
        sampler.bucket_of(13)


def test_merge_residual_batches_by_hand():
    # Lines 13-15 close a batch when it reaches the current bucket's size (4, then 2, 2, 1); an empty
    # residual passes; the last bucket's single sample closes a batch of its size 1.
    residuals = [([0, 1, 2], 4), ([3, 4], 4), ([5, 6, 7], 2), ([], 2), ([8], 1)]
    assert merge_residual_batches(residuals) == [[0, 1, 2, 3], [4, 5], [6, 7], [8]]
    # Lines 8-10: three samples already reach the next bucket's size 2, so they form a batch before it.
    assert merge_residual_batches([([0, 1, 2], 5), ([3], 2)]) == [[0, 1, 2], [3]]
    # Lines 16-17: whatever is left at the end is the one residual batch.
    assert merge_residual_batches([([0], 8), ([1, 2], 8)]) == [[0, 1, 2]]
    assert merge_residual_batches([([], 3)]) == []


def test_bucket_sampler_follows_algorithm_2_on_a_small_example():
    # width 2 -> buckets [0,2) idx 0-2, [2,4) idx 3-5, [4,6) idx 6-8, [6,7) idx 9; sizes 2, 4, 2, 1.
    lengths = [1, 1, 1, 2, 2, 3, 4, 5, 5, 6]
    kwargs = dict(bucket_width=2, hwcap=[2, 4, 2, 1], base_batch_size=100, shuffle=False)
    sampler = BucketSampler(lengths, **kwargs)
    # Full batches [0,1], [6,7], [9]; residuals [2], [3,4,5], [8], []: [2]+[3,4,5] reaches 4 (line 13),
    # [8] is closed before the last bucket of size 1 (lines 8-10).
    assert sampler.epoch_batches() == [[0, 1], [6, 7], [9], [2, 3, 4, 5], [8]]
    assert list(sampler) == sampler.epoch_batches() and len(sampler) == 5
    assert BucketSampler(lengths, rbm=False, **kwargs).epoch_batches() == [[0, 1], [6, 7], [9], [2], [3, 4, 5], [8]]


# ---------------------------------------------------------------------------------------------------
# Randomness
# ---------------------------------------------------------------------------------------------------


def test_epochs_and_seeds_change_the_order():
    lengths = np.random.default_rng(0).integers(1, 60, size=300).tolist()
    sampler = BucketSampler(lengths, bucket_width=5, base_batch_size=8, scaling_factor=1)
    per_epoch = [sampler.epoch_batches(e) for e in range(4)]
    for a, b in itertools.combinations(per_epoch, 2):
        assert a != b
        assert sorted(map(sorted, a)) != sorted(map(sorted, b))  # other batches, not just another order
    tops = [max(lengths[i] // 5 for i in batch) for batch in per_epoch[0]]
    descents = sum(a > b for a, b in itertools.pairwise(tops))
    assert descents > len(tops) // 4  # batches are shuffled across buckets, not run from short to long
    other_seed = BucketSampler(lengths, bucket_width=5, base_batch_size=8, scaling_factor=1, seed=1)
    assert other_seed.epoch_batches(0) != per_epoch[0]
    unshuffled = BucketSampler(lengths, bucket_width=5, base_batch_size=8, scaling_factor=1, shuffle=False)
    assert unshuffled.epoch_batches(0) == unshuffled.epoch_batches(3)


def test_global_random_states_are_neither_used_nor_changed():
    lengths = list(range(1, 200))
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    states = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    batches = list(BucketSampler(lengths, seed=3))
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1]) and random.getstate() == states[2]
    torch.manual_seed(999)  # a different global seed does not change the batches
    assert list(BucketSampler(lengths, seed=3)) == batches


def test_state_dict_mismatches_are_rejected():
    sampler = BucketSampler([3, 4, 8, 9, 12], base_batch_size=2)
    state = sampler.state_dict()
    with pytest.raises(ValueError, match="seed"):
        BucketSampler([3, 4, 8, 9, 12], base_batch_size=2, seed=5).load_state_dict(state)
    with pytest.raises(ValueError, match="settings"):
        BucketSampler([3, 4, 8, 9, 12], base_batch_size=3).load_state_dict(state)
    with pytest.raises(ValueError, match="reachable_lengths"):
        BucketSampler([3, 4, 8, 9, 12], base_batch_size=2, reachable_lengths=[3, 4, 8, 9, 12]).load_state_dict(state)
    with pytest.raises(ValueError, match="batches_yielded"):
        sampler.load_state_dict({**state, "batches_yielded": 99})
    with pytest.raises(ValueError, match="missing"):
        sampler.load_state_dict({"epoch": 0})
    assert sampler.state_dict(batches_done=2)["batches_yielded"] == 2


def test_dataloader_uses_the_sampler_and_its_length():
    lengths = [1 + i % 17 for i in range(150)]
    data = [{"input_ids": list(range(1, n + 1)), "label": n % 2} for n in lengths]
    sampler = BucketSampler(lengths, bucket_width=1, base_batch_size=8, rbm=False)
    collate = PadToBatchMax(0)
    loader = torch.utils.data.DataLoader(data, batch_sampler=sampler, collate_fn=collate)
    sampler.set_epoch(1)
    out = list(loader)
    assert len(loader) == len(out) == sampler.num_batches(1)
    assert collate.stats.pad_tokens == 0 and collate.stats.real_tokens == sum(lengths)  # width 1, no RBM


# ---------------------------------------------------------------------------------------------------
# Bad input: one ValueError naming the argument
# ---------------------------------------------------------------------------------------------------

GOOD = dict(lengths=[1, 5, 9, 12])


@pytest.mark.parametrize("kwargs, match", [
    (dict(bucket_width=0), r"bucket_width must be an int >= 1"),
    (dict(bucket_width=2.5), r"bucket_width"),
    (dict(hwcap=[4, 0, 4]), r"hwcap\[1\] must be an int >= 1"),
    (dict(hwcap=[4, 4]), r"hwcap must have one entry per bucket: 3 buckets"),
    (dict(hwcap=64), r"hwcap must be a list .* token_budget"),
    (dict(hwcap={7: 4}), r"hwcap key \(bucket index\) must be an int in \[0, 2\]"),
    (dict(token_budget=0), r"token_budget must be an int >= 1"),
    (dict(token_budget=11), r"token_budget must be >= the longest length \(12\)"),
    (dict(hwcap=[4, 4, 4], token_budget=64), r"either hwcap .* or token_budget"),
    (dict(base_batch_size=0), r"base_batch_size must be an int >= 1"),
    (dict(scaling_factor=0.5), r"scaling_factor must be a number in \[1, inf\)"),
    (dict(scaling_factor=math.inf), r"scaling_factor"),
    (dict(lengths=[]), r"lengths is empty"),
    (dict(lengths=[3, 0, 2]), r"lengths must be ints >= 1 .* lengths\[1\] = 0"),
    (dict(lengths=[1.5, 2.0]), r"lengths must be a flat sequence of ints"),
    (dict(max_length=10), r"lengths must lie in \[1, max_length=10\] .* lengths\[3\] = 12"),
    (dict(batch_cap=False), r"batch_cap=False .* hwcap .* token_budget"),
    (dict(reachable_lengths=[1, 2, 3]), r"reachable_lengths must be a flat sequence of ints, one per example \(4\)"),
    (dict(reachable_lengths=[1.0, 2.0, 3.0, 4.0]), r"reachable_lengths must be a flat sequence of ints"),
    (dict(reachable_lengths=[1, 6, 3, 4]), r"reachable_lengths\[1\] must be in \[0, lengths\[1\]\] = \[0, 5\], got 6"),
    (dict(reachable_lengths=[1, -1, 3, 4]), r"reachable_lengths\[1\] must be in \[0, lengths\[1\]\] = \[0, 5\], got -1"),
])
def test_bad_input_gives_one_clear_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BucketSampler(**{**GOOD, **kwargs})


def test_bad_epoch_and_bucket_arguments():
    sampler = BucketSampler(**GOOD)
    with pytest.raises(ValueError, match="epoch must be an int >= 0"):
        sampler.set_epoch(-1)
    with pytest.raises(ValueError, match=r"bucket must be an int in \[0, 2\]"):
        sampler.batch_size_for(3)


# ---------------------------------------------------------------------------------------------------
# Learning Rate Modulation
# ---------------------------------------------------------------------------------------------------


def test_lr_factor_is_sqrt_of_the_batch_ratio():
    assert lr_factor(64, 64) == 1.0
    assert lr_factor(256, 64) == 2.0
    assert lr_factor(16, 64) == 0.5
    assert lr_factor(3, 7) == pytest.approx(math.sqrt(3 / 7), rel=1e-15)
    with pytest.raises(ValueError, match="batch_size"):
        lr_factor(0, 64)
    with pytest.raises(ValueError, match="base_batch_size"):
        lr_factor(8, 0)


class RecordingSGD(torch.optim.SGD):
    """SGD that records the lr of each param group at every step."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: list[list[float]] = []

    def step(self, closure=None):
        self.seen.append([g["lr"] for g in self.param_groups])
        return super().step(closure)


def _schedulers():
    yield "lambda", lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1 / (1 + k)), \
        lambda lr, k: lr / (1 + k)
    yield "step", lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5), \
        lambda lr, k: lr * 0.5 ** (k // 2)


@pytest.mark.parametrize("name, make_scheduler, closed_form", list(_schedulers()), ids=["lambda", "step"])
def test_lr_modulator_scales_each_step_without_compounding(name, make_scheduler, closed_form):
    w = torch.nn.Parameter(torch.zeros(3))
    b = torch.nn.Parameter(torch.zeros(1))
    opt = RecordingSGD([{"params": [w], "lr": 0.1}, {"params": [b], "lr": 0.02}])
    scheduler = make_scheduler(opt)
    modulator = LRModulator(opt, base_batch_size=32)
    sizes = [16, 128, 8, 32, 512, 1]
    for k, size in enumerate(sizes):
        opt.zero_grad()
        before = w.detach().clone()
        (w.sum() * 2 + b.sum()).backward()  # grad of w is 2 everywhere
        modulator.step(size)
        factor = math.sqrt(size / 32)
        assert opt.seen[-1] == pytest.approx([closed_form(0.1, k) * factor, closed_form(0.02, k) * factor])
        assert torch.allclose(w.detach(), before - 2 * closed_form(0.1, k) * factor)  # the update used it
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([closed_form(0.1, k), closed_form(0.02, k)])
        assert modulator.last_factor == factor
        scheduler.step()
        assert scheduler.get_last_lr() == pytest.approx([closed_form(0.1, k + 1), closed_form(0.02, k + 1)])
    assert len(opt.seen) == len(sizes)


def test_lr_modulator_with_gradient_accumulation_applies_the_factor_once():
    w = torch.nn.Parameter(torch.zeros(2))
    opt = RecordingSGD([w], lr=0.04)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    modulator = LRModulator(opt, base_batch_size=16)
    for step, micro_batches in enumerate([[8, 8, 16], [4, 12], [64]]):
        for _ in micro_batches:
            w.sum().backward()  # accumulate
        modulator.step(sum(micro_batches))  # total examples of the accumulated step
        assert opt.seen[-1] == pytest.approx([0.04 * 0.5**step * math.sqrt(sum(micro_batches) / 16)])
        scheduler.step()
        opt.zero_grad()
    assert len(opt.seen) == 3
    assert opt.param_groups[0]["lr"] == pytest.approx(0.04 * 0.5**3)


def test_lr_modulator_context_restores_lr_on_error_and_validates():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    modulator = LRModulator(opt, base_batch_size=4)
    with pytest.raises(RuntimeError), modulator.modulated(16):
        assert opt.param_groups[0]["lr"] == pytest.approx(0.2)
        raise RuntimeError
    assert opt.param_groups[0]["lr"] == 0.1
    with pytest.raises(ValueError, match="batch_size"):
        modulator.step(0)
    with pytest.raises(ValueError, match="base_batch_size"):
        LRModulator(opt, base_batch_size=0)
    assert opt.param_groups[0]["lr"] == 0.1


# ---------------------------------------------------------------------------------------------------
# HWCap profiling
# ---------------------------------------------------------------------------------------------------


def test_profile_hwcap_on_cpu_falls_back_to_a_token_budget():
    model = torch.nn.Linear(4, 4)
    lengths = bucket_upper_lengths(128, 5)
    with pytest.warns(UserWarning, match="cannot measure memory on device 'cpu'.*token budget"):
        caps = profile_hwcap(model, lengths, "cpu", cpu_token_budget=4096, max_batch=512)
    assert caps == [min(512, 4096 // n) for n in lengths]
    assert caps[0] == 512 and caps[-1] == 32
    sampler = BucketSampler([3, 50, 128], max_length=128, hwcap=caps)  # usable as hwcap
    assert sampler.buckets[-1].hwcap == 32
    with pytest.raises(ValueError, match="bucket_lengths"):
        profile_hwcap(model, [], "cpu")
    with pytest.raises(ValueError, match="max_batch"):
        profile_hwcap(model, [5], "cpu", max_batch=0)


@settings(max_examples=150, deadline=None, database=None)
@given(base=st.integers(0, 10**6), slope=st.integers(1, 10**4), curve=st.integers(0, 50),
       limit=st.integers(1, 3 * 10**6), oom_at=st.integers(1, 5000), max_batch=st.integers(1, 4096),
       probe=st.integers(1, 64))
def test_largest_fitting_batch_finds_the_exact_limit(base, slope, curve, limit, oom_at, max_batch, probe):
    calls = []

    def measure(batch):
        calls.append(batch)
        assert 1 <= batch <= max_batch
        return None if batch >= oom_at else base + slope * batch + curve * batch * batch

    truth = max((b for b in range(1, max_batch + 1) if measure(b) is not None and measure(b) <= limit), default=0)
    calls.clear()
    assert _largest_fitting_batch(measure, limit, probe, max_batch) == truth
    assert len(calls) <= 2 * math.ceil(math.log2(max_batch + 1)) + 4
    if curve == 0 and oom_at > max_batch and truth > 2 * probe:
        assert len(calls) <= 4  # affine memory: probe, 2 x probe, the estimate and the batch above it


def test_profile_hwcap_cuda_branch_with_simulated_memory(monkeypatch):
    """The CUDA orchestration with the measurement faked: peak = 1000 + batch * length**2 bytes."""
    import tdnotebooks.finetuning.hwcap as hwcap

    measured = []

    def fake_peak(model, batch, length, vocab_size, device, amp_dtype):
        assert vocab_size == 50 and device.type == "cuda"
        measured.append((length, batch))
        return 1000 + batch * length * length

    monkeypatch.setattr(hwcap, "measure_peak_memory", fake_peak)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # profile_hwcap refuses 'cuda' without it
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10**6, 2 * 10**6))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 1000)
    model = torch.nn.Linear(2, 2)
    model.config = SimpleNamespace(vocab_size=50)
    model.to = lambda *args, **kwargs: model
    model.eval()
    caps = profile_hwcap(model, [8, 4, 16, 8], "cuda", max_batch=100_000)
    assert caps == [900_000 // 64, 900_000 // 16, 900_000 // 256, 900_000 // 64]  # limit: 1000 + 90 % free
    assert not model.training  # mode restored
    assert max(b for n, b in measured if n == 16) <= 900_000 // 64  # longer never probed above shorter's cap
    with pytest.raises(ValueError, match="not even a batch of 1"):
        profile_hwcap(model, [16], "cuda", memory_limit=1200)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_profile_hwcap_on_cuda_measures_memory():
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=128)
    model = BertForSequenceClassification(config).cuda()
    limit = torch.cuda.memory_allocated() + 256 * 2**20
    caps = profile_hwcap(model, [8, 64, 128], memory_limit=limit, max_batch=2048)
    assert all(1 <= c <= 2048 for c in caps) and caps[0] >= caps[1] >= caps[2]
    model.zero_grad(set_to_none=True)
    torch.cuda.reset_peak_memory_stats()
    ids = torch.ones((caps[2], 128), dtype=torch.long, device="cuda")
    model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.float().mean().backward()
    assert torch.cuda.max_memory_allocated() <= limit * 1.05


# ---------------------------------------------------------------------------------------------------
# Padding
# ---------------------------------------------------------------------------------------------------


@FAST
@given(cfg=configs())
def test_width_one_buckets_pad_only_merged_batches(cfg):
    cfg.kwargs.update(bucket_width=1, hwcap=None, token_budget=None, batch_cap=True)
    lengths = cfg.lengths
    assert make(cfg, rbm=False).padding_stats().pad_tokens == 0
    sampler = make(cfg, rbm=True)
    for batch in sampler.epoch_batches():
        if len({lengths[i] for i in batch}) > 1:
            continue
        assert padding_stats(lengths, [batch]).pad_tokens == 0
    stats = sampler.padding_stats()
    assert stats.real_tokens == sum(lengths) and stats.num_batches == len(sampler)


def test_pad_to_batch_max_pads_and_counts():
    collate = PadToBatchMax(SimpleNamespace(pad_token_id=9))
    out = collate([
        {"input_ids": [1, 2, 3], "attention_mask": [1, 1, 1], "token_type_ids": [0, 0, 1], "label": 1, "text": "x"},
        {"input_ids": [4], "attention_mask": [1], "token_type_ids": [0], "label": 0, "text": "y"},
    ])
    assert set(out) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert out["input_ids"].tolist() == [[1, 2, 3], [4, 9, 9]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert out["token_type_ids"].tolist() == [[0, 0, 1], [0, 0, 0]]
    assert out["labels"].tolist() == [1, 0] and out["labels"].dtype == torch.long
    assert (collate.real_tokens, collate.slot_tokens, collate.num_batches) == (4, 6, 1)
    out = collate([{"input_ids": [5, 6], "labels": 0.5}])
    assert out["labels"].dtype == torch.float32 and "token_type_ids" not in out
    assert collate.stats.padding_fraction == pytest.approx(2 / 8)
    collate.reset_stats()
    assert collate.stats.num_batches == 0
    multiple = PadToBatchMax(0, pad_to_multiple_of=8)
    assert multiple([{"input_ids": [1] * 9}])["input_ids"].shape == (1, 16)
    with pytest.raises(ValueError, match="pad"):
        PadToBatchMax(SimpleNamespace(pad_token_id=None))


@pytest.fixture(scope="module")
def rt_train():
    from tdnotebooks.data import load_task, tokenize
    from tdnotebooks.models import load_tokenizer

    tokenizer = load_tokenizer()
    return tokenize(load_task("rt_sentiment")["train"], tokenizer, max_length=128), tokenizer


def test_bucket_sampler_pads_far_less_than_random_batches_on_bundled_data(rt_train):
    train, _ = rt_train
    lengths = list(train["length"])
    random_fraction = padding_stats(lengths, random_batches(len(lengths), 32, seed=0)).padding_fraction
    assert random_fraction > 0.3
    for width, bound in ((5, 0.25), (1, 0.1)):
        sampler = BucketSampler(lengths, bucket_width=width, base_batch_size=32, max_length=128)
        for epoch in range(3):
            assert sampler.padding_stats(epoch).padding_fraction < bound * random_fraction


def test_collator_counts_match_the_sampler_on_bundled_data(rt_train):
    train, tokenizer = rt_train
    subset = train.select(range(1500))
    sampler = BucketSampler(subset["length"], bucket_width=5, token_budget=2048, max_length=128)
    sampler.set_epoch(1)
    collate = PadToBatchMax(tokenizer)
    loader = torch.utils.data.DataLoader(subset, batch_sampler=sampler, collate_fn=collate)
    batches = list(loader)
    assert len(batches) == len(sampler)
    assert all(b["input_ids"].numel() <= 2048 for b in batches)  # the token budget holds
    assert collate.stats == sampler.padding_stats(1)
