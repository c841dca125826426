"""Charts of notebook 04 (fast inference, paper Section 3.2): pure functions returning ``go.Figure``.

- :func:`latency_accuracy_chart`: real-time inference at batch size 1, median latency and accuracy against
  the inference-time TokenDrop rate (the paper's Fig. 4), one line per model;
- :func:`server_mode_chart`: server-mode throughput and padding per batching scheme and data set (Table 3).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from tdnotebooks.viz.common import PALETTE

__all__ = ["latency_accuracy_chart", "server_mode_chart"]


def _check_results(results: Mapping[str, Sequence[Any]]) -> None:
    if not results:
        raise ValueError("results is empty: give {model name: [LatencyResult, ...]}")
    for name, rows in results.items():
        if len(rows) == 0:
            raise ValueError(f"results[{name!r}] is empty: measure at least one TokenDrop rate")
        for row in rows:
            if not 0.0 <= row.rate <= 1.0:
                raise ValueError(f"results[{name!r}] has rate={row.rate!r}; rates lie in [0, 1]")
            if not (row.median_ms >= 0 and 0.0 <= row.accuracy <= 1.0 and row.mean_tokens >= 0):
                raise ValueError(f"results[{name!r}] at rate {row.rate} has a negative latency or token count, "
                                 f"or an accuracy outside [0, 1]: {row!r}")


def _error_bars(centers: Sequence[float], ranges: Sequence[tuple[float, float]] | None, what: str) -> dict | None:
    """Plotly ``error_y`` for (low, high) ranges around ``centers`` (None without ranges)."""
    if ranges is None:
        return None
    if len(ranges) != len(centers):
        raise ValueError(f"{what} must give one (low, high) pair per point: {len(centers)} points, {len(ranges)} pairs")
    for (low, high), c in zip(ranges, centers, strict=True):
        if not low <= c <= high:
            raise ValueError(f"{what}: each (low, high) must hold its point, got ({low}, {high}) around {c}")
    return {"type": "data", "symmetric": False, "array": [high - c for (_, high), c in zip(ranges, centers, strict=True)],
            "arrayminus": [c - low for (low, _), c in zip(ranges, centers, strict=True)]}


def latency_accuracy_chart(results: Mapping[str, Sequence[Any]], title: str | None = None,
                           legend_title: str = "model",
                           latency_range: Mapping[str, Sequence[tuple[float, float]]] | None = None) -> Any:
    """Median latency (left) and accuracy (right) against the TokenDrop rate at batch size 1.

    ``results``: line name (a model, or a data set) -> :class:`tdnotebooks.finetuning.inference.LatencyResult` rows
    (``rate``, ``median_ms``, ``mean_tokens``, ``accuracy``), any order. The hover text gives the mean input length and the speed-up
    over the model's rate-0 row (when there is one). ``latency_range``: line name -> (low, high) ms per row, in the
    order of ``results`` (e.g. min and max over repeated rounds), drawn as error bars.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    _check_results(results)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("median latency per request", "accuracy"),
                        horizontal_spacing=0.12)
    for i, (name, rows) in enumerate(results.items()):
        ranges = None if latency_range is None or name not in latency_range else list(latency_range[name])
        order = sorted(range(len(rows)), key=lambda k: rows[k].rate)
        rows = [rows[k] for k in order]
        ranges = None if ranges is None else [ranges[k] if k < len(ranges) else None for k in order]
        if ranges is not None and None in ranges:
            raise ValueError(f"latency_range[{name!r}] must give one (low, high) pair per row")
        color = PALETTE[i % len(PALETTE)]
        base = next((r.median_ms for r in rows if r.rate == 0), None)
        hover = [f"rate {r.rate:.2f}<br>{r.mean_tokens:.1f} tokens on average<br>{r.median_ms:.2f} ms"
                 + (f" ({base / r.median_ms:.2f}x vs rate 0)" if base and r.median_ms > 0 else "")
                 + f"<br>accuracy {r.accuracy:.1%}" for r in rows]
        rates = [r.rate for r in rows]
        medians = [r.median_ms for r in rows]
        fig.add_trace(go.Scatter(x=rates, y=medians, name=name, legendgroup=name, mode="lines+markers",
                                 marker_color=color, hovertext=hover, hoverinfo="text",
                                 error_y=_error_bars(medians, ranges, f"latency_range[{name!r}]")),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=rates, y=[r.accuracy for r in rows], name=name, legendgroup=name,
                                 showlegend=False, mode="lines+markers", marker_color=color, hovertext=hover,
                                 hoverinfo="text"), row=1, col=2)
    fig.update_xaxes(title_text="inference-time TokenDrop rate (share of stopwords dropped)", range=[-0.05, 1.05])
    fig.update_yaxes(title_text="milliseconds", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="accuracy", tickformat=".0%", row=1, col=2)
    fig.update_layout(title=title or "Real-time inference (batch size 1) with TokenDrop", height=400,
                      legend_title=legend_title, margin={"t": 80})
    return fig


