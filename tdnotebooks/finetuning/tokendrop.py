"""TokenDrop (Nagarajan & Raghunathan 2023): drop random stopwords from every sequence, every epoch.

TokenDrop is a data-level regularizer: each epoch the model sees each training sentence with some of its
stopwords ("the", "is", "...") removed, so it never sees exactly the same input twice. Combined with
length-bucketed batches (TokenDrop + BucketSampler, Algorithm 3) the stopwords of the longer sequences of a
batch are dropped until every sequence is as short as the shortest one, so the batch needs no padding.

    >>> td = TokenDrop(rate=0.3, seed=0)
    >>> train = td.prepare(load_task("rt_sentiment")["train"], tokenizer)   # once, not per epoch
    >>> collate = TokenDropCollator(td, pad_token_id=tokenizer.pad_token_id)
    >>> loader = DataLoader(train, batch_size=32, shuffle=True, collate_fn=collate)
    >>> for epoch in range(3):
    ...     collate.set_epoch(epoch)       # a new random subset of stopwords per (seed, epoch, idx)
    ...     for batch in loader: ...

The module, one idea per section:

1. the stopword list of the paper (Appendix A) and its pronoun subset;
2. words: how a text is cut into words and how a word's tokens are found (``find_stopwords``, ``prepare``);
3. ``TokenDrop``: which stopword words to drop, for a global rate (Algorithm 1) or down to a length
   (the per-sequence ``Tokens_to_drop`` of Section 2.3 / Algorithm 3);
4. collators for ``torch.utils.data.DataLoader`` that drop, pad and count padding;
5. inference-time TokenDrop and two helpers for the notebooks.

Improvements over the original script: a stopword is matched as a whole word on the original text (via the
fast tokenizer's offsets and word ids), never by decoding each sub-word id on its own, so it works the same
for WordPiece and byte-level BPE; the stopwords are found once per data set, not by re-running
``datasets.map`` every epoch; the random choice comes from a local generator seeded with
(seed, epoch, example index), never from the global numpy RNG.
"""

from __future__ import annotations

import html
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np
import torch

from tdnotebooks.checks import check_max_length
from tdnotebooks.finetuning.collate import collate_labels
from tdnotebooks.padding import PaddingStats
from tdnotebooks.stopwords import PRONOUNS, stopword_set
from tdnotebooks.validation import check_bool, check_choice, check_int, check_number

__all__ = [
    "DROP_MODES", "DROP_UNITS", "TRIM_TARGETS", "DropResult", "HighlightedText", "TokenDrop",
    "TokenDropBucketCollator", "TokenDropCollator", "Word", "drop_stopwords_for_inference", "find_stopwords",
    "encoding_stopwords", "highlight_dropped", "is_stopword", "prepare", "reachable_lengths",
    "remove_articles_and_punctuation", "split_words",
]

# ============================================================================ 2. words
# A word is a whitespace-separated chunk of the ORIGINAL text with its leading and trailing punctuation
# split off as words of their own:
#
#   "(best)" -> "(" "best" ")"     "movie)." -> "movie" ")."     "..." -> "..."     "J.R.R." -> "J.R.R" "."
#   "it's"   -> "it's"             "can't"   -> "can't"          "3.5" -> "3.5"     "well-made" -> "well-made"
#
# Punctuation INSIDE a chunk stays part of the word, so "it's" is matched as the stopword "it's" (all of
# its tokens: "it" "'" "s" in WordPiece, "it" "'s" in byte-level BPE), the "can" of "can't" is never cut
# away from its "'t", nor the "." out of "3.5". A word is a stopword when its text, lower-cased, with
# ’ read as ', is in the set. A run of punctuation is a stopword when it is made only of stopword marks:
# ")." and "--" are, "?)" is not. This makes WordPiece (which splits "..." into "." "." ".") and
# byte-level BPE (which keeps ")." as one pre-token) agree on what the words are.
_CHUNK = re.compile(r"\S+")
_WORD_CHARS = re.compile(r"\w(?:.*\w)?")  # first to last letter/digit of a chunk


@dataclass(frozen=True)
class Word:
    """A word of a text: characters [start, end) and whether it is only punctuation."""

    start: int
    end: int
    is_punctuation: bool


def split_words(text: str) -> list[Word]:
    """The words of ``text`` as defined above, in order."""
    words = []
    for chunk in _CHUNK.finditer(text):
        a, b = chunk.span()
        core = _WORD_CHARS.search(text, a, b)
        if core is None:
            words.append(Word(a, b, True))
            continue
        if a < core.start():
            words.append(Word(a, core.start(), True))
        words.append(Word(core.start(), core.end(), False))
        if core.end() < b:
            words.append(Word(core.end(), b, True))
    return words


def _normalize(text: str) -> str:
    return text.strip().lower().replace("\u2019", "'")


def _made_of(text: str, pieces: Iterable[str]) -> bool:
    """True when ``text`` is a concatenation of ``pieces`` ("...." = "..." + ".")."""
    pieces = [p for p in pieces if p]
    ok = [True] + [False] * len(text)  # ok[i]: text[:i] can be built
    for end in range(1, len(text) + 1):
        ok[end] = any(len(p) <= end and ok[end - len(p)] and text.startswith(p, end - len(p)) for p in pieces)
    return ok[-1]


