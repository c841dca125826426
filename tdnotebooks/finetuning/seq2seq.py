"""Summarization (seq2seq) with TokenDrop + BucketSampler: the paper's T5-small on XSum / CNN-DailyMail.

Table 2 of the paper fine-tunes an encoder-decoder: TokenDrop drops stopwords from the *encoder inputs* only,
BucketSampler buckets by *input* length (so TokenDrop can trim each batch of sources to one width), and the
targets keep every token, padded with -100 to the batch's longest. This module supplies the seq2seq pieces;
the batching, the loop and the Trainer are the package's own (:func:`~tdnotebooks.finetuning.train.finetune`,
:class:`~tdnotebooks.finetuning.hf_trainer.BucketSeq2SeqTrainer`):

- :func:`load_seq2seq_model`: offline, a bert2bert ``EncoderDecoderModel`` warm-started from the bundled
  MiniLM (encoder and decoder; the decoder's cross-attention and LM head are new); online, any
  ``AutoModelForSeq2SeqLM`` (``"t5-small"``, ``"facebook/bart-base"``);
- :func:`prepare_seq2seq`: the source through :func:`~tdnotebooks.finetuning.tokendrop.prepare` (stopwords
  found on the source only, ``length`` = source length) plus a ``labels`` column of target token ids;
- :class:`Seq2SeqTask`: what ``finetune`` / ``BucketTrainer`` need: the per-example loss and the dev metrics
  (loss, ROUGE-1/2/L of greedy or beam-search summaries generated in length-bucketed batches);
- :func:`generate_summaries` and :func:`rouge_scores` for the notebook.

Example:
    >>> tok = load_tokenizer()                                                      # doctest: +SKIP
    >>> data = prepare_seq2seq(load_task("shakespeare_cast"), tok, max_source_length=256)  # doctest: +SKIP
    >>> model = load_seq2seq_model()                                                # doctest: +SKIP
    >>> history = finetune(model, data["train"], data["dev"], method="tokendrop_bucket",
    ...                    task=Seq2SeqTask(tok), pad_token_id=tok.pad_token_id)   # doctest: +SKIP
    >>> history.epochs[-1]["dev_rougeL"]                                            # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch.nn import functional as F

from tdnotebooks.finetuning.collate import IGNORE_INDEX, PadToBatchMax
from tdnotebooks.finetuning.tasks import FinetuneTask
from tdnotebooks.validation import check_int

__all__ = ["ROUGE_TYPES", "Seq2SeqTask", "check_seq2seq_model", "generate_summaries", "load_seq2seq_model",
           "prepare_seq2seq", "rouge_scores"]

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")

# EncoderDecoderModel warns at every forward with labels that since v4.12 it computes the loss itself and
# builds decoder_input_ids from the labels: exactly what this module relies on, so the warning says nothing.
_ENCODER_DECODER_LOSS_WARNING = r"Version v4\.12\.0 introduces a better way to train encoder-decoder models"


def _silence_encoder_decoder_loss_warning() -> None:
    warnings.filterwarnings("ignore", message=_ENCODER_DECODER_LOSS_WARNING, category=FutureWarning)


# ============================================================================ 1. models
class _DropLoadReports(logging.Filter):
    """Drops transformers' report of the weights a warm start initialises (and the tied LM-head bias note)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "LOAD REPORT" not in message and "tied weights mapping" not in message


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """Only the expected load reports (new cross-attention / LM head weights) and progress bars are silenced:
    the model records them in ``newly_initialized``; every other warning still shows."""
    from transformers.utils import logging as hf_logging

    hf_logger = hf_logging.get_logger()  # the library's root logger: its handlers print every module's records
    drop = _DropLoadReports()
    # the logger that writes the reports (a filter there stops them before any handler, the user's too),
    # and the library's handlers in case another module of it reports
    targets = [logging.getLogger("transformers.modeling_utils"), *hf_logger.handlers]
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    for target in targets:
        target.addFilter(drop)
    try:
        yield
    finally:
        for target in targets:
            target.removeFilter(drop)
        if bars:
            hf_logging.enable_progress_bar()


