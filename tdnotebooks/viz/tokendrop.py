"""Charts for notebook 02 (TokenDrop): training curves and resilience to missing stopwords.

Same rules as :mod:`tdnotebooks.viz`: pure functions that return a ``plotly.graph_objects.Figure``,
axis titles with units, no ``FigureWidget``. Inputs are plain numbers (per-epoch records as
:class:`tdnotebooks.finetuning.train.FinetuneHistory` keeps them, accuracies per drop rate), so the charts can be
tested without training anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from tdnotebooks.viz.common import label_colors

__all__ = ["resilience_chart", "training_curves"]


def _epoch_records(run: Any) -> list[Mapping[str, Any]]:
    """The per-epoch records of a ``FinetuneHistory`` (its ``.epochs``) or a list of such dicts."""
    records = list(getattr(run, "epochs", run))
    for key in ("train_loss", "dev_accuracy"):
        if any(key not in r for r in records):
            raise ValueError(f"every epoch record needs {key!r} (as FinetuneHistory.epochs has), got keys "
                             f"{sorted(records[0]) if records else []}")
    return records


def training_curves(runs: Mapping[str, Any], *, title: str | None = None,
                    colors: Mapping[str, str] | None = None) -> Any:
    """Loss (left) and dev accuracy (right) per epoch, one colour per fine-tuning run.

    ``runs``: ``{label: FinetuneHistory}`` (or ``{label: history.epochs}``). Left panel: the mean training loss of
    each epoch (solid) and, when the records have ``dev_loss``, the dev loss after it (dashed); a widening
    gap between the two is overfitting. Right panel: dev accuracy after each epoch. Epochs count from 1.
    With TokenDrop the training loss is measured on the inputs with stopwords dropped. A run's colour depends on
    its label, not its position (:func:`tdnotebooks.viz.common.label_colors`; ``colors`` overrides it).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not runs:
        raise ValueError("runs is empty: pass {label: FinetuneHistory} for at least one run")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss per epoch", "dev accuracy per epoch"),
                        horizontal_spacing=0.12)
    palette = label_colors(list(runs), colors)
    for label, run in runs.items():
        records = _epoch_records(run)
        color = palette[label]
        epochs = list(range(1, len(records) + 1))
        fig.add_trace(go.Scatter(x=epochs, y=[r["train_loss"] for r in records], name=f"{label}: train loss",
                                 mode="lines+markers", line={"color": color}, legendgroup=label,
                                 hovertemplate="epoch %{x}: train loss %{y:.3f}<extra>" + label + "</extra>"),
                      row=1, col=1)
        if all("dev_loss" in r for r in records):
            fig.add_trace(go.Scatter(x=epochs, y=[r["dev_loss"] for r in records], name=f"{label}: dev loss",
                                     mode="lines+markers", line={"color": color, "dash": "dash"},
                                     legendgroup=label,
                                     hovertemplate="epoch %{x}: dev loss %{y:.3f}<extra>" + label + "</extra>"),
                          row=1, col=1)
        fig.add_trace(go.Scatter(x=epochs, y=[r["dev_accuracy"] for r in records], name=f"{label}: dev accuracy",
                                 mode="lines+markers", line={"color": color}, marker={"symbol": "diamond"},
                                 legendgroup=label,
                                 hovertemplate="epoch %{x}: dev accuracy %{y:.1%}<extra>" + label + "</extra>"),
                      row=1, col=2)
    fig.update_xaxes(title_text="epoch", dtick=1)
    fig.update_yaxes(title_text="cross-entropy loss (nats per example)", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="dev accuracy (fraction correct)", tickformat=".0%", row=1, col=2)
    fig.update_layout(title=title or "Fine-tuning with and without TokenDrop", height=400, margin={"t": 80},
                      legend={"groupclick": "toggleitem"})
    return fig


def resilience_chart(by_rate: Mapping[str, Mapping[float, float]],
                     perturbed: Mapping[str, Mapping[str, float]] | None = None, *,
                     title: str | None = None, colors: Mapping[str, str] | None = None) -> Any:
    """Accuracy of each model when stopwords are dropped at inference time (left), and on edited inputs (right).

    ``by_rate``: ``{model label: {inference drop rate in [0, 1]: accuracy}}``, one line per model (rates
    sorted; the x axis reads in percent of each input's stopwords). ``perturbed``: optional
    ``{model label: {condition: accuracy}}``, e.g. ``{"clean": 0.80, "no articles, no punctuation": 0.78}``,
    drawn as grouped bars, one bar group per condition. Accuracies must lie in [0, 1]. Colours as in
    :func:`training_curves`.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not by_rate:
        raise ValueError("by_rate is empty: pass {model label: {rate: accuracy}} for at least one model")
    for label, table in [*by_rate.items(), *(perturbed or {}).items()]:
        values = np.asarray(list(table.values()), dtype=float)
        if values.size == 0 or not np.all((values >= 0) & (values <= 1)):
            raise ValueError(f"accuracies of {label!r} must be a non-empty set of numbers in [0, 1], "
                             f"got {list(table.values())}")
    for label, table in by_rate.items():
        if not all(0 <= float(r) <= 1 for r in table):
            raise ValueError(f"drop rates of {label!r} must be in [0, 1], got {sorted(table)}")
    cols = 2 if perturbed else 1
    fig = make_subplots(rows=1, cols=cols, horizontal_spacing=0.14,
                        subplot_titles=("inference-time stopword dropping", "edited inputs")[:cols])
    palette = label_colors(list(by_rate) + [k for k in (perturbed or {}) if k not in by_rate], colors)
    for label, table in by_rate.items():
        rates = sorted(table)
        fig.add_trace(go.Scatter(x=[100 * float(r) for r in rates], y=[table[r] for r in rates],
                                 name=label, legendgroup=label, mode="lines+markers",
                                 line={"color": palette[label]},
                                 hovertemplate="drop %{x:.0f}% of the stopwords: %{y:.1%}<extra>" + label
                                 + "</extra>"),
                      row=1, col=1)
    if perturbed:
        for label, table in perturbed.items():
            fig.add_trace(go.Bar(x=list(table), y=list(table.values()), name=label, legendgroup=label,
                                 showlegend=label not in by_rate, marker_color=palette[label],
                                 text=[f"{v:.1%}" for v in table.values()], textposition="outside",
                                 hovertemplate="%{x}: %{y:.1%}<extra>" + label + "</extra>"),
                          row=1, col=2)
        fig.update_xaxes(title_text="dev inputs", row=1, col=2)
        fig.update_yaxes(title_text="dev accuracy (fraction correct)", tickformat=".0%", range=[0, 1.08],
                         row=1, col=2)
        fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="stopwords dropped per input (% of its stopwords)", range=[-5, 105], row=1, col=1)
    fig.update_yaxes(title_text="dev accuracy (fraction correct)", tickformat=".0%", row=1, col=1)
    fig.update_layout(title=title or "Resilience: accuracy when stopwords go missing", height=400,
                      margin={"t": 80})
    return fig

