"""Plotly charts and ipywidgets panels: one module per notebook, plus :mod:`~tdnotebooks.viz.common`.

Every chart is a pure function returning a ``plotly.graph_objects.Figure``. The shared helpers
(:func:`show`, :func:`panel`, :func:`length_histogram`, :func:`padding_bars`, :data:`PALETTE`) are
re-exported here; the notebook charts live in

- :mod:`~tdnotebooks.viz.padding_and_buckets`  notebooks 01 and 03
- :mod:`~tdnotebooks.viz.tokendrop`            notebook 02
- :mod:`~tdnotebooks.viz.fast_finetuning`      notebook 03
- :mod:`~tdnotebooks.viz.fast_inference`       notebook 04
- :mod:`~tdnotebooks.viz.token_dropping`       notebook 05
- :mod:`~tdnotebooks.viz.semantic_loss`        notebooks 06 and 07
- :mod:`~tdnotebooks.viz.sctd`                 notebook 07
- :mod:`~tdnotebooks.viz.qa_and_summarization` notebook 08
"""

from __future__ import annotations

from tdnotebooks.viz.common import (
    PALETTE,
    RENDERER_ENV_VAR,
    length_histogram,
    padding_bars,
    panel,
    renderer,
    show,
)

__all__ = ["PALETTE", "RENDERER_ENV_VAR", "length_histogram", "padding_bars", "panel", "renderer", "show"]
