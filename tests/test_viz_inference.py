"""Charts of notebook 04 (tdnotebooks.viz.fast_inference) at the extremes of what the notebook feeds them."""

import pytest
import torch

from tdnotebooks.finetuning.inference import LatencyResult, Predictions
from tdnotebooks.padding import PaddingStats
from tdnotebooks.viz.fast_inference import latency_accuracy_chart, server_mode_chart


def _titled(fig):
    return bool(fig.layout.title.text and fig.layout.xaxis.title.text and fig.layout.yaxis.title.text)


def _pred(n, seconds, real, slots):
    return Predictions(torch.zeros(n, 2), seconds, PaddingStats(real, slots, 1))


@pytest.mark.parametrize("rates", [[0.0], [1.0], [1.0, 0.0, 0.5], [0.0, 0.25, 0.5, 0.75, 1.0]])
def test_latency_chart_draws_every_rate_in_order(rates):
    rows = [LatencyResult(r, 10.0 - 5 * r, 30 - 10 * r, 0.8 - 0.1 * r) for r in rates]
    fig = latency_accuracy_chart({"with TokenDrop": rows, "without": rows[:1]})
    assert _titled(fig) and len(fig.data) == 4
    latency, accuracy = fig.data[0], fig.data[1]
    assert list(latency.x) == sorted(rates) == list(accuracy.x)
    assert list(latency.y) == [10.0 - 5 * r for r in sorted(rates)]
    assert list(accuracy.y) == pytest.approx([0.8 - 0.1 * r for r in sorted(rates)])
    assert fig.data[2].name == "without" and len(fig.data[2].x) == 1
    if 0.0 in rates and 1.0 in rates:  # speed-up over rate 0 in the hover text
        assert "(2.00x vs rate 0)" in latency.hovertext[-1]


def test_latency_chart_accepts_zero_latency_and_extreme_accuracies():
    rows = [LatencyResult(0.0, 0.0, 0.0, 0.0), LatencyResult(1.0, 0.0, 0.0, 1.0)]
    fig = latency_accuracy_chart({"m": rows}, legend_title="data set")
    assert list(fig.data[1].y) == [0.0, 1.0] and "vs rate 0" not in fig.data[0].hovertext[0]
    assert fig.layout.legend.title.text == "data set"


@pytest.mark.parametrize("results, message", [
    ({}, "results is empty"),
    ({"m": []}, r"results\['m'\] is empty"),
    ({"m": [LatencyResult(1.5, 1.0, 1.0, 0.5)]}, "rates lie in"),
    ({"m": [LatencyResult(0.5, -1.0, 1.0, 0.5)]}, "negative latency"),
    ({"m": [LatencyResult(0.5, 1.0, 1.0, 1.5)]}, "accuracy outside"),
])
def test_latency_chart_rejects_bad_results(results, message):
    with pytest.raises(ValueError, match=message):
        latency_accuracy_chart(results)


def test_server_chart_speedups_and_padding():
    results = {
        "long": {"random": _pred(100, 4.0, 500, 1000), "bucketed": _pred(100, 1.0, 500, 520),
                 "bucketed + TokenDrop": _pred(100, 0.5, 400, 400)},
        "short": {"random": _pred(10, 1.0, 50, 50), "bucketed": _pred(10, 1e-6, 50, 50)},
    }
    fig = server_mode_chart(results)
    assert _titled(fig) and len(fig.data) == 6
    speed = {t.name: t for t in fig.data[0::2]}
    pad = {t.name: t for t in fig.data[1::2]}
    assert list(speed["random"].y) == [25.0, 10.0] and list(speed["random"].text) == ["1.00x", "1.00x"]
    assert list(speed["bucketed"].text) == ["4.00x", "1000000.00x"]
    assert list(speed["bucketed + TokenDrop"].x) == ["long"] and list(speed["bucketed + TokenDrop"].text) == ["8.00x"]
    assert list(pad["random"].y) == [0.5, 0.0] and list(pad["bucketed + TokenDrop"].text) == ["0.0%"]
    assert fig.layout.yaxis2.range[1] == pytest.approx(0.55)


def test_server_chart_without_any_padding_still_has_a_range():
    fig = server_mode_chart({"d": {"random": _pred(3, 1.0, 9, 9)}})
    assert len(fig.data) == 2 and fig.layout.yaxis2.range[1] > 0


@pytest.mark.parametrize("results", [{}, {"d": {}}, {"d": {"random": _pred(3, 0.0, 9, 9)}}])
def test_server_chart_rejects_empty_or_infinite_results(results):
    with pytest.raises(ValueError, match="results"):
        server_mode_chart(results)


def test_latency_chart_draws_the_range_of_each_rate_as_error_bars_in_rate_order():
    rows = [LatencyResult(1.0, 6.0, 20, 0.8), LatencyResult(0.0, 10.0, 30, 0.8)]
    fig = latency_accuracy_chart({"m": rows}, latency_range={"m": [(5.0, 8.0), (9.0, 13.0)]})
    assert list(fig.data[0].x) == [0.0, 1.0]
    assert list(fig.data[0].error_y.array) == [3.0, 2.0] and list(fig.data[0].error_y.arrayminus) == [1.0, 1.0]
    with pytest.raises(ValueError, match="hold its point"):
        latency_accuracy_chart({"m": rows}, latency_range={"m": [(7.0, 8.0), (9.0, 13.0)]})
    with pytest.raises(ValueError, match="one"):
        latency_accuracy_chart({"m": rows}, latency_range={"m": [(5.0, 8.0)]})


def test_server_chart_draws_the_throughput_range_as_error_bars():
    results = {"d": {"random": _pred(10, 1.0, 50, 100), "bucketed": _pred(10, 0.5, 50, 60)}}
    fig = server_mode_chart(results, throughput_range={"d": {"random": (8.0, 11.0), "bucketed": (15.0, 25.0)}})
    assert list(fig.data[0].error_y.array) == [1.0] and list(fig.data[2].error_y.arrayminus) == [5.0]
    assert server_mode_chart(results).data[0].error_y.array is None
