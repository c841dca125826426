"""Charts of notebook 06 (tdnotebooks.viz.semantic_loss): what they plot, and their errors on bad input."""

import numpy as np
import pytest

from tdnotebooks.viz.semantic_loss import drift_curves_chart, probe_chart, view_similarity_chart


def _titled(fig):
    return bool(fig.layout.title.text and fig.layout.xaxis.title.text and fig.layout.yaxis.title.text)


def _records(values, losses):
    return [{"step": 10 * (i + 1), "masked": 0.5, "masked_dropped": v, "dev_mlm_loss": loss}
            for i, (v, loss) in enumerate(zip(values, losses, strict=True))]


def test_view_chart_one_box_per_view_with_the_cosines_and_their_mean():
    drift = {"original": {"mean": 1.0, "per_example": np.ones(3)},
             "masked": [0.5, 0.7, 0.9],
             "masked + dropped": np.array([-1.0, 0.0, 0.25, 1.0])}
    fig = view_similarity_chart(drift)
    assert _titled(fig) and len(fig.data) == 3
    assert list(fig.data[1].y) == [0.5, 0.7, 0.9] and "mean 0.700" in fig.data[1].name
    assert list(fig.data[2].y) == [-1.0, 0.0, 0.25, 1.0] and "mean 0.062" in fig.data[2].name
    assert fig.data[0].name.startswith("original")


@pytest.mark.parametrize("drift, message", [
    ({}, "drift is empty"),
    ({"masked": []}, r"drift\['masked'\] is empty"),
    ({"masked": [0.5, 1.5]}, r"in \[-1, 1\]"),
    ({"masked": [float("nan")]}, r"in \[-1, 1\]"),
    ({"masked": {"mean": 0.5}}, "per_example"),
])
def test_view_chart_rejects_bad_input(drift, message):
    with pytest.raises(ValueError, match=message):
        view_similarity_chart(drift)


def test_drift_curves_plot_the_chosen_view_per_run_and_the_dev_loss():
    records = {"baseline": _records([0.3, 0.3], [9.0, 8.0]),
               "token_drop": _records([0.31, 0.35, 0.4], [9.1, None, 7.5])}
    fig = drift_curves_chart(records, view={"baseline": "masked", "token_drop": "masked_dropped"},
                             references={"random drop": 0.28})
    assert _titled(fig) and len(fig.data) == 4
    base_sim, base_loss, td_sim, td_loss = fig.data
    assert list(base_sim.x) == [10, 20] and list(base_sim.y) == [0.5, 0.5] and "(masked)" in base_sim.name
    assert list(td_sim.y) == [0.31, 0.35, 0.4] and "(masked_dropped)" in td_sim.name
    assert list(base_loss.y) == [9.0, 8.0]
    assert list(td_loss.x) == [10, 30] and list(td_loss.y) == [9.1, 7.5]  # the record without a dev loss is skipped
    assert [s.y0 for s in fig.layout.shapes] == [0.28]


def test_drift_curves_one_view_name_for_all_runs():
    fig = drift_curves_chart({"a": _records([0.2], [8.0]), "b": _records([0.6], [8.0])}, view="masked_dropped")
    assert [list(t.y) for t in fig.data[0::2]] == [[0.2], [0.6]]


@pytest.mark.parametrize("records, view, references, message", [
    ({}, "masked", None, "records is empty"),
    ({"a": []}, "masked", None, r"records\['a'\] is empty"),
    ({"a": _records([0.2], [8.0])}, {"b": "masked"}, None, "no view for run 'a'"),
    ({"a": _records([0.2], [8.0])}, "kl", None, "must hold 'step' and 'kl'"),
    ({"a": _records([0.2, 0.3], [8.0, 7.0])[::-1]}, "masked", None, "increasing step order"),
    ({"a": _records([1.2], [8.0])}, "masked_dropped", None, r"in \[-1, 1\]"),
    ({"a": _records([0.2], [float("inf")])}, "masked", None, "not a finite number"),
    ({"a": _records([0.2], [8.0])}, "masked", {"ref": 2.0}, r"references\['ref'\]"),
])
def test_drift_curves_reject_bad_input(records, view, references, message):
    with pytest.raises(ValueError, match=message):
        drift_curves_chart(records, view, references=references)


def test_probe_chart_one_line_per_model_from_the_embedding_layer_on():
    accuracies = {"baseline": [0.5, 0.52, 0.55, 0.51, 0.5], "MiniLM": [0.6, 0.7, 0.72, 0.75, 0.8, 0.82, 0.85]}
    fig = probe_chart(accuracies, dropped=(1, 3))
    assert _titled(fig) and len(fig.data) == 2
    assert list(fig.data[0].x) == [0, 1, 2, 3, 4] and list(fig.data[0].y) == accuracies["baseline"]
    assert list(fig.data[1].x) == list(range(7)) and fig.data[1].name == "MiniLM"
    shapes = {s.type: s for s in fig.layout.shapes}
    assert shapes["line"].y0 == 0.5                           # chance
    assert (shapes["rect"].x0, shapes["rect"].x1) == (1.5, 3.5)  # outputs of layers 2 and 3 (0-based 1, 2)


def test_probe_chart_without_chance_line_or_shading():
    fig = probe_chart({"m": [0.0, 1.0]}, chance=None)
    assert len(fig.layout.shapes) == 0 and list(fig.data[0].y) == [0.0, 1.0]


@pytest.mark.parametrize("kwargs, message", [
    ({"accuracies": {}}, "accuracies is empty"),
    ({"accuracies": {"m": []}}, r"accuracies\['m'\] is empty"),
    ({"accuracies": {"m": [0.5, 1.1]}}, r"must lie in \[0, 1\]"),
    ({"accuracies": {"m": [0.5]}, "chance": 1.5}, r"chance must be a number in \[0, 1\], got 1.5"),
    ({"accuracies": {"m": [0.5]}, "dropped": (3, 1)}, "dropped must be"),
])
def test_probe_chart_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        probe_chart(**kwargs)
