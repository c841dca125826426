"""tdnotebooks: learn token-dropping methods for BERT-style models by running them.

Two halves, one subpackage each, with a reading path in each ``__init__``:

- :mod:`tdnotebooks.finetuning`   TokenDrop + BucketSampler for fast fine-tuning and inference (notebooks 01-04)
- :mod:`tdnotebooks.pretraining`  token dropping (Hou et al.) and ScTD for MLM pretraining (notebooks 05-07);
  it may import the fine-tuning half, never the reverse

Around them (import what you need; nothing heavy is imported here):

- :mod:`tdnotebooks.data`        bundled offline data sets and corpora (+ hub names when online)
- :mod:`tdnotebooks.models`      the bundled all-MiniLM-L6-v2, tiny BERT configs, hub models
- :mod:`tdnotebooks.runtime`     device, AMP dtype, seeding, and the ``TDN_SIZE`` small/paper switch
- :mod:`tdnotebooks.padding`     real vs padded token accounting
- :mod:`tdnotebooks.checkpoints` atomic checkpoints and RNG states for an exact resume (both loops)
- :mod:`tdnotebooks.stopwords`   the paper's stopword list, used by both halves
- :mod:`tdnotebooks.validation`  the argument checks every public entry point uses
- :mod:`tdnotebooks.viz`         plotly figures and ipywidgets panels, one module per notebook
- :mod:`tdnotebooks.exercises`   the checked exercises, one module per notebook
- :mod:`tdnotebooks.bench`       benchmarks: ``python -m tdnotebooks.bench finetune|pretrain``
- :mod:`tdnotebooks.site`        the static course site; :mod:`tdnotebooks.testing` the pytest plugin
"""

__version__ = "0.1.0"
