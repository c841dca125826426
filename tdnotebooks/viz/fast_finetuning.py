"""Charts for notebook 03 (fast fine-tuning): speed, accuracy, the ablation and LRM, from ``FinetuneHistory`` records.

Same rules as :mod:`tdnotebooks.viz`: pure functions that return a ``plotly.graph_objects.Figure``, axis
titles with units, no ``FigureWidget``. Every function reads :class:`tdnotebooks.finetuning.train.FinetuneHistory`
objects (``epochs``: ``train_seconds``, ``dev_accuracy``, ``real_tokens``, ``slot_tokens``; ``steps``:
``epoch``, ``loss``, ``batch_size``, ``lr``). A run is one ``FinetuneHistory`` or a list of them, one per seed:
charts show the mean over seeds and, with two seeds or more, every seed's value (or the min-max range).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from tdnotebooks.validation import check_int
from tdnotebooks.viz.common import label_colors

__all__ = ["ablation_chart", "accuracy_vs_time", "loss_curves", "lr_per_step"]

LRM_METHODS = ("bucket", "tokendrop_bucket")  # the methods whose steps finetune() modulates when lrm=True


def _seeds(name: str, run: Any) -> list[Any]:
    """A run as a non-empty list of histories (one per seed)."""
    runs = list(run) if isinstance(run, (list, tuple)) else [run]
    if not runs:
        raise ValueError(f"run {name!r} has no histories: give a FinetuneHistory or a non-empty list of them")
    for h in runs:
        if not hasattr(h, "epochs") or not hasattr(h, "steps"):
            raise ValueError(f"run {name!r}: expected tdnotebooks.finetuning.train.FinetuneHistory objects, got {type(h).__name__}")
    return runs


def _check_runs(runs: Any) -> None:
    """A ``{label: FinetuneHistory or [FinetuneHistory per seed]}`` (empty: an empty figure), before any work."""
    if not isinstance(runs, Mapping):
        raise ValueError(f"runs must be a {{label: FinetuneHistory}} mapping, got {type(runs).__name__}")


def accuracy_vs_time(runs: Mapping[str, Any], *, title: str | None = None,
                     colors: Mapping[str, str] | None = None, x: str = "seconds") -> Any:
    """Dev accuracy after each epoch against the cumulative training time (seconds, evaluation excluded).

    One line per run; a marker per epoch (labelled ``e1``, ``e2``, ...). With several seeds the point is
    the mean over seeds and the error bars span the seeds' min to max, in both time and accuracy. A run
    that gets to the same accuracy further left is faster. A setting has the same colour in every chart
    (:func:`tdnotebooks.viz.common.label_colors`; ``colors`` overrides it). ``x="slots"`` puts the cumulative
    token slots on the x axis instead of the seconds: the analytic cost, the same on every machine.
    """
    import plotly.graph_objects as go

    _check_runs(runs)
    if x not in ("seconds", "slots"):
        raise ValueError(f'x must be "seconds" or "slots", got {x!r}')
    key = "train_seconds" if x == "seconds" else "slot_tokens"

    color = label_colors(list(runs), colors)
    fig = go.Figure()
    for name, run in runs.items():
        histories = _seeds(name, run)
        n_epochs = {len(h.epochs) for h in histories}
        if len(n_epochs) != 1:
            raise ValueError(f"run {name!r}: every seed needs the same number of epochs, got {sorted(n_epochs)}")
        seconds = np.array([np.cumsum([e[key] for e in h.epochs]) for h in histories], dtype=float)
        accuracy = 100 * np.array([[e["dev_accuracy"] for e in h.epochs] for h in histories], dtype=float)
        xs, y = seconds.mean(axis=0), accuracy.mean(axis=0)
        hover = "%{x:.1f} s of training" if x == "seconds" else "%{x:,.0f} token slots"
        trace = go.Scatter(x=xs, y=y, mode="lines+markers+text", name=f"{name} ({len(histories)} seed"
                           f"{'s' if len(histories) > 1 else ''})", text=[f"e{k + 1}" for k in range(len(xs))],
                           textposition="top center", line={"color": color[name]}, marker={"size": 9},
                           hovertemplate="after %{text}: " + hover + ", dev accuracy %{y:.1f}%"
                                         "<extra>%{fullData.name}</extra>")
        if len(histories) > 1:
            trace.error_y = {"type": "data", "symmetric": False, "array": accuracy.max(0) - y,
                             "arrayminus": y - accuracy.min(0), "thickness": 1}
            trace.error_x = {"type": "data", "symmetric": False, "array": seconds.max(0) - xs,
                             "arrayminus": xs - seconds.min(0), "thickness": 1}
        fig.add_trace(trace)
    default_title = ("Dev accuracy against training time (further left = faster)" if x == "seconds" else
                     "Dev accuracy against the token slots computed on (further left = less compute)")
    fig.update_layout(title=title or default_title,
                      xaxis_title=("cumulative training time (s, evaluation excluded)" if x == "seconds"
                                   else "cumulative token slots (all sequences, padding included)"),
                      yaxis_title="dev accuracy (%)", legend_title="batching", height=400, margin={"t": 60})
    fig.update_xaxes(rangemode="tozero")
    return fig


ABLATION_METRICS: tuple[tuple[str, str], ...] = (
    ("dev accuracy (%)", "final dev accuracy (%)"),
    ("optimizer steps", "optimizer steps (all epochs)"),
    ("padding (%)", "padding (% of token slots)"),
    ("training time (s)", "training time (s, all epochs)"),
)


def _ablation_values(history: Any) -> tuple[float, float, float, float]:
    """Final dev accuracy (%), optimizer steps, padding (% of slots) and training seconds of one run."""
    real = sum(e["real_tokens"] for e in history.epochs)
    slots = sum(e["slot_tokens"] for e in history.epochs)
    padding = 100 * (slots - real) / slots if slots else 0.0
    accuracy = 100 * history.epochs[-1]["dev_accuracy"] if history.epochs else float("nan")
    return accuracy, float(len(history.steps)), padding, float(sum(e["train_seconds"] for e in history.epochs))


def ablation_chart(runs: Mapping[str, Any], *, title: str | None = None,
                   colors: Mapping[str, str] | None = None, metrics: Any = None) -> Any:
    """Paper Table 4 as four bar panels: dev accuracy, optimizer steps, padding and training time per setting.

    ``runs``: ``{setting: FinetuneHistory or [FinetuneHistory per seed]}``, in the order the bars should appear. Bars show
    the mean over seeds; with two seeds or more every seed is drawn as a black dot on its bar, so the
    seed-to-seed spread is visible next to the differences between settings. Colours as in :func:`accuracy_vs_time`.
    ``metrics``: the panels to draw, by their short names in :data:`ABLATION_METRICS` (default: all four).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    _check_runs(runs)

    shorts = [short for short, _ in ABLATION_METRICS]
    chosen = list(shorts if metrics is None else metrics)
    if not chosen or any(m not in shorts for m in chosen):
        raise ValueError(f"metrics must be a non-empty list of {shorts}, got {metrics!r}")
    names = list(runs)
    color = label_colors(names, colors)
    values = {name: np.array([_ablation_values(h) for h in _seeds(name, runs[name])]) for name in names}
    fig = make_subplots(rows=1, cols=len(chosen), horizontal_spacing=0.07, subplot_titles=chosen)
    for col, short in enumerate(chosen, start=1):
        index = shorts.index(short)
        long = ABLATION_METRICS[index][1]
        means = [float(values[n][:, index].mean()) for n in names]
        fig.add_trace(go.Bar(x=names, y=means, marker_color=[color[n] for n in names],
                             showlegend=False, name=short,
                             hovertemplate="%{x}<br>" + long + ": %{y:.3g} (mean over seeds)<extra></extra>"),
                      row=1, col=col)
        seeds_x = [n for n in names for _ in range(len(values[n]))]
        seeds_y = [float(v) for n in names for v in values[n][:, index]]
        if any(len(values[n]) > 1 for n in names):
            fig.add_trace(go.Scatter(x=seeds_x, y=seeds_y, mode="markers", showlegend=col == 1, name="one seed",
                                     marker={"color": "black", "size": 6, "symbol": "circle-open"},
                                     hovertemplate="%{x}<br>one seed: %{y:.3g}<extra></extra>"), row=1, col=col)
        fig.update_yaxes(title_text=long, row=1, col=col, rangemode="tozero")
        fig.update_xaxes(tickangle=-35, row=1, col=col)
    accuracy = [v[:, 0] for v in values.values()]
    if accuracy and chosen[0] == shorts[0]:  # accuracy differences are small: zoom in, but keep every seed in view
        low, high = min(a.min() for a in accuracy), max(a.max() for a in accuracy)
        if np.isfinite(low) and np.isfinite(high):
            fig.update_yaxes(range=[max(0.0, low - 5), min(100.0, high + 3)], row=1, col=1)
    fig.update_layout(title=title or "Ablation of the BucketSampler optimizations (paper Table 4)",
                      height=430, margin={"t": 80, "b": 120}, bargap=0.25)
    fig.update_xaxes(title_text="setting")                      # every panel: the same categories
    return fig


