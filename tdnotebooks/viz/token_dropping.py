"""Charts of notebook 05 (token dropping in pretraining, Hou et al. 2022): pure functions returning ``go.Figure``.

- :func:`layer_token_grid`: which tokens each layer processes (rows: layers, columns: tokens), colored by
  importance; the dropped layers show holes where tokens skip them;
- :func:`importance_curves`: the importance (moving-average MLM loss) of chosen vocabulary ids over training.

Same rules as :mod:`tdnotebooks.viz`: plain numbers in, a figure out, no ``FigureWidget``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tdnotebooks.validation import check_int, check_number, is_number
from tdnotebooks.viz.common import PALETTE

__all__ = ["PINNED", "importance_curves", "layer_token_grid"]

PINNED = 1e3  # |importance| at or above this is a pinned id (special: +1e4, [PAD]: -1e4), not a loss


def _color_range(values: np.ndarray) -> tuple[float, float]:
    """(low, high) of the unpinned values; pinned ones are clipped into it when colored."""
    loss_like = values[np.abs(values) < PINNED]
    if loss_like.size == 0:
        return 0.0, 1.0
    low, high = float(loss_like.min()), float(loss_like.max())
    return (low, high) if high > low else (low - 0.5, high + 0.5)


def layer_token_grid(tokens: Sequence[str], importance: Sequence[float], kept: Sequence[bool], num_layers: int,
                     start_layer: int, end_layer: int, title: str | None = None) -> Any:
    """Layers (rows, layer 0 at the bottom) x tokens (columns): a colored cell where a layer processes a token.

    Layers [0, start_layer) and [end_layer, num_layers) process every token; the dropped layers
    [start_layer, end_layer) only those with ``kept`` True, the others are left blank (they skip those
    layers). Cells are colored by ``importance`` (pinned values, |v| >= PINNED, are clipped to the color
    range of the others and marked "pinned" in the hover text).
    """
    import plotly.graph_objects as go

    n = len(tokens)
    if n == 0:
        raise ValueError("tokens is empty: give at least one token")
    if len(importance) != n or len(kept) != n:
        raise ValueError(f"tokens, importance and kept must have the same length, got {n}, {len(importance)}, "
                         f"{len(kept)}")
    check_int("num_layers", num_layers, low=1)
    check_int("start_layer", start_layer, low=0)
    check_int("end_layer", end_layer, low=1)
    if not 0 <= start_layer < end_layer <= num_layers:
        raise ValueError(f"need 0 <= start_layer < end_layer <= num_layers = {num_layers}, got start_layer="
                         f"{start_layer}, end_layer={end_layer}")
    values = np.asarray(importance, dtype=float)
    if not np.all(np.isfinite(values)):
        raise ValueError("importance must be finite numbers")
    kept = np.asarray(kept, dtype=bool)
    low, high = _color_range(values)
    colors = np.clip(values, low, high)
    z, hover = [], []
    for layer in range(num_layers):
        dropped_layer = start_layer <= layer < end_layer
        z.append([None if dropped_layer and not k else float(c) for c, k in zip(colors, kept, strict=True)])
        hover.append([f"layer {layer}, position {i}: {tok!r}<br>importance "
                      + (f"{v:+.0e} (pinned)" if abs(v) >= PINNED else f"{v:.3f}")
                      + ("<br>skips this layer" if dropped_layer and not k else "")
                      for i, (tok, v, k) in enumerate(zip(tokens, values, kept, strict=True))])
    labels = [f"{i}·{tok}" for i, tok in enumerate(tokens)]   # positions keep repeated tokens apart
    fig = go.Figure(go.Heatmap(z=z, x=labels, y=[f"layer {i}" for i in range(num_layers)], zmin=low, zmax=high,
                               colorscale="Viridis", colorbar={"title": "importance"}, hovertext=hover,
                               hoverinfo="text", xgap=1, ygap=1))
    fig.add_hrect(y0=start_layer - 0.5, y1=end_layer - 0.5, line_width=2, line_color=PALETTE[3],
                  annotation_text="dropped layers", annotation_position="top left")
    fig.update_layout(title=title or f"{int(kept.sum())} of {n} tokens pass layers {start_layer}..{end_layer - 1}",
                      xaxis_title="token (position·text)", yaxis_title="layer", height=260 + 30 * num_layers,
                      plot_bgcolor="white", margin={"t": 60})
    fig.update_xaxes(tickangle=-60)
    return fig


def importance_curves(steps: Sequence[int], curves: Mapping[str, Sequence[float]], initial: float | None = None,
                      title: str | None = None) -> Any:
    """The importance of chosen ids (one line each, named by token) after each of ``steps`` training steps.

    ``initial``: the table's starting value, drawn as a dashed line (ids not yet measured sit on it).
    """
    import plotly.graph_objects as go

    if len(steps) == 0:
        raise ValueError("steps is empty: give the step of each snapshot of the table")
    if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        raise ValueError(f"steps must increase, got {list(steps)}")
    if not curves:
        raise ValueError("curves is empty: give {token: [importance at each step]}")
    if initial is not None:
        check_number("initial", initial)
    for name, values in curves.items():
        if len(values) != len(steps):
            raise ValueError(f"curves[{name!r}] has {len(values)} values for {len(steps)} steps")
        if not all(is_number(v) for v in values):
            raise ValueError(f"curves[{name!r}] holds a value that is not finite")
    fig = go.Figure()
    for i, (name, values) in enumerate(curves.items()):
        fig.add_trace(go.Scatter(x=list(steps), y=[float(v) for v in values], name=name, mode="lines+markers",
                                 marker_color=PALETTE[i % len(PALETTE)]))
    if initial is not None:
        fig.add_hline(y=initial, line_dash="dash", annotation_text=f"initial value {initial:g}")
    fig.update_layout(title=title or "Importance (moving-average MLM loss) while pretraining",
                      xaxis_title="training step", yaxis_title="importance (nats)", legend_title="token",
                      height=380, margin={"t": 60})
    return fig
