"""Charts of notebook 08 (extractive QA and summarization): pure functions returning figures or HTML.

- :func:`window_chart`: the windows ``prepare_qa`` cuts a long context into, their overlap and the answer;
- :func:`qa_feature_html`: one QA feature after TokenDrop, the question greyed, dropped words struck out and
  the answer span highlighted (it is never dropped);
- :func:`padding_sides_chart`: padding of the encoder inputs and of the decoder targets per batching scheme;
- :func:`qa_server_chart`: server-mode QA, token slots and measured seconds (with their range) per scheme.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tdnotebooks.viz.common import PALETTE, label_colors

__all__ = ["HighlightedFeature", "padding_sides_chart", "qa_feature_html", "qa_server_chart", "window_chart"]


def window_chart(windows: Sequence[Sequence[int]], context_tokens: int, answer: Sequence[int] | None = None,
                 title: str | None = None) -> Any:
    """One horizontal bar per window over the context's tokens; the answer's tokens as a shaded band.

    ``windows``: per window, the ``[start, end)`` range of context tokens it holds (in the order of the
    features); ``context_tokens``: the context's length; ``answer``: its ``[start, end)`` context tokens.
    """
    import plotly.graph_objects as go

    if not windows:
        raise ValueError("windows is empty: give each window's [start, end) context-token range")
    if not isinstance(context_tokens, int) or context_tokens < 1:
        raise ValueError(f"context_tokens must be an int >= 1, got {context_tokens!r}")
    for k, window in enumerate(windows):
        if len(window) != 2 or not 0 <= window[0] < window[1] <= context_tokens:
            raise ValueError(f"windows[{k}] must be [start, end) with 0 <= start < end <= {context_tokens}, "
                             f"got {window!r}")
    names = [f"window {k + 1}" for k in range(len(windows))]
    holds = [answer is not None and w[0] <= answer[0] and answer[1] <= w[1] for w in windows]
    fig = go.Figure(go.Bar(
        y=names, x=[w[1] - w[0] for w in windows], base=[w[0] for w in windows], orientation="h",
        marker_color=[PALETTE[2] if h else PALETTE[0] for h in holds],
        text=[f"tokens {w[0]}–{w[1] - 1}" + (" · holds the answer" if h else "") for w, h in zip(windows, holds,
                                                                                                 strict=True)],
        textposition="inside", hoverinfo="text", showlegend=False))
    for a, b in zip(windows, windows[1:], strict=False):
        if b[0] < a[1]:
            fig.add_vrect(x0=b[0], x1=a[1], fillcolor=PALETTE[4], opacity=0.15, line_width=0)
    if answer is not None:
        if len(answer) != 2 or not 0 <= answer[0] < answer[1] <= context_tokens:
            raise ValueError(f"answer must be [start, end) within the context, got {answer!r}")
        fig.add_vrect(x0=answer[0], x1=answer[1], fillcolor=PALETTE[3], opacity=0.6, line_width=0,
                      annotation_text="answer", annotation_position="top left")
    fig.update_layout(title=title or f"{len(windows)} windows over a context of {context_tokens} tokens "
                                     "(overlaps shaded)",
                      xaxis_title="context token", xaxis_range=[0, context_tokens], height=120 + 40 * len(windows),
                      yaxis_title="window (feature)", yaxis_autorange="reversed", margin={"t": 60})
    return fig


@dataclass(frozen=True)
class HighlightedFeature:
    """A QA feature's words after TokenDrop: question greyed, dropped words struck out, the answer marked."""

    html: str
    text: str  # plain text: dropped words in [brackets], the answer in <<...>>

    def _repr_html_(self) -> str:
        return self.html

    def __str__(self) -> str:
        return self.text


def qa_feature_html(tokens: Sequence[str], dropped: Sequence[bool], answer: Sequence[int],
                    question: Sequence[bool] | None = None) -> HighlightedFeature:
    """Render one feature's WordPiece ``tokens`` (``##`` pieces joined to their word).

    ``dropped``: per token, did TokenDrop remove it; ``answer``: the answer's first and last token positions
    (inclusive, as ``start_positions`` / ``end_positions``); ``question``: per token, is it part of the question.
    Special tokens ([CLS], [SEP], [PAD]) are left out.
    """
    n = len(tokens)
    if len(dropped) != n or (question is not None and len(question) != n):
        raise ValueError(f"dropped (and question) must give one flag per token: {n} tokens, {len(dropped)} flags")
    if len(answer) != 2 or not 0 <= answer[0] <= answer[1] < n:
        raise ValueError(f"answer must be (first, last) token positions within the feature, got {answer!r}")
    question = question if question is not None else [False] * n
    html_parts: list[str] = []
    text_parts: list[str] = []
    separated = False
    for p, token in enumerate(tokens):
        if token in ("[CLS]", "[SEP]", "[PAD]"):
            if token == "[SEP]" and not separated:  # question | context
                html_parts.append("<br>")
                text_parts.append(" |")
                separated = True
            continue
        piece = token[2:] if token.startswith("##") else token
        space = "" if token.startswith("##") or not html_parts else " "
        in_answer = answer[0] <= p <= answer[1]
        marked = html.escape(piece)
        if dropped[p]:
            marked = f'<s style="color:{PALETTE[3]}">{marked}</s>'
            piece = f"[{piece}]"
        if in_answer:
            marked = f'<b style="background:{PALETTE[2]}55">{marked}</b>'
        elif question[p]:
            marked = f'<span style="color:#888">{marked}</span>'
        if in_answer and p == answer[0]:
            piece = "<<" + piece
        if in_answer and p == answer[1]:
            piece = piece + ">>"
        html_parts.append(space + marked)
        text_parts.append(space + piece)
    return HighlightedFeature('<div style="line-height:1.6">' + "".join(html_parts) + "</div>",
                              "".join(text_parts).strip())


