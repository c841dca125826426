"""Charts of notebook 02 (tdnotebooks.viz.tokendrop) at the extremes of the notebook's settings."""

import numpy as np
import pytest

from tdnotebooks.finetuning.train import FinetuneHistory
from tdnotebooks.viz.tokendrop import resilience_chart, training_curves


def _epochs(n, start_loss):
    """n epoch records shaped like FinetuneHistory.epochs (train loss falls, dev loss rises: overfitting)."""
    return [{"epoch": e, "train_loss": start_loss / (e + 1), "dev_loss": 0.5 + 0.1 * e,
             "dev_accuracy": min(1.0, 0.5 + 0.05 * e), "train_seconds": 1.0} for e in range(n)]


def _titled(fig):
    return bool(fig.layout.title.text)


@pytest.mark.parametrize("epochs", [1, 12])
def test_training_curves_draws_three_lines_per_run(epochs):
    runs = {"no TokenDrop": FinetuneHistory(config={}, epochs=_epochs(epochs, 0.7)),  # a FinetuneHistory ...
            "TokenDrop 0.5": _epochs(epochs, 0.9)}                         # ... or its epoch records
    fig = training_curves(runs)
    assert len(fig.data) == 3 * len(runs) and _titled(fig)
    names = [t.name for t in fig.data]
    assert names == ["no TokenDrop: train loss", "no TokenDrop: dev loss", "no TokenDrop: dev accuracy",
                     "TokenDrop 0.5: train loss", "TokenDrop 0.5: dev loss", "TokenDrop 0.5: dev accuracy"]
    for trace in fig.data:
        assert list(trace.x) == list(range(1, epochs + 1))  # epochs count from 1
    assert list(fig.data[0].y) == [0.7 / (e + 1) for e in range(epochs)]
    assert list(fig.data[4].y) == [0.5 + 0.1 * e for e in range(epochs)]
    assert fig.data[4].line.dash == "dash" and fig.data[3].line.color == fig.data[4].line.color
    assert fig.data[0].line.color != fig.data[3].line.color
    assert fig.data[2].xaxis == "x2" and fig.data[0].xaxis == "x"  # accuracy in the right panel
    assert fig.layout.xaxis.title.text == fig.layout.xaxis2.title.text == "epoch"
    assert "loss" in fig.layout.yaxis.title.text and "accuracy" in fig.layout.yaxis2.title.text


def test_training_curves_without_dev_loss_and_bad_input():
    records = [{"train_loss": 0.6, "dev_accuracy": 0.7}, {"train_loss": 0.3, "dev_accuracy": 0.72}]
    fig = training_curves({"run": records})
    assert [t.name for t in fig.data] == ["run: train loss", "run: dev accuracy"]
    with pytest.raises(ValueError, match="runs is empty"):
        training_curves({})
    with pytest.raises(ValueError, match="'dev_accuracy'"):
        training_curves({"run": [{"train_loss": 0.6}]})


RATES = (0.0, 0.25, 0.5, 0.75, 1.0)


@pytest.mark.parametrize("worst", [0.0, 1.0])
def test_resilience_chart_lines_and_bars(worst):
    by_rate = {"no TokenDrop": {r: 1.0 - (1.0 - worst) * r for r in reversed(RATES)},  # given unsorted
               "TokenDrop 0.5": dict.fromkeys(RATES, 0.8)}
    perturbed = {"no TokenDrop": {"clean": 1.0, "no articles, no punctuation": worst},
                 "TokenDrop 0.5": {"clean": 0.8, "no articles, no punctuation": 0.8}}
    fig = resilience_chart(by_rate, perturbed)
    assert len(fig.data) == 4 and _titled(fig)
    lines, bars = fig.data[:2], fig.data[2:]
    assert [t.type for t in lines] == ["scatter"] * 2 and [t.type for t in bars] == ["bar"] * 2
    assert list(lines[0].x) == [0, 25, 50, 75, 100]  # sorted, in percent
    assert list(lines[0].y) == [1.0 - (1.0 - worst) * r for r in RATES]
    assert list(bars[0].x) == ["clean", "no articles, no punctuation"] and list(bars[0].y) == [1.0, worst]
    assert list(bars[0].text) == ["100.0%", f"{worst:.1%}"]
    assert bars[0].marker.color == lines[0].line.color and not bars[0].showlegend  # one legend entry a model
    assert "%" in fig.layout.xaxis.title.text and "accuracy" in fig.layout.yaxis.title.text
    assert fig.layout.xaxis2.title.text and "accuracy" in fig.layout.yaxis2.title.text


def test_resilience_chart_lines_only_and_bad_input():
    fig = resilience_chart({"m": {0.0: 0.9, 1.0: 0.6}})
    assert len(fig.data) == 1 and "xaxis2" not in fig.layout  # one panel only
    np.testing.assert_allclose(fig.data[0].y, [0.9, 0.6])
    with pytest.raises(ValueError, match="by_rate is empty"):
        resilience_chart({})
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        resilience_chart({"m": {0.0: 1.2}})
    with pytest.raises(ValueError, match="drop rates"):
        resilience_chart({"m": {1.5: 0.5}})
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        resilience_chart({"m": {0.0: 0.5}}, {"m": {"clean": -0.1}})
