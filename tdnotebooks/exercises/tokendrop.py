"""Exercises of notebook 02 (TokenDrop): Algorithm 1's drop count, the stopword list, the widget, the token share.

Every ``solution_<name>`` computes its answer with :mod:`tdnotebooks.finetuning.tokendrop`; every
``check_<name>(answer, ...)`` returns a :class:`~tdnotebooks.exercises.Feedback` with a hint that names the
formula or the widget to use. The default arguments are the sentences and rates the notebook's questions quote.
Functions that tokenize take the notebook's ``tokenizer`` (default: the bundled one).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tdnotebooks.exercises import Feedback, check_choice, check_number, unanswered
from tdnotebooks.finetuning.tokendrop import TokenDrop, find_stopwords, highlight_dropped, is_stopword
from tdnotebooks.stopwords import stopword_set
from tdnotebooks.validation import check_number as _check_number_arg  # check_number here: the exercises'
from tdnotebooks.validation import is_number

__all__ = [
    "CANDIDATES", "SENTENCE", "check_count_changes_with_epoch", "check_never_dropped", "check_token_share",
    "check_words_dropped", "expected_dropped_tokens", "solution_count_changes_with_epoch",
    "solution_never_dropped", "solution_token_share", "solution_words_dropped",
]


def _check_rate(rate: Any) -> float:
    """TokenDrop's rate, a number in [0, 1], checked before any work."""
    return _check_number_arg("rate", rate, low=0, high=1)


SENTENCE = "The jokes are not funny at all."
"""Exercise 1's sentence."""

CANDIDATES: tuple[str, ...] = ("not", "very", "no", "it's", "isn't", "the", "never", "few", "don't", "only")
"""Exercise 2's words: which of them can TokenDrop never drop?"""


def _tokenizer(tokenizer: Any) -> Any:
    if tokenizer is not None:
        return tokenizer
    from tdnotebooks.models import load_tokenizer

    return load_tokenizer()


# ------------------------------------------------------------------------------ 1. Tokens_to_drop of a sentence
def num_stopword_words(text: str, tokenizer: Any = None) -> int:
    """How many stopword words ``text`` has, as ``prepare`` finds them (words, not tokens)."""
    return len(find_stopwords(_tokenizer(tokenizer), [text])["stopword_spans"][0])


def solution_words_dropped(text: str = SENTENCE, rate: float = 0.3, tokenizer: Any = None) -> int:
    """Algorithm 1 with a global rate: ``Tokens_to_drop = round(rate × n)`` of the ``n`` stopword words."""
    return TokenDrop(rate=rate).num_words_to_drop(num_stopword_words(text, tokenizer))


def check_words_dropped(answer: Any, text: str = SENTENCE, rate: float = 0.3, tokenizer: Any = None) -> Feedback:
    """Exercise 1: how many words TokenDrop at ``rate`` drops from ``text`` (in any epoch)."""
    n = num_stopword_words(text, tokenizer)
    expected = TokenDrop(rate=rate).num_words_to_drop(n)
    if is_number(answer) and answer != expected and answer == math.floor(rate * n):
        return Feedback(False, f"{answer} is what you get by cutting off the fraction of {rate:g} × n, or by "
                               "missing a stopword: count n again with the list (its punctuation marks count too), "
                               "and round rate × n to the nearest integer, halves up.")
    return check_number(
        answer, expected, f"the number of words dropped at rate {rate:g}", rel_tol=0.0,
        hint="Count the sentence's stopword words with the paper's list (print STOPWORDS: some punctuation "
             "marks are in it, negations are not), then Tokens_to_drop = rate × n, rounded to the nearest "
             "integer (halves up).",
        explain=f"the sentence has n = {n} stopword words; round({rate:g} × {n}) = {expected}.",
    )


# ------------------------------------------------------------------------------ 2. never dropped
def solution_never_dropped(candidates: Sequence[str] = CANDIDATES) -> tuple[str, ...]:
    """The candidate words that are not stopwords of the paper's list: TokenDrop never drops them."""
    stopwords = stopword_set()
    return tuple(w for w in candidates if not is_stopword(w, stopwords))


