"""Extractive question answering (SQuAD v1.1) with TokenDrop + BucketSampler: answer spans survive the drop.

The paper fine-tunes on SQuAD v1.1 as well as GLUE. Three things differ from classification:

1. an example (question + context) becomes one or more *features*: windows of ``max_length`` tokens over the
   context, overlapping by ``stride`` tokens (:func:`prepare_qa`); each window is labelled with the answer's
   token positions when it holds the whole answer, else with the [CLS] position (Hugging Face's recipe);
2. TokenDrop may drop stopwords of the context (and, with ``keep_question=False``, of the question) but
   never a stopword word that overlaps the answer: the collators move ``start_positions``/``end_positions``
   left by the tokens dropped before them (:func:`~tdnotebooks.finetuning.collate.collate_labels`);
3. predictions are spans: the best (start, end) pair of context tokens over all windows of an example, mapped
   back to the ORIGINAL context through the token offsets (:func:`predict_qa`, also in server mode where
   TokenDrop removed tokens at inference: each slot of a batch knows its position before the drop), and
   scored with SQuAD's exact match and F1 (:func:`squad_metrics`).

Example::

    qa = load_task("shakespeare_qa")
    train, dev = prepare_qa(qa["train"], tokenizer), prepare_qa(qa["dev"], tokenizer, protect_answer=False)
    model = AutoModelForQuestionAnswering.from_pretrained(bundled_model_path())
    history = finetune(model, train, dev, FinetuneConfig(method="tokendrop_bucket"), task=QATask(qa["dev"]),
                       pad_token_id=tokenizer.pad_token_id)
    history.final_dev_metric                                  # dev F1, 0-100 as SQuAD reports it
    predict_qa(model, dev, qa["dev"], batching="bucketed_tokendrop", token_drop=TokenDrop(mode="to_length"),
               pad_token_id=tokenizer.pad_token_id).answers   # server mode: {example id: answer text}
"""

from __future__ import annotations

import collections
import re
import string
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tdnotebooks.checks import check_max_length, check_split
from tdnotebooks.finetuning.collate import POSITION_KEYS
from tdnotebooks.finetuning.inference import BATCHINGS
from tdnotebooks.finetuning.tasks import FinetuneTask
from tdnotebooks.padding import PaddingStats
from tdnotebooks.validation import check_bool, check_choice, check_int

__all__ = ["ANSWERLESS_WINDOWS", "QA_BATCHINGS", "QAPredictions", "QATask", "normalize_answer", "predict_qa",
           "prepare_qa", "squad_metrics"]

ANSWERLESS_WINDOWS = ("keep", "drop")
QA_BATCHINGS = BATCHINGS  # the server-mode batchings of inference.predict, the same for QA
CLS_INDEX = 0  # the label of a window that does not hold the whole answer (HF's SQuAD recipe)
_NO_OFFSET = [-1, -1]  # offset_mapping of a token that is not context (question, special tokens)


# ============================================================================ 1. features
def _example_ids(examples: Any) -> list[str]:
    """Each example's id: its ``id`` column as str, else its row number."""
    if "id" in examples.column_names:
        return [str(i) for i in examples["id"]]
    return [str(i) for i in range(len(examples))]