def load_seq2seq_model(name_or_path: str | os.PathLike = "all-MiniLM-L6-v2", *, num_layers: int | None = None,
                       device: Any = None) -> Any:
    """An encoder-decoder for summarization, ready for :func:`finetune` and ``generate``.

    The bundled model (``"all-MiniLM-L6-v2"`` and its aliases, offline): a bert2bert ``EncoderDecoderModel``
    warm-started from MiniLM for both halves (Rothe et al. 2020): the encoder is MiniLM as it is, the decoder
    is MiniLM with causal self-attention plus NEW cross-attention layers and a NEW LM-head transform (its
    output projection is tied to the decoder's word embeddings). Its config has
    ``decoder_start_token_id = [CLS]``, ``pad_token_id = [PAD]``, ``eos_token_id = [SEP]`` and the top-level
    ``vocab_size``, so label shifting and ``generate`` work; targets come from :func:`prepare_seq2seq` with the
    same tokenizer. ``num_layers`` keeps the first N pretrained layers of each half (a faster CPU demo).

    Any other name or folder: ``AutoModelForSeq2SeqLM.from_pretrained`` (``"t5-small"`` as in the paper,
    ``"facebook/bart-base"``), resolved by :func:`tdnotebooks.models.resolve_model` (fails fast offline).

    Loading is quiet: transformers' report of the newly initialised weights (expected for a warm start) and
    the progress bars are silenced, nothing else; those weights are listed in ``model.newly_initialized``.
    """
    from tdnotebooks.models import BUNDLED_ALIASES, _not_available, load_tokenizer, resolve_model
    from tdnotebooks.runtime import get_device

    if num_layers is not None:
        check_int("num_layers", num_layers, low=1)
    dev = get_device(device)
    source = resolve_model(name_or_path)  # refuses a bad name, checks the hub is reachable
    if str(name_or_path) not in BUNDLED_ALIASES:
        if num_layers is not None:
            raise ValueError(f"num_layers is only supported for the bundled model, got name_or_path="
                             f"{str(name_or_path)!r} with num_layers={num_layers}")
        from transformers import AutoModelForSeq2SeqLM

        try:
            with _quiet_loading():
                model, info = AutoModelForSeq2SeqLM.from_pretrained(source, output_loading_info=True)
        except (OSError, ValueError) as exc:
            raise _not_available(name_or_path, exc) from exc
        model.newly_initialized = sorted(info.get("missing_keys", []))
        return model.to(dev)

    from transformers import BertConfig, BertLMHeadModel, BertModel, EncoderDecoderModel

    tokenizer = load_tokenizer(name_or_path)
    layers = {}
    if num_layers is not None:
        total = BertConfig.from_pretrained(source).num_hidden_layers
        layers["num_hidden_layers"] = check_int(f"num_layers (of {str(name_or_path)!r})", num_layers, 1, total)
    with _quiet_loading():
        encoder, enc_info = BertModel.from_pretrained(source, add_pooling_layer=False, output_loading_info=True,
                                                      **layers)
        decoder, dec_info = BertLMHeadModel.from_pretrained(source, is_decoder=True, add_cross_attention=True,
                                                            output_loading_info=True, **layers)
    model = EncoderDecoderModel(encoder=encoder, decoder=decoder)
    special = {"decoder_start_token_id": tokenizer.cls_token_id, "pad_token_id": tokenizer.pad_token_id,
               "eos_token_id": tokenizer.sep_token_id, "bos_token_id": tokenizer.cls_token_id}
    for key, value in special.items():
        setattr(model.config, key, value)
        setattr(model.generation_config, key, value)
    model.config.vocab_size = model.config.decoder.vocab_size
    model.newly_initialized = sorted([f"encoder.{k}" for k in enc_info.get("missing_keys", [])]
                                     + [f"decoder.{k}" for k in dec_info.get("missing_keys", [])])
    return model.to(dev)


def _config_value(model: Any, key: str) -> Any:
    """``key`` of the model's config, else of its generation config (transformers 5 keeps some only there)."""
    value = getattr(model.config, key, None)
    if value is None:
        value = getattr(getattr(model, "generation_config", None), key, None)
    return value