def is_stopword(word: str, stopwords: frozenset[str], is_punctuation: bool = False) -> bool:
    """Whether one word's text is a stopword (see the rules above)."""
    text = _normalize(word)
    if text in stopwords:
        return True
    return is_punctuation and bool(text) and _made_of(text, _marks(stopwords))


@lru_cache(maxsize=8)
def _marks(stopwords: frozenset[str]) -> tuple[str, ...]:
    """The punctuation-only entries of a stopword set ("." "..." "(" ...)."""
    return tuple(sorted(s for s in stopwords if s and not any(c.isalnum() for c in s)))


def _check_fast(tokenizer: Any) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"tokenizer must be a fast (Rust-backed) tokenizer: TokenDrop needs its word alignment "
            f"(offsets and word_ids), and {type(tokenizer).__name__} has is_fast=False. Load it with "
            "AutoTokenizer.from_pretrained(..., use_fast=True) or tdnotebooks.models.load_tokenizer()."
        )


def _sequence_tokens(encoding: Any, seq: int, text: str) -> list[tuple[int, int, int]]:
    """(position, char start, char end) of sequence ``seq``'s non-special tokens, leading space trimmed."""
    tokens = []
    for p, (sid, special, (a, b)) in enumerate(zip(encoding.sequence_ids, encoding.special_tokens_mask,
                                                    encoding.offsets, strict=True)):
        if sid != seq or special:
            continue
        while a < b and text[a].isspace():  # byte-level tokens may carry their leading space
            a += 1
        tokens.append((p, a, b))
    return tokens


def _same_word(encoding: Any, p: int, q: int) -> bool:
    """Whether token ``q`` exists and belongs to the same pre-tokenizer word (``word_ids``) as token ``p``."""
    if not 0 <= q < len(encoding.ids) or encoding.sequence_ids[q] != encoding.sequence_ids[p]:
        return False
    return encoding.word_ids[q] is not None and encoding.word_ids[q] == encoding.word_ids[p]


class _Found(NamedTuple):
    start: int  # first token position
    end: int  # one past the last token position
    word: Word
    pronoun: bool


def _stopword_tokens(encoding: Any, texts: Sequence[str]) -> list[_Found]:
    """The stopword words of one tokenized example with their token ranges, in order.

    ``encoding`` is a ``tokenizers.Encoding``; ``texts`` its one or two input texts. A word counts only when
    its tokens are exactly its own: consecutive, none sticking out of the word's characters, together
    reaching both of its ends (so a word cut by truncation is never matched), and sharing no pre-tokenizer
    word (``word_ids``) with a token outside (tokenizers that split only on whitespace, like SentencePiece,
    keep "the," as one word, so its "the" stays). Special tokens belong to no word.
    """
    stopwords, found = stopword_set(), []
    for seq, text in enumerate(texts):
        tokens = _sequence_tokens(encoding, seq, text)
        for word in split_words(text):
            if not is_stopword(text[word.start:word.end], stopwords, word.is_punctuation):
                continue
            inside = [(p, a, b) for p, a, b in tokens  # tokens touching the word (or empty ones within it)
                      if a < word.end and (b > word.start or a == b >= word.start)]
            if not inside:
                continue  # truncated away
            first, last = inside[0][0], inside[-1][0]
            consecutive = last - first == len(inside) - 1
            fits = min(a for _, a, _ in inside) == word.start and max(b for _, _, b in inside) == word.end
            own_words = not (_same_word(encoding, first, first - 1) or _same_word(encoding, last, last + 1))
            if consecutive and fits and own_words:
                found.append(_Found(first, last + 1, word, _normalize(text[word.start:word.end]) in PRONOUNS))
    return found


def encoding_stopwords(encoding: Any, texts: Sequence[str]) -> tuple[list[list[int]], list[bool]]:
    """The stopword words of one ``tokenizers.Encoding``: ``([start, end) token ranges], pronoun flags)``.

    The finder :func:`prepare` uses, for any encoding whose offsets refer to ``texts`` (its 1-2 input texts),
    in particular each overflowing window of ``tokenizer(..., return_overflowing_tokens=True, stride=...)``
    (extractive QA: :func:`tdnotebooks.finetuning.qa.prepare_qa`). A word cut by the window's edge is never
    matched. Only the part of each text the window covers (widened to whole whitespace-separated chunks) is
    searched, so a long context costs per window what the window holds, with the same result.
    """
    clipped = []
    for seq, text in enumerate(texts):
        chars = [(a, b) for sid, (a, b) in zip(encoding.sequence_ids, encoding.offsets, strict=True)
                 if sid == seq and b > a]
        if not chars:
            clipped.append(text)
            continue
        low, high = min(a for a, _ in chars), max(b for _, b in chars)
        while low > 0 and not text[low - 1].isspace():
            low -= 1
        while high < len(text) and not text[high].isspace():
            high += 1
        clipped.append(" " * low + text[low:high] + " " * (len(text) - high))  # same offsets, fewer words
    found = _stopword_tokens(encoding, clipped)
    return [[f.start, f.end] for f in found], [f.pronoun for f in found]


