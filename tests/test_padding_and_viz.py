"""Padding accounting (exact formulas) and the notebook charts at their widget extremes."""

import numpy as np
import pytest

from tdnotebooks.padding import PaddingStats, padding_cost, padding_stats, random_batches
from tdnotebooks.viz import length_histogram, padding_bars, panel


def test_padding_stats_exact():
    lengths = [3, 5, 2, 8]
    stats = padding_stats(lengths, [[0, 1], [2, 3]])
    assert stats.real_tokens == 18 and stats.slot_tokens == 2 * 5 + 2 * 8
    assert stats.pad_tokens == 8 and stats.padding_fraction == pytest.approx(8 / 26)
    assert stats.ideal_speedup == pytest.approx(26 / 18)
    assert padding_stats(lengths, [[i] for i in range(4)]).padding_fraction == 0.0


def test_random_batches_cover_every_index_once():
    batches = random_batches(103, 10, seed=1)
    assert sorted(i for b in batches for i in b) == list(range(103))
    assert [len(b) for b in batches] == [10] * 10 + [3]
    assert batches == random_batches(103, 10, seed=1) != random_batches(103, 10, seed=2)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        random_batches(10, 0)
    with pytest.raises(ValueError, match="num_examples must be an int >= 0, got -1"):
        random_batches(-1, 8)
    with pytest.raises(ValueError, match="seed must be an int >= 0, got 1.5"):
        random_batches(10, 8, seed=1.5)
    assert random_batches(10, np.int64(4), seed=np.int64(1)) == random_batches(10, 4, seed=1)


def test_padding_cost_orders_the_schemes():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 60, size=500)
    cost = padding_cost(lengths, batch_size=32, max_length=64)
    fixed, dynamic = cost["pad_to_max_length"], cost["pad_to_batch_max"]
    assert fixed.real_tokens == dynamic.real_tokens == int(lengths.sum())
    assert fixed.slot_tokens == 64 * 500
    assert fixed.padding_fraction > dynamic.padding_fraction > 0
    clipped = padding_cost(lengths, batch_size=1, max_length=10)["pad_to_batch_max"]
    assert clipped.padding_fraction == 0 and clipped.real_tokens == int(np.minimum(lengths, 10).sum())
    with pytest.raises(ValueError, match="lengths is empty"):
        padding_cost([], 8, 16)
    with pytest.raises(ValueError, match="max_length must be an int >= 1, got True"):
        padding_cost(lengths, 8, True)


def test_length_histogram_checks_its_arguments():
    with pytest.raises(ValueError, match="bin_width must be an int >= 1, got 0"):
        length_histogram({"a": [3, 5]}, bin_width=0)
    with pytest.raises(ValueError, match="max_length must be an int >= 1, got 2.5"):
        length_histogram({"a": [3, 5]}, max_length=2.5)


@pytest.mark.parametrize("max_length", [8, 128, 512])
@pytest.mark.parametrize("bin_width", [1, 10])
def test_length_histogram_at_widget_extremes(max_length, bin_width):
    lengths = {"a": [3, 50, 600], "b": [10, 20]}
    fig = length_histogram(lengths, max_length=max_length, bin_width=bin_width)
    assert len(fig.data) == 2
    assert max(fig.data[0].x) == min(600, max_length)  # truncated at max_length
    assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text
    assert fig.data[0].name == "a (n=3)"


def test_padding_bars_show_fraction():
    cost = {"x": PaddingStats(75, 100, 2), "y": PaddingStats(100, 100, 1)}
    fig = padding_bars(cost)
    assert list(fig.data[1].y) == [25, 0] and fig.data[1].text[0] == "25% padding"
    assert fig.layout.xaxis.title.text == "batching scheme"
    fig = padding_bars(cost, xaxis_title="epoch", yaxis_title="token slots (3 epochs)")
    assert (fig.layout.xaxis.title.text, fig.layout.yaxis.title.text) == ("epoch", "token slots (3 epochs)")


def test_panel_wires_controls_without_continuous_updates():
    import ipywidgets as widgets

    seen = []
    slider = widgets.IntSlider(value=3, min=1, max=5)
    box = panel(lambda n: seen.append(n), n=slider)
    assert slider.continuous_update is False
    slider.value = 5
    assert seen[-1] == 5 and isinstance(box, widgets.VBox)
    assert slider.style.description_width == "initial"  # labels such as "bucket width" are not cut off
    narrow = widgets.IntSlider(style={"description_width": "80px"})
    panel(lambda n: None, n=narrow)
    assert narrow.style.description_width == "80px"  # a width the caller chose is kept