def _binned_loss(history: Any, bins_per_epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """Example-weighted mean training loss in each 1/bins_per_epoch of an epoch (NaN where no step ends)."""
    n_epochs = len(history.epochs) or (1 + max((s["epoch"] for s in history.steps), default=-1))
    sums = np.zeros(n_epochs * bins_per_epoch)
    weights = np.zeros_like(sums)
    for epoch in range(n_epochs):
        steps = [s for s in history.steps if s["epoch"] == epoch]
        sizes = np.array([s["batch_size"] for s in steps], dtype=float)
        if not len(sizes):
            continue
        middle = (np.cumsum(sizes) - sizes / 2) / sizes.sum()  # where each step sits within its epoch
        bins = epoch * bins_per_epoch + np.minimum((middle * bins_per_epoch).astype(int), bins_per_epoch - 1)
        np.add.at(sums, bins, sizes * np.array([s["loss"] for s in steps], dtype=float))
        np.add.at(weights, bins, sizes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.arange(len(sums)) + 0.5) / bins_per_epoch, np.where(weights > 0, sums / weights, np.nan)


def loss_curves(runs: Mapping[str, Any], *, bins_per_epoch: int = 4, title: str | None = None,
                colors: Mapping[str, str] | None = None) -> Any:
    """Training loss against epochs of data seen (paper Fig. 5), comparable across batch sizes.

    Runs with variable batch sizes take different numbers of steps, so the x axis counts epochs (examples
    seen / training-set size), not steps. Each point is the example-weighted mean loss of the steps whose
    batch sits in that ``1/bins_per_epoch`` of an epoch, averaged over seeds; a bin in which a run takes no
    step (a few huge batches) is left as a gap. Colours as in :func:`accuracy_vs_time`.
    """
    import plotly.graph_objects as go

    _check_runs(runs)

    bins_per_epoch = check_int("bins_per_epoch", bins_per_epoch, low=1)
    color = label_colors(list(runs), colors)
    fig = go.Figure()
    for name, run in runs.items():
        curves = [_binned_loss(h, bins_per_epoch) for h in _seeds(name, run)]
        width = min(len(x) for x, _ in curves)
        x = curves[0][0][:width]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a bin without steps in any seed stays NaN
            y = np.nanmean(np.array([c[1][:width] for c in curves]), axis=0)
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=name, connectgaps=False,
                                 line={"color": color[name]}, marker={"size": 5},
                                 hovertemplate="epoch %{x:.2f}: training loss %{y:.3f}<extra>%{fullData.name}"
                                               "</extra>"))
    fig.update_layout(title=title or "Training loss as the epochs go by (paper Fig. 5)",
                      xaxis_title="epochs of training data seen", yaxis_title="training loss (cross-entropy, nats)",
                      legend_title="setting", height=380, margin={"t": 60})
    return fig