def _check_examples(name: str, examples: Any, answers: bool) -> None:
    """A SQuAD-format ``datasets.Dataset``: question/context (and answers) columns, unique ids, answers that
    are what their ``answer_start`` points at in the context."""
    columns = getattr(examples, "column_names", None)
    if columns is None or isinstance(columns, dict):
        raise ValueError(f"{name} must be a datasets.Dataset in SQuAD format (question, context, answers), got "
                         f"{type(examples).__name__}")
    needed = ["question", "context"] + (["answers"] if answers else [])
    missing = [c for c in needed if c not in columns]
    if missing:
        raise ValueError(f"{name} is missing the columns {missing} (it has {columns}); extractive QA needs SQuAD's "
                         "format: id, question, context, answers={'text': [...], 'answer_start': [...]}")
    if len(examples) == 0:
        raise ValueError(f"{name} is empty: need at least one example")
    ids = _example_ids(examples)
    if len(set(ids)) != len(ids):
        twice = next(i for i, c in collections.Counter(ids).items() if c > 1)
        raise ValueError(f"{name}: the id column must be unique (features find their example by it), "
                         f"but {twice!r} appears {ids.count(twice)} times")
    if "answers" not in columns:
        return
    for row, (context, ans) in enumerate(zip(examples["context"], examples["answers"], strict=True)):
        if not isinstance(ans, Mapping) or "text" not in ans or "answer_start" not in ans \
                or len(ans["text"]) != len(ans["answer_start"]):
            raise ValueError(f"{name}: answers[{row}] must be {{'text': [str, ...], 'answer_start': [int, ...]}} "
                             f"of equal lengths (SQuAD's format), got {ans!r}")
        for text, start in zip(ans["text"], ans["answer_start"], strict=True):
            if not isinstance(start, int) or start < 0 or context[start:start + len(text)] != text or not text:
                raise ValueError(f"{name}: answers[{row}] says {text!r} starts at character {start!r} of the "
                                 f"context, but the context holds {context[start:start + len(text)]!r} there; "
                                 "answer_start must be the character offset of the answer text")


def _qa_features(base: Any, token_columns: Sequence[str], labelled: bool) -> Any:
    """Column types of :func:`prepare_qa`'s output (empty span lists keep their type)."""
    import datasets

    from tdnotebooks.finetuning.tokendrop import _features

    list_of = getattr(datasets, "List", datasets.Sequence)
    base = datasets.Features({"example_id": datasets.Value("string"),
                              "offset_mapping": list_of(list_of(datasets.Value("int32")))})
    if labelled:
        for key in POSITION_KEYS:
            base[key] = datasets.Value("int64")
    return _features(base, token_columns)


def _answer_tokens(offsets: list, context_tokens: list[int], start: int, end: int) -> list[int]:
    """The context tokens of a window whose characters overlap the answer's ``[start, end)``."""
    return [p for p in context_tokens if offsets[p][0] < end and offsets[p][1] > start]