def check_seq2seq_model(model: Any, pad_token_id: int | None = None) -> None:
    """``model`` is a Hugging Face encoder-decoder (``config.is_encoder_decoder``) whose config names its pad
    token (``pad_token_id``, when given, must be it) and its decoder start token (labels are shifted with them)."""
    name = type(model).__name__
    config = getattr(model, "config", None)
    if not isinstance(model, torch.nn.Module) or config is None or not getattr(config, "is_encoder_decoder", False):
        hint = ""
        if name.endswith("ForSequenceClassification"):
            hint = f"; {name} is a classifier (it predicts labels, not text): use ClassificationTask for it"
        raise ValueError(f"model must be a Hugging Face encoder-decoder (config.is_encoder_decoder=True: "
                         f"load_seq2seq_model(), AutoModelForSeq2SeqLM such as T5 or BART, EncoderDecoderModel), "
                         f"got {name}{hint}")
    if config.pad_token_id is None:
        raise ValueError(f"model.config.pad_token_id is None: {name} cannot turn the -100 of padded targets into "
                         "decoder inputs; set model.config.pad_token_id = tokenizer.pad_token_id")
    if pad_token_id is not None and pad_token_id != config.pad_token_id:
        raise ValueError(f"pad_token_id={pad_token_id!r}, but the model's pad token is "
                         f"model.config.pad_token_id={config.pad_token_id}; pass pad_token_id=tokenizer.pad_token_id")
    if config.decoder_start_token_id is None:  # the forward's shift reads it from the config
        raise ValueError(f"model.config.decoder_start_token_id is None: {name} cannot build decoder inputs from the "
                         "labels; set it (bert2bert: tokenizer.cls_token_id; T5: the pad id; "
                         "load_seq2seq_model() does)")


# ============================================================================ 2. data
def _strips_start_token(tokenizer: Any) -> bool:
    """BERT-style tokenizers ([CLS] ... [SEP], no bos token): the target's [CLS] is left out of the labels,
    because the model's shift puts the decoder start token ([CLS]) in front of them."""
    cls_id = getattr(tokenizer, "cls_token_id", None)
    if cls_id is None or getattr(tokenizer, "bos_token", None) is not None:
        return False
    ids = tokenizer("a")["input_ids"]
    return len(ids) > 0 and ids[0] == cls_id


