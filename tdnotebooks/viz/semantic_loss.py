"""Charts of notebook 06 (the semantic loss of token dropping, Zhong et al. 2023, Sec. 2): pure functions
returning ``go.Figure``.

- :func:`view_similarity_chart`: Sentence-BERT cosine similarity of each corrupted view to its original,
  one box per view (the quantity on Fig. 3's left axis);
- :func:`drift_curves_chart`: that similarity during pretraining, one line per run, next to the dev MLM
  loss (Fig. 3 at small scale), from :func:`tdnotebooks.pretraining.analysis.drift_tracker` records;
- :func:`probe_chart`: linear-probe accuracy per layer, one line per model, dropped layers shaded (Fig. 4/8).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tdnotebooks.validation import check_number, is_int, is_number
from tdnotebooks.viz.common import PALETTE

__all__ = ["view_similarity_chart", "drift_curves_chart", "probe_chart"]


def _check_cosines(name: str, values: Any) -> np.ndarray:
    values = np.asarray(values, dtype=float).ravel()
    if values.size == 0:
        raise ValueError(f"{name} is empty: give at least one cosine similarity")
    if not np.all(np.isfinite(values)) or values.min() < -1 - 1e-6 or values.max() > 1 + 1e-6:
        raise ValueError(f"{name} must hold cosine similarities in [-1, 1], got min {values.min()!r}, "
                         f"max {values.max()!r}")
    return values


def view_similarity_chart(drift: Mapping[str, Any], title: str | None = None) -> Any:
    """One box (with its points) per view: the cosine similarity of every corrupted text to its original.

    ``drift``: view name -> per-example cosines, or the dict :func:`tdnotebooks.pretraining.analysis.semantic_drift`
    returns for it (``{"mean": ..., "per_example": array}``). The mean is drawn as the box's dashed line.
    """
    import plotly.graph_objects as go

    if not drift:
        raise ValueError("drift is empty: give {view name: cosine similarities}")
    fig = go.Figure()
    for i, (name, values) in enumerate(drift.items()):
        if isinstance(values, Mapping):
            if "per_example" not in values:
                raise ValueError(f"drift[{name!r}] must be a list of cosines or a semantic_drift entry "
                                 "with 'per_example'")
            values = values["per_example"]
        cosines = _check_cosines(f"drift[{name!r}]", values)
        fig.add_trace(go.Box(y=cosines, name=f"{name}<br>mean {cosines.mean():.3f}", boxmean=True,
                             boxpoints="all", jitter=0.4, pointpos=0, marker_color=PALETTE[i % len(PALETTE)]))
    fig.update_layout(title=title or "How much meaning survives the corruption (Sentence-BERT)", height=420,
                      xaxis_title="view of the sentence", yaxis_title="cosine similarity to the original",
                      showlegend=False, margin={"t": 60})
    return fig


def drift_curves_chart(records: Mapping[str, Sequence[Mapping[str, Any]]], view: Mapping[str, str] | str,
                       references: Mapping[str, float] | None = None, title: str | None = None) -> Any:
    """Similarity to the original (left) and dev MLM loss (right) against the pretraining step, one line per run.

    ``records``: run name -> the records of :func:`tdnotebooks.pretraining.analysis.drift_tracker` (``step``, the
    mean cosine per view, ``dev_mlm_loss``). ``view``: which view each run is judged on (a name for all
    runs, or run -> name; Fig. 3 judges the baseline on "masked", token dropping on "masked_dropped").
    ``references``: label -> a constant similarity drawn as a dotted line (e.g. random dropping).
    Records without a dev loss (``None``) are left out of the right panel.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not records:
        raise ValueError("records is empty: give {run name: drift_tracker records}")
    views = {name: view for name in records} if isinstance(view, str) else dict(view)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=("similarity of the corrupted view to the original", "dev MLM loss"))
    for i, (name, rows) in enumerate(records.items()):
        if len(rows) == 0:
            raise ValueError(f"records[{name!r}] is empty: run at least one chunk")
        if name not in views:
            raise ValueError(f"view names no view for run {name!r}; runs: {', '.join(records)}")
        key = views[name]
        if any(key not in r or "step" not in r for r in rows):
            raise ValueError(f"records[{name!r}] must hold 'step' and {key!r} in every record")
        steps = [r["step"] for r in rows]
        if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
            raise ValueError(f"records[{name!r}] must be in increasing step order, got steps {steps}")
        cosines = _check_cosines(f"records[{name!r}][...][{key!r}]", [r[key] for r in rows])
        color = PALETTE[i % len(PALETTE)]
        fig.add_trace(go.Scatter(x=steps, y=cosines, name=f"{name} ({key})", legendgroup=name,
                                 mode="lines+markers", marker_color=color), row=1, col=1)
        evals = [(r["step"], r["dev_mlm_loss"]) for r in rows if r.get("dev_mlm_loss") is not None]
        if any(not is_number(loss) for _, loss in evals):
            raise ValueError(f"records[{name!r}] has a dev_mlm_loss that is not a finite number")
        fig.add_trace(go.Scatter(x=[s for s, _ in evals], y=[loss for _, loss in evals], name=name,
                                 legendgroup=name, showlegend=False, mode="lines+markers", marker_color=color),
                      row=1, col=2)
    for label, value in (references or {}).items():
        check_number(f"references[{label!r}] (a cosine similarity)", value, low=-1, high=1)
        fig.add_hline(y=value, line_dash="dot", line_color="gray", annotation_text=label,
                      annotation_position="bottom right", row=1, col=1)
    fig.update_xaxes(title_text="pretraining step")
    fig.update_yaxes(title_text="cosine similarity (1 = no drift)", row=1, col=1)
    fig.update_yaxes(title_text="loss (nats)", row=1, col=2)
    fig.update_layout(title=title or "Semantic drift during pretraining (Fig. 3, small scale)", height=420,
                      legend_title="run (view)", margin={"t": 80})
    return fig


