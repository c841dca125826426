"""Charts of notebook 01 (tdnotebooks.viz.padding_and_buckets) at the extremes of the notebook's widgets."""

import math

import numpy as np
import pytest

from tdnotebooks.finetuning.bucketing import BucketSampler
from tdnotebooks.finetuning.planning import bucket_upper_lengths
from tdnotebooks.padding import padding_stats, random_batches
from tdnotebooks.viz.padding_and_buckets import (
    batch_cap_curves,
    batch_picture,
    batch_sizes_per_step,
    batch_table,
    lr_factor_per_step,
)

MAX_LENGTH = 256


@pytest.fixture(scope="module")
def lengths():
    """A long-tailed length distribution like the bundled reviews: many short, a few at max_length."""
    rng = np.random.default_rng(0)
    values = np.round(rng.lognormal(mean=3.3, sigma=0.6, size=3000)).astype(np.int64)
    return np.clip(values, 3, MAX_LENGTH)


def _totals(fig):
    """Real and padding slots a batch picture stands for (bars hold means per batch when grouped)."""
    counts = np.asarray(fig.data[0].customdata)[:, 2] if len(fig.data[0].x) else np.zeros(0)
    return float(np.dot(fig.data[0].y, counts)), float(np.dot(fig.data[1].y, counts)), counts


def _titled(fig):
    return bool(fig.layout.title.text and fig.layout.xaxis.title.text and fig.layout.yaxis.title.text)


def test_batch_table_matches_padding_stats(lengths):
    batches = random_batches(len(lengths), 32, seed=3) + [[]]  # an empty batch is skipped, as padding_stats does
    table = batch_table(lengths, batches)
    stats = padding_stats(lengths, batches)
    assert table.num_batches == stats.num_batches == len(batches) - 1
    assert int(table.real.sum()) == stats.real_tokens and int(table.slots.sum()) == stats.slot_tokens
    first = lengths[batches[0]]
    assert (table.size[0], table.longest[0], table.shortest[0]) == (32, first.max(), first.min())
    assert int(table.pad[0]) == 32 * first.max() - first.sum()
    assert batch_table(lengths, []).num_batches == 0


@pytest.mark.parametrize("width", [1, 32])
@pytest.mark.parametrize("epoch", [0, 5])
@pytest.mark.parametrize("rbm", [True, False])
@pytest.mark.parametrize("token_budget", [None, MAX_LENGTH, 2**20])
@pytest.mark.parametrize("base, scaling", [(8, 1.0), (128, 4.0)])
def test_batch_picture_accounts_for_every_slot(lengths, width, epoch, rbm, token_budget, base, scaling):
    sampler = BucketSampler(lengths, bucket_width=width, max_length=MAX_LENGTH, token_budget=token_budget,
                            base_batch_size=base, scaling_factor=scaling, rbm=rbm, seed=1)
    batches = sampler.epoch_batches(epoch)
    stats = sampler.padding_stats(epoch)
    for order in ("sampler", "length"):
        fig = batch_picture(lengths, batches, order=order, max_batches=300, token_budget=token_budget)
        assert [t.name for t in fig.data] == ["real tokens", "padding"] and fig.layout.barmode == "stack"
        assert _titled(fig) and "tokens" in fig.layout.yaxis.title.text
        real, pad, counts = _totals(fig)
        assert real == pytest.approx(stats.real_tokens) and pad == pytest.approx(stats.pad_tokens, abs=1e-6)
        assert counts.sum() == stats.num_batches == len(batches)
        assert len(fig.data[0].x) == min(300, len(batches))
        assert f"{stats.padding_fraction:.1%}" in fig.layout.title.text
        assert len(fig.layout.shapes) == (token_budget is not None)
    if width == 1 and not rbm:  # one length per bucket and no merging: not a single padded slot
        assert stats.pad_tokens == 0 and not any(fig.data[1].y)


def test_batch_picture_sorted_by_length_shows_buckets(lengths):
    sampler = BucketSampler(lengths, bucket_width=5, max_length=MAX_LENGTH, base_batch_size=32)
    fig = batch_picture(lengths, sampler.epoch_batches(0), order="length")
    longest = np.asarray(fig.data[0].customdata)[:, 1]
    assert np.all(np.diff(longest) >= 0) and "sorted" in fig.layout.xaxis.title.text
    sampler_order = batch_picture(lengths, sampler.epoch_batches(0), order="sampler")
    assert not np.all(np.diff(np.asarray(sampler_order.data[0].customdata)[:, 1]) >= 0)  # shuffled steps


def test_batch_picture_aggregates_thousands_of_batches(lengths):
    batches = [[i] for i in range(len(lengths))] * 2  # 6000 batches of one sequence
    fig = batch_picture(lengths, batches, max_batches=50)
    real, pad, counts = _totals(fig)
    assert len(fig.data[0].x) == 50 and counts.sum() == 6000 and set(counts) == {120}
    assert real == pytest.approx(2 * lengths.sum()) and pad == 0
    assert "averages" in fig.layout.xaxis.title.text and "mean" in fig.layout.yaxis.title.text