def find_stopwords(tokenizer: Any, texts: Sequence[str], text_pairs: Sequence[str] | None = None, *,
                   max_length: int | None = 128) -> dict[str, list]:
    """Tokenize ``texts`` (and ``text_pairs``) and find each example's stopword words.

    Returns columns ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the tokenizer makes them),
    ``length`` (tokens incl. special ones), ``stopword_spans``: per example, one ``[start, end)`` range of
    token positions per stopword word, and ``stopword_is_pronoun``: one flag per span (used by
    ``TokenDrop(keep_pronouns=True)``). Usable as a batched ``Dataset.map`` function, but prefer
    :func:`prepare`, which also declares the column types (an all-empty first batch confuses ``map``).
    ``max_length=None``: no truncation.
    """
    _check_fast(tokenizer)
    check_max_length(max_length, tokenizer, pair=text_pairs is not None)
    if isinstance(texts, str):
        raise ValueError(f"texts must be a list of strings (one per example), got the str {texts[:40]!r}")
    if text_pairs is not None and (isinstance(text_pairs, str) or len(text_pairs) != len(texts)):
        raise ValueError(f"text_pairs must be a list of strings, one per text ({len(texts)}), got "
                         f"{text_pairs[:40] if isinstance(text_pairs, str) else len(text_pairs)!r}")
    return _find_stopwords(tokenizer, texts, text_pairs, max_length)


def _find_stopwords(tokenizer: Any, texts: Sequence[str], text_pairs: Sequence[str] | None,
                    max_length: int | None) -> dict[str, list]:
    """:func:`find_stopwords` without the argument checks (done once by the caller)."""
    texts = list(texts)
    pairs = list(text_pairs) if text_pairs is not None else None
    enc = tokenizer(texts, pairs, truncation=max_length is not None, max_length=max_length)
    out = {k: list(v) for k, v in enc.items()}
    out["length"] = [len(ids) for ids in out["input_ids"]]
    out["stopword_spans"], out["stopword_is_pronoun"] = [], []
    for i, encoding in enumerate(enc.encodings):
        found = _stopword_tokens(encoding, [texts[i]] if pairs is None else [texts[i], pairs[i]])
        out["stopword_spans"].append([[f.start, f.end] for f in found])
        out["stopword_is_pronoun"].append([f.pronoun for f in found])
    return out


def _features(base: Any, token_columns: Iterable[str]) -> Any:
    """``datasets`` column types for what :func:`prepare` adds (so empty span lists keep their type)."""
    import datasets

    list_of = getattr(datasets, "List", datasets.Sequence)  # List is datasets>=4, Sequence before
    features = base.copy()
    for name in token_columns:
        features[name] = list_of(datasets.Value("int32" if name == "input_ids" else "int8"))
    features["length"] = datasets.Value("int32")
    features["stopword_spans"] = list_of(list_of(datasets.Value("int32")))
    features["stopword_is_pronoun"] = list_of(datasets.Value("bool"))
    features["idx"] = datasets.Value("int64")
    return features


def prepare(data: Any, tokenizer: Any, *, text_fields: Sequence[str] | None = None,
            max_length: int | None = 128) -> Any:
    """Tokenize once and find every example's stopword words: the once-per-data-set step of TokenDrop.

    ``data``: a ``datasets.Dataset``, a ``DatasetDict`` or a list of strings (which becomes a Dataset with a
    ``text`` column). ``text_fields``: one column, or two for sentence pairs; default ``("text",)``.
    Adds (or overwrites) ``input_ids``, ``attention_mask``, ``token_type_ids`` (if the tokenizer makes
    them), ``length``, ``stopword_spans``, ``stopword_is_pronoun`` and ``idx`` (the row number, which seeds
    the per-epoch choice). Every stopword of the list is recorded; ``TokenDrop(keep_pronouns=True)`` skips
    the pronouns when it drops, so one prepared data set serves both settings.

    Example:
        >>> train = prepare(load_task("rt_sentiment")["train"], load_tokenizer(), max_length=128)  # doctest: +SKIP

    Warning: prepare with the tokenizer of the model you train: ``finetune`` checks the token ids against
    the model's vocabulary and the lengths against its positions, and refuses a mismatch.
    """
    import datasets

    _check_fast(tokenizer)
    if isinstance(data, (list, tuple)):
        data = datasets.Dataset.from_dict({"text": list(data)})
    fields = tuple(text_fields or ("text",))
    if not 1 <= len(fields) <= 2:
        raise ValueError(f"text_fields must name 1 or 2 columns, got {fields!r}")
    check_max_length(max_length, tokenizer, pair=len(fields) == 2)
    splits = data.values() if isinstance(data, datasets.DatasetDict) else [data]
    for split in splits:
        missing = [f for f in fields if f not in split.column_names]
        if missing:
            raise ValueError(f"text_fields {missing} not in the data set's columns {split.column_names}")
    token_columns = [k for k in tokenizer(["a"], ["b"] if len(fields) == 2 else None) if k != "length"]

    def add_columns(batch: dict, indices: list[int]) -> dict:
        pairs = batch[fields[1]] if len(fields) == 2 else None
        out = _find_stopwords(tokenizer, batch[fields[0]], pairs, max_length)
        out["idx"] = list(indices)
        return out

    if isinstance(data, datasets.DatasetDict):
        return datasets.DatasetDict({
            name: split.map(add_columns, batched=True, with_indices=True,
                            features=_features(split.features, token_columns))
            for name, split in data.items()
        })
    return data.map(add_columns, batched=True, with_indices=True,
                    features=_features(data.features, token_columns))


# ============================================================================ 3. TokenDrop
DROP_MODES = ("rate", "to_length")
DROP_UNITS = ("type", "occurrence")