def padding_sides_chart(stats: Mapping[str, Mapping[str, Any]], title: str | None = None) -> Any:
    """Grouped bars: the padding fraction of each side (e.g. "encoder inputs", "decoder targets") per scheme.

    ``stats``: scheme -> {side: PaddingStats}; every scheme must give the same sides.
    """
    import plotly.graph_objects as go

    if not isinstance(stats, Mapping) or not stats:
        raise ValueError("stats must be a non-empty {scheme: {side: PaddingStats}} mapping")
    sides = list(next(iter(stats.values())))
    for scheme, by_side in stats.items():
        if list(by_side) != sides:
            raise ValueError(f"stats[{scheme!r}] gives sides {list(by_side)}, the first scheme {sides}")
        for side, s in by_side.items():
            if not all(hasattr(s, a) for a in ("real_tokens", "slot_tokens", "padding_fraction")):
                raise ValueError(f"stats[{scheme!r}][{side!r}] must be a PaddingStats, got {type(s).__name__}")
    schemes = list(stats)
    fig = go.Figure()
    for i, side in enumerate(sides):
        values = [stats[s][side].padding_fraction for s in schemes]
        fig.add_trace(go.Bar(name=side, x=schemes, y=values, marker_color=PALETTE[i % len(PALETTE)],
                             text=[f"{v:.0%}" for v in values], textposition="outside"))
    fig.update_layout(barmode="group", title=title or "Padding of each side of a seq2seq batch",
                      yaxis_title="padding (share of token slots)", yaxis_tickformat=".0%", xaxis_title="batching",
                      height=380, margin={"t": 60}, legend_title="side")
    return fig


def qa_server_chart(results: Mapping[str, Mapping[str, Any]], title: str | None = None) -> Any:
    """Server-mode QA per batching scheme: token slots (left) and measured seconds (right, median with its range).

    ``results``: scheme -> {"real_tokens": int, "slot_tokens": int, "seconds": [one timing per round]}.
    """
    import numpy as np
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not isinstance(results, Mapping) or not results:
        raise ValueError("results must be a non-empty {scheme: {'real_tokens', 'slot_tokens', 'seconds'}} mapping")
    for scheme, row in results.items():
        missing = [k for k in ("real_tokens", "slot_tokens", "seconds") if k not in row]
        if missing:
            raise ValueError(f"results[{scheme!r}] is missing {missing}")
        if not len(row["seconds"]) or min(row["seconds"]) < 0 or row["real_tokens"] > row["slot_tokens"]:
            raise ValueError(f"results[{scheme!r}]: seconds must be >= 0 timings (at least one) and real_tokens "
                             f"<= slot_tokens, got {row!r}")
    schemes = list(results)
    colors = label_colors(schemes)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("token slots (padding hatched)", "seconds per pass"),
                        horizontal_spacing=0.12)
    real = [results[s]["real_tokens"] for s in schemes]
    pad = [results[s]["slot_tokens"] - results[s]["real_tokens"] for s in schemes]
    fig.add_trace(go.Bar(x=schemes, y=real, name="real tokens", marker_color=[colors[s] for s in schemes]),
                  row=1, col=1)
    fig.add_trace(go.Bar(x=schemes, y=pad, name="padding", marker_color=[colors[s] for s in schemes],
                         marker_pattern_shape="/", opacity=0.5), row=1, col=1)
    med = [float(np.median(results[s]["seconds"])) for s in schemes]
    low = [float(min(results[s]["seconds"])) for s in schemes]
    high = [float(max(results[s]["seconds"])) for s in schemes]
    fig.add_trace(go.Bar(x=schemes, y=med, name="median seconds", marker_color=[colors[s] for s in schemes],
                         error_y={"type": "data", "symmetric": False, "array": [h - m for h, m in zip(high, med,
                                                                                                      strict=True)],
                                  "arrayminus": [m - lo for m, lo in zip(med, low, strict=True)]},
                         showlegend=False), row=1, col=2)
    fig.update_layout(barmode="stack", title=title or "Server-mode QA: slots and time per batching",
                      height=380, margin={"t": 70})
    fig.update_xaxes(title_text="batching")
    fig.update_yaxes(title_text="token slots", row=1, col=1)
    fig.update_yaxes(title_text="seconds (median, range over rounds)", row=1, col=2)
    return fig