def _check_column_name(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a column name (a non-empty str), got {value!r}")
    return value


def prepare_seq2seq(data: Any, tokenizer: Any, *, source: str = "document", target: str = "summary",
                    max_source_length: int = 512, max_target_length: int = 64, prefix: str = "") -> Any:
    """Tokenize a summarization set once: the source for the encoder (with its stopwords), the target as labels.

    The source (``prefix + data[source]``) goes through :func:`tdnotebooks.finetuning.tokendrop.prepare`:
    ``input_ids``, ``attention_mask``, ``token_type_ids`` (if the tokenizer makes them), ``length`` (= the
    source length: buckets by input length, as in the paper), ``stopword_spans``, ``stopword_is_pronoun``,
    ``idx``. The stopwords are found on the source only, and the ``prefix`` tokens are never offered to
    TokenDrop. ``labels`` holds the target ids, at most ``max_target_length``, truncated before the end token
    (which is always kept):

    - BERT-style tokenizers (``[CLS] ... [SEP]``): the text tokens and ``[SEP]``, *without* ``[CLS]``: the model
      shifts the labels right behind its ``decoder_start_token_id`` (``[CLS]``), so the decoder reads
      ``[CLS] x1 .. xn`` and predicts ``x1 .. xn [SEP]``; ``generate`` starts from ``[CLS]`` and stops at ``[SEP]``.
    - T5 (``x1 .. xn </s>``, decoder start = pad) and BART (``<s> x1 .. xn </s>``, its own convention): the
      tokenizer's ids as they are.

    ``data``: a ``datasets.Dataset`` or ``DatasetDict`` with the two text columns; other columns are kept.
    ``prefix``: e.g. ``"summarize: "`` for T5.

    Example:
        >>> data = prepare_seq2seq(load_task("shakespeare_cast"), load_tokenizer(), max_source_length=256)  # doctest: +SKIP
    """
    import datasets

    from tdnotebooks.checks import check_max_length
    from tdnotebooks.finetuning.tokendrop import _check_fast, prepare

    _check_fast(tokenizer)
    source, target = _check_column_name("source", source), _check_column_name("target", target)
    if not isinstance(prefix, str):
        raise ValueError(f"prefix must be a str (e.g. 'summarize: ' for T5, '' for none), got {prefix!r}")
    check_int("max_source_length", max_source_length, low=1)
    check_max_length(max_source_length, tokenizer, pair=False)
    lead = int(_strips_start_token(tokenizer))
    end_specials = tokenizer.num_special_tokens_to_add(pair=False) - lead
    check_int(f"max_target_length (room for {end_specials} end token(s) and one text token)", max_target_length,
              low=end_specials + 1)
    if not isinstance(data, (datasets.Dataset, datasets.DatasetDict)):
        raise ValueError(f"data must be a datasets.Dataset or DatasetDict with {source!r} and {target!r} columns "
                         f"(e.g. load_task('shakespeare_cast')), got {type(data).__name__}")
    splits = data if isinstance(data, datasets.DatasetDict) else {"data": data}
    for name, split in splits.items():
        missing = [c for c in (source, target) if c not in split.column_names]
        if missing:
            raise ValueError(f"{name} has no column(s) {missing} (it has {split.column_names}); pass "
                             f"source= and target= with the names of its text and summary columns")
    text_column = "_tdn_source" if prefix else source
    protected = _leading_special_tokens(tokenizer) + _prefix_tokens(tokenizer, prefix) if prefix else 0

    def add_labels(batch: dict) -> dict:
        texts = batch[target]
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"{target}[{i} of a batch] is {text!r}: every target must be a str")
        ids = tokenizer(texts, truncation=True, max_length=max_target_length + lead)["input_ids"]
        out = {"labels": [list(row[lead:]) for row in ids]}
        if protected:  # the prefix's tokens stay: drop its stopword words from what TokenDrop may remove
            keep = [[s >= protected for s, _ in spans] for spans in batch["stopword_spans"]]
            out["stopword_spans"] = [[s for s, k in zip(spans, ks, strict=True) if k]
                                     for spans, ks in zip(batch["stopword_spans"], keep, strict=True)]
            out["stopword_is_pronoun"] = [[p for p, k in zip(flags, ks, strict=True) if k]
                                          for flags, ks in zip(batch["stopword_is_pronoun"], keep, strict=True)]
        return out

    def one(split: Any) -> Any:
        if prefix:
            split = split.map(lambda b: {"_tdn_source": [prefix + t for t in b[source]]}, batched=True)
        split = prepare(split, tokenizer, text_fields=(text_column,), max_length=max_source_length)
        features = split.features.copy()
        list_of = getattr(datasets, "List", datasets.Sequence)
        features["labels"] = list_of(datasets.Value("int32"))
        split = split.map(add_labels, batched=True, features=features)
        return split.remove_columns("_tdn_source") if prefix else split

    if isinstance(data, datasets.DatasetDict):
        return datasets.DatasetDict({name: one(split) for name, split in data.items()})
    return one(data)


def _leading_special_tokens(tokenizer: Any) -> int:
    """Special tokens the tokenizer puts before the text ([CLS] / <s>: 1; T5: 0)."""
    ids = tokenizer("a")["input_ids"]
    text = tokenizer("a", add_special_tokens=False)["input_ids"]
    return next((i for i in range(len(ids)) if ids[i:i + len(text)] == text), 0)


def _prefix_tokens(tokenizer: Any, prefix: str) -> int:
    return len(tokenizer(prefix.rstrip(), add_special_tokens=False)["input_ids"])