@dataclass(frozen=True)
class DropResult:
    """One example after TokenDrop: the kept token fields and what was dropped."""

    input_ids: list[int]
    attention_mask: list[int]
    token_type_ids: list[int] | None
    dropped_tokens: int
    dropped_words: int
    dropped_spans: list[tuple[int, int]]  # [start, end) token ranges of the dropped words

    def model_inputs(self) -> dict[str, list[int]]:
        """``input_ids``, ``attention_mask`` and, when present, ``token_type_ids``."""
        out = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if self.token_type_ids is not None:
            out["token_type_ids"] = self.token_type_ids
        return out


def _as_list(values: Any) -> list:
    return values.tolist() if hasattr(values, "tolist") else list(values)


class TokenDrop:
    """Drop random stopword words, a new random subset per (seed, epoch, example index).

    Which words go first (``unit``):

    - ``"type"`` (default; Algorithm 1 line 3 and the reference code): shuffle the example's distinct
      stopwords (its stopword *types*: "the", "of", ...), then walk the types in that order and drop each
      type's occurrences in text order until Tokens_to_drop is used up. This is what the reference script
      does (it shuffles the stopword list, and for each listed word present in the example removes its
      occurrences one after the other until its budget is spent). Algorithm 1's pseudocode can also be read
      as one occurrence per type per pass; the two differ only when the budget ends inside a repeated type.
      A type is a word's token ids: in an uncased vocabulary exactly the lower-cased stopword, in a cased
      one "The" and "the" are two types.
    - ``"occurrence"`` (this package's earlier reading): shuffle the stopword *words* (occurrences) and take
      them in that order, so a stopword that occurs three times is three times as likely to be hit first.

    Both units spend the same budget, counted the same way; only the order in which words are taken differs.

    mode ``"rate"`` (Algorithm 1 with a global TokenDrop_Rate): drop ``round(rate * n)`` stopword words,
    where ``n`` is the number of stopword words (occurrences, the paper's number_of_stopwords(sequence)) of
    the example, rounding halves up (0.5 -> 1; not Python's round-half-to-even), in either unit.

    mode ``"to_length"`` (Section 2.3, Algorithm 3: Tokens_to_drop(sample) = cardinality(sample) -
    min_seq_len(batch)): drop stopword words until the example has at most ``target_length`` tokens. Words
    can have several tokens, so the rule is: walk the words in ``unit``'s random order and drop each one that still
    fits in the excess; if some excess is left (every remaining word is longer than it), drop the shortest
    remaining word, which overshoots by fewer tokens than that word has. The result is exact whenever the
    example has at least ``excess`` one-token stopwords, and never shorter than needed by more than the
    longest word minus one. With too few stopwords all of them are dropped and the collator pads the rest.
    ``rate`` is not used in this mode.

    ``enabled=False`` drops nothing (acceptability tasks such as CoLA, where dropping words changes the
    label). ``keep_pronouns=True`` never drops pronouns (WNLI-like tasks): they do not count as stopword
    words at all, neither for ``n`` nor for trimming.

    Example:
        >>> td = TokenDrop(rate=0.3, seed=0)
        >>> collate = TokenDropCollator(td, tokenizer.pad_token_id)           # doctest: +SKIP
        >>> collate.set_epoch(epoch)      # a new random subset of stopwords every epoch   # doctest: +SKIP

    Warning: the subset depends on the epoch set on the collator; call ``set_epoch`` every epoch (the
    training loops do). Used in notebooks 02-04.
    """

    def __init__(self, rate: float = 0.3, mode: str = "rate", seed: int = 0, keep_pronouns: bool = False,
                 enabled: bool = True, unit: str = "type") -> None:
        self.rate = check_number("rate", rate, low=0, high=1)
        self.mode = check_choice("mode", mode, DROP_MODES)
        self.seed = check_int("seed", seed, low=0)
        self.keep_pronouns = check_bool("keep_pronouns", keep_pronouns)
        self.enabled = check_bool("enabled", enabled)
        self.unit = check_choice("unit", unit, DROP_UNITS)

    def __repr__(self) -> str:
        return (f"TokenDrop(rate={self.rate}, mode={self.mode!r}, seed={self.seed}, "
                f"keep_pronouns={self.keep_pronouns}, enabled={self.enabled}, unit={self.unit!r})")

    def prepare(self, data: Any, tokenizer: Any, **kwargs: Any) -> Any:
        """:func:`prepare`: tokenize once and find the stopword words (same for every TokenDrop setting)."""
        return prepare(data, tokenizer, **kwargs)

    def droppable_spans(self, example: Mapping[str, Any]) -> list[tuple[int, int]]:
        """The example's stopword words this TokenDrop may drop: all, or all but pronouns."""
        if "stopword_spans" not in example:
            raise ValueError("example has no stopword_spans: run TokenDrop.prepare(...) on the data first")
        spans = [(int(s), int(e)) for s, e in _as_list(example["stopword_spans"])]
        if not self.keep_pronouns:
            return spans
        if example.get("stopword_is_pronoun") is None:
            raise ValueError("keep_pronouns=True needs the stopword_is_pronoun column (added by prepare)")
        pronoun = _as_list(example["stopword_is_pronoun"])
        return [span for span, is_pronoun in zip(spans, pronoun, strict=True) if not is_pronoun]

    def reachable_length(self, example: Mapping[str, Any]) -> int:
        """The shortest this example can get: its length minus every token of its droppable stopword words."""
        length = len(_as_list(example["input_ids"]))
        if not self.enabled:
            return length
        return length - sum(end - start for start, end in self.droppable_spans(example))

    def generator(self, epoch: int, index: int) -> np.random.Generator:
        """A local generator seeded with (seed, epoch, index): the global RNG is never touched."""
        return self._generator(check_int("epoch", epoch, low=0), check_int("index", index, low=0))

    def _generator(self, epoch: int, index: int) -> np.random.Generator:
        return np.random.default_rng((self.seed, int(epoch), int(index)))

    def num_words_to_drop(self, num_stopword_words: int) -> int:
        """Mode "rate": round(rate * n), halves rounded up."""
        return min(num_stopword_words, math.floor(self.rate * num_stopword_words + 0.5 + 1e-9))

    def choose(self, spans: Sequence[Sequence[int]], epoch: int, index: int,
               excess: int | None = None, types: Sequence[Any] | None = None) -> list[int]:
        """Indices (into ``spans``) of the stopword words to drop, in increasing order.

        Algorithm 1, line 3: shuffle (with :meth:`generator`) the example's stopword types (``unit="type"``)
        or words (``unit="occurrence"``); lines 4-8: take words in that order until Tokens_to_drop is used
        up. ``excess`` (mode "to_length") is the number of tokens to remove. ``types`` (needed by
        ``unit="type"``): one hashable key per span, equal for the words of one type (their token ids or
        their lower-cased text).
        """
        epoch, index = check_int("epoch", epoch, low=0), check_int("index", index, low=0)
        if self.mode == "to_length" and excess is None:
            raise ValueError('mode "to_length" needs excess (the number of tokens to remove)')
        if excess is not None:
            excess = check_int("excess", excess, low=0)
        if types is not None and len(types) != len(spans):
            raise ValueError(f"types must have one key per span ({len(spans)}), got {len(types)}")
        if self.unit == "type" and types is None and len(spans) > 0:
            raise ValueError('unit="type" needs types: one key per span, equal for words of one stopword type')
        return self._choose(spans, epoch, index, excess, types)

    def _order(self, n: int, types: Sequence[Any] | None, epoch: int, index: int) -> list[int]:
        """The order in which the ``n`` stopword words are taken (see ``unit``)."""
        generator = self._generator(epoch, index)
        if self.unit == "occurrence":
            return [int(k) for k in generator.permutation(n)]
        groups: dict[Any, list[int]] = {}  # type -> its words in text order; types in order of first occurrence
        for k, key in enumerate(types):
            groups.setdefault(key, []).append(k)
        words = list(groups.values())
        return [k for g in generator.permutation(len(words)) for k in words[int(g)]]

    def _choose(self, spans: Sequence[Sequence[int]], epoch: int, index: int, excess: int | None,
                types: Sequence[Any] | None = None) -> list[int]:
        """:meth:`choose` without the argument checks (the collators call it once per example)."""
        if not self.enabled or len(spans) == 0:
            return []
        order = self._order(len(spans), types, epoch, index)
        if self.mode == "rate":
            return sorted(order[:self.num_words_to_drop(len(spans))])
        sizes = [int(end) - int(start) for start, end in spans]
        chosen, need = [], excess
        for k in order:  # drop words, in order, that fit in what is left to remove
            if 0 < sizes[k] <= need:
                chosen.append(k)
                need -= sizes[k]
        rest = [k for k in order if k not in chosen]
        if need > 0 and rest:  # every remaining word is longer than `need`: overshoot by the least
            chosen.append(min(rest, key=lambda k: sizes[k]))
        return sorted(chosen)

    def apply(self, example: Mapping[str, Any], epoch: int, index: int | None = None,
              target_length: int | None = None) -> DropResult:
        """Drop stopword words from one prepared example (it needs ``input_ids`` and ``stopword_spans``).

        ``index`` defaults to the example's ``idx``. ``target_length`` is required in mode "to_length" and
        not allowed in mode "rate". ``attention_mask`` and ``token_type_ids`` are shortened with the ids.
        """
        epoch = check_int("epoch", epoch, low=0)
        if index is not None:
            index = check_int("index", index, low=0)
        if self.mode == "to_length":
            if target_length is None:
                raise ValueError('target_length is required in mode "to_length"')
            target_length = check_int("target_length", target_length, low=0)
        elif target_length is not None:
            raise ValueError('target_length is only used in mode "to_length"; this TokenDrop has mode "rate"')
        return self._apply(example, epoch, index, target_length)

    def _apply(self, example: Mapping[str, Any], epoch: int, index: int | None = None,
               target_length: int | None = None) -> DropResult:
        """:meth:`apply` without the argument checks (the collators call it once per example); the
        example's own fields are still checked."""
        if "input_ids" not in example:
            raise ValueError("example has no input_ids: run TokenDrop.prepare(...) on the data first")
        if index is None:
            if "idx" not in example:
                raise ValueError("example has no 'idx' (its row number, added by prepare); pass index=")
            index = int(example["idx"])
        ids = _as_list(example["input_ids"])
        spans = self.droppable_spans(example)
        excess = None if target_length is None else max(0, len(ids) - target_length)
        types = [tuple(ids[start:end]) for start, end in spans] if self.unit == "type" else None
        chosen = self._choose(spans, epoch, index, excess, types)
        drop = {p for k in chosen for p in range(*spans[k])}
        keep = [p for p in range(len(ids)) if p not in drop]
        mask = example.get("attention_mask")
        mask = [1] * len(ids) if mask is None else _as_list(mask)
        types = example.get("token_type_ids")
        types = None if types is None else _as_list(types)
        return DropResult(
            input_ids=[ids[p] for p in keep], attention_mask=[mask[p] for p in keep],
            token_type_ids=None if types is None else [types[p] for p in keep],
            dropped_tokens=len(drop), dropped_words=len(chosen), dropped_spans=[spans[k] for k in chosen],
        )


