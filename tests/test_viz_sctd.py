"""Charts of notebook 07 (tdnotebooks.viz.sctd): what they plot, the formulas behind them, and their errors."""

import pytest

from tdnotebooks.viz.sctd import (
    cost_curve_chart,
    loss_contributions,
    loss_terms_chart,
    moving_average,
    quality_chart,
    sctd_relative_cost,
    training_curves_chart,
)


def _titled(fig):
    return bool(fig.layout.title.text and fig.layout.xaxis.title.text and fig.layout.yaxis.title.text)


FULL = {"loss": 5.3, "mlm_dropped": 6.0, "mlm_full": 4.0, "kl_global": 2.0, "kl_local": 4.0, "is_full_step": True}
DROPPED = {"loss": 6.5, "mlm_dropped": 6.5, "mlm_full": None, "kl_global": None, "kl_local": None,
           "is_full_step": False}


def _results(spec):
    """compare_pretraining-shaped results: {label: (losses, dev losses, mean metrics, sd metrics)}."""
    out = {}
    for label, (losses, dev, mean, sd) in spec.items():
        evals = [{"step": 10 * (i + 1), "dev_mlm_loss": v} for i, v in enumerate(dev)]
        out[label] = {"runs": [{"losses": losses, "evals": evals}], "mean": mean, "sd": sd, "overrides": {}}
    return out


# ---- cost ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fi, r, expected", [(1, 0.8, 1.8), (10, 0.785, 0.885), (50, 0.5, 0.52)])
def test_relative_cost_is_r_plus_one_over_fi(fi, r, expected):
    assert sctd_relative_cost(fi, r) == pytest.approx(expected)


@pytest.mark.parametrize("fi, r, message", [
    (0, 0.8, "fi .* int >= 1"), (2.5, 0.8, "fi .* int >= 1"), (True, 0.8, "fi .* int >= 1"),
    (10, 0.0, r"dropped_cost .* \(0, 1\]"), (10, 1.2, r"dropped_cost .* \(0, 1\]"),
    (10, float("nan"), "dropped_cost"),
])
def test_relative_cost_rejects_bad_input(fi, r, message):
    with pytest.raises(ValueError, match=message):
        sctd_relative_cost(fi, r)


def test_cost_curve_plots_the_formula_the_flat_lines_and_the_points():
    fig = cost_curve_chart(0.75, fi_values=[1, 2, 4], highlight=2, paper={5: 0.95, 10: 0.86}, measured={10: 0.9})
    assert _titled(fig) and len(fig.data) == 6
    sctd, td, base, star, paper, measured = fig.data
    assert list(sctd.x) == [1, 2, 4] and list(sctd.y) == pytest.approx([1.75, 1.25, 1.0])
    assert list(td.y) == [0.75, 0.75] and list(base.y) == [1.0, 1.0]
    assert list(star.x) == [2] and list(star.y) == pytest.approx([1.25])
    assert list(paper.x) == [5, 10] and list(paper.y) == [0.95, 0.86] and list(measured.y) == [0.9]
    assert fig.layout.xaxis.type == "log"


def test_cost_curve_without_optional_points_has_three_traces():
    assert len(cost_curve_chart(0.5).data) == 3


@pytest.mark.parametrize("kwargs, message", [
    ({"dropped_cost": 1.5}, "dropped_cost"),
    ({"dropped_cost": 0.5, "fi_values": []}, "fi_values is empty"),
    ({"dropped_cost": 0.5, "fi_values": [1, 3, 2]}, "increasing"),
    ({"dropped_cost": 0.5, "fi_values": [0, 1]}, "int >= 1"),
    ({"dropped_cost": 0.5, "highlight": 0}, "highlight"),
    ({"dropped_cost": 0.5, "paper": {}}, "paper is empty"),
    ({"dropped_cost": 0.5, "measured": {10: -1.0}}, "measured costs must be positive"),
])
def test_cost_curve_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        cost_curve_chart(**kwargs)


# ---- loss terms ------------------------------------------------------------------------------------------

def test_contributions_of_a_full_step_follow_eq_4_and_add_up_to_the_total():
    parts = loss_contributions(FULL, lam=0.05)
    assert parts == pytest.approx({"mlm_dropped": 3.0, "mlm_full": 2.0, "kl_global": 0.1, "kl_local": 0.2})
    assert sum(parts.values()) == pytest.approx(FULL["loss"])


def test_contributions_without_the_full_mlm_term_are_the_official_objective():
    parts = loss_contributions(FULL, lam=0.5, full_mlm=False)
    assert parts == pytest.approx({"mlm_dropped": 6.0, "mlm_full": 0.0, "kl_global": 1.0, "kl_local": 2.0})


def test_a_dropped_step_is_mlm_star_only():
    assert loss_contributions(DROPPED, lam=0.05) == {"mlm_dropped": 6.5, "mlm_full": 0.0, "kl_global": 0.0,
                                                      "kl_local": 0.0}


@pytest.mark.parametrize("terms, lam, message", [
    (FULL, -0.1, "lam"), (FULL, float("inf"), "lam"), ({"loss": 1.0}, 0.05, "mlm_dropped"),
    ({**FULL, "kl_local": None}, 0.05, "kl_local"),
])
def test_contributions_reject_bad_input(terms, lam, message):
    with pytest.raises(ValueError, match=message):
        loss_contributions(terms, lam)