def check_never_dropped(answer: Any, candidates: Sequence[str] = CANDIDATES) -> Feedback:
    """Exercise 2: the words of ``candidates`` that TokenDrop can never drop, as a list of strings."""
    if answer is None:
        return unanswered("a list of the words, e.g. ['not', 'the']")
    if isinstance(answer, (str, bytes, Mapping)) or not isinstance(answer, Iterable):
        return Feedback(False, f"expected a list of words such as ['not', 'the'], got {answer!r}")
    words = list(answer)
    if not all(isinstance(w, str) for w in words):
        return Feedback(False, f"expected a list of words (strings), got {answer!r}")
    given = {w.strip().lower().replace("\u2019", "'") for w in words}
    allowed = {c.lower() for c in candidates}
    unknown = sorted(given - allowed)
    if unknown:
        return Feedback(False, f"{unknown} are not among the candidates: pick from {list(candidates)}")
    expected = {w.lower() for w in solution_never_dropped(candidates)}
    if given == expected:
        return Feedback(True, f"{sorted(expected)} are not in the stopword list, so no rate drops them; the "
                              "others are stopwords — even 'very', 'few' and 'only', which can matter to a review.")
    missing, extra = len(expected - given), len(given - expected)
    return Feedback(False, f"{extra} of your words can be dropped, and {missing} never-dropped word(s) are "
                           "missing. TokenDrop only drops words on the paper's list: test each candidate with "
                           "`word in STOPWORDS`, and mind contractions (a contraction is one word).")


# ------------------------------------------------------------------------------ 3. the widget: epoch vs count
def dropped_per_epoch(texts: Sequence[str], rows: Sequence[int], rate: float = 0.3, seed: int = 0,
                      epochs: Iterable[int] = range(10), tokenizer: Any = None) -> dict[int, int]:
    """Total words dropped from ``texts`` in each epoch, as the notebook's widget counts them."""
    tokenizer = _tokenizer(tokenizer)
    return {epoch: sum(sum(dropped for _, dropped in highlight_dropped(tokenizer, text, rate=rate, seed=seed,
                                                                        epoch=epoch, index=row).pairs)
                       for row, text in zip(rows, texts, strict=True))
            for epoch in epochs}


def solution_count_changes_with_epoch(texts: Sequence[str], rows: Sequence[int], rate: float = 0.3, seed: int = 0,
                                      tokenizer: Any = None) -> str:
    """"yes" when the number of dropped words differs between epoch indices 0-9 (the widget's epochs 1-10), else "no"."""
    counts = dropped_per_epoch(texts, rows, rate=rate, seed=seed, tokenizer=tokenizer)
    return "yes" if len(set(counts.values())) > 1 else "no"


def check_count_changes_with_epoch(answer: Any, texts: Sequence[str], rows: Sequence[int], rate: float = 0.3,
                                   seed: int = 0, tokenizer: Any = None) -> Feedback:
    """Exercise 3: does moving the widget's epoch slider change HOW MANY words are dropped ("yes"/"no")?"""
    if answer is None:  # answer before computing: None must stay cheap
        return unanswered("'yes' or 'no'")
    if not isinstance(answer, str):  # check_choice would fail on an unhashable answer such as a list
        return Feedback(False, f"answer 'yes' or 'no', got {answer!r}")
    expected = solution_count_changes_with_epoch(texts, rows, rate, seed, tokenizer)
    return check_choice(
        answer, expected, ("yes", "no"), "whether the count changes with the epoch",
        hint="Move only the epoch slider and read the 'dropped' number in the printed line each time; then look "
             "at which quantities enter Tokens_to_drop = round(rate × n).",
        explain="The epoch changes WHICH stopwords go (the generator is seeded with seed, epoch and row), not "
                "how many: round(rate × n) depends only on the rate and the sentence.",
    )


