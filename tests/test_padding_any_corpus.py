"""TokenDrop-aware Residual Batch Merging (planning.merge_by_reachable, BucketSpec(rbm_by_reachable=True)):
padding stays near zero on any length distribution, not only on the bundled fine-tuning tasks.

Issue 11, finding 7: on short real texts, TokenDrop + BucketSampler with Algorithm 2's merging padded about 2 %,
nearly all of it in merged residual batches. The property tests check the mechanism on generated length and
reachable-length distributions against an independent model of the collator's trimming rule; the real-text
tests check the figure on corpora of other shapes than the two tasks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tdnotebooks.finetuning.bucketing import BucketSampler
from tdnotebooks.finetuning.planning import WIDEN_PADDING, BucketSpec, epoch_batches, merge_by_reachable

FAST = settings(max_examples=80, deadline=None, database=None)


# ---------------------------------------------------------------------------------------------------
# An independent model of the collator (TokenDropBucketCollator(trim_to="reachable"), no multi-token words)
# ---------------------------------------------------------------------------------------------------


def trimmed_padding(batch: list[int], lengths, reachable) -> tuple[int, int]:
    """(pad tokens, slots) of a batch trimmed to max(shortest length, largest reachable length)."""
    width = max(min(lengths[i] for i in batch), max(reachable[i] for i in batch))
    return sum(max(0, width - lengths[i]) for i in batch), width * len(batch)


# ---------------------------------------------------------------------------------------------------
# Generated distributions: lengths of any shape, reachable lengths from stopword-rich to none at all
# ---------------------------------------------------------------------------------------------------


@st.composite
def corpora(draw, max_size: int = 150) -> dict:
    shape = draw(st.sampled_from(["uniform", "short", "long", "two_peaks"]))
    n = draw(st.integers(1, max_size))
    top = draw(st.integers(8, 70))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if shape == "uniform":
        lengths = rng.integers(1, top + 1, n)
    elif shape == "short":
        lengths = np.clip(rng.geometric(0.15, n) + 2, 1, top)
    elif shape == "long":
        lengths = np.clip(top - rng.geometric(0.1, n) + 1, 1, top)  # many cut at the maximum length
    else:
        lengths = np.where(rng.random(n) < 0.5, rng.integers(3, 9, n), rng.integers(top // 2, top + 1, n))
    lengths = np.clip(lengths, 1, top).astype(int)
    stopword_share = draw(st.sampled_from([0.0, 0.1, 0.35, 0.6]))
    poor = rng.random(n) < draw(st.sampled_from([0.0, 0.15, 0.5, 1.0]))  # share with (almost) no stopwords
    reachable = lengths - rng.binomial(lengths, stopword_share)
    reachable = np.where(poor, lengths - rng.integers(0, 2, n), reachable)
    reachable = np.clip(reachable, 0, lengths).astype(int)
    width = draw(st.integers(1, 8))
    kwargs = dict(bucket_width=width, base_batch_size=draw(st.integers(1, 32)),
                  scaling_factor=draw(st.sampled_from([1, 2.0, 3])), shuffle=draw(st.booleans()))
    caps = draw(st.sampled_from(["budget", "list", "none"]))
    if caps == "budget":
        kwargs["token_budget"] = draw(st.integers(top, 40 * top))
    elif caps == "list":  # any per-bucket caps, not only decreasing ones
        kwargs["hwcap"] = draw(st.lists(st.integers(1, 40), min_size=top // width + 1, max_size=top // width + 1))
    kwargs["max_length"] = top
    return dict(lengths=lengths.tolist(), reachable=reachable.tolist(), kwargs=kwargs,
                seed=draw(st.integers(0, 2**40)), epoch=draw(st.integers(0, 4)))


def spec_of(case: dict, **extra) -> BucketSpec:
    return BucketSpec(case["lengths"], reachable_lengths=case["reachable"], **{**case["kwargs"], **extra})


@FAST
@given(case=corpora())
def test_every_example_lands_in_exactly_one_batch_of_every_epoch(case):
    batches = epoch_batches(spec_of(case), seed=case["seed"], epoch=case["epoch"])
    assert sorted(i for batch in batches for i in batch) == list(range(len(case["lengths"])))
    assert all(batches)


@FAST
@given(case=corpora())
def test_no_batch_exceeds_the_hwcap_and_batchcap_of_its_longest_members_bucket(case):
    spec = spec_of(case)
    lengths = case["lengths"]
    for batch in epoch_batches(spec, seed=case["seed"], epoch=case["epoch"]):
        longest = max(lengths[i] for i in batch)
        assert len(batch) <= spec.batch_size(spec.bucket_of(longest), case["epoch"])
        if spec.token_budget is not None:  # in tokens too, at the untrimmed longest length
            assert len(batch) * longest <= spec.token_budget


@FAST
@given(case=corpora())
def test_the_plan_is_a_function_of_seed_and_epoch(case):
    first = epoch_batches(spec_of(case), seed=case["seed"], epoch=case["epoch"])
    assert epoch_batches(spec_of(case), seed=case["seed"], epoch=case["epoch"]) == first
    sampler = BucketSampler(case["lengths"], reachable_lengths=case["reachable"], seed=case["seed"],
                            **case["kwargs"])
    sampler.set_epoch(case["epoch"])
    assert list(sampler) == first


@FAST
@given(case=corpora())
def test_trimmed_padding_stays_within_the_widening_allowance_on_any_distribution(case):
    """Full batches need no padding (all their members reach the bucket's floor); a merged batch pads only
    where it widened, by at most WIDEN_PADDING of its slots. Algorithm 2's merging has no such bound."""
    lengths, reachable = case["lengths"], case["reachable"]
    pad = slots = 0
    for batch in epoch_batches(spec_of(case), seed=case["seed"], epoch=case["epoch"]):
        p, s = trimmed_padding(batch, lengths, reachable)
        assert p <= WIDEN_PADDING * s + 1e-9
        pad, slots = pad + p, slots + s
    assert pad <= WIDEN_PADDING * slots + 1e-9


@FAST
@given(case=corpora())
def test_the_switch_restores_algorithm_2s_merging_and_does_nothing_without_rbm(case):
    seed, epoch = case["seed"], case["epoch"]
    old = epoch_batches(spec_of(case, rbm_by_reachable=False), seed=seed, epoch=epoch)
    plain = BucketSpec(case["lengths"], **case["kwargs"])
    assert sorted(map(len, old)) == sorted(map(len, epoch_batches(plain, seed=seed, epoch=epoch)))
    assert (epoch_batches(spec_of(case, rbm=False), seed=seed, epoch=epoch)
            == epoch_batches(spec_of(case, rbm=False, rbm_by_reachable=False), seed=seed, epoch=epoch))


@FAST
@given(data=st.data())
def test_merge_by_reachable_partitions_any_pool_within_any_caps(data):
    n = data.draw(st.integers(0, 80))
    lengths = data.draw(st.lists(st.integers(1, 30), min_size=n, max_size=n))
    reachable = [data.draw(st.integers(0, length)) for length in lengths]
    width = data.draw(st.integers(1, 6))
    sizes = data.draw(st.lists(st.integers(1, 12), min_size=30 // width + 1, max_size=30 // width + 1))
    pool = data.draw(st.permutations(range(n)))
    merged = merge_by_reachable(pool, lengths, reachable, sizes, width)
    assert sorted(i for batch in merged for i in batch) == sorted(pool)
    for batch in merged:
        assert 1 <= len(batch) <= sizes[max(lengths[i] for i in batch) // width]
        p, s = trimmed_padding(batch, lengths, reachable)
        assert p <= WIDEN_PADDING * s + 1e-9
    assert merge_by_reachable(pool, lengths, reachable, sizes, width) == merged


def test_merge_by_reachable_by_hand():
    lengths, reachable = [10, 12, 12, 14, 30], [10, 9, 12, 12, 29]
    # width 10 (example 0): only 1 can be trimmed to 10; width 12: 2 and 3; 4 alone
    assert merge_by_reachable(range(5), lengths, reachable, [4] * 7, 5) == [[0, 1], [2, 3], [4]]
    # a batch that cannot be filled at its width widens while the padding stays within the allowance:
    # 400 examples of length 100 (reachable 100) and one of 101: widening to 101 pads 400 of 40,501 slots
    lengths, reachable = [100] * 400 + [101], [100] * 400 + [101]
    assert merge_by_reachable(range(401), lengths, reachable, [500] * 21, 5, widen_padding=0.01) == \
        [list(range(401))]
    assert len(merge_by_reachable(range(401), lengths, reachable, [500] * 21, 5, widen_padding=0.005)) == 2
    # the batch size of the longest member's bucket caps the batch, as in Algorithm 2 (lines 8-15)
    assert merge_by_reachable(range(6), [3, 3, 3, 8, 8, 8], [0] * 6, [5, 2], 5) == [[0, 1, 2], [3, 4], [5]]


def test_rbm_by_reachable_is_checked_and_part_of_the_fingerprint():
    with pytest.raises(ValueError, match="rbm_by_reachable"):
        BucketSpec([3, 4], reachable_lengths=[3, 4], rbm_by_reachable="no")
    kwargs = dict(base_batch_size=2, reachable_lengths=[2, 3, 8, 9, 12])
    state = BucketSampler([3, 4, 8, 9, 12], **kwargs).state_dict()
    with pytest.raises(ValueError, match="other lengths or settings"):
        BucketSampler([3, 4, 8, 9, 12], rbm_by_reachable=False, **kwargs).load_state_dict(state)


# ---------------------------------------------------------------------------------------------------
# Real text (the finding): 4,200 short real texts, batch 32, max length 128, token budget 4096, 3 epochs
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    from tdnotebooks.models import load_tokenizer

    return load_tokenizer()


def _prepared(name: str, tokenizer):
    import datasets

    from tdnotebooks.bench.finetune.corpora import prepare_corpus

    was_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        return prepare_corpus(name, tokenizer)  # 4,200 examples, max_length 128
    finally:
        if was_on:
            datasets.enable_progress_bars()


FINDING = dict(method="tokendrop_bucket", epochs=3, base_batch_size=32, token_budget=4096, seed=0, progress=False)


def _padding(plans) -> float:
    real, slots = sum(p.padding.real_tokens for p in plans), sum(p.padding.slot_tokens for p in plans)
    return (slots - real) / slots


@pytest.mark.parametrize("name", ["shakespeare_sentences", "kjv_sentences", "shakespeare_speeches"])
def test_finetune_defaults_pad_at_most_half_a_percent_on_real_texts_of_other_shapes(name, tokenizer):
    from tdnotebooks.finetuning.padding_plan import plan_epochs
    from tdnotebooks.finetuning.train import FinetuneConfig

    train = _prepared(name, tokenizer)
    plans = plan_epochs(FinetuneConfig(**FINDING), train, tokenizer.pad_token_id)
    for plan in plans:  # every example once per epoch
        assert sorted(i for batch in plan.batches for i in batch) == list(range(len(train)))
        assert plan.padding.padding_fraction <= 0.005
    assert _padding(plans) <= 0.005


def test_short_sentences_reproduce_the_finding_with_algorithm_2s_merging(tokenizer):
    """The same batching with rbm_by_reachable=False (Algorithm 2's merging, the previous default) pads well
    above 0.5 % on Shakespeare's sentences: what issue 11 measured on its held-out short texts."""
    from tdnotebooks.finetuning.tokendrop import TokenDrop, TokenDropBucketCollator, reachable_lengths

    train = _prepared("shakespeare_sentences", tokenizer)
    token_drop = TokenDrop(mode="to_length", seed=0)
    reachable = reachable_lengths(train, token_drop)
    rows = train.remove_columns(["text"]).to_list()
    fractions = {}
    for by_reachable in (False, True):
        sampler = BucketSampler(train["length"], bucket_width=5, token_budget=4096, base_batch_size=32, seed=0,
                                reachable_lengths=reachable, rbm_by_reachable=by_reachable)
        collate = TokenDropBucketCollator(token_drop, tokenizer.pad_token_id, trim_to="reachable")
        for epoch in range(3):
            sampler.set_epoch(epoch)
            collate.set_epoch(epoch)
            for batch in sampler:
                collate([rows[i] for i in batch])
        fractions[by_reachable] = collate.stats.padding_fraction
    assert fractions[False] > 0.01 and fractions[True] <= 0.005
    assert not math.isclose(fractions[False], fractions[True])


def test_the_bench_corpora_are_real_texts_drawn_reproducibly():
    from tdnotebooks.bench.finetune.corpora import SCALE_CORPORA, corpus_texts

    for name in SCALE_CORPORA:
        texts = corpus_texts(name, n=50, seed=3)
        assert len(texts) == 50 and all(isinstance(t, str) and t.strip() for t in texts)
        assert corpus_texts(name, n=50, seed=3) == texts
    assert max(len(t.split()) for t in corpus_texts("kjv_sentences", 200)) < \
        max(len(t.split()) for t in corpus_texts("shakespeare_speeches", 200))
    with pytest.raises(ValueError, match="name must be one of"):
        corpus_texts("gutenberg")
    with pytest.raises(ValueError, match="n must be at most"):
        corpus_texts("kjv_sentences", n=10**9)