def test_loss_terms_chart_stacks_four_terms_per_step():
    fig = loss_terms_chart({"t = 0 (full)": FULL, "t = 1": DROPPED}, lam=0.05)
    assert _titled(fig) and len(fig.data) == 4 and fig.layout.barmode == "stack"
    assert list(fig.data[0].x) == ["t = 0 (full)", "t = 1"]
    assert list(fig.data[0].y) == pytest.approx([3.0, 6.5])       # MLM*
    assert list(fig.data[1].y) == pytest.approx([2.0, 0.0])       # MLM
    assert list(fig.data[3].y) == pytest.approx([0.2, 0.0])       # lambda KL_l
    with pytest.raises(ValueError, match="steps is empty"):
        loss_terms_chart({}, lam=0.05)


# ---- quality ---------------------------------------------------------------------------------------------

def test_moving_average_is_a_trailing_mean():
    assert list(moving_average([1, 2, 3, 4], 2)) == [1.0, 1.5, 2.5, 3.5]
    assert list(moving_average([4, 2], 10)) == [4.0, 3.0]
    with pytest.raises(ValueError, match="window"):
        moving_average([1.0], 0)


def test_training_curves_two_traces_per_method_smoothed_loss_and_dev_loss():
    results = _results({"token drop": ([9.0, 7.0, 5.0], [8.0, 6.5], {}, {}),
                        "ScTD": ([10.0, 8.0], [7.9], {}, {})})
    fig = training_curves_chart(results, window=2)
    assert fig.layout.title.text and len(fig.data) == 4
    td_train, td_dev, sctd_train, sctd_dev = fig.data
    assert list(td_train.y) == pytest.approx([9.0, 8.0, 6.0]) and list(td_train.x) == [0, 1, 2]
    assert list(td_dev.x) == [10, 20] and list(td_dev.y) == [8.0, 6.5]
    assert list(sctd_train.y) == pytest.approx([10.0, 9.0]) and list(sctd_dev.y) == [7.9]
    assert all(ax.title.text for ax in (fig.layout.xaxis, fig.layout.yaxis, fig.layout.xaxis2, fig.layout.yaxis2))


@pytest.mark.parametrize("results, message", [
    ({}, "non-empty"), ({"a": {"runs": [], "mean": {}}}, "at least one"),
    (_results({"a": ([float("nan")], [], {}, {})}), "finite train losses"),
])
def test_training_curves_reject_bad_input(results, message):
    with pytest.raises(ValueError, match=message):
        training_curves_chart(results)


def test_training_curves_check_window_and_seed_index():
    results = _results({"a": ([1.0, 2.0], [], {}, {})})
    with pytest.raises(ValueError, match="window must be an int >= 1, got 0"):
        training_curves_chart(results, window=0)
    with pytest.raises(ValueError, match="seed_index must be an int >= 0, got True"):
        training_curves_chart(results, seed_index=True)
    with pytest.raises(ValueError, match="full_mlm must be True or False, got 1"):
        loss_contributions(FULL, lam=0.05, full_mlm=1)


def test_quality_chart_one_bar_per_method_per_metric_with_sd_error_bars():
    results = _results({
        "baseline": ([1.0], [7.0], {"dev_mlm_loss": 7.0, "drift": 0.6}, {"dev_mlm_loss": 0.1, "drift": None}),
        "ScTD": ([1.0], [7.2], {"dev_mlm_loss": 7.2, "drift": 0.5}, {"dev_mlm_loss": 0.3, "drift": None})})
    fig = quality_chart(results, metrics=["dev_mlm_loss", "drift"])
    assert len(fig.data) == 2
    loss, drift = fig.data
    assert list(loss.x) == ["baseline", "ScTD"] and list(loss.y) == [7.0, 7.2]
    assert list(loss.error_y.array) == [0.1, 0.3]
    assert list(drift.y) == [0.6, 0.5] and drift.error_y.array is None   # no sd: no error bars
    assert fig.layout.yaxis.title.text == "loss (nats)" and fig.layout.yaxis2.title.text == "cosine similarity"


@pytest.mark.parametrize("metrics, message", [
    ([], "metrics is empty"), (["accuracy"], "metrics must be among"), (["probe_last"], "not measured for 'a'"),
])
def test_quality_chart_rejects_bad_metrics(metrics, message):
    results = _results({"a": ([1.0], [], {"dev_mlm_loss": 7.0, "probe_last": None}, {})})
    with pytest.raises(ValueError, match=message):
        quality_chart(results, metrics=metrics)


def test_cost_curve_log_axis_labels_20_and_50_in_full():
    fig = cost_curve_chart(0.75)
    assert list(fig.layout.xaxis.tickvals) == [1, 2, 5, 10, 20, 50]
    assert list(fig.layout.xaxis.ticktext) == ["1", "2", "5", "10", "20", "50"]
    assert list(cost_curve_chart(0.75, fi_values=[3, 4, 150]).layout.xaxis.ticktext) == ["5", "10", "20", "50", "100"]


def test_cost_curve_draws_the_measured_range_as_error_bars():
    fig = cost_curve_chart(0.75, measured={10: 0.9}, measured_range={10: (0.8, 1.2)})
    measured = fig.data[-1]
    assert measured.name == "measured"
    assert list(measured.error_y.array) == pytest.approx([0.3]) and list(measured.error_y.arrayminus) == pytest.approx([0.1])
    with pytest.raises(ValueError, match="hold its measured cost"):
        cost_curve_chart(0.75, measured={10: 0.9}, measured_range={10: (0.95, 1.2)})
    with pytest.raises(ValueError, match="keys of measured"):
        cost_curve_chart(0.75, measured={10: 0.9}, measured_range={5: (0.8, 1.2)})