def lr_per_step(runs: Mapping[str, Any], *, title: str | None = None) -> Any:
    """The learning rate of every optimizer step, one panel per run, markers coloured by batch size.

    ``runs``: ``{label: FinetuneHistory}`` (one seed each). The dashed grey line is the plain schedule (warm-up
    and linear decay). For runs that LRM modulates (``config["lrm"]`` and a bucket method) it is recovered
    from the recorded lr as ``lr / sqrt(batch_size / base_batch_size)``; elsewhere it is the lr itself.
    Epoch boundaries are dotted. All panels share one colour scale, so equal sizes get equal colours.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    _check_runs(runs)

    names = list(runs)
    histories = {n: _seeds(n, runs[n]) for n in names}
    for n, hs in histories.items():
        if len(hs) != 1:
            raise ValueError(f"run {n!r}: lr_per_step draws one seed per run, got {len(hs)} histories")
    sizes = [s["batch_size"] for hs in histories.values() for s in hs[0].steps]
    low, high = (min(sizes), max(sizes)) if sizes else (0, 1)
    fig = make_subplots(rows=max(1, len(names)), cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=names or None)
    for row, name in enumerate(names, start=1):
        history = histories[name][0]
        steps = history.steps
        x = np.array([s["step"] for s in steps], dtype=float)
        lr = np.array([s["lr"] for s in steps], dtype=float)
        bs = np.array([s["batch_size"] for s in steps], dtype=float)
        config = getattr(history, "config", {}) or {}
        modulated = bool(config.get("lrm")) and config.get("method") in LRM_METHODS
        base = config.get("base_batch_size")
        if modulated and not base:
            raise ValueError(f"run {name!r}: config has lrm=True but no base_batch_size to undo the LRM factor")
        schedule = lr / np.sqrt(bs / base) if modulated else lr
        fig.add_trace(go.Scatter(x=x, y=schedule, mode="lines", line={"color": "gray", "dash": "dash", "width": 1},
                                 name="schedule without LRM", showlegend=row == 1,
                                 hovertemplate="step %{x}: schedule %{y:.2e}<extra></extra>"), row=row, col=1)
        fig.add_trace(go.Scatter(x=x, y=lr, mode="markers", name="lr of the step", showlegend=row == 1,
                                 customdata=bs,
                                 marker={"color": bs, "coloraxis": "coloraxis", "size": 7,
                                         "line": {"width": 0.5, "color": "white"}},
                                 hovertemplate="step %{x}: lr %{y:.2e}, batch of %{customdata} sequences"
                                               "<extra></extra>"), row=row, col=1)
        epochs = [s["epoch"] for s in steps]
        for k in range(1, len(epochs)):
            if epochs[k] != epochs[k - 1]:
                fig.add_vline(x=x[k] - 0.5, line_dash="dot", line_color="black", line_width=1, row=row, col=1)
        fig.update_yaxes(title_text="learning rate", exponentformat="e", rangemode="tozero", row=row, col=1)
    fig.update_xaxes(title_text="optimizer step", row=max(1, len(names)), col=1)
    fig.update_layout(title=title or "Learning rate per step, coloured by the step's batch size",
                      coloraxis={"colorscale": "Viridis", "cmin": low, "cmax": high,
                                 "colorbar": {"title": {"text": "batch size<br>(sequences)"}}},
                      height=220 + 200 * max(1, len(names)), margin={"t": 70},
                      legend={"orientation": "h", "y": -0.12})
    return fig
