"""Model and data checks for the entry points that take a model or data: one clear ``ValueError`` each,
raised before any step runs.

:mod:`tdnotebooks.validation` checks the settings (``epochs=0``); this module checks that a model and its
data fit each other: token ids inside the vocabulary, lengths inside the position embeddings, labels inside
``num_labels``, a sequence classifier where one is trained, the special tokens a method needs. Each message
names the argument, what was given and what is allowed, and says how to fix it. ``finetune``,
``BucketTrainer``, ``predict``, ``pretrain`` and ``TokenDroppingBert`` call them at the door.

The data checks read whole columns through Arrow (a few milliseconds on the bundled splits);
:func:`check_batch`, run by ``TokenDroppingBert.forward`` at every step, checks shapes for free and the id
range with one reduction (one host-device synchronisation on a GPU).

Example:
    >>> check_token_ids("train: input_ids", [[101, 2023, 102], [101, 31000, 102]], vocab_size=30522)
    Traceback (most recent call last):
    ...
    ValueError: train: input_ids[1] holds token id 31000, but the model's vocabulary has 30522 ids (0-30521); \
was it tokenized with another tokenizer?
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tdnotebooks.validation import check_int, is_int

__all__ = [
    "check_max_length",
    "vocab_size", "max_positions", "check_token_ids", "check_lengths_fit", "check_labels", "check_classifier",
    "check_special_token", "check_mlm_model", "check_split", "check_batch",
]

IGNORE_INDEX = -100  # labels of positions that are not predicted (Hugging Face convention)
# Models whose position ids start after the pad id (RoBERTa's create_position_ids_from_input_ids).
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "xlm-roberta-xl", "data2vec-text")


# ----------------------------------------------------------------------------------------------------------
# What a model accepts
# ----------------------------------------------------------------------------------------------------------


def vocab_size(model: Any) -> int:
    """Rows of the model's input embedding (``config.vocab_size`` when it has no ``get_input_embeddings``)."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if embeddings is not None and hasattr(embeddings, "num_embeddings"):
        return int(embeddings.num_embeddings)
    return int(getattr(model, "config", model).vocab_size)


def max_positions(model: Any) -> int | None:
    """The longest input the model takes, in tokens (None: no limit known).

    ``max_position_embeddings``, less ``pad_token_id + 1`` for RoBERTa-style models, whose position ids start
    after the pad id (514 -> 512). ``model``: a model or its config.
    """
    config = getattr(model, "config", model)
    limit = getattr(config, "max_position_embeddings", None)
    if limit is None:
        return None
    if getattr(config, "model_type", None) in _OFFSET_POSITIONS and config.pad_token_id is not None:
        limit -= config.pad_token_id + 1
    return int(limit)


# ----------------------------------------------------------------------------------------------------------
# Values of any shape: tensors, arrays, lists of rows, Arrow list columns
# ----------------------------------------------------------------------------------------------------------


def _flat(values: Any) -> tuple[np.ndarray, Any]:
    """(the values as one flat numpy array, a function: flat index -> the index to print)."""
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover - datasets depends on it
        pa = None
    if pa is not None and isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa is not None and isinstance(values, (pa.ListArray, pa.LargeListArray)):
        offsets = values.offsets.to_numpy()
        flat = values.flatten().to_numpy(zero_copy_only=False)
        return flat, lambda i: str(int(np.searchsorted(offsets, i, side="right")) - 1)
    if pa is not None and isinstance(values, pa.Array):
        values = values.to_numpy(zero_copy_only=False)
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().cpu().numpy()
    if not isinstance(values, np.ndarray):
        rows = list(values)
        if rows and all(isinstance(r, (list, tuple, np.ndarray)) or hasattr(r, "shape") for r in rows):
            lengths = np.array([len(r) for r in rows])
            offsets = np.concatenate([[0], np.cumsum(lengths)])
            flat = np.concatenate([np.asarray(r).reshape(-1) for r in rows]) if lengths.sum() else np.zeros(0)
            return flat, lambda i: str(int(np.searchsorted(offsets, i, side="right")) - 1)
        values = np.asarray(rows)
    shape = values.shape
    return values.reshape(-1), lambda i: ", ".join(map(str, np.unravel_index(int(i), shape)))


def _first_outside(name: str, values: Any, high: int, what: str, allowed: str, hint: str,
                   ignore: int | None = None) -> None:
    """Refuse the first value outside [0, high) (``ignore`` allowed too)."""
    flat, where = _flat(values)
    if flat.size == 0:
        return
    if flat.dtype.kind not in "iu":
        integral = flat.dtype.kind == "f" and np.all(np.isfinite(flat)) and np.all(flat == np.round(flat))
        if not integral:
            raise ValueError(f"{name} must hold integer {what}s, got dtype {flat.dtype}")
        flat = flat.astype(np.int64)
    ok = (flat >= 0) & (flat < high)
    if ignore is not None:
        ok |= flat == ignore
    if ok.all():
        return
    i = int(np.argmin(ok))
    raise ValueError(f"{name}[{where(i)}] holds {what} {int(flat[i])}, but {allowed}{hint}")