@pytest.mark.parametrize("batches", [[], [[]], [[0]]])
def test_batch_picture_of_almost_nothing(lengths, batches):
    fig = batch_picture(lengths, batches)
    assert len(fig.data) == 2 and _titled(fig)
    assert len(fig.data[0].x) == sum(1 for b in batches if b)


def test_batch_picture_rejects_bad_arguments(lengths):
    with pytest.raises(ValueError, match="order must be one of"):
        batch_picture(lengths, [[0]], order="random")
    with pytest.raises(ValueError, match="max_batches must be an int >= 1"):
        batch_picture(lengths, [[0]], max_batches=0)


@pytest.mark.parametrize("epoch", [0, 5])
@pytest.mark.parametrize("token_budget", [MAX_LENGTH, None])
def test_batch_sizes_per_step(lengths, epoch, token_budget):
    sampler = BucketSampler(lengths, bucket_width=5, max_length=MAX_LENGTH, token_budget=token_budget,
                            base_batch_size=16, scaling_factor=2.0)
    batches = sampler.epoch_batches(epoch)
    fig = batch_sizes_per_step(batches, lengths=lengths, base_batch_size=16, max_points=200)
    assert len(fig.data) == 1 and _titled(fig) and "sequences" in fig.layout.yaxis.title.text
    assert len(fig.layout.shapes) == 1  # the base batch size line
    points = fig.data[0]
    sizes = np.array([len(b) for b in batches])
    if len(batches) <= 200:
        assert list(points.y) == sizes.tolist() and points.error_y.array is None
        assert list(points.marker.color) == [lengths[b].max() for b in batches]  # coloured by longest
    else:  # grouped: the mean with min..max bars, and every step counted once
        assert len(points.x) == 200 and sum(points.customdata) == len(batches)
        mean = np.asarray(points.y)
        assert np.all(mean - np.asarray(points.error_y.arrayminus) >= sizes.min() - 1e-9)
        assert np.all(mean + np.asarray(points.error_y.array) <= sizes.max() + 1e-9)
    assert f"{sizes.max()}" in fig.layout.title.text


def test_batch_sizes_per_step_without_lengths_and_empty():
    fig = batch_sizes_per_step([[0, 1, 2], [], [3]])
    assert list(fig.data[0].y) == [3, 1] and len(fig.layout.shapes) == 0
    empty = batch_sizes_per_step([])
    assert len(empty.data[0].x) == 0 and _titled(empty)


def test_lr_factor_per_step_is_the_square_root_rule():
    fig = lr_factor_per_step([32, 128, 8, 32], base_batch_size=32)
    assert list(fig.data[0].y) == [1.0, 2.0, 0.5, 1.0]
    assert _titled(fig) and "sqrt" in fig.layout.title.text and len(fig.layout.shapes) == 1  # the line at 1
    big = lr_factor_per_step(list(range(1, 5001)), base_batch_size=1, max_points=100)
    assert len(big.data[0].x) == 100 and sum(big.data[0].customdata) == 5000
    assert max(np.asarray(big.data[0].y) + np.asarray(big.data[0].error_y.array)) == pytest.approx(math.sqrt(5000))
    assert len(lr_factor_per_step([], 4).data[0].x) == 0
    with pytest.raises(ValueError, match="base_batch_size"):
        lr_factor_per_step([], 0)
    with pytest.raises(ValueError, match="batch_size"):
        lr_factor_per_step([0], 8)


@pytest.mark.parametrize("token_budget", [None, MAX_LENGTH, 2**20])
def test_batch_cap_curves(lengths, token_budget):
    width, epochs = 5, range(4)
    sampler = BucketSampler(lengths, bucket_width=width, max_length=MAX_LENGTH, token_budget=token_budget,
                            base_batch_size=32)
    upper = bucket_upper_lengths(MAX_LENGTH, width)
    sizes = {f"epoch {e}": [sampler.batch_size_for(k, e) for k in range(sampler.num_buckets)] for e in epochs}
    hwcap = [b.hwcap for b in sampler.buckets]
    fig = batch_cap_curves(upper, sizes, hwcap)
    assert len(fig.data) == len(epochs) + (token_budget is not None)  # an unbounded HWCap has no line
    assert _titled(fig) and fig.layout.yaxis.type == "log"
    for e in epochs:  # BatchCap: min(HWCap, base * 2**epoch)
        expected = [32 * 2**e if cap is None else min(cap, 32 * 2**e) for cap in hwcap]
        assert list(fig.data[e].y) == expected
    if token_budget == MAX_LENGTH:  # the tiniest budget: one sequence per batch in the longest bucket
        assert fig.data[-1].y[-1] == 1
    with pytest.raises(ValueError, match="entries"):
        batch_cap_curves(upper, {"epoch 0": [1, 2]})
    with pytest.raises(ValueError, match="hwcap has"):
        batch_cap_curves(upper, sizes, hwcap[:-1])