def reachable_lengths(data: Any, token_drop: TokenDrop) -> list[int]:
    """:meth:`TokenDrop.reachable_length` of every example of a :func:`prepare`-d split, in row order.

    Pass it as ``BucketSampler(reachable_lengths=...)`` (or ``BucketSpec``) with the same TokenDrop in a
    ``TokenDropBucketCollator(trim_to="reachable")``: full batches are then cut from the examples that can be
    trimmed to their bucket's floor, and everything else is merged into batches the collator can trim to one
    width (:func:`tdnotebooks.finetuning.planning.merge_by_reachable`).

    Example:
        >>> td = TokenDrop(mode="to_length", seed=0)                                  # doctest: +SKIP
        >>> sampler = BucketSampler(train["length"], token_budget=4096,
        ...                         reachable_lengths=reachable_lengths(train, td))   # doctest: +SKIP
        >>> loader = DataLoader(train, batch_sampler=sampler,
        ...                     collate_fn=TokenDropBucketCollator(td, pad_id, trim_to="reachable"))  # doctest: +SKIP

    Warning: the lengths must come from the TokenDrop the collator uses (same ``keep_pronouns``,
    ``enabled``): the sampler plans widths that only that collator can reach.
    """
    if not isinstance(token_drop, TokenDrop):
        raise ValueError(f"token_drop must be a TokenDrop, got {type(token_drop).__name__}")
    columns = getattr(data, "column_names", None)
    if columns is None or "input_ids" not in columns or "stopword_spans" not in columns:
        raise ValueError("data must be a split from tdnotebooks.finetuning.tokendrop.prepare (with input_ids and "
                         f"stopword_spans), got {type(data).__name__} with columns {columns}")
    names = ["input_ids", "stopword_spans"] + (["stopword_is_pronoun"] if "stopword_is_pronoun" in columns else [])
    table = data.select_columns(names) if hasattr(data, "select_columns") else data
    return [token_drop.reachable_length(row) for row in table]


