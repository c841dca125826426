"""pytest plugin loaded by the project's test configuration (``-p tdnotebooks.testing``).

It sets the environment before anything imports Hugging Face libraries and before nbval starts
notebook kernels (which inherit it): no hub look-ups (they would hang ~45 s without a network),
the small size, and no progress-bar noise.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TDN_SIZE", "small")  # TDN_SIZE=paper pytest notebooks/ checks big settings on a GPU
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