def server_mode_chart(results: Mapping[str, Mapping[str, Any]], title: str | None = None,
                      throughput_range: Mapping[str, Mapping[str, tuple[float, float]]] | None = None) -> Any:
    """Throughput (left) and padding fraction (right) per batching scheme, grouped by data set.

    ``results``: data set -> scheme -> :class:`tdnotebooks.finetuning.inference.Predictions` (``throughput``,
    ``padding.padding_fraction``). Bars are labelled with the speed-up over the data set's first scheme.
    ``throughput_range``: data set -> scheme -> (low, high) examples per second (e.g. over repeated rounds),
    drawn as error bars.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not results or any(not schemes for schemes in results.values()):
        raise ValueError("results must map every data set to at least one {scheme: Predictions}")
    for data_name, schemes in results.items():
        for scheme, pred in schemes.items():
            if not (pred.throughput > 0 and math.isfinite(pred.throughput)):
                raise ValueError(f"results[{data_name!r}][{scheme!r}] has throughput {pred.throughput!r}; "
                                 "it must be a finite number > 0 (examples per second)")
    data_names = list(results)
    schemes = list(dict.fromkeys(s for per_data in results.values() for s in per_data))
    fig = make_subplots(rows=1, cols=2, subplot_titles=("throughput", "padding"), horizontal_spacing=0.12)
    for i, scheme in enumerate(schemes):
        present = [d for d in data_names if scheme in results[d]]
        first = {d: next(iter(results[d].values())).throughput for d in present}
        speed = [results[d][scheme].throughput for d in present]
        pad = [results[d][scheme].padding.padding_fraction for d in present]
        color = PALETTE[i % len(PALETTE)]
        ranges = None if throughput_range is None else [throughput_range[d][scheme] for d in present]
        fig.add_trace(go.Bar(x=present, y=speed, name=scheme, legendgroup=scheme, marker_color=color,
                             text=[f"{s / first[d]:.2f}x" for s, d in zip(speed, present, strict=True)],
                             textposition="outside", error_y=_error_bars(speed, ranges, "throughput_range")),
                      row=1, col=1)
        fig.add_trace(go.Bar(x=present, y=pad, name=scheme, legendgroup=scheme, showlegend=False,
                             marker_color=color, text=[f"{p:.1%}" for p in pad], textposition="outside"),
                      row=1, col=2)
    fig.update_yaxes(title_text="examples per second", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="share of token slots that are padding", tickformat=".0%",
                     range=[0, 1.1 * max(1e-3, *(p.padding.padding_fraction for per in results.values()
                                                  for p in per.values()))], row=1, col=2)
    fig.update_xaxes(title_text="data set")
    fig.update_layout(title=title or "Server-mode inference: every request at once", barmode="group", height=420,
                      legend_title="batching", margin={"t": 80})
    return fig