# ============================================================================ 4. collators
def _kept_positions(length: int, dropped_spans: Sequence[Sequence[int]]) -> list[int]:
    """The token positions (of the undropped sequence) that survive ``dropped_spans``, in order."""
    dropped = {p for start, end in dropped_spans for p in range(start, end)}
    return [p for p in range(length) if p not in dropped]


class _DropAndPadCollator:
    """Shared part of the collators: drop (subclass), pad to the batch's longest, count slots."""

    required_mode = "rate"

    def __init__(self, token_drop: TokenDrop, pad_token_id: int, return_positions: bool = False) -> None:
        if not isinstance(token_drop, TokenDrop):
            raise ValueError(f"token_drop must be a TokenDrop, got {type(token_drop).__name__}")
        if token_drop.mode != self.required_mode:
            raise ValueError(f"{type(self).__name__} needs TokenDrop(mode={self.required_mode!r}), "
                             f"got mode={token_drop.mode!r}")
        self.token_drop = token_drop
        self.pad_token_id = check_int("pad_token_id (tokenizer.pad_token_id)", pad_token_id, low=0)
        self.return_positions = check_bool("return_positions", return_positions)
        self.epoch = 0
        self.reset_stats()

    def set_epoch(self, epoch: int) -> None:
        """Call at the start of each epoch: the dropped subset depends on it."""
        self.epoch = check_int("epoch", epoch, low=0)

    def reset_stats(self) -> None:
        """Zero the running counts of real/slot tokens, batches and dropped tokens."""
        self.real_tokens = self.slot_tokens = self.num_batches = 0
        self.dropped_tokens = self.dropped_words = 0

    @property
    def stats(self) -> PaddingStats:
        """Real vs padded token slots of every batch made since the last :meth:`reset_stats`.

        Counted in the process that runs the collator: use ``num_workers=0`` to read them here.
        """
        return PaddingStats(self.real_tokens, self.slot_tokens, self.num_batches)

    def _drop(self, examples: Sequence[Mapping[str, Any]]) -> list[DropResult]:
        raise NotImplementedError

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if len(examples) == 0:
            raise ValueError("examples is empty: nothing to collate")
        results = self._drop(examples)
        width = max(len(r.input_ids) for r in results)

        def pad(rows: list[list[int]], value: int) -> torch.Tensor:
            return torch.tensor([row + [value] * (width - len(row)) for row in rows], dtype=torch.long)

        batch = {
            "input_ids": pad([r.input_ids for r in results], self.pad_token_id),
            "attention_mask": pad([r.attention_mask for r in results], 0),
        }
        if all(r.token_type_ids is not None for r in results):
            batch["token_type_ids"] = pad([r.token_type_ids for r in results], 0)
        batch.update(collate_labels(examples, [r.dropped_spans for r in results]))
        if self.return_positions:  # each slot's token position before the drop (-1: padding), for inference
            batch["original_positions"] = pad([_kept_positions(len(ex["input_ids"]), r.dropped_spans)
                                               for ex, r in zip(examples, results, strict=True)], -1)
        self.real_tokens += sum(len(r.input_ids) for r in results)
        self.slot_tokens += width * len(results)
        self.num_batches += 1
        self.dropped_tokens += sum(r.dropped_tokens for r in results)
        self.dropped_words += sum(r.dropped_words for r in results)
        return batch