# ----------------------------------------------------------------------------------------------------------
# Data against the model
# ----------------------------------------------------------------------------------------------------------


def check_token_ids(name: str, ids: Any, vocab_size: int) -> None:
    """Every id of ``ids`` (a tensor, an array, a list of rows, an Arrow list column) in ``[0, vocab_size)``."""
    vocab_size = check_int("vocab_size", vocab_size, low=1)
    _first_outside(name, ids, vocab_size, "token id",
                   f"the model's vocabulary has {vocab_size} ids (0-{vocab_size - 1})",
                   "; was it tokenized with another tokenizer?")


def check_lengths_fit(name: str, lengths: Any, max_positions: int | None) -> None:
    """Every length >= 1 (an empty input has not even [CLS]) and <= ``max_positions`` (None: no upper bound)."""
    arr, where = _flat(lengths)
    if arr.size == 0:
        return
    empty = np.flatnonzero(arr < 1)
    if empty.size:
        raise ValueError(f"{name}[{where(empty[0])}] is {int(arr[empty[0]])}: an empty input (no tokens, not "
                         f"even [CLS]); {empty.size} of {arr.size} example(s) are empty. Every example needs at "
                         "least one token: drop them, or tokenize with the tokenizer's special tokens "
                         "(tdnotebooks.finetuning.prepare does)")
    if max_positions is None:
        return
    longer = np.flatnonzero(arr > max_positions)
    if longer.size:
        i = longer[0]
        raise ValueError(f"{name}[{where(i)}] is {int(arr[i])} tokens, but the model takes at most {max_positions} "
                         f"(its position embeddings); {longer.size} of {arr.size} example(s) are longer. Tokenize "
                         f"with max_length <= {max_positions} (tdnotebooks.finetuning.prepare(data, tokenizer, "
                         f"max_length={max_positions}))")


def check_labels(name: str, labels: Any, num_labels: int, problem_type: str | None = None) -> None:
    """Labels a classifier with ``num_labels`` outputs can learn from.

    Single-label classification: integers in ``[0, num_labels)``. Regression (``num_labels=1`` or
    ``problem_type="regression"``): finite numbers. Multi-label: finite numbers (one row of ``num_labels``
    per example).
    """
    num_labels = check_int("num_labels", num_labels, low=1)
    flat, where = _flat(labels)
    if flat.size == 0:
        return
    if problem_type in ("regression", "multi_label_classification") or (problem_type is None and num_labels == 1):
        if flat.dtype.kind not in "iuf" or not np.all(np.isfinite(flat)):
            bad = 0 if flat.dtype.kind not in "iuf" else int(np.argmin(np.isfinite(flat)))
            raise ValueError(f"{name}[{where(bad)}] is {flat[bad].item()!r}, but a regression or multi-label model "
                             f"(num_labels={num_labels}) needs finite numbers")
        return
    if flat.dtype.kind not in "iu":
        raise ValueError(f"{name} holds {flat.dtype} values (e.g. {flat[0].item()!r}), but a classifier with "
                         f"num_labels={num_labels} needs integer labels 0-{num_labels - 1}; for regression load "
                         "the model with num_labels=1")
    ok = (flat >= 0) & (flat < num_labels)
    if ok.all():
        return
    i = int(np.argmin(ok))
    value = int(flat[i])
    fix = (f"; load the model with num_labels={int(flat.max()) + 1} (load_pretrained(kind='classifier', "
           f"num_labels={int(flat.max()) + 1}))" if value >= num_labels
           else "; a split without labels (such as a GLUE test split, labelled -1) cannot be trained or scored")
    raise ValueError(f"{name}[{where(i)}] is {value}, but the model has num_labels={num_labels} "
                     f"(labels 0-{num_labels - 1}){fix}")


# ----------------------------------------------------------------------------------------------------------
# Models and tokenizers
# ----------------------------------------------------------------------------------------------------------