def probe_chart(accuracies: Mapping[str, Sequence[float]], chance: float | None = 0.5,
                dropped: tuple[int, int] | None = None, title: str | None = None) -> Any:
    """Probe accuracy against the layer (0 = embeddings, l = output of layer l), one line per model.

    ``accuracies``: model -> :func:`tdnotebooks.pretraining.analysis.probe_layers` output. ``chance``: a dashed line
    (None: none). ``dropped``: the token-dropping wrapper's ``(start, end)`` (layers start..end-1,
    0-based), shaded over hidden-state indices start+1..end, the outputs of the dropped layers.
    """
    import plotly.graph_objects as go

    if not accuracies:
        raise ValueError("accuracies is empty: give {model name: one accuracy per layer}")
    fig = go.Figure()
    for i, (name, values) in enumerate(accuracies.items()):
        if len(values) == 0:
            raise ValueError(f"accuracies[{name!r}] is empty: give one accuracy per layer")
        if not all(is_number(a) and 0.0 <= a <= 1.0 for a in values):
            raise ValueError(f"accuracies[{name!r}] must lie in [0, 1], got {list(values)}")
        fig.add_trace(go.Scatter(x=list(range(len(values))), y=list(values), name=name, mode="lines+markers",
                                 marker_color=PALETTE[i % len(PALETTE)]))
    if chance is not None:
        check_number("chance", chance, low=0, high=1)
        fig.add_hline(y=chance, line_dash="dash", line_color="gray", annotation_text="chance")
    if dropped is not None:
        start, end = dropped
        if not (is_int(start) and is_int(end) and 0 <= start < end):
            raise ValueError(f"dropped must be (start, end) with 0 <= start < end, got {dropped!r}")
        fig.add_vrect(x0=start + 0.5, x1=end + 0.5, fillcolor="gray", opacity=0.15, line_width=0,
                      annotation_text="dropped layers (token drop)", annotation_position="top left")
    fig.update_layout(title=title or "What each layer knows: linear probe accuracy", height=420,
                      xaxis_title="layer (0 = embeddings)", yaxis_title="dev accuracy of the probe",
                      yaxis_tickformat=".0%", legend_title="model", margin={"t": 60})
    fig.update_xaxes(dtick=1)
    return fig