# ============================================================================ 3. the task
def _example_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B,) mean token cross-entropy of each row over its non -100 targets (0 for a row without targets)."""
    token = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
    return token.sum(1) / labels.ne(IGNORE_INDEX).sum(1).clamp(min=1)


def _bucketed_batches(lengths: Sequence[int], batch_size: int, token_budget: int | None,
                      bucket_width: int) -> list[list[int]]:
    """Batches of similar source lengths, in a fixed order (inference's "bucketed": BucketSampler, no shuffle)."""
    from tdnotebooks.finetuning.bucketing import BucketSampler

    sampler = BucketSampler(lengths=list(lengths), bucket_width=bucket_width, token_budget=token_budget,
                            base_batch_size=batch_size, batch_cap=True, rbm=True, shuffle=False, seed=0)
    return [[int(i) for i in batch] for batch in sampler.epoch_batches(0)]


class Seq2SeqTask(FinetuneTask):
    """Summarization, T5/BART/bert2bert-style: the task of :func:`finetune` and ``BucketSeq2SeqTrainer``.

    - labels: ``labels`` (target ids from :func:`prepare_seq2seq`, padded with -100 by the collators); they go
      back into the forward, so the model builds ``decoder_input_ids`` itself (T5's ``_shift_right``, BART's
      and ``EncoderDecoderModel``'s ``shift_tokens_right``: decoder start token first, -100 -> pad).
      ``token_type_ids`` are not passed (T5 and BART have none; a one-segment source is all zeros anyway).
    - loss per example: the mean token cross-entropy of the example's targets. Hugging Face's own ``loss`` is
      the mean over all target *tokens* of the batch, so it weights long targets more; the mean of
      :meth:`example_losses` weights every example equally (as the classification task does), and the two are
      equal when every target of the batch has the same length.
    - dev metrics: ``dev_loss`` (mean of the per-example losses over all of dev), and ROUGE-1/2/L F-measures
      (x100, ``rouge-score`` with the Porter stemmer) of summaries generated for the first ``dev_examples`` of
      dev (None: all) in length-bucketed batches; ``dev_gen_tokens``: the mean generated length.
      ``main_metric = "dev_rougeL"``.

    Args:
        tokenizer: the tokenizer the data was prepared with (decodes the summaries).
        max_new_tokens: the longest summary ``generate`` writes. num_beams: 1 = greedy.
        dev_examples: generate for this many dev examples only (generation is the slow part); None: all.
        target: dev's text column of reference summaries; without it the labels are decoded instead.
        token_budget, bucket_width: the generation batches (tokens per batch, bucket width), as ``predict``.
    """

    name = "seq2seq"
    label_keys = ("labels",)
    main_metric = "dev_rougeL"

    def __init__(self, tokenizer: Any, *, max_new_tokens: int = 64, num_beams: int = 1,
                 dev_examples: int | None = None, target: str = "summary", token_budget: int | None = None,
                 bucket_width: int = 5) -> None:
        if getattr(tokenizer, "pad_token_id", None) is None or not hasattr(tokenizer, "batch_decode"):
            raise ValueError(f"tokenizer must be the tokenizer the data was prepared with (with a pad token), got "
                             f"{type(tokenizer).__name__}")
        self.tokenizer = tokenizer
        self.max_new_tokens = check_int("max_new_tokens", max_new_tokens, low=1)
        self.num_beams = check_int("num_beams", num_beams, low=1)
        self.dev_examples = None if dev_examples is None else check_int("dev_examples", dev_examples, low=1)
        self.target = _check_column_name("target", target)
        self.token_budget = None if token_budget is None else check_int("token_budget", token_budget, low=1)
        self.bucket_width = check_int("bucket_width", bucket_width, low=1)
        _silence_encoder_decoder_loss_warning()

    def __repr__(self) -> str:
        return (f"Seq2SeqTask(max_new_tokens={self.max_new_tokens}, num_beams={self.num_beams}, "
                f"dev_examples={self.dev_examples}, target={self.target!r})")

    def check(self, model: Any, train: Any, dev: Any, pad_token_id: int | None,
              columns: Sequence[str] = ("length",), train_name: str = "train") -> None:
        check_seq2seq_model(model, pad_token_id)
        _check_seq2seq_split(train_name, train, model, columns)
        if dev is not None:
            _check_seq2seq_split("dev", dev, model, ("length",))

    def model_inputs(self, batch: dict[str, torch.Tensor], labels: Mapping[str, torch.Tensor]) -> dict:
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                "labels": labels["labels"]}

    def example_losses(self, outputs: Any, labels: Mapping[str, torch.Tensor], model: Any) -> torch.Tensor:
        return _example_losses(outputs.logits, labels["labels"])

    @torch.no_grad()
    def evaluate(self, model: Any, dev: Any, *, batch_size: int, pad_token_id: int,
                 amp_dtype: torch.dtype | None) -> dict[str, float]:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        collate = PadToBatchMax(pad_token_id)
        losses: list[torch.Tensor] = []
        for indices in _bucketed_batches(dev["length"], batch_size, self.token_budget, self.bucket_width):
            batch = {k: v.to(device) for k, v in collate([dev[i] for i in indices]).items()}
            labels = {"labels": batch.pop("labels")}
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                outputs = model(**self.model_inputs(batch, labels))
            losses.append(_example_losses(outputs.logits, labels["labels"]).cpu())
        n = len(dev) if self.dev_examples is None else min(self.dev_examples, len(dev))
        subset = dev.select(range(n)) if n < len(dev) else dev
        generated = _generate_ids(model, subset, self.tokenizer, batch_size=batch_size,
                                  max_new_tokens=self.max_new_tokens, num_beams=self.num_beams,
                                  token_budget=self.token_budget, bucket_width=self.bucket_width,
                                  amp_dtype=amp_dtype)
        predictions = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
        if self.target in subset.column_names:
            references = list(subset[self.target])
        else:
            references = self.tokenizer.batch_decode([[t for t in row if t != IGNORE_INDEX]
                                                      for row in subset["labels"]], skip_special_tokens=True)
        scores = rouge_scores(predictions, references)
        model.train(was_training)
        return {"dev_loss": float(torch.cat(losses).mean()),
                **{f"dev_{key}": value for key, value in scores.items()},
                "dev_gen_tokens": sum(len(g) for g in generated) / max(1, len(generated))}


