"""Charts for notebook 01 (padding and buckets): what one epoch of batches looks like.

Same rules as :mod:`tdnotebooks.viz`: pure functions that return a ``plotly.graph_objects.Figure``,
axis titles with units, no ``FigureWidget``. Figures stay light: beyond ``max_batches`` /
``max_points`` consecutive batches are averaged into groups (a bar or point per group), so a tiny
token budget that makes thousands of batches still draws a few hundred marks.

The numbers come from :func:`batch_table`, which uses the same accounting as
:func:`tdnotebooks.padding.padding_stats`: every batch is padded to its longest member and empty
batches are skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tdnotebooks.finetuning.lrm import lr_factor
from tdnotebooks.validation import check_choice, check_int
from tdnotebooks.viz.common import PALETTE

__all__ = ["BatchTable", "batch_cap_curves", "batch_picture", "batch_sizes_per_step", "batch_table",
           "lr_factor_per_step"]

ORDERS = ("sampler", "length")


@dataclass(frozen=True)
class BatchTable:
    """Per-batch token accounting (one entry per non-empty batch, in the order given)."""

    size: np.ndarray  # sequences in the batch
    real: np.ndarray  # real tokens (sum of the lengths)
    longest: np.ndarray  # the padded length: every sequence is padded to it
    shortest: np.ndarray

    @property
    def slots(self) -> np.ndarray:
        """Token slots the model computes on: ``size * longest``."""
        return self.size * self.longest

    @property
    def pad(self) -> np.ndarray:
        return self.slots - self.real

    @property
    def num_batches(self) -> int:
        return len(self.size)

    def take(self, index: np.ndarray) -> BatchTable:
        """The rows ``index`` (e.g. a sort order), as a new table."""
        return BatchTable(self.size[index], self.real[index], self.longest[index], self.shortest[index])


def batch_table(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> BatchTable:
    """Size, real tokens, longest and shortest length of every non-empty batch (lists of example indices)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    batches = [b for b in batches if len(b)]
    if not batches:
        empty = np.zeros(0, dtype=np.int64)
        return BatchTable(empty, empty, empty, empty)
    size = np.fromiter((len(b) for b in batches), dtype=np.int64, count=len(batches))
    indices = np.concatenate([np.asarray(b, dtype=np.int64) for b in batches])
    if indices.min() < 0 or indices.max() >= len(lengths):
        raise ValueError(f"batches must hold example indices in [0, {len(lengths) - 1}] (one length each), got "
                         f"{int(indices.min() if indices.min() < 0 else indices.max())}")
    members = lengths[indices]
    starts = np.concatenate([[0], np.cumsum(size)[:-1]])
    return BatchTable(size, np.add.reduceat(members, starts), np.maximum.reduceat(members, starts),
                      np.minimum.reduceat(members, starts))


def _group_starts(n: int, max_groups: int) -> np.ndarray:
    """Start index of each group of consecutive items: one item per group when ``n <= max_groups``."""
    if n <= max_groups:
        return np.arange(n)
    return np.unique(np.linspace(0, n, max_groups, endpoint=False).astype(np.int64))


