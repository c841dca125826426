"""Charts of notebook 07 (ScTD, Zhong et al. 2023, Sec. 3 and 4.3): pure functions returning ``go.Figure``.

- :func:`sctd_relative_cost` / :func:`cost_curve_chart`: the cost side of Table 5. With a token-dropped
  step costing ``r`` baseline steps, ScTD runs the full pass once every Fi steps, so a step costs
  r + 1/Fi baseline steps on average (the dropped pass runs at every step, the full pass at 1 step in Fi);
- :func:`loss_contributions` / :func:`loss_terms_chart`: what each term of Eq. 4 adds to the loss of a step;
- :func:`training_curves_chart`: train loss and dev MLM loss of :func:`tdnotebooks.pretraining.analysis.compare_pretraining`
  runs;
- :func:`quality_chart`: one bar per method for each quality metric of that comparison (the Table 5 columns
  at small scale), with the spread over seeds as error bars.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tdnotebooks.validation import check_bool, check_int, check_number, is_number
from tdnotebooks.viz.common import PALETTE

__all__ = ["METRIC_TITLES", "TERM_LABELS", "cost_curve_chart", "loss_contributions", "loss_terms_chart",
           "moving_average", "quality_chart", "sctd_relative_cost", "training_curves_chart"]

TERM_LABELS = {"mlm_dropped": "MLM* (dropped pass)", "mlm_full": "MLM (full pass)",
               "kl_global": "λ·KL_g (last layer)", "kl_local": "λ·KL_l (last dropped layer)"}
METRIC_TITLES = {"dev_mlm_loss": ("dev MLM loss, full model", "loss (nats)"),
                 "drift": ("similarity of the trained view (Sentence-BERT)", "cosine similarity"),
                 "probe_last": ("sentiment probe, last layer", "dev accuracy"),
                 "downstream_accuracy": ("fine-tuned sentiment accuracy", "dev accuracy"),
                 "seconds_per_step": ("time per step (varies)", "seconds")}


def _check_fi(name: str, fi: Any) -> int:
    return check_int(f"{name} (the interval Fi)", fi, low=1)


def _check_dropped_cost(dropped_cost: Any) -> float:
    return check_number("dropped_cost (cost of a token-dropped step / a baseline step)", dropped_cost,
                        low=0, high=1, low_open=True)


# ----------------------------------------------------------------------------------------------------------
# Cost side (Table 5, "training time" column)
# ----------------------------------------------------------------------------------------------------------


def sctd_relative_cost(fi: int, dropped_cost: float) -> float:
    """Mean cost of an ScTD step in baseline steps: r + 1/Fi (``dropped_cost`` = r).

    Every step runs the token-dropped pass (cost r); at one step in Fi (``sctd.is_full_step``: by default
    t mod Fi == Fi - 1) the full pass runs as well (cost 1), forward and backward (Eq. 4). Fi = 1 costs 1 + r: more than the baseline.
    """
    return _check_dropped_cost(dropped_cost) + 1.0 / _check_fi("fi", fi)


def _log_ticks(low: int, high: int) -> list[int]:
    """1, 2, 5, 10, 20, 50, ... within [low, high]: whole labels on a log axis (plotly's own labels of 20 and
    50 read "2" and "5")."""
    ticks, decade = [], 1
    while decade <= high:
        ticks += [m * decade for m in (1, 2, 5) if low <= m * decade <= high]
        decade *= 10
    return ticks


def cost_curve_chart(dropped_cost: float, fi_values: Sequence[int] = tuple(range(1, 51)),
                     highlight: int | None = None, paper: Mapping[int, float] | None = None,
                     measured: Mapping[int, float] | None = None, title: str | None = None,
                     measured_range: Mapping[int, tuple[float, float]] | None = None) -> Any:
    """Cost per step relative to the baseline against Fi: ScTD's r + 1/Fi, with token drop (r) and the
    baseline (1) as flat lines.

    Traces, in order: ScTD (analytic), token drop, baseline, then "Fi = highlight" (a star), "paper" (points
    {Fi: relative cost}, e.g. Table 5's hours / 4.93) and "measured" ({Fi: relative cost}) when given.
    ``measured_range``: {Fi: (low, high)} around the measured points (e.g. over repeated rounds), drawn as
    error bars. The log x axis is labelled 1, 2, 5, 10, 20, 50, ...
    """
    import plotly.graph_objects as go

    r = _check_dropped_cost(dropped_cost)
    fis = [_check_fi("fi_values[...]", f) for f in fi_values]
    if not fis:
        raise ValueError("fi_values is empty: give at least one Fi")
    if any(b <= a for a, b in zip(fis, fis[1:], strict=False)):
        raise ValueError(f"fi_values must be increasing, got {fis}")
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=fis, y=[r + 1 / f for f in fis], name="ScTD: r + 1/Fi", mode="lines",
                             line={"color": PALETTE[1], "width": 3}))
    fig.add_trace(go.Scatter(x=[fis[0], fis[-1]], y=[r, r], name=f"token drop: r = {r:.3f}", mode="lines",
                             line={"color": PALETTE[0], "dash": "dash"}))
    fig.add_trace(go.Scatter(x=[fis[0], fis[-1]], y=[1.0, 1.0], name="baseline: 1", mode="lines",
                             line={"color": "gray", "dash": "dot"}))
    if highlight is not None:
        fi = _check_fi("highlight", highlight)
        fig.add_trace(go.Scatter(x=[fi], y=[r + 1 / fi], name=f"Fi = {fi}: {r + 1 / fi:.3f}", mode="markers",
                                 marker={"symbol": "star", "size": 16, "color": PALETTE[3]}))
    for label, points, symbol, color in (("paper (Table 5)", paper, "diamond", PALETTE[2]),
                                         ("measured", measured, "circle-open", PALETTE[5])):
        if points is None:
            continue
        if not points:
            raise ValueError(f"{label.split()[0]} is empty: give {{Fi: relative cost}} or None")
        xs = [_check_fi(f"{label.split()[0]} key", f) for f in points]
        ys = list(points.values())
        if not all(is_number(y) and y > 0 for y in ys):
            raise ValueError(f"{label.split()[0]} costs must be positive numbers, got {ys}")
        error = None
        if points is measured and measured_range is not None:
            if set(measured_range) != set(points):
                raise ValueError(f"measured_range must have the keys of measured, {sorted(points)}, got "
                                 f"{sorted(measured_range)}")
            spans = [measured_range[f] for f in points]
            if not all(len(s) == 2 and is_number(s[0]) and is_number(s[1]) and s[0] <= y <= s[1]
                       for s, y in zip(spans, ys, strict=True)):
                raise ValueError(f"each measured_range (low, high) must hold its measured cost, got {spans} "
                                 f"around {ys}")
            error = {"type": "data", "symmetric": False, "array": [hi - y for (_, hi), y in zip(spans, ys, strict=True)],
                     "arrayminus": [y - lo for (lo, _), y in zip(spans, ys, strict=True)]}
        fig.add_trace(go.Scatter(x=xs, y=ys, name=label, mode="markers", error_y=error,
                                 marker={"symbol": symbol, "size": 11, "color": color}))
    fig.update_layout(title=title or "What the full pass every Fi steps costs (Table 5, cost column)", height=420,
                      xaxis_title="Fi (the full pass runs every Fi-th step)",
                      yaxis_title="cost per step (1 = a baseline step)", legend_title="method", margin={"t": 60})
    ticks = _log_ticks(fis[0], fis[-1])
    fig.update_xaxes(type="log", tickvals=ticks, ticktext=[str(t) for t in ticks])
    return fig


# ----------------------------------------------------------------------------------------------------------
# The terms of Eq. 4
# ----------------------------------------------------------------------------------------------------------


def loss_contributions(terms: Mapping[str, Any], lam: float, full_mlm: bool = True) -> dict[str, float]:
    """What each term adds to the loss of one step (Eq. 4), from ``ScTDOutput.terms()``.

    Full step (``is_full_step``): 1/2 MLM*, 1/2 MLM, lambda KL_g, lambda KL_l (with ``full_mlm=False``, the
    official code's objective: MLM*, 0, lambda KL_g, lambda KL_l). Other steps: MLM* and zeros.
    The values add up to the step's total loss.
    """
    check_number("lam (lambda)", lam, low=0)
    check_bool("full_mlm", full_mlm)
    if not isinstance(terms, Mapping) or "mlm_dropped" not in terms or "is_full_step" not in terms:
        raise ValueError("terms must be ScTDOutput.terms(): a mapping with 'mlm_dropped' and 'is_full_step'")
    if not terms["is_full_step"]:
        return {"mlm_dropped": float(terms["mlm_dropped"]), "mlm_full": 0.0, "kl_global": 0.0, "kl_local": 0.0}
    missing = [k for k in ("mlm_full", "kl_global", "kl_local") if not is_number(terms.get(k))]
    if missing:
        raise ValueError(f"a full step's terms need numbers for {', '.join(missing)}")
    mlm_weight = 0.5 if full_mlm else 1.0
    return {"mlm_dropped": mlm_weight * float(terms["mlm_dropped"]),
            "mlm_full": 0.5 * float(terms["mlm_full"]) if full_mlm else 0.0,
            "kl_global": lam * float(terms["kl_global"]), "kl_local": lam * float(terms["kl_local"])}


def loss_terms_chart(steps: Mapping[str, Mapping[str, Any]], lam: float, full_mlm: bool = True,
                     title: str | None = None) -> Any:
    """Stacked bars, one per step: what MLM*, MLM, lambda KL_g and lambda KL_l add to its loss.

    ``steps``: label -> ``ScTDOutput.terms()``. One trace per term (4), in the order of :data:`TERM_LABELS`.
    """
    import plotly.graph_objects as go

    if not steps:
        raise ValueError("steps is empty: give {label: ScTDOutput.terms()}")
    parts = {label: loss_contributions(terms, lam, full_mlm) for label, terms in steps.items()}
    fig = go.Figure()
    for i, (key, name) in enumerate(TERM_LABELS.items()):
        values = [parts[label][key] for label in parts]
        fig.add_trace(go.Bar(x=list(parts), y=values, name=name, marker_color=PALETTE[i % len(PALETTE)],
                             text=[f"{v:.3f}" if v else "" for v in values], textposition="inside"))
    fig.update_layout(barmode="stack", title=title or f"The terms of Eq. 4 (λ = {lam:g})", height=400,
                      xaxis_title="training step", yaxis_title="contribution to the loss (nats)",
                      legend_title="term", margin={"t": 60})
    return fig


# ----------------------------------------------------------------------------------------------------------
# Quality side: compare_pretraining results
# ----------------------------------------------------------------------------------------------------------


def _check_results(results: Any) -> None:
    if not isinstance(results, Mapping) or not results:
        raise ValueError("results must be the non-empty {method: summary} dict of compare_pretraining")
    for label, summary in results.items():
        if not isinstance(summary, Mapping) or not summary.get("runs") or "mean" not in summary:
            raise ValueError(f"results[{label!r}] must hold 'runs' (at least one) and 'mean', as "
                             "compare_pretraining returns them")


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` values (fewer at the start); same length as ``values``."""
    check_int("window", window, low=1)
    values = np.asarray(values, dtype=float)
    sums = np.cumsum(np.concatenate([[0.0], values]))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    return (sums[1:] - sums[np.arange(1, len(values) + 1) - counts]) / counts


def training_curves_chart(results: Mapping[str, Mapping[str, Any]], window: int = 10, seed_index: int = 0,
                          title: str | None = None) -> Any:
    """Train loss (left, trailing mean over ``window`` steps) and dev MLM loss of the full model (right)
    against the step, one colour per method; run ``seed_index`` of each. Two traces per method."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    _check_results(results)
    check_int("window", window, low=1)
    check_int("seed_index", seed_index, low=0)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=(f"train loss (mean of the last {window} steps)",
                                        "dev MLM loss (full model)"))
    for i, (label, summary) in enumerate(results.items()):
        if not 0 <= seed_index < len(summary["runs"]):
            raise ValueError(f"seed_index must be in [0, {len(summary['runs']) - 1}] for {label!r}, got {seed_index}")
        run = summary["runs"][seed_index]
        losses = run.get("losses") or []
        if not losses or not all(is_number(v) for v in losses):
            raise ValueError(f"results[{label!r}] run {seed_index} must hold finite train losses")
        color = PALETTE[i % len(PALETTE)]
        fig.add_trace(go.Scatter(x=list(range(len(losses))), y=moving_average(losses, window), name=label,
                                 legendgroup=label, mode="lines", line={"color": color}), row=1, col=1)
        evals = run.get("evals") or []
        fig.add_trace(go.Scatter(x=[e["step"] for e in evals], y=[e["dev_mlm_loss"] for e in evals], name=label,
                                 legendgroup=label, showlegend=False, mode="lines+markers",
                                 line={"color": color}), row=1, col=2)
    fig.update_xaxes(title_text="pretraining step")
    fig.update_yaxes(title_text="loss (nats)")
    fig.update_layout(title=title or "Pretraining curves, same seed (same initial weights and batches)", height=420,
                      legend_title="method", margin={"t": 80})
    return fig


def quality_chart(results: Mapping[str, Mapping[str, Any]],
                  metrics: Sequence[str] = ("dev_mlm_loss", "drift", "probe_last", "seconds_per_step"),
                  title: str | None = None) -> Any:
    """One panel per metric, one bar per method (its mean over seeds; the sample sd as error bar when there
    are several seeds). One trace per metric. A metric that a method did not measure (None) is an error."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    _check_results(results)
    metrics = list(metrics)
    if not metrics:
        raise ValueError("metrics is empty: name at least one of " + ", ".join(METRIC_TITLES))
    unknown = [m for m in metrics if m not in METRIC_TITLES]
    if unknown:
        raise ValueError(f"metrics must be among {', '.join(METRIC_TITLES)}, got {unknown}")
    labels = list(results)
    fig = make_subplots(rows=1, cols=len(metrics), horizontal_spacing=0.08,
                        subplot_titles=[METRIC_TITLES[m][0] for m in metrics])
    for col, metric in enumerate(metrics, start=1):
        means = [results[label]["mean"].get(metric) for label in labels]
        if not all(is_number(v) for v in means):
            missing = [label for label, v in zip(labels, means, strict=True) if not is_number(v)]
            raise ValueError(f"metric {metric!r} was not measured for {', '.join(map(repr, missing))}")
        sds = [(results[label].get("sd") or {}).get(metric) for label in labels]
        error = {"type": "data", "array": [s or 0.0 for s in sds]} if any(s for s in sds) else None
        fig.add_trace(go.Bar(x=labels, y=means, name=metric, error_y=error, showlegend=False,
                             marker_color=[PALETTE[i % len(PALETTE)] for i in range(len(labels))],
                             text=[f"{v:.3g}" for v in means], textposition="outside"), row=1, col=col)
        fig.update_yaxes(title_text=METRIC_TITLES[metric][1], row=1, col=col)
    fig.update_xaxes(title_text="method")
    fig.update_layout(title=title or "Quality and cost after the same number of steps", height=420,
                      margin={"t": 80})
    return fig