def prepare_qa(data: Any, tokenizer: Any, *, max_length: int = 384, stride: int = 128, keep_question: bool = True,
               protect_answer: bool = True, answerless_windows: str = "keep") -> Any:
    """Tokenize SQuAD-format examples into windowed features with answer positions and droppable stopwords.

    ``data``: a ``datasets.Dataset`` or ``DatasetDict`` with ``question``, ``context`` and (to train or score)
    ``answers`` = ``{"text": [str], "answer_start": [int]}`` (and usually ``id``). Each example becomes one
    feature per window: question + context pairs cut with ``truncation="only_second"`` into windows of at most
    ``max_length`` tokens that overlap by ``stride`` tokens. The original columns are replaced by:

    - ``input_ids``, ``attention_mask``, ``token_type_ids`` (when the tokenizer makes them), ``length``;
    - ``example_id`` (the example's ``id``, or its row number as a str) and ``offset_mapping`` (each token's
      ``[start, end)`` characters in the context, ``[-1, -1]`` for question and special tokens): what
      :func:`predict_qa` needs to map a predicted span back to the context;
    - ``start_positions`` / ``end_positions`` (when ``answers`` is there): the token positions of the first
      answer when the window holds all of it, else ``0`` (the [CLS] position, HF's SQuAD recipe);
    - ``stopword_spans`` / ``stopword_is_pronoun`` (the word-level finder of
      :func:`~tdnotebooks.finetuning.tokendrop.prepare`, per window) and ``idx`` (the feature's row, which
      seeds TokenDrop's choice).

    What TokenDrop may drop: every stopword word of the context except those overlapping an answer's tokens
    (``protect_answer=True``: the labelled span is never cut; every gold answer is protected), and the
    question's stopwords only with ``keep_question=False`` (by default the question is kept whole: it is
    short, and its function words, "who", "says", carry the question).

    Args:
        max_length: tokens per window, special tokens included (SQuAD's usual 384).
        stride: tokens shared by consecutive windows (HF's ``stride``); must leave room for the question.
        keep_question: True: the question's stopwords are never dropped; False: TokenDrop may drop them too.
        protect_answer: True (training): stopwords overlapping a gold answer are not droppable. Pass False
            for a split on which server-mode inference is measured: TokenDrop at inference must not know
            where the answer is (such a split's labels then cannot go through a TokenDrop collator).
        answerless_windows: ``"keep"`` (default, HF's recipe): windows that do not hold the whole answer are
            training features labelled [CLS]. At inference the answer is the best span over all windows of
            an example, so the model must learn to score spans low in windows without the answer; only
            windows that saw no answer teach it that. ``"drop"``: train only on windows with the answer (fewer
            features on long contexts, but window-to-window scores are not calibrated). Evaluation features
            must keep every window (``"keep"``).

    Example:
        >>> train = prepare_qa(load_task("shakespeare_qa")["train"], load_tokenizer())   # doctest: +SKIP

    Warning: prepare with the tokenizer of the model you train (``finetune`` checks ids and lengths against
    the model). The question comes first, as in BERT's SQuAD setup.
    """
    import datasets

    from tdnotebooks.finetuning.tokendrop import _check_fast

    _check_fast(tokenizer)
    check_max_length(max_length, tokenizer, pair=True)
    stride = check_int("stride", stride, low=0)
    if stride >= max_length:
        raise ValueError(f"stride must be an int < max_length ({max_length}): it is the number of tokens two "
                         f"consecutive windows share, got stride={stride}")
    keep_question = check_bool("keep_question", keep_question)
    protect_answer = check_bool("protect_answer", protect_answer)
    check_choice("answerless_windows", answerless_windows, ANSWERLESS_WINDOWS)
    if not isinstance(data, (datasets.Dataset, datasets.DatasetDict)):
        raise ValueError(f"data must be a datasets.Dataset or DatasetDict in SQuAD format (question, context, "
                         f"answers), got {type(data).__name__}")
    splits = dict(data) if isinstance(data, datasets.DatasetDict) else {"data": data}
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    for name, split in splits.items():
        _check_examples(name if isinstance(data, datasets.DatasetDict) else "data", split, answers=False)
        q_lengths = [len(ids) for ids in tokenizer(list(split["question"]), add_special_tokens=False)["input_ids"]]
        room = max_length - specials - np.asarray(q_lengths)
        if (room <= stride).any():
            row = int(np.argmax(room <= stride))
            raise ValueError(f"{name}: question[{row}] has {q_lengths[row]} tokens, which leaves "
                             f"{int(room[row])} context tokens per window with max_length={max_length}; stride "
                             f"({stride}) must be smaller than that: raise max_length or lower stride")
    token_columns = [k for k in tokenizer(["a"], ["b"]) if k != "length"]

    def featurize(batch: dict, rows: list[int]) -> dict:
        return _featurize(batch, rows, tokenizer, max_length, stride, keep_question, protect_answer,
                          answerless_windows)

    def prepare_split(split: Any) -> Any:
        labelled = "answers" in split.column_names
        features = _qa_features(split.features, token_columns, labelled)
        out = split.map(featurize, batched=True, with_indices=True, remove_columns=split.column_names,
                        features=features)
        return out.map(lambda batch, rows: {"idx": list(rows)}, batched=True, with_indices=True,
                       input_columns=["length"], features=features)

    if isinstance(data, datasets.DatasetDict):
        return datasets.DatasetDict({name: prepare_split(split) for name, split in data.items()})
    return prepare_split(data)


