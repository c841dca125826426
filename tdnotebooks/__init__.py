"""tdnotebooks: learn token-dropping methods for BERT-style models by running them.

Modules (import what you need; nothing heavy is imported here):

- :mod:`tdnotebooks.data`     bundled offline data sets and corpora (+ hub names when online)
- :mod:`tdnotebooks.models`   the bundled all-MiniLM-L6-v2, tiny BERT configs, hub models
- :mod:`tdnotebooks.runtime`  device, AMP dtype, seeding, and the ``TDN_SIZE`` small/paper switch
- :mod:`tdnotebooks.padding`  real vs padded token accounting
- :mod:`tdnotebooks.viz`      plotly figures and ipywidgets panels used by the notebooks
"""

__version__ = "0.1.0"