def check_classifier(model: Any, pad_token_id: int | None = None) -> None:
    """``model`` is a Hugging Face sequence classifier whose config names its pad token (``pad_token_id``,
    when given, must be that token: decoder classifiers such as GPT-2's find each row's last token by it)."""
    import torch

    name = type(model).__name__
    config = getattr(model, "config", None)
    if not isinstance(model, torch.nn.Module) or config is None or not name.endswith("ForSequenceClassification"):
        hint = ""
        if "ForMaskedLM" in name or "LMHead" in name or "ForCausalLM" in name:
            hint = (f"; {name} is a language model (it predicts tokens, not labels): load its weights as a "
                    "classifier with load_pretrained(path, kind='classifier', num_labels=...)")
        raise ValueError(f"model must be a Hugging Face sequence classifier (load_pretrained(kind='classifier', "
                         f"num_labels=2) or AutoModelForSequenceClassification), got {name}{hint}")
    if config.pad_token_id is None:
        raise ValueError(f"model.config.pad_token_id is None: {name} has no pad token, so padded batches cannot "
                         "be read (GPT-2-style classifiers find each row's last token by it); set "
                         "tokenizer.pad_token = tokenizer.eos_token and model.config.pad_token_id = "
                         "tokenizer.pad_token_id")
    if pad_token_id is not None and pad_token_id != config.pad_token_id:
        raise ValueError(f"pad_token_id={pad_token_id!r}, but the model's pad token is "
                         f"model.config.pad_token_id={config.pad_token_id}; pass pad_token_id=tokenizer.pad_token_id")


def check_special_token(tokenizer: Any, token: str, purpose: str = "") -> int:
    """The id of the tokenizer's ``token`` (``"mask_token"``, ``"pad_token"``, ...); refused when it has none."""
    token_id = getattr(tokenizer, f"{token}_id", None)
    if token_id is None:
        why = f" ({purpose})" if purpose else ""
        raise ValueError(f"tokenizer has no {token} ({token}_id is None){why}; use a tokenizer that has one, or "
                         f"add it: tokenizer.add_special_tokens({{'{token}': ...}}) and "
                         "model.resize_token_embeddings(len(tokenizer))")
    return int(token_id)


def check_mlm_model(model: Any) -> None:
    """A masked LM (or its config) of a type token dropping understands (``models.SUPPORTED_MODEL_TYPES``)."""
    from tdnotebooks.models import SUPPORTED_MODEL_TYPES

    config = getattr(model, "config", model)
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"model has model_type={model_type!r} ({type(model).__name__}); token dropping and MLM "
                         f"pretraining support BERT-style masked language models: "
                         f"{', '.join(SUPPORTED_MODEL_TYPES)} (e.g. tdnotebooks.models.tiny_bert())")


# ----------------------------------------------------------------------------------------------------------
# A whole split, at the door of finetune / BucketTrainer / predict
# ----------------------------------------------------------------------------------------------------------


def _column(split: Any, name: str) -> Any:
    """One column, fast: Arrow for a ``datasets.Dataset`` (honouring select/shuffle/filter), else ``split[name]``."""
    table = getattr(split, "data", None)                    # the Arrow table under a datasets.Dataset
    indices = getattr(split, "_indices", None)              # the row mapping select/shuffle/filter leave
    if hasattr(table, "column") and (indices is None or hasattr(indices, "column")):
        if indices is None:
            return table.column(name)
        import pyarrow.compute as pc

        return pc.take(table.column(name), indices.column(0))  # one take: ~5x faster than with_format("arrow")
    if hasattr(split, "with_format"):
        return split.with_format("arrow")[name]
    return split[name]


def check_split(name: str, split: Any, model: Any = None, *, labels: bool = True,
                columns: Sequence[str] = ("length",)) -> None:
    """A non-empty tokenized split (``datasets.Dataset`` from :func:`tdnotebooks.finetuning.prepare`) that
    ``model`` can read: its columns, then (with a model) ids, token types, lengths and labels.

    labels: a ``label`` (or ``labels``) column is needed and checked against ``model.config.num_labels``.
    columns: the columns needed besides ``input_ids`` (and the label), e.g. ``stopword_spans`` for TokenDrop.
    A ``length`` column, when there is one, must count the tokens of ``input_ids``.
    """
    present = getattr(split, "column_names", None)
    if present is None:
        raise ValueError(f"{name} must be a datasets.Dataset made by tdnotebooks.finetuning.prepare, got "
                         f"{type(split).__name__}")
    label = next((c for c in ("label", "labels") if c in present), "label")
    missing = [c for c in ("input_ids", *([label] if labels else []), *columns) if c not in present]
    if missing:
        raise ValueError(f"{name} is missing the columns {missing} (it has {present}); prepare it first: "
                         f"{name} = tdnotebooks.finetuning.prepare({name}, tokenizer)")
    if len(split) == 0:
        raise ValueError(f"{name} is empty: need at least one example")
    ids = _column(split, "input_ids")
    try:
        import pyarrow as pa

        if isinstance(ids, pa.ChunkedArray):
            ids = ids.combine_chunks()
        actual = ids.value_lengths().to_numpy(zero_copy_only=False) if isinstance(ids, pa.ListArray) else None
    except ImportError:  # pragma: no cover
        actual = None
    if actual is None:
        actual = np.array([len(row) for row in ids])
    stated, where = _flat(_column(split, "length")) if "length" in present else (actual, str)
    differ = np.flatnonzero(stated != actual)
    if differ.size:
        i = differ[0]
        raise ValueError(f"{name}: length[{where(i)}] is {int(stated[i])}, but input_ids[{where(i)}] has "
                         f"{int(actual[i])} tokens; the length column must count the tokens (prepare computes it)")
    check_lengths_fit(f"{name}: length", actual, None if model is None else max_positions(model))
    if model is None:
        return
    check_token_ids(f"{name}: input_ids", ids, vocab_size(model))
    config = model.config
    types = getattr(config, "type_vocab_size", None)
    if "token_type_ids" in present and types is not None:
        _first_outside(f"{name}: token_type_ids", _column(split, "token_type_ids"), types, "token type id",
                       f"the model has type_vocab_size={types} (0-{types - 1})",
                       "; tokenize with the model's own tokenizer (RoBERTa-style models have one token type)")
    if labels:
        check_labels(f"{name}: {label}", _column(split, label), config.num_labels,
                     getattr(config, "problem_type", None))