def _featurize(batch: dict, rows: list[int], tokenizer: Any, max_length: int, stride: int, keep_question: bool,
               protect_answer: bool, answerless_windows: str) -> dict:
    """One batch of examples -> its features (a batched ``Dataset.map`` function)."""
    from tdnotebooks.finetuning.tokendrop import encoding_stopwords

    questions, contexts = batch["question"], batch["context"]
    enc = tokenizer(questions, contexts, truncation="only_second", max_length=max_length, stride=stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True)
    ids = [str(i) for i in batch["id"]] if "id" in batch else [str(r) for r in rows]
    answers = batch.get("answers")
    token_columns = [k for k in enc if k not in ("offset_mapping", "overflow_to_sample_mapping", "length")]
    out: dict[str, list] = {k: [] for k in [*token_columns, "length", "example_id", "offset_mapping",
                                            "stopword_spans", "stopword_is_pronoun", "idx"]}
    if answers is not None:
        out.update({key: [] for key in POSITION_KEYS})
    for f, encoding in enumerate(enc.encodings):
        i = enc["overflow_to_sample_mapping"][f]
        seq_ids = encoding.sequence_ids
        context_tokens = [p for p, s in enumerate(seq_ids) if s == 1]
        offsets = [list(o) if s == 1 else _NO_OFFSET for o, s in zip(encoding.offsets, seq_ids, strict=True)]
        spans, pronoun = encoding_stopwords(encoding, [questions[i], contexts[i]])
        protected: set[int] = set()
        start_pos = end_pos = CLS_INDEX
        if answers is not None:
            golds = [(s, s + len(t)) for t, s in zip(answers[i]["text"], answers[i]["answer_start"], strict=True)]
            if protect_answer:
                for a, b in golds:
                    protected.update(_answer_tokens(offsets, context_tokens, a, b))
            if golds and context_tokens:
                a, b = golds[0]
                inside = _answer_tokens(offsets, context_tokens, a, b)
                whole = offsets[context_tokens[0]][0] <= a and offsets[context_tokens[-1]][1] >= b
                if whole and inside:
                    start_pos, end_pos = inside[0], inside[-1]
            if answerless_windows == "drop" and start_pos == CLS_INDEX:
                continue
        keep = [k for k, (s, e) in enumerate(spans)
                if not (keep_question and seq_ids[s] == 0) and not protected.intersection(range(s, e))]
        for key in token_columns:
            out[key].append(enc[key][f])
        out["length"].append(len(encoding.ids))
        out["example_id"].append(ids[i])
        out["offset_mapping"].append(offsets)
        out["stopword_spans"].append([spans[k] for k in keep])
        out["stopword_is_pronoun"].append([pronoun[k] for k in keep])
        out["idx"].append(0)  # the feature's row, set once all batches are done
        if answers is not None:
            out["start_positions"].append(start_pos)
            out["end_positions"].append(end_pos)
    return out