class TokenDropCollator(_DropAndPadCollator):
    """TokenDrop at a global rate (Algorithm 1), then padding to the batch's longest sequence.

    Examples come from :func:`prepare` (they need ``input_ids``, ``stopword_spans``, ``idx``). Labels go through
    :func:`~tdnotebooks.finetuning.collate.collate_labels` (QA answer positions are moved with the drop).
    ``return_positions=True`` adds ``original_positions``: each slot's position before the drop, -1 for
    padding (inference maps predictions back to the text with it). Call :meth:`set_epoch` every epoch.
    """

    required_mode = "rate"

    def _drop(self, examples: Sequence[Mapping[str, Any]]) -> list[DropResult]:
        return [self.token_drop._apply(ex, self.epoch) for ex in examples]


TRIM_TARGETS = ("shortest", "reachable", "bucket_floor")


class TokenDropBucketCollator(_DropAndPadCollator):
    """TokenDrop + BucketSampler (Algorithm 3): trim the sequences of a length-bucketed batch by dropping stopwords.

    Each sequence drops random stopword words (per seed, epoch, idx) until it is as short as its target
    (``trim_to``); only what cannot be trimmed (too few stopwords, or a multi-token word that overshoots) is
    padded. Meant for batches of similar lengths (BucketSampler): with widely different lengths most
    sequences run out of stopwords. Needs ``TokenDrop(mode="to_length")``.

    Three targets, three sources:

    - ``"shortest"``: Algorithm 3 as written in the paper (Tokens_to_drop(sample) = cardinality(sample) -
      min_seq_len(batch), min_seq_len read as the batch's shortest member). Its weak spot: when one sequence
      has too few stopwords to get down to the shortest length, the batch is as wide as that sequence anyway,
      so the others were trimmed further than needed and are padded back up.
    - ``"bucket_floor"``: what the reference code does: every sequence on its own drops ``length %
      bucket_width`` tokens' worth of stopwords, i.e. is trimmed to ``(length // bucket_width) *
      bucket_width``, the lower edge of its bucket ``[k*w, (k+1)*w)`` as :class:`~tdnotebooks.finetuning.
      planning.BucketSpec` defines buckets. In a batch of one bucket every member has the same floor; in a
      merged residual batch the members keep their own floors and are padded to the widest.
    - ``"reachable"`` (this package's own reading, ``finetune``'s default): trim to max(shortest length, the
      longest of "length minus all stopword tokens"): no wider a batch than "shortest", fewer tokens dropped,
      and padding only from multi-token words that overshoot and from members shorter than that width. A
      BucketSampler given this TokenDrop's ``reachable_lengths`` plans its batches so that no member is
      shorter than the width (except for a small allowance, see
      :func:`~tdnotebooks.finetuning.planning.merge_by_reachable`), merged residual batches included: that
      is what keeps padding near zero on any length distribution (measured figures: BENCHMARKS.md, notebook 03).

    Args:
        token_drop: a ``TokenDrop(mode="to_length")``; its seed and the epoch (:meth:`set_epoch`) fix the drops.
        pad_token_id: the tokenizer's pad id, for what cannot be trimmed.
        trim_to: ``"shortest"`` (Algorithm 3 as written), ``"bucket_floor"`` (the reference code) or
            ``"reachable"`` (what ``finetune`` uses).
        return_positions: add ``original_positions`` (see :class:`TokenDropCollator`).
        bucket_width: the sampler's bucket width (the paper's 5); used by ``trim_to="bucket_floor"`` only.

    Example:
        >>> collate = TokenDropBucketCollator(TokenDrop(mode="to_length"), tokenizer.pad_token_id,
        ...                                   trim_to="reachable")   # doctest: +SKIP
        >>> loader = DataLoader(train, batch_sampler=sampler, collate_fn=collate)   # doctest: +SKIP

    Warning: call :meth:`set_epoch` at the start of every epoch, as with ``DistributedSampler``: the dropped
    subset depends on the epoch, and a collator left at another epoch drops other words. And with merged
    batches planned from reachable lengths, use ``trim_to="reachable"``: ``"shortest"`` trims such a batch
    below what its stopword-poor members can reach and pads them. With ``"bucket_floor"`` give the
    sampler's ``bucket_width``.
    """

    required_mode = "to_length"

    def __init__(self, token_drop: TokenDrop, pad_token_id: int, trim_to: str = "shortest",
                 return_positions: bool = False, bucket_width: int = 5) -> None:
        super().__init__(token_drop, pad_token_id, return_positions)
        self.trim_to = check_choice("trim_to", trim_to, TRIM_TARGETS)
        self.bucket_width = check_int("bucket_width", bucket_width, low=1)

    def target_lengths(self, examples: Sequence[Mapping[str, Any]]) -> list[int]:
        """The length each sequence of the batch is trimmed to (see ``trim_to``)."""
        if self.trim_to == "bucket_floor":
            w = self.bucket_width
            return [len(ex["input_ids"]) // w * w for ex in examples]
        target = min(len(ex["input_ids"]) for ex in examples)
        if self.trim_to == "reachable":
            target = max([target] + [self.token_drop.reachable_length(ex) for ex in examples])
        return [target] * len(examples)

    def target_length(self, examples: Sequence[Mapping[str, Any]]) -> int:
        """The one length the whole batch is trimmed to (``"shortest"``, ``"reachable"``); with
        ``"bucket_floor"`` the widest member's floor (each member has its own: :meth:`target_lengths`)."""
        return max(self.target_lengths(examples))

    def _drop(self, examples: Sequence[Mapping[str, Any]]) -> list[DropResult]:
        targets = self.target_lengths(examples)
        return [self.token_drop._apply(ex, self.epoch, target_length=target)
                for ex, target in zip(examples, targets, strict=True)]


# ============================================================================ 5. inference, notebook helpers
def drop_stopwords_for_inference(tokenizer: Any, texts: str | Sequence[str], rate: float, seed: int = 0,
                                 keep_pronouns: bool = False, max_length: int | None = 128,
                                 unit: str = "type") -> list[dict[str, torch.Tensor]]:
    """Inference-time TokenDrop (Section 3.2): drop round(rate * n) of each text's n stopword words.

    One dict of ``(1, length)`` tensors per text, ready for ``model(**inputs)`` at batch size 1 (``rate=1``
    drops every stopword). Text ``i`` uses the generator of (seed, epoch 0, index i); ``unit`` as in
    :class:`TokenDrop` (default ``"type"``, Algorithm 1).
    """
    if isinstance(texts, str):
        texts = [texts]
    token_drop = TokenDrop(rate=rate, seed=seed, keep_pronouns=keep_pronouns, unit=unit)
    columns = find_stopwords(tokenizer, texts, max_length=max_length)
    return [_inference_inputs(token_drop, {k: v[i] for k, v in columns.items()}, i) for i in range(len(texts))]


def _inference_inputs(token_drop: TokenDrop, example: Mapping[str, Any], index: int) -> dict[str, torch.Tensor]:
    """One found-stopwords example after ``token_drop`` (epoch 0, ``index``), as ``(1, length)`` tensors."""
    kept = token_drop._apply(example, epoch=0, index=index)
    return {k: torch.tensor([v]) for k, v in kept.model_inputs().items()}


@dataclass(frozen=True)
class HighlightedText:
    """The words of a text, which are stopwords and which of them TokenDrop dropped; shows as HTML."""

    pairs: list[tuple[str, bool]]  # (word, dropped), every word of the text in order
    stopword: list[bool]  # per word: could TokenDrop drop it (is it a stopword, not a kept pronoun)
    html: str  # dropped words struck out, kept stopwords underlined
    text: str  # plain text with the dropped words in [brackets]

    def _repr_html_(self) -> str:
        return self.html

    def __str__(self) -> str:
        return self.text


def highlight_dropped(tokenizer: Any, text: str, rate: float = 0.3, seed: int = 0, epoch: int = 0,
                      index: int = 0, keep_pronouns: bool = False, unit: str = "type") -> HighlightedText:
    """Which words of ``text`` TokenDrop (mode "rate") drops at (seed, epoch, index): struck out in red;
    stopwords it kept this time are underlined. Same choice as the collator makes for row ``index``."""
    _check_fast(tokenizer)
    check_bool("keep_pronouns", keep_pronouns)
    token_drop = TokenDrop(rate=rate, seed=seed, unit=unit)
    encoding = tokenizer([text]).encodings[0]
    found = [f for f in _stopword_tokens(encoding, [text]) if not (keep_pronouns and f.pronoun)]
    chosen = token_drop.choose([(f.start, f.end) for f in found], epoch, index,
                               types=[tuple(encoding.ids[f.start:f.end]) for f in found])
    stop_chars = {(f.word.start, f.word.end) for f in found}
    dropped_chars = {(found[k].word.start, found[k].word.end) for k in chosen}
    pairs, flags, html_parts, text_parts, cursor = [], [], [], [], 0
    for word in split_words(text):
        span, gap, piece = (word.start, word.end), text[cursor:word.start], text[word.start:word.end]
        dropped = span in dropped_chars
        marked = html.escape(piece)
        if dropped:
            marked = f'<s style="color:#E45756">{marked}</s>'
        elif span in stop_chars:
            marked = f'<u style="text-decoration-color:#999">{marked}</u>'
        html_parts.append(html.escape(gap) + marked)
        text_parts.append(gap + (f"[{piece}]" if dropped else piece))
        pairs.append((piece, dropped))
        flags.append(span in stop_chars)
        cursor = word.end
    tail = text[cursor:]
    return HighlightedText(pairs, flags, "<span>" + "".join(html_parts) + html.escape(tail) + "</span>",
                           "".join(text_parts) + tail)


_ARTICLES = re.compile(r"\b(?:a|an|the)\b", re.IGNORECASE)


def remove_articles_and_punctuation(text: str) -> str:
    """The paper's resilience test input (Fig. 2): no articles ('a', 'an', 'the'), no punctuation marks.

    Apostrophes are deleted ("it's" -> "its", "don't" -> "dont"); every other punctuation mark (Unicode
    category P*: , . ! ? ; : - ( ) " ...) becomes a space ("well-made" -> "well made"); then the articles
    are removed as whole words and runs of spaces collapse to one.
    """
    text = re.sub("['\u2019]", "", text)
    text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text)
    return " ".join(_ARTICLES.sub(" ", text).split())