# ----------------------------------------------------------------------------------------------------------
# One batch, at every forward of TokenDroppingBert: shapes for free, value ranges in one reduction
# ----------------------------------------------------------------------------------------------------------


def check_batch(input_ids: Any, vocab_size: int, max_positions: int | None, *, attention_mask: Any = None,
                labels: Any = None, token_type_ids: Any = None, type_vocab_size: int | None = None) -> None:
    """A (batch, length) batch the model can read: integer ids in the vocabulary, 1 <= length <=
    ``max_positions``, the other tensors of the same shape, labels -100 or ids of the vocabulary, token type
    ids below ``type_vocab_size``.

    The value checks cost one reduction and one host-device synchronisation; the exact position of a bad
    value is looked for only when there is one.
    """
    import torch

    if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2 or input_ids.dtype.is_floating_point:
        shape = tuple(input_ids.shape) if hasattr(input_ids, "shape") else type(input_ids).__name__
        raise ValueError(f"input_ids must be an integer tensor of shape (batch, length), got {shape}"
                         + (f" of {input_ids.dtype}" if hasattr(input_ids, "dtype") else ""))
    batch, length = input_ids.shape
    if batch == 0 or length == 0:
        raise ValueError(f"input_ids has shape {tuple(input_ids.shape)}: an empty batch or inputs of length 0; "
                         "every row needs at least one token")
    if max_positions is not None and length > max_positions:
        raise ValueError(f"input_ids has length {length}, but the model takes at most {max_positions} tokens (its "
                         f"position embeddings); cut the inputs to <= {max_positions} tokens")
    for name, tensor in (("attention_mask", attention_mask), ("labels", labels), ("token_type_ids", token_type_ids)):
        if tensor is not None and tuple(tensor.shape) != (batch, length):
            raise ValueError(f"{name} must have the shape of input_ids {(batch, length)}, got {tuple(tensor.shape)}")
    stats = [input_ids.min(), input_ids.max()]
    if labels is not None:
        predicted = torch.where(labels.ne(IGNORE_INDEX), labels, 0)
        stats += [predicted.min(), predicted.max()]
    if token_type_ids is not None and type_vocab_size is not None:
        stats += [token_type_ids.min(), token_type_ids.max()]
    values = torch.stack([s.long() for s in stats]).tolist()
    low, high = values[:2]
    label_range = values[2:4] if labels is not None else []
    type_range = values[-2:] if len(values) > 2 + len(label_range) else []
    if low < 0 or high >= vocab_size:
        check_token_ids("input_ids", input_ids, vocab_size)
    if type_range and (type_range[0] < 0 or type_range[1] >= type_vocab_size):
        _first_outside("token_type_ids", token_type_ids, type_vocab_size, "token type id",
                       f"the model has type_vocab_size={type_vocab_size} (0-{type_vocab_size - 1})", "")
    if label_range and (label_range[0] < 0 or label_range[1] >= vocab_size):
        _first_outside("labels", labels, vocab_size, "label",
                       f"labels must be {IGNORE_INDEX} (not predicted) or a token id 0-{vocab_size - 1}", "",
                       ignore=IGNORE_INDEX)


def check_max_length(max_length: Any, tokenizer: Any, pair: bool) -> None:
    """``max_length`` None, or room for the tokenizer's special tokens and one text token per segment: below that
    the tokenizer cannot truncate and returns the rows untruncated (with a warning), so it is refused."""
    if max_length is not None:
        specials, texts = tokenizer.num_special_tokens_to_add(pair=pair), 2 if pair else 1
        if not is_int(max_length) or max_length < specials + texts:
            raise ValueError(f"max_length must be an int >= {specials + texts} (room for the tokenizer's {specials} "
                             f"special tokens and {'one text token per segment' if pair else 'one text token'}), "
                             f"got {max_length!r}")