# ============================================================================ 2. SQuAD v1.1 metrics
def normalize_answer(text: str) -> str:
    """SQuAD v1.1's normalisation: lower case, no punctuation, no articles (a, an, the), single spaces."""
    text = text.lower()
    text = "".join(c for c in text if c not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = collections.Counter(pred) & collections.Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(predictions: Any, examples: Any) -> dict[str, float]:
    """SQuAD v1.1 exact match and F1, in percent (0-100), each the max over an example's gold answers.

    ``predictions``: a :class:`QAPredictions`, a dict ``{example id: answer text}`` (ids as :func:`prepare_qa`
    writes them: the ``id`` column as str, else the row number) or a list of texts in the examples' order.
    ``examples``: the SQuAD-format split (``answers``). Every example needs a prediction.
    """
    _check_examples("examples", examples, answers=True)
    ids = _example_ids(examples)
    if isinstance(predictions, QAPredictions):
        predictions = predictions.answers
    if isinstance(predictions, Mapping):
        missing = [i for i in ids if i not in predictions]
        if missing:
            raise ValueError(f"predictions has no answer for {len(missing)} of {len(ids)} examples (e.g. id "
                             f"{missing[0]!r}); predict every example of the split")
        texts = [predictions[i] for i in ids]
    elif isinstance(predictions, (list, tuple)) and not isinstance(predictions, str):
        if len(predictions) != len(ids):
            raise ValueError(f"predictions must hold one answer per example ({len(ids)}), got {len(predictions)}")
        texts = list(predictions)
    else:
        raise ValueError(f"predictions must be a QAPredictions, a dict {{id: text}} or a list of texts, got "
                         f"{type(predictions).__name__}")
    if not all(isinstance(t, str) for t in texts):
        raise ValueError("predictions must be answer texts (str)")
    exact = f1 = 0.0
    for text, answers in zip(texts, examples["answers"], strict=True):
        golds = list(answers["text"]) or [""]
        exact += max(float(normalize_answer(text) == normalize_answer(g)) for g in golds)
        f1 += max(_f1(text, g) for g in golds)
    return {"exact_match": 100 * exact / len(texts), "f1": 100 * f1 / len(texts)}


# ============================================================================ 3. prediction
@dataclass
class QAPredictions:
    """Answer texts per example (substrings of its context), the n best candidates, time and padding."""

    answers: dict[str, str]  # example id -> the best span's text ("" when no window had a context token)
    candidates: dict[str, list[tuple[str, float]]]  # example id -> up to n_best (text, start + end logit)
    seconds: float  # collation and forward passes (post-processing not included)
    padding: PaddingStats
    num_features: int

    @property
    def throughput(self) -> float:
        """Features (windows) per second."""
        return self.num_features / self.seconds if self.seconds > 0 else float("inf")

    def metrics(self, examples: Any) -> dict[str, float]:
        """:func:`squad_metrics` of these answers."""
        return squad_metrics(self, examples)


def _check_qa_model(model: Any, pad_token_id: int | None) -> None:
    name = type(model).__name__
    if not isinstance(model, torch.nn.Module) or getattr(model, "config", None) is None \
            or not name.endswith("ForQuestionAnswering"):
        raise ValueError(f"model must be a Hugging Face extractive QA model (*ForQuestionAnswering, with start and "
                         f"end logits), got {name}; load it with AutoModelForQuestionAnswering.from_pretrained(...) "
                         "(e.g. tdnotebooks.models.bundled_model_path()): it gets a fresh qa_outputs head")
    config_pad = getattr(model.config, "pad_token_id", None)
    if pad_token_id is not None and config_pad is not None and pad_token_id != config_pad:
        raise ValueError(f"pad_token_id={pad_token_id!r}, but the model's pad token is model.config.pad_token_id="
                         f"{config_pad}; pass pad_token_id=tokenizer.pad_token_id")


def _check_features_match(features: Any, examples: Any, ids: list[str]) -> None:
    """Every feature's example is in ``examples`` and every example has a feature."""
    feature_ids = set(list(features["example_id"]))
    known = set(ids)
    stray = sorted(feature_ids - known)
    if stray:
        raise ValueError(f"features and examples do not match: {len(stray)} feature example_id(s) are not ids of "
                         f"the examples (e.g. {stray[0]!r}); pass the split the features were prepared from")
    unseen = [i for i in ids if i not in feature_ids]
    if unseen:
        raise ValueError(f"features and examples do not match: {len(unseen)} of {len(ids)} examples have no "
                         f"feature (e.g. id {unseen[0]!r}); prepare every example (answerless_windows='keep')")


_COLLATE_KEYS = ("input_ids", "attention_mask", "token_type_ids", "length", "stopword_spans",
                 "stopword_is_pronoun", "idx")


@torch.no_grad()
def predict_qa(model: torch.nn.Module, features: Any, examples: Any, *, batching: str = "bucketed",
               batch_size: int = 64, token_budget: int | None = 8192, bucket_width: int = 5,
               token_drop: Any = None, n_best: int = 20, max_answer_length: int = 30, pad_token_id: int = 0,
               seed: int = 0, amp_dtype: torch.dtype | None = None, trim_to: str = "reachable") -> QAPredictions:
    """The best answer span of every example: windows batched as in :func:`~tdnotebooks.finetuning.inference.predict`.

    ``features``: :func:`prepare_qa` of ``examples`` (every window kept). batching: ``"random"`` (random
    batches of ``batch_size`` padded to their longest), ``"bucketed"`` (BucketSampler buckets of
    ``bucket_width`` with HWCap from ``token_budget``, no BatchCap, residual batches merged) or
    ``"bucketed_tokendrop"`` (server mode, Section 3.2: the same batches trimmed by dropping stopwords, with
    ``token_drop=TokenDrop(mode="to_length")`` and ``TokenDropBucketCollator(trim_to=trim_to)``, default
    ``"reachable"``, the package's own reading, as in :func:`~tdnotebooks.finetuning.inference.predict`; the
    sampler is given the TokenDrop's reachable lengths so that batches can be trimmed to one width).

    Post-processing (SQuAD v1.1): over all windows of an example, the span (start, end) of context tokens
    with end >= start, at most ``max_answer_length`` tokens of the original window (dropped tokens inside
    count), and the largest start + end logit; its text is the context's characters from the start token's
    first to the end token's last (the original substring, whatever was dropped in between). Dropped tokens,
    question tokens, special tokens and padding are never answer boundaries. ``n_best``: candidates kept per
    example (``candidates``), best first.

    Warning: the model is put in ``eval()`` mode and left there. Prepare the features of a split on which
    server mode is measured with ``prepare_qa(..., protect_answer=False)``, so TokenDrop does not know where
    the answer is.
    """
    from tdnotebooks.finetuning.inference import check_server_batching, server_batches

    check_server_batching(batching, batch_size=batch_size, token_budget=token_budget, bucket_width=bucket_width,
                          pad_token_id=pad_token_id, seed=seed, trim_to=trim_to, token_drop=token_drop)
    check_int("n_best", n_best, low=1)
    check_int("max_answer_length", max_answer_length, low=1)
    hf_model = model if hasattr(model, "config") else None  # a stand-in without a config: the data's shape only
    if hf_model is not None:
        _check_qa_model(hf_model, pad_token_id)
    needed = ("length", "example_id", "offset_mapping")
    if batching == "bucketed_tokendrop":
        needed += ("stopword_spans", "idx")
    check_split("features", features, hf_model, labels=False, columns=needed)
    _check_examples("examples", examples, answers=False)
    ids = _example_ids(examples)
    _check_features_match(features, examples, ids)

    n = len(features)
    batches, collate = server_batches(features, batching, batch_size=batch_size, token_budget=token_budget,
                                      bucket_width=bucket_width, pad_token_id=pad_token_id, seed=seed,
                                      trim_to=trim_to, token_drop=token_drop, plan_reachable=True,
                                      return_positions=True)
    inputs = features.select_columns([c for c in _COLLATE_KEYS if c in features.column_names])
    offsets_of, example_of = list(features["offset_mapping"]), list(features["example_id"])
    contexts = dict(zip(ids, examples["context"], strict=True))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    best: dict[str, list[tuple[float, int, int]]] = {i: [] for i in ids}  # (score, start char, end char)
    seconds = 0.0
    for batch_indices in batches:
        rows = [int(i) for i in batch_indices]
        _synchronize(device)
        start = time.perf_counter()
        batch = collate([inputs[i] for i in rows])
        positions = batch.pop("original_positions", None)
        model_inputs = {k: v.to(device) for k, v in batch.items()
                        if k in ("input_ids", "attention_mask", "token_type_ids")}
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out = model(**model_inputs)
        start_logits, end_logits = out.start_logits.float().cpu(), out.end_logits.float().cpu()
        seconds += time.perf_counter() - start
        if positions is None:  # no drop: slot p is token p, padding is -1
            width = batch["input_ids"].shape[1]
            positions = torch.arange(width).expand(len(rows), width).masked_fill(batch["attention_mask"] == 0, -1)
        for r, i in enumerate(rows):
            _best_spans(start_logits[r], end_logits[r], positions[r], offsets_of[i], max_answer_length, n_best,
                        best[example_of[i]])
    model.train(was_training)
    answers, candidates = {}, {}
    for i in ids:
        ranked = sorted(best[i], key=lambda c: -c[0])
        texts, seen = [], set()
        for score, a, b in ranked:
            if (a, b) not in seen:  # the same span seen from two overlapping windows: keep its best score
                seen.add((a, b))
                texts.append((contexts[i][a:b], score))
            if len(texts) == n_best:
                break
        candidates[i] = texts
        answers[i] = texts[0][0] if texts else ""
    return QAPredictions(answers, candidates, seconds, collate.stats, n)


def _best_spans(start_logits: torch.Tensor, end_logits: torch.Tensor, positions: torch.Tensor, offsets: list,
                max_answer_length: int, n_best: int, into: list) -> None:
    """Append the ``n_best`` best (score, start char, end char) spans of one window (slots -> original tokens)."""
    pos = positions.tolist()
    chars = [offsets[p] if p >= 0 else _NO_OFFSET for p in pos]
    valid = torch.tensor([a >= 0 and b > a for a, b in chars])
    if not valid.any():
        return
    original = positions.clone()
    band = original[None, :] - original[:, None]  # original tokens from start slot to end slot, minus one
    allowed = valid[:, None] & valid[None, :] & (band >= 0) & (band < max_answer_length)
    scores = (start_logits[:, None] + end_logits[None, :]).masked_fill(~allowed, float("-inf"))
    k = min(n_best, int(allowed.sum()))
    top = torch.topk(scores.flatten(), k)
    width = scores.shape[1]
    for score, flat in zip(top.values.tolist(), top.indices.tolist(), strict=True):
        s, e = divmod(flat, width)
        into.append((score, chars[s][0], chars[e][1]))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ============================================================================ 4. the task
class QATask(FinetuneTask):
    """Extractive QA for :func:`~tdnotebooks.finetuning.train.finetune` and ``BucketTrainer``.

    Labels ``start_positions`` / ``end_positions``; the loss of a row is (CE(start) + CE(end)) / 2, what
    ``*ForQuestionAnswering`` computes (positions outside the window clamped to an ignored index); dev metrics
    ``dev_exact_match`` and ``dev_f1`` (SQuAD v1.1, percent) from bucketed :func:`predict_qa`.

    Args:
        examples: the raw dev examples (SQuAD format: id, context, answers) the dev features were prepared
            from: post-processing reads the contexts, the metrics the gold answers.
        n_best, max_answer_length: post-processing settings of :func:`predict_qa`.

    Example:
        >>> finetune(model, train, dev, config, task=QATask(qa["dev"]), pad_token_id=tok.pad_token_id)  # doctest: +SKIP
    """

    name = "extractive_qa"
    label_keys = POSITION_KEYS
    main_metric = "dev_f1"

    def __init__(self, examples: Any = None, *, n_best: int = 20, max_answer_length: int = 30) -> None:
        if examples is not None:
            _check_examples("examples", examples, answers=True)
        self.examples = examples
        self.n_best = check_int("n_best", n_best, low=1)
        self.max_answer_length = check_int("max_answer_length", max_answer_length, low=1)

    def check(self, model: Any, train: Any, dev: Any, pad_token_id: int | None,
              columns: Sequence[str] = ("length",), train_name: str = "train") -> None:
        _check_qa_model(model, pad_token_id)
        check_split(train_name, train, model, labels=False, columns=(*columns, *POSITION_KEYS))
        lengths = np.asarray(list(train["length"]))
        for key in POSITION_KEYS:
            values = np.asarray(list(train[key]))
            bad = np.flatnonzero((values < 0) | (values >= lengths))
            if bad.size:
                raise ValueError(f"{train_name}: {key}[{bad[0]}] is {int(values[bad[0]])}, outside its window of "
                                 f"{int(lengths[bad[0]])} tokens; prepare the split with prepare_qa")
        if dev is not None:
            if self.examples is None:
                raise ValueError("QATask needs the raw dev examples to score dev predictions: "
                                 "QATask(dev_examples), the split dev was prepared from with prepare_qa")
            check_split("dev", dev, model, labels=False, columns=("length", "example_id", "offset_mapping"))
            _check_features_match(dev, self.examples, _example_ids(self.examples))

    def example_losses(self, outputs: Any, labels: Mapping[str, torch.Tensor], model: Any) -> torch.Tensor:
        losses = []
        for logits, key in ((outputs.start_logits, "start_positions"), (outputs.end_logits, "end_positions")):
            ignored = logits.size(1)
            target = labels[key].clamp(0, ignored)
            losses.append(torch.nn.functional.cross_entropy(logits.float(), target, ignore_index=ignored,
                                                            reduction="none"))
        return (losses[0] + losses[1]) / 2

    def evaluate(self, model: Any, dev: Any, *, batch_size: int, pad_token_id: int,
                 amp_dtype: torch.dtype | None) -> dict[str, float]:
        if self.examples is None:
            raise ValueError("QATask needs the raw dev examples to score dev predictions: QATask(dev_examples)")
        pred = predict_qa(model, dev, self.examples, batching="bucketed", batch_size=batch_size,
                          n_best=self.n_best, max_answer_length=self.max_answer_length, pad_token_id=pad_token_id,
                          amp_dtype=amp_dtype)
        scores = squad_metrics(pred, self.examples)
        return {"dev_exact_match": scores["exact_match"], "dev_f1": scores["f1"]}