def _check_seq2seq_split(name: str, split: Any, model: Any, columns: Sequence[str]) -> None:
    """The split's columns, its source ids and lengths (check_split), then its target ids and lengths."""
    from tdnotebooks.checks import _column, check_lengths_fit, check_split, check_token_ids, max_positions

    present = getattr(split, "column_names", None)
    if present is None:
        raise ValueError(f"{name} must be a datasets.Dataset made by tdnotebooks.finetuning.seq2seq.prepare_seq2seq, "
                         f"got {type(split).__name__}")
    missing = [c for c in ("input_ids", "labels", *columns) if c not in present]
    if missing:
        raise ValueError(f"{name} is missing the columns {missing} (it has {present}); prepare it first: "
                         f"{name} = tdnotebooks.finetuning.seq2seq.prepare_seq2seq({name}, tokenizer)")
    labels = _column(split, "labels")
    target_lengths = _list_lengths(labels)
    if target_lengths is None:
        raise ValueError(f"{name}: labels holds one value per example (class labels?), not target token ids; "
                         "prepare the split with tdnotebooks.finetuning.seq2seq.prepare_seq2seq")
    check_split(name, split, model, labels=False, columns=columns)
    config = model.config
    encoder = getattr(config, "encoder", config)  # EncoderDecoderConfig: its halves; T5 / BART: one config
    decoder = getattr(config, "decoder", config)
    check_lengths_fit(f"{name}: length", _column(split, "length"), max_positions(encoder))
    check_lengths_fit(f"{name}: labels (target length)", target_lengths, max_positions(decoder))
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    vocab = getattr(output, "out_features", None) or getattr(decoder, "vocab_size", None) or config.vocab_size
    check_token_ids(f"{name}: labels", labels, int(vocab))


def _list_lengths(column: Any) -> Any:
    """Lengths of the rows of a list column (Arrow or Python), None when its rows are not lists."""
    import numpy as np
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if isinstance(column, (pa.ListArray, pa.LargeListArray)):
        return column.value_lengths().to_numpy(zero_copy_only=False)
    if isinstance(column, pa.Array):
        return None
    rows = list(column)
    if not all(isinstance(r, (list, tuple)) or (torch.is_tensor(r) and r.dim() == 1) for r in rows):
        return None
    return np.array([len(r) for r in rows])


# ============================================================================ 4. generation and ROUGE
def _generate_ids(model: Any, data: Any, tokenizer: Any, *, batch_size: int, max_new_tokens: int, num_beams: int,
                  token_budget: int | None, bucket_width: int, amp_dtype: torch.dtype | None) -> list[list[int]]:
    """Generated token ids per example, in the original order, without the decoder start token."""
    device = next(model.parameters()).device
    start = _config_value(model, "decoder_start_token_id")
    pad = _config_value(model, "pad_token_id")
    eos = _config_value(model, "eos_token_id")
    if eos is None:
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    collate = PadToBatchMax(pad)
    out: list[list[int] | None] = [None] * len(data)
    was_training = model.training
    model.eval()
    for indices in _bucketed_batches(data["length"], batch_size, token_budget, bucket_width):
        batch = collate([{"input_ids": data[i]["input_ids"]} for i in indices])
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            ids = model.generate(input_ids=batch["input_ids"].to(device),
                                 attention_mask=batch["attention_mask"].to(device),
                                 max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False,
                                 decoder_start_token_id=start, pad_token_id=pad, eos_token_id=eos)
        for row, i in zip(ids.cpu().tolist(), indices, strict=True):
            row = row[1:] if row and row[0] == start else row
            stop = next((k for k, t in enumerate(row) if t == eos), len(row))
            out[i] = row[:stop]
    model.train(was_training)
    return out