def _grouped(values: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min, max and count of ``values`` over the groups that begin at ``starts``."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return values, values, values, np.zeros(0, dtype=np.int64)
    counts = np.diff(np.append(starts, values.size))
    return (np.add.reduceat(values, starts) / counts, np.minimum.reduceat(values, starts),
            np.maximum.reduceat(values, starts), counts)


def _step_trace(values: np.ndarray, starts: np.ndarray, *, name: str, hover: str, grouped_hover: str,
                **style: Any) -> tuple[Any, np.ndarray, np.ndarray]:
    """A scatter of per-step ``values``: one point per group of steps (its mean, error bars from its min to
    its max) when the steps were grouped, else one per step. Returns (trace, group minima, group maxima)."""
    import plotly.graph_objects as go

    mean, low, high, counts = _grouped(values, starts)
    grouped = len(starts) < len(values)
    hovertemplate = ("steps %{x}+ (%{customdata} batches): " + grouped_hover if grouped
                     else "step %{x}: " + hover) + "<extra></extra>"
    trace = go.Scatter(x=starts + 1, y=mean, name=name, customdata=counts, hovertemplate=hovertemplate, **style)
    if grouped:
        trace.error_y = {"type": "data", "symmetric": False, "array": high - mean, "arrayminus": mean - low,
                         "thickness": 1, "width": 0, "color": "rgba(0,0,0,0.35)"}
    return trace, low, high


def _step_axis_title(num_steps: int, num_points: int) -> str:
    """"training step", plus how many steps a point averages when the steps were grouped."""
    if num_points >= num_steps:
        return "training step"
    return f"training step — each point averages ~{num_steps / num_points:.1f} steps (bars: min to max)"


def batch_picture(lengths: Sequence[int], batches: Sequence[Sequence[int]], *, order: str = "sampler",
                  max_batches: int = 300, token_budget: int | None = None, title: str | None = None) -> Any:
    """Real tokens and padding of every batch of an epoch, as stacked bars (one bar per batch).

    ``order="sampler"``: bars in the order the batches are given (training steps); ``"length"``: sorted by
    the batch's longest sequence (then its size), which makes the buckets visible as steps. With more than
    ``max_batches`` batches, consecutive batches are grouped and each bar shows the group's mean per batch
    (``customdata[:, 2]`` holds how many batches a bar stands for). ``token_budget`` draws the budget as a
    horizontal line: a batch of at most that many slots fits the hardware.
    """
    import plotly.graph_objects as go

    check_choice("order", order, ORDERS)
    max_batches = check_int("max_batches", max_batches, low=1)
    if token_budget is not None:
        check_int("token_budget", token_budget, low=1)
    table = batch_table(lengths, batches)
    if order == "length":
        table = table.take(np.lexsort((table.size, table.longest)))
    starts = _group_starts(table.num_batches, max_batches)
    real, _, _, counts = _grouped(table.real, starts)
    pad = _grouped(table.pad, starts)[0]
    size = _grouped(table.size, starts)[0]
    longest_max = _grouped(table.longest, starts)[2]
    steps = starts + 1
    grouped = len(starts) < table.num_batches
    custom = np.column_stack([size, longest_max, counts]) if len(starts) else np.zeros((0, 3))
    if grouped:
        hover = ("steps %{x}+ (%{customdata[2]} batches)<br>mean %{customdata[0]:.1f} sequences, longest "
                 "%{customdata[1]} tokens<br>%{fullData.name}: %{y:,.0f} slots per batch<extra></extra>")
    else:
        hover = ("batch %{x}: %{customdata[0]} sequences × %{customdata[1]} tokens"
                 "<br>%{fullData.name}: %{y:,} slots<extra></extra>")
    fig = go.Figure([
        go.Bar(name="real tokens", x=steps, y=real, customdata=custom, hovertemplate=hover,
               marker_color=PALETTE[2], marker_line_width=0),
        go.Bar(name="padding", x=steps, y=pad, customdata=custom, hovertemplate=hover,
               marker_color=PALETTE[3], marker_line_width=0),
    ])
    if token_budget is not None:
        fig.add_hline(y=token_budget, line_dash="dash", line_color="gray",
                      annotation_text=f"token budget {token_budget:,}", annotation_position="top left")
    slots, real_total = int(table.slots.sum()), int(table.real.sum())
    fraction = (slots - real_total) / slots if slots else 0.0
    if title is None:
        title = f"{table.num_batches:,} batches: {fraction:.1%} of the token slots are padding"
    xaxis_title = ("training step (sampler order)" if order == "sampler"
                   else "batch, sorted by its longest sequence")
    if grouped:
        xaxis_title += f" — each bar averages ~{table.num_batches / len(starts):.1f} batches"
    fig.update_layout(barmode="stack", bargap=0.1 if len(starts) < 60 else 0, title=title,
                      xaxis_title=xaxis_title,
                      yaxis_title="token slots per batch (tokens)" if not grouped
                      else "mean token slots per batch (tokens)",
                      legend_title="slot holds", height=380, margin={"t": 60})
    return fig


def batch_sizes_per_step(batches: Sequence[Sequence[int]], *, lengths: Sequence[int] | None = None,
                         base_batch_size: int | None = None, max_points: int = 1000,
                         title: str | None = None) -> Any:
    """Batch size at every training step (batches in sampler order); empty batches are skipped.

    With ``lengths`` the markers are coloured by the batch's longest sequence (short buckets get big
    batches). ``base_batch_size`` is drawn as a line (the RandomSampler's fixed size). Beyond ``max_points``
    steps, consecutive steps are grouped: a marker shows the group's mean, its error bar the min and max.
    """
    import plotly.graph_objects as go

    max_points = check_int("max_points", max_points, low=1)
    if lengths is not None:
        table = batch_table(lengths, batches)
        sizes, longest = table.size, table.longest
    else:
        sizes = np.asarray([len(b) for b in batches if len(b)], dtype=np.int64)
        longest = None
    starts = _group_starts(len(sizes), max_points)
    marker: dict[str, Any] = {"color": PALETTE[0], "size": 6 if len(starts) < 300 else 4}
    if longest is not None and len(starts):
        marker.update(color=_grouped(longest, starts)[2], colorscale="Viridis", showscale=True,
                      colorbar={"title": {"text": "longest<br>sequence<br>(tokens)"}})
    trace, low, high = _step_trace(sizes, starts, name="batch size", hover="%{y:.0f} sequences",
                                   grouped_hover="mean %{y:.1f} sequences", mode="markers", marker=marker)
    fig = go.Figure([trace])
    if base_batch_size is not None:
        fig.add_hline(y=base_batch_size, line_dash="dash", line_color="gray",
                      annotation_text=f"base batch size {base_batch_size}", annotation_position="top left")
    if title is None:
        title = (f"Batch size per step: {len(sizes):,} steps, {int(low.min()) if len(sizes) else 0}–"
                 f"{int(high.max()) if len(sizes) else 0} sequences")
    xaxis_title = _step_axis_title(len(sizes), len(starts))
    fig.update_layout(title=title, xaxis_title=xaxis_title, yaxis_title="batch size (sequences)",
                      showlegend=False, height=340, margin={"t": 60})
    fig.update_yaxes(rangemode="tozero")
    return fig


def lr_factor_per_step(batch_sizes: Sequence[int], base_batch_size: int, *, max_points: int = 1000,
                       title: str | None = None) -> Any:
    """LRM: the learning-rate multiplier ``sqrt(batch_size / base_batch_size)`` at every training step.

    ``batch_sizes`` in step order (e.g. ``[len(b) for b in sampler.epoch_batches(epoch)]``); the factor
    comes from :func:`tdnotebooks.finetuning.lrm.lr_factor`. A line at 1 marks the fixed-batch RandomSampler.
    Beyond ``max_points`` steps, a point shows a group's mean factor and its error bar the min and max.
    """
    import plotly.graph_objects as go

    max_points = check_int("max_points", max_points, low=1)
    factors = np.asarray([lr_factor(int(b), base_batch_size) for b in batch_sizes], dtype=float)
    if len(factors) == 0:  # still validate the base
        lr_factor(1, base_batch_size)
    starts = _group_starts(len(factors), max_points)
    trace, _, _ = _step_trace(factors, starts, name="LR factor", hover="lr × %{y:.3f}",
                              grouped_hover="mean lr × %{y:.3f}", mode="lines+markers",
                              line={"color": PALETTE[1], "width": 1},
                              marker={"size": 5 if len(starts) < 300 else 3})
    fig = go.Figure([trace])
    fig.add_hline(y=1.0, line_dash="dash", line_color="gray", annotation_text="RandomSampler: factor 1",
                  annotation_position="top left")
    if title is None:
        title = f"LRM: lr(step) = base lr × sqrt(batch size / {base_batch_size})"
    xaxis_title = _step_axis_title(len(factors), len(starts))
    fig.update_layout(title=title, xaxis_title=xaxis_title, yaxis_title="learning-rate factor (× base lr)",
                      showlegend=False, height=300, margin={"t": 60})
    fig.update_yaxes(rangemode="tozero")
    return fig


def batch_cap_curves(upper_lengths: Sequence[int], sizes_by_epoch: Mapping[Any, Sequence[int]],
                     hwcap: Sequence[int | None] | None = None, *, title: str | None = None) -> Any:
    """BatchCap: each bucket's batch size against its longest length, one line per epoch.

    ``upper_lengths``: each bucket's longest length (``bucket_upper_lengths(max_length, width)``);
    ``sizes_by_epoch``: ``{label: [batch size of every bucket]}``, e.g. from ``sampler.batch_size_for``;
    ``hwcap``: the hardware cap per bucket (``None`` entries: unbounded, left out), drawn dashed. The
    batch-size axis is logarithmic: caps from a token budget span orders of magnitude.
    """
    import plotly.graph_objects as go

    x = np.asarray(upper_lengths)
    fig = go.Figure()
    for i, (label, sizes) in enumerate(sizes_by_epoch.items()):
        if len(sizes) != len(x):
            raise ValueError(f"sizes_by_epoch[{label!r}] has {len(sizes)} entries, upper_lengths has {len(x)}")
        fig.add_trace(go.Scatter(x=x, y=list(sizes), name=str(label), mode="lines+markers", line_shape="hv",
                                 marker={"size": 4}, line={"color": PALETTE[i % len(PALETTE)]},
                                 hovertemplate="bucket up to %{x} tokens: %{y} sequences<extra></extra>"))
    if hwcap is not None:
        if len(hwcap) != len(x):
            raise ValueError(f"hwcap has {len(hwcap)} entries, upper_lengths has {len(x)}")
        if any(cap is not None for cap in hwcap):
            fig.add_trace(go.Scatter(x=x, y=[cap for cap in hwcap], name="HWCap", mode="lines",
                                     line_shape="hv", line={"color": "black", "dash": "dash"},
                                     hovertemplate="HWCap up to %{x} tokens: %{y}<extra></extra>"))
    fig.update_layout(title=title or "BatchCap: batch size = min(HWCap, base × scaling^epoch)",
                      xaxis_title="bucket's longest sequence (tokens)", yaxis_title="batch size (sequences)",
                      yaxis_type="log", legend_title="batch size in", height=360, margin={"t": 60})
    return fig
