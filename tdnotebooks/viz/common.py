"""Plotting and widget helpers shared by every notebook.

Rules (they spare learners the usual breakages): every chart is a pure function returning a
``plotly.graph_objects.Figure`` (testable without a browser); figures are shown through :func:`show`,
the one place that picks a renderer; sliders are wired with :func:`panel`, which uses
``ipywidgets.interactive_output`` with ``continuous_update=False`` (no ``FigureWidget``: it breaks with
ipywidgets 8 and on Colab). Callers print a short numeric summary next to each chart, so the numbers
are there even where plotly fails to draw inside a widget output (it happens on Colab).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tdnotebooks.validation import check_int

__all__ = ["renderer", "show", "panel", "length_histogram", "padding_bars", "label_colors", "SETTING_COLORS"]

RENDERER_ENV_VAR = "TDN_PLOTLY_RENDERER"
PALETTE = ("#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2")
EXTRA_COLORS = ("#EECA3B", "#9D755D", "#FF9DA6", "#BAB0AC", "#1B9E77", "#7570B3")

SETTING_COLORS: dict[str, str] = {
    # one colour per training setting across the course's charts (notebooks 02 and 03)
    "RandomSampler": PALETTE[0], "no TokenDrop": PALETTE[0],
    "TokenDrop + BucketSampler": PALETTE[1], "TokenDrop 0.3": PALETTE[1],
    "BucketSampler": PALETTE[2], "+ RBM + BatchCap + LRM": PALETTE[2],  # method="bucket" with every optimization
    "BucketSampler alone": PALETTE[3], "LengthGroupedSampler": PALETTE[4], "+ RBM": PALETTE[5],
    "+ RBM + BatchCap": EXTRA_COLORS[1],
}
"""Fixed colours of the settings the notebooks compare, so one setting has one colour in every chart."""


def label_colors(labels: Sequence[str], colors: Mapping[str, str] | None = None) -> dict[str, str]:
    """A colour for each label that does not depend on its position: ``colors``, then :data:`SETTING_COLORS`.

    A label found in neither gets a colour picked by a hash of its text (so the same in every chart), moved on
    to the next free one if another label of this chart already has it.
    """
    import zlib

    chosen = {**SETTING_COLORS, **(colors or {})}
    out = {label: chosen[label] for label in labels if label in chosen}
    spare = [c for c in EXTRA_COLORS + PALETTE if c not in set(out.values())] or list(EXTRA_COLORS + PALETTE)
    for label in labels:
        if label not in out:
            start = zlib.crc32(str(label).encode()) % len(spare)
            free = [spare[(start + k) % len(spare)] for k in range(len(spare))]
            out[label] = next((c for c in free if c not in out.values()), free[0])
    return out


def renderer() -> str | None:
    """The plotly renderer to use: ``$TDN_PLOTLY_RENDERER`` if set, ``"colab"`` on Colab, else plotly's default."""
    if os.environ.get(RENDERER_ENV_VAR):
        return os.environ[RENDERER_ENV_VAR]
    if "google.colab" in sys.modules:
        return "colab"
    return None


def show(fig: Any) -> None:
    """Display a figure with the renderer chosen by :func:`renderer`."""
    fig.show(renderer=renderer())


def panel(update: Callable[..., None], **controls: Any) -> Any:
    """Controls in a row above an output area; ``update(**values)`` re-runs when a control is released.

    Every control's description is shown whole (``description_width="initial"``) unless the caller set a
    width. Returns the ``VBox``; display it (or leave it as the cell's last expression).
    """
    import ipywidgets as widgets

    for control in controls.values():
        if hasattr(control, "continuous_update"):
            control.continuous_update = False
        style = getattr(control, "style", None)
        if style is not None and hasattr(style, "description_width") and not style.description_width:
            style.description_width = "initial"  # "bucket width", "token budget" ... not cut off
    out = widgets.interactive_output(update, controls)
    return widgets.VBox([widgets.HBox(list(controls.values()), layout=widgets.Layout(flex_flow="row wrap")), out])


def length_histogram(lengths: Mapping[str, Sequence[int]], max_length: int | None = None,
                     title: str = "Token lengths", bin_width: int = 2) -> Any:
    """Overlaid histograms of token lengths per data set, with the truncation length marked."""
    import plotly.graph_objects as go

    if not isinstance(lengths, Mapping) or not lengths:
        raise ValueError(f"lengths must be a non-empty {{data set name: token lengths}} mapping, got "
                         f"{type(lengths).__name__}")
    check_int("bin_width", bin_width, low=1)
    if max_length is not None:
        check_int("max_length", max_length, low=1)
    fig = go.Figure()
    for i, (name, values) in enumerate(lengths.items()):
        values = np.asarray(values)
        if max_length is not None:
            values = np.minimum(values, max_length)
        fig.add_trace(go.Histogram(x=values, name=f"{name} (n={len(values)})", xbins={"size": bin_width},
                                   marker_color=PALETTE[i % len(PALETTE)], opacity=0.65))
    if max_length is not None:
        fig.add_vline(x=max_length, line_dash="dash", annotation_text=f"max_length={max_length}")
    fig.update_layout(barmode="overlay", title=title, xaxis_title="tokens per example (incl. special tokens)",
                      yaxis_title="examples", legend_title="data set", height=380, margin={"t": 60})
    return fig


def padding_bars(costs: Mapping[str, Any], title: str = "Where the compute goes", *,
                 xaxis_title: str = "batching scheme", yaxis_title: str = "token slots per epoch") -> Any:
    """Stacked bars of real vs padding token slots, one bar per key of ``costs`` (values: PaddingStats)."""
    import plotly.graph_objects as go

    if not isinstance(costs, Mapping) or not costs:
        raise ValueError(f"costs must be a non-empty {{scheme: PaddingStats}} mapping, got {type(costs).__name__}")
    for name, stats in costs.items():
        if not all(hasattr(stats, a) for a in ("real_tokens", "pad_tokens", "padding_fraction")):
            raise ValueError(f"costs[{name!r}] must be a PaddingStats (real_tokens, pad_tokens), got "
                             f"{type(stats).__name__}")
    names = list(costs)
    real = [costs[n].real_tokens for n in names]
    pad = [costs[n].pad_tokens for n in names]
    frac = [f"{costs[n].padding_fraction:.0%} padding" for n in names]
    fig = go.Figure([
        go.Bar(name="real tokens", x=names, y=real, marker_color=PALETTE[2]),
        go.Bar(name="padding", x=names, y=pad, marker_color=PALETTE[3], text=frac, textposition="outside"),
    ])
    fig.update_layout(barmode="stack", title=title, yaxis_title=yaxis_title, xaxis_title=xaxis_title,
                      height=380, margin={"t": 60})
    return fig