@torch.no_grad()
def generate_summaries(model: Any, data: Any, tokenizer: Any, *, batch_size: int = 32, max_new_tokens: int = 64,
                       num_beams: int = 1, token_budget: int | None = None, bucket_width: int = 5,
                       max_source_length: int = 512, prefix: str = "",
                       amp_dtype: torch.dtype | None = None) -> list[str]:
    """Summaries of ``data`` in its order, generated in batches of similar source length (server mode).

    ``data``: a split from :func:`prepare_seq2seq` (``input_ids``, ``length``) or a list of texts (tokenized
    here: ``prefix + text``, at most ``max_source_length`` tokens). Batches: BucketSampler without shuffling,
    at most ``batch_size`` sources (and ``token_budget`` source tokens, if given) each; greedy decoding, or beam
    search with ``num_beams`` beams; decoded without special tokens.

    Example:
        >>> generate_summaries(model, ["HELENA: ... COUNTESS: ..."], tokenizer, max_new_tokens=16)  # doctest: +SKIP
        ['speakers : helena, countess.']

    Warning: the model is put in ``eval()`` mode for the call and restored afterwards.
    """
    check_int("batch_size", batch_size, low=1)
    check_int("max_new_tokens", max_new_tokens, low=1)
    check_int("num_beams", num_beams, low=1)
    check_int("bucket_width", bucket_width, low=1)
    if token_budget is not None:
        check_int("token_budget", token_budget, low=1)
    check_seq2seq_model(model)
    if isinstance(data, str):
        raise ValueError(f"data must be a list of texts or a prepared split, got the str {data[:40]!r}")
    if isinstance(data, (list, tuple)):
        if not data or not all(isinstance(t, str) for t in data):
            raise ValueError("data must be a non-empty list of texts (str) or a split from prepare_seq2seq")
        if not isinstance(prefix, str):
            raise ValueError(f"prefix must be a str, got {prefix!r}")
        check_int("max_source_length", max_source_length, low=1)
        ids = tokenizer([prefix + t for t in data], truncation=True, max_length=max_source_length)["input_ids"]
        data = _Rows([{"input_ids": row, "length": len(row)} for row in ids])
    else:
        from tdnotebooks.checks import check_split

        check_split("data", data, model, labels=False)
    generated = _generate_ids(model, data, tokenizer, batch_size=batch_size, max_new_tokens=max_new_tokens,
                              num_beams=num_beams, token_budget=token_budget, bucket_width=bucket_width,
                              amp_dtype=amp_dtype)
    return tokenizer.batch_decode(generated, skip_special_tokens=True)


class _Rows(list):
    """A list of example dicts that also answers ``rows["length"]`` like a ``datasets.Dataset``."""

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return [row[key] for row in self]
        return super().__getitem__(key)


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F-measures x 100 of ``predictions`` against ``references``.

    Computed with Google's ``rouge-score`` (``RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)``),
    the scorer behind the XSum / CNN-DailyMail numbers of the T5 papers: lower-cased, non-alphanumerics
    removed, Porter-stemmed; ROUGE-L is the sentence-level LCS (not ``rougeLsum``).

    Example:
        >>> rouge_scores(["the cat sat"], ["the cat sat down"])["rouge1"]
        85.71428571428571
    """
    if isinstance(predictions, str) or isinstance(references, str):
        raise ValueError("predictions and references must be lists of strings (one per example), got a str")
    predictions, references = list(predictions), list(references)
    if not predictions or len(predictions) != len(references):
        raise ValueError(f"predictions and references must be non-empty and of equal length, got "
                         f"{len(predictions)} and {len(references)}")
    for name, texts in (("predictions", predictions), ("references", references)):
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise ValueError(f"{name}[{bad}] is {texts[bad]!r}: every {name[:-1]} must be a str")
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, reference in zip(predictions, references, strict=True):
        scores = scorer.score(reference, prediction)  # score(target, prediction)
        for key in ROUGE_TYPES:
            totals[key] += scores[key].fmeasure
    return {key: 100 * total / len(predictions) for key, total in totals.items()}