# ------------------------------------------------------------------------------ 4. share of tokens removed
def expected_dropped_tokens(example: Mapping[str, Any], rate: float = 0.3, unit: str = "type") -> float:
    """Expected tokens TokenDrop removes from one prepared example in one epoch.

    Algorithm 1 drops ``k = round(rate × n)`` of the ``n`` stopword words. With ``unit="occurrence"`` they are a
    uniformly random set, so each word goes with probability ``k / n``: the expectation is ``k / n × (tokens of
    all stopword words)``. With ``unit="type"`` (TokenDrop's default: the stopword types are shuffled, each
    type's words follow in text order), the ``m``-th occurrence of a type goes when fewer than ``k - m`` words
    of other types come before its type; averaged over the orders of the types, exactly.
    """
    _check_rate(rate)
    if not isinstance(example, Mapping) or "stopword_spans" not in example:
        raise ValueError("example must be a row of a prepared split (with stopword_spans): "
                         "tdnotebooks.finetuning.prepare(data, tokenizer)[i]")
    td = TokenDrop(rate=rate, unit=unit)
    spans = [(int(s), int(e)) for s, e in example["stopword_spans"]]
    if not spans:
        return 0.0
    k = td.num_words_to_drop(len(spans))
    if unit == "occurrence":
        return k / len(spans) * sum(e - s for s, e in spans)
    ids = list(example["input_ids"])
    groups: dict[tuple, list[int]] = {}
    for s, e in spans:
        groups.setdefault(tuple(ids[s:e]), []).append(e - s)
    counts = {key: len(sizes) for key, sizes in groups.items()}
    n_types = len(groups)
    expected = 0.0
    for key, sizes in groups.items():
        others = [c for other, c in counts.items() if other != key]
        ways = [[0] * (len(spans) + 1) for _ in range(n_types)]  # ways[j][w]: sets of j other types with w words
        ways[0][0] = 1
        for c in others:
            for j in range(len(others), 0, -1):
                for w in range(len(spans), c - 1, -1):
                    ways[j][w] += ways[j - 1][w - c]
        for m, size in enumerate(sizes):  # the m-th occurrence goes when the types before hold < k - m words
            p = sum(ways[j][w] * math.factorial(j) * math.factorial(n_types - 1 - j)
                    for j in range(n_types) for w in range(len(spans) + 1) if w < k - m) / math.factorial(n_types)
            expected += p * size
    return expected


def solution_token_share(data: Iterable[Mapping[str, Any]], rate: float = 0.3, unit: str = "type") -> float:
    """Expected share of all tokens of ``data`` (prepared: ``input_ids``, ``stopword_spans``) removed per epoch."""
    _check_rate(rate)
    removed = total = 0.0
    for example in data:
        removed += expected_dropped_tokens(example, rate, unit)
        total += len(example["input_ids"])
    if total == 0:
        raise ValueError("data has no tokens: pass the prepared training split")
    return removed / total


def check_token_share(answer: Any, data: Iterable[Mapping[str, Any]], rate: float = 0.3,
                      abs_tol: float = 0.015) -> Feedback:
    """Exercise 4: the share of the training tokens TokenDrop at ``rate`` removes in an epoch (a fraction).

    A prediction within ``abs_tol`` (1.5 percentage points by default) of the expectation counts as right:
    ``rate × (share of tokens that belong to stopwords)`` is the intended estimate.
    """
    if answer is None:
        return unanswered("a fraction, e.g. 0.25")
    expected = solution_token_share(data, rate)
    if is_number(answer) and 1 < float(answer) <= 100 and abs(float(answer) / 100 - expected) <= abs_tol:
        return Feedback(False, "that is the right share, but in percent: give it as a fraction in [0, 1]")
    return check_number(
        answer, expected, f"the expected share of tokens removed at rate {rate:g}", rel_tol=0.0, abs_tol=abs_tol,
        hint="Only stopword tokens can go, and each epoch a fraction `rate` of each sentence's stopword words "
             "goes: combine the rate with the share of tokens that belong to stopwords, printed in section 4.",
        explain="(exact expectation over the random subsets; the few-stopword sentences round rate × n.)",
    )
