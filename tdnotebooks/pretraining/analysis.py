"""Semantic-loss analyses of token dropping (Zhong et al. 2023, "Revisiting Token Dropping Strategy ...", Sec. 2).

Three ways to see what dropping tokens costs a BERT model in *meaning*:

1. Semantic drift (Fig. 3). Take real sentences, corrupt them the way pretraining does (15% of the word
   pieces masked; for token dropping, the unimportant tokens removed as well), and compare each corrupted
   view with its original through an off-the-shelf Sentence-BERT: cosine similarity of the two sentence
   embeddings, 1.0 = no semantic loss. :func:`corrupted_views`, :func:`semantic_drift`,
   :func:`drift_at_checkpoint`, :func:`drift_tracker`.
2. Layer-wise probing (Fig. 4 / Fig. 8). Pool every layer's hidden states into one vector per sentence and
   fit a linear probe for a semantic property (here: the sentiment of the bundled Rotten Tomatoes
   snippets); dev accuracy per layer says how much of the property each layer holds.
   :func:`layer_representations`, :func:`probe_layers`.
3. Downstream (Table 6 in spirit). Fine-tune the pretrained encoder on the sentiment task.
   :func:`classifier_from_mlm`, :func:`downstream`.

    >>> views = corrupted_views(tok, texts, td_wrapper=td)
    >>> semantic_drift(sbert, texts, {"masked": [v.masked for v in views],
    ...                               "masked_dropped": [v.masked_dropped for v in views]})
    >>> reps = layer_representations(td, tok, train_texts); dev = layer_representations(td, tok, dev_texts)
    >>> probe_layers(reps, train_labels, dev, dev_labels)       # one accuracy per layer (embeddings first)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from tdnotebooks.pretraining.token_dropping import TokenDroppingBert, select_kept_tokens
from tdnotebooks.validation import check_choice, check_int, check_number

__all__ = [
    "POOLINGS", "QUALITY_METRICS", "CorruptedView", "classifier_from_mlm", "compare_pretraining", "corrupted_views", "downstream", "drift_at_checkpoint",
    "drift_tracker", "layer_representations", "mask_count", "probe_layers", "semantic_drift",
]

POOLINGS = ("mean", "cls")


# ----------------------------------------------------------------------------------------------------------
# Argument checks (one clear ValueError each)
# ----------------------------------------------------------------------------------------------------------


def _check_texts(name: str, texts: Any) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence) or len(texts) == 0:
        raise ValueError(f"{name} must be a non-empty list of strings, got {type(texts).__name__}")
    if not all(isinstance(t, str) and t.strip() for t in texts):
        raise ValueError(f"{name} must contain non-empty strings only")
    return list(texts)


# ----------------------------------------------------------------------------------------------------------
# 1. Corrupted views of real sentences (Fig. 3)
# ----------------------------------------------------------------------------------------------------------


@dataclass
class CorruptedView:
    """One sentence and its two corrupted views (Fig. 3).

    original: the text; masked: the text with num_masked word pieces replaced by [MASK]; masked_dropped:
    the masked text with the num_dropped tokens that token dropping would skip removed as well.
    masked_ids, dropped_ids: the token ids behind the two views ([CLS] ... [SEP] included), so
    ``len(masked_ids) - len(dropped_ids) == num_dropped``.
    """

    original: str
    masked: str
    masked_dropped: str
    masked_ids: list[int]
    dropped_ids: list[int]
    num_masked: int
    num_dropped: int


def mask_count(num_maskable: int, mask_prob: float) -> int:
    """Word pieces masked in a sentence: round(mask_prob * num_maskable), at least 1, at most num_maskable.

    The rule of BERT's data pipeline and of :func:`tdnotebooks.pretraining.train.mask_tokens`. Halves round to the
    even number (Python's and torch's rounding): 30 pieces at 0.15 (4.5) mask 4, 10 pieces (1.5) mask 2.
    """
    check_int("num_maskable", num_maskable, low=0)
    check_number("mask_prob", mask_prob, low=0, high=1, low_open=True, high_open=True)
    return _mask_count(num_maskable, mask_prob)


def _mask_count(num_maskable: int, mask_prob: float) -> int:
    return min(max(round(mask_prob * num_maskable), 1), num_maskable)


def corrupted_views(tokenizer: Any, texts: Sequence[str], td_wrapper: TokenDroppingBert | None = None,
                    mask_prob: float = 0.15, seed: int = 0, keep_fraction: float = 0.5,
                    max_length: int = 128) -> list[CorruptedView]:
    """The masked and the masked + dropped view of every text (the corrupted sentences of Fig. 3).

    Masked view: :func:`mask_count` of the non-special word pieces, chosen uniformly at random, all become
    [MASK] (the semantic-drift analysis corrupts with [MASK] only, not BERT's 80/10/10 mix). Masked +
    dropped view: the tokens that ``td_wrapper.select`` leaves out of the dropped layers are removed
    (special and masked tokens are always kept; the rest by the wrapper's importance table, or at random
    if its selection is "random"). Without a wrapper a uniform random ``keep_fraction`` is kept.
    Text i is corrupted with a generator seeded by (seed, i): the same seed gives the same views.
    """
    texts = _check_texts("texts", texts)
    mask_prob = check_number("mask_prob", mask_prob, low=0, high=1, low_open=True, high_open=True)
    keep_fraction = check_number("keep_fraction", keep_fraction, low=0, high=1, low_open=True)
    seed = check_int("seed", seed, low=0)
    check_int("max_length", max_length, low=3)
    if td_wrapper is not None and not isinstance(td_wrapper, TokenDroppingBert):
        raise ValueError(f"td_wrapper must be a TokenDroppingBert or None, got {type(td_wrapper).__name__}")
    if tokenizer.mask_token_id is None:
        raise ValueError("tokenizer must have a [MASK] token (mask_token_id is None)")

    special = set(tokenizer.all_special_ids)
    views = []
    for i, text in enumerate(texts):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + i)
        ids = torch.tensor(tokenizer(text, truncation=True, max_length=max_length)["input_ids"])
        maskable = torch.tensor([int(t) not in special for t in ids])
        n_mask = _mask_count(int(maskable.sum()), mask_prob)
        scores = torch.rand(len(ids), generator=generator).masked_fill(~maskable, 2.0)
        masked = torch.zeros(len(ids), dtype=torch.bool)
        masked[scores.argsort()[:n_mask]] = True
        masked_ids = torch.where(masked, tokenizer.mask_token_id, ids)

        batch, attention = masked_ids[None], torch.ones(1, len(ids), dtype=torch.long)
        if td_wrapper is not None:
            kept = td_wrapper.select(batch, attention, masked[None], generator=generator)
        else:
            forced = torch.isin(batch, torch.tensor(sorted(special))) | masked[None]
            kept = select_kept_tokens(torch.rand(batch.shape, generator=generator), attention, forced,
                                      keep_fraction=keep_fraction)
        keep = torch.zeros(len(ids), dtype=torch.bool)
        keep[kept.indices[0][kept.valid[0]]] = True
        dropped_ids = masked_ids[keep]
        views.append(CorruptedView(
            original=text, masked=_decode(tokenizer, masked_ids), masked_dropped=_decode(tokenizer, dropped_ids),
            masked_ids=masked_ids.tolist(), dropped_ids=dropped_ids.tolist(), num_masked=n_mask,
            num_dropped=int((~keep).sum())))
    return views


def _decode(tokenizer: Any, ids: torch.Tensor) -> str:
    """Text of the ids without [CLS]/[SEP]/[PAD], keeping [MASK] (Sentence-BERT reads it as its mask token)."""
    drop = {tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id}
    return tokenizer.decode([int(t) for t in ids if int(t) not in drop])


# ----------------------------------------------------------------------------------------------------------
# 2. Semantic drift: Sentence-BERT cosine similarity (Fig. 3)
# ----------------------------------------------------------------------------------------------------------


def semantic_drift(sbert: Any, originals: Sequence[str],
                   views: Mapping[str, Sequence[str]] | Sequence[str]) -> dict[str, dict]:
    """Cosine similarity between the Sentence-BERT embeddings of each original and its corrupted view.

    views: {name: texts aligned with originals} (a plain list is named "view"). Returns
    {name: {"mean": float, "per_example": np.ndarray}}; 1.0 = the view keeps the original's meaning,
    lower = more semantic drift (Fig. 3's y-axis).
    """
    originals = _check_texts("originals", originals)
    if not isinstance(views, Mapping):
        views = {"view": views}
    if not views:
        raise ValueError("views must name at least one list of texts")
    for name, texts in views.items():
        _check_texts(f"views[{name!r}]", texts)
        if len(texts) != len(originals):
            raise ValueError(f"views[{name!r}] must have one text per original ({len(originals)}), "
                             f"got {len(texts)}")
    if not hasattr(sbert, "encode"):
        raise ValueError(f"sbert must be a SentenceTransformer (with .encode), got {type(sbert).__name__}")

    def embed(texts: Sequence[str]) -> torch.Tensor:
        return torch.as_tensor(np.asarray(sbert.encode(list(texts), convert_to_numpy=True,
                                                       show_progress_bar=False)), dtype=torch.float64)

    reference = embed(originals)
    result = {}
    for name, texts in views.items():
        cosine = torch.nn.functional.cosine_similarity(reference, embed(texts), dim=1).numpy()
        result[name] = {"mean": float(cosine.mean()), "per_example": cosine}
    return result


def drift_at_checkpoint(td_wrapper: TokenDroppingBert, tokenizer: Any, sbert: Any, texts: Sequence[str],
                        mask_prob: float = 0.15, seed: int = 0) -> dict[str, float]:
    """Mean semantic drift of the masked and the masked + dropped views for one wrapper state (one point of
    Fig. 3's curves). The dropped view follows the wrapper's importance table as it stands now, so calling
    this on checkpoints along a run traces how the dropped tokens' semantic cost evolves.

    A baseline run is compared on "masked" (it drops nothing), token dropping / ScTD on "masked_dropped".
    """
    views = corrupted_views(tokenizer, texts, td_wrapper, mask_prob=mask_prob, seed=seed)
    drift = semantic_drift(sbert, [v.original for v in views], {
        "masked": [v.masked for v in views], "masked_dropped": [v.masked_dropped for v in views]})
    return {name: d["mean"] for name, d in drift.items()}


def drift_tracker(config: Any, sbert: Any, texts: Sequence[str], every: int,
                  checkpoint_dir: str | os.PathLike, tokenizer: Any = None, **overrides: Any) -> list[dict]:
    """Pretrain in chunks of ``every`` steps and measure the drift after each chunk (Fig. 3 over training).

    :func:`tdnotebooks.pretraining.train.pretrain` has no callback hook, so this relies on its exact resume:
    each chunk is ``pretrain(config, resume=True, stop_after=s, checkpoint_every=every)``, which continues
    from the newest checkpoint in ``checkpoint_dir`` with the same losses as one uninterrupted run.
    Returns one record per chunk: step, masked, masked_dropped (mean cosines), dev_mlm_loss (the latest
    evaluation, None if none yet). Use a fresh checkpoint_dir per run.
    """
    from tdnotebooks.models import load_tokenizer
    from tdnotebooks.pretraining.train import PretrainConfig, pretrain

    check_int("every", every, low=1)
    texts = _check_texts("texts", texts)
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer()
    config = PretrainConfig(**{**(asdict(config) if config is not None else {}), **overrides,
                               "checkpoint_every": every, "checkpoint_dir": str(checkpoint_dir), "resume": True})
    records = []
    for stop in [*range(every, config.steps, every), config.steps]:
        td, history = pretrain(config, tokenizer=tokenizer, stop_after=stop)
        dev = history.evals[-1]["dev_mlm_loss"] if history.evals else None
        records.append({"step": stop, **drift_at_checkpoint(td, tokenizer, sbert, texts), "dev_mlm_loss": dev})
    return records


# ----------------------------------------------------------------------------------------------------------
# 3. Layer-wise probing (Fig. 4 / Fig. 8)
# ----------------------------------------------------------------------------------------------------------


def _encoder(model: Any) -> torch.nn.Module:
    """The BERT encoder (embeddings + layers) inside a wrapper, an MLM, a classifier or an encoder."""
    if isinstance(model, TokenDroppingBert):
        return model.encoder_model
    base = getattr(model, "base_model", None)
    if isinstance(base, torch.nn.Module) and hasattr(base, "encoder") and hasattr(base, "embeddings"):
        return base
    raise ValueError("model must be a TokenDroppingBert or a Hugging Face BERT-style model (BertModel, "
                     f"BertForMaskedLM, BertForSequenceClassification, ...), got {type(model).__name__}")


@torch.no_grad()
def layer_representations(model: Any, tokenizer: Any, texts: Sequence[str], pooling: str = "mean",
                          batch_size: int = 32, max_length: int = 128) -> list[np.ndarray]:
    """One sentence vector per text and layer: a list of num_layers + 1 arrays of shape [n, hidden]
    (index 0 = the embedding output, index l = layer l's output), the representations probed in Fig. 4/8.

    pooling: "mean" (average over the real tokens) or "cls" (the [CLS] vector). The full model runs (no
    token dropping), in eval mode; the model's train/eval mode is restored afterwards.
    """
    check_choice("pooling", pooling, POOLINGS)
    texts = _check_texts("texts", texts)
    check_int("batch_size", batch_size, low=1)
    check_int("max_length", max_length, low=2)
    encoder = _encoder(model)
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    per_layer: list[list[np.ndarray]] | None = None
    try:
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt").to(device)
            out = encoder(**enc, output_hidden_states=True)
            mask = enc["attention_mask"][..., None].float()
            pooled = [(h.float() * mask).sum(1) / mask.sum(1) if pooling == "mean" else h[:, 0].float()
                      for h in out.hidden_states]
            per_layer = per_layer or [[] for _ in pooled]
            for store, vectors in zip(per_layer, pooled, strict=True):
                store.append(vectors.cpu().numpy())
    finally:
        encoder.train(was_training)
    return [np.concatenate(chunks) for chunks in per_layer]


def probe_layers(reps_train: Sequence[np.ndarray], y_train: Sequence[int], reps_dev: Sequence[np.ndarray],
                 y_dev: Sequence[int], c: float = 1.0, max_iter: int = 1000, seed: int = 0) -> list[float]:
    """Dev accuracy of a logistic-regression probe per layer (standardised features, L2 strength 1/c).

    reps_*: lists of [n, hidden] arrays (from :func:`layer_representations`), one per layer, same number
    of layers in both. The higher the accuracy, the more of the property the layer encodes (Fig. 4/8).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(reps_train) == 0 or len(reps_train) != len(reps_dev):
        raise ValueError(f"reps_train and reps_dev must hold the same, non-zero number of layers, got "
                         f"{len(reps_train)} and {len(reps_dev)}")
    y_train, y_dev = np.asarray(y_train), np.asarray(y_dev)
    if len(np.unique(y_train)) < 2:
        raise ValueError("y_train must contain at least 2 classes")
    c = check_number("c", c, low=0, low_open=True)
    check_int("max_iter", max_iter, low=1)
    check_int("seed", seed, low=0)
    accuracies = []
    for layer, (train, dev) in enumerate(zip(reps_train, reps_dev, strict=True)):
        train, dev = np.asarray(train), np.asarray(dev)
        if train.ndim != 2 or dev.ndim != 2 or train.shape[1] != dev.shape[1]:
            raise ValueError(f"layer {layer}: reps must be [n, hidden] arrays of equal width, got "
                             f"{train.shape} and {dev.shape}")
        if len(train) != len(y_train) or len(dev) != len(y_dev):
            raise ValueError(f"layer {layer}: {len(train)} train / {len(dev)} dev vectors for "
                             f"{len(y_train)} / {len(y_dev)} labels")
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter, random_state=seed))
        probe.fit(train, y_train)
        accuracies.append(float((probe.predict(dev) == y_dev).mean()))
    return accuracies


# ----------------------------------------------------------------------------------------------------------
# 4. Downstream fine-tuning
# ----------------------------------------------------------------------------------------------------------


def classifier_from_mlm(model: Any, num_labels: int = 2) -> Any:
    """A ``BertForSequenceClassification`` of the same config whose encoder is a copy of the pretrained one.

    model: a TokenDroppingBert (its ``.mlm`` is used) or a BertForMaskedLM. The pooler and the
    classification head are new (the MLM model has no pooler); the MLM head is not needed.
    """
    from transformers import BertForSequenceClassification

    mlm = model.mlm if isinstance(model, TokenDroppingBert) else model
    base = getattr(mlm, "bert", None)
    if base is None or not hasattr(base, "encoder"):
        raise ValueError(f"model must be a TokenDroppingBert or a BertForMaskedLM, got {type(model).__name__}")
    check_int("num_labels", num_labels, low=2)
    config = mlm.config.__class__.from_dict({**mlm.config.to_dict(), "num_labels": num_labels})
    classifier = BertForSequenceClassification(config)
    missing, unexpected = classifier.bert.load_state_dict(base.state_dict(), strict=False)
    if unexpected or any(not k.startswith("pooler.") for k in missing):
        raise ValueError(f"encoder weights do not match: missing {missing}, unexpected {unexpected}")
    return classifier.to(next(base.parameters()).device)


def downstream(model: Any, tokenizer: Any, task: str = "rt_sentiment", train_size: int = 512,
               dev_size: int = 256, max_length: int = 64, seed: int = 0, config: Any = None,
               **overrides: Any) -> float:
    """Fine-tune the pretrained encoder of ``model`` on a seeded subset of ``task`` and return dev accuracy.

    The encoder is copied into a classifier (:func:`classifier_from_mlm`); the pretrained model itself is
    not changed. Training uses :func:`tdnotebooks.finetuning.train.finetune` (``config`` / keyword overrides:
    FinetuneConfig fields, e.g. ``epochs=2, lr=1e-4``).
    """
    from tdnotebooks.data import load_task
    from tdnotebooks.finetuning.tokendrop import prepare
    from tdnotebooks.finetuning.train import FinetuneConfig, finetune

    check_int("train_size", train_size, low=2)
    check_int("dev_size", dev_size, low=1)
    check_int("seed", seed, low=0)
    torch.manual_seed(seed)                     # the new pooler and head: the same start for every model
    classifier = classifier_from_mlm(model)
    limit = getattr(classifier.config, "max_position_embeddings", max_length)
    check_int("max_length", max_length, low=3, high=limit)  # at most the model's max_position_embeddings
    data = load_task(task)
    subsets = {}
    for split, size in (("train", train_size), ("dev", dev_size)):
        part = data[split].shuffle(seed=seed)
        subsets[split] = prepare(part.select(range(min(size, len(part)))), tokenizer, max_length=max_length)
    config = FinetuneConfig(**{**asdict(config or FinetuneConfig()), "seed": seed, "progress": False, **overrides})
    history = finetune(classifier, subsets["train"], subsets["dev"], config, pad_token_id=tokenizer.pad_token_id)
    return history.final_dev_accuracy


# ----------------------------------------------------------------------------------------------------------
# 5. All of it at once: baseline vs token dropping vs ScTD (the paper's Table 2 / Table 5 in miniature)
# ----------------------------------------------------------------------------------------------------------

QUALITY_METRICS = ("dev_mlm_loss", "drift", "probe_last", "downstream_accuracy", "seconds_per_step")


def _mean_step_seconds(steps: Sequence[Mapping[str, Any]]) -> float:
    """Mean model-step time, leaving out step 0 (allocator and AdamW state warm-up) when there are others."""
    timed = steps[1:] if len(steps) > 1 else steps
    return float(np.mean([s["seconds"] for s in timed]))


def compare_pretraining(methods: Mapping[str, Mapping[str, Any]], config: Any = None, *, sbert: Any = None,
                        drift_texts: Sequence[str] | None = None,
                        probe_data: tuple[Sequence[str], Sequence[int], Sequence[str], Sequence[int]] | None = None,
                        downstream_kwargs: Mapping[str, Any] | None = None, seeds: Sequence[int] = (0,),
                        tokenizer: Any = None, progress: Any = None) -> dict[str, dict]:
    """Pretrain one model per method and seed, then measure what the ScTD paper compares.

    methods: {label: PretrainConfig overrides}, e.g. ``{"token drop": {"mode": "token_drop"},
    "ScTD": {"mode": "sctd", "fi": 10}}``; every run starts from ``config`` (a PretrainConfig; its seed is
    replaced by each of ``seeds``, so all methods of one seed share the initial weights and the data order).
    Per run: ``dev_mlm_loss`` (full model, the last evaluation), ``seconds_per_step`` (mean model step, step 0
    left out as warm-up),
    ``drift`` (mean Sentence-BERT cosine of the view the method trains on: "masked" for runs that drop
    nothing, "masked_dropped" otherwise; needs sbert and drift_texts), ``probe`` (per-layer dev accuracy of a
    linear sentiment probe on mean-pooled layers, and ``probe_last``; needs probe_data = (train texts, train
    labels, dev texts, dev labels)) and ``downstream_accuracy`` (:func:`downstream` with downstream_kwargs;
    None skips it). Returns {label: {"runs": [per-seed dicts], "mean": {metric: mean over seeds},
    "sd": {metric: sample sd, None with one seed}, "overrides": ...}}; each run keeps its loss curve.
    """
    from tdnotebooks.models import load_tokenizer
    from tdnotebooks.pretraining.train import PretrainConfig, pretrain

    if not isinstance(methods, Mapping) or not methods:
        raise ValueError("methods must be a non-empty {label: PretrainConfig overrides} mapping")
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must hold at least one seed")
    for seed in seeds:
        check_int("seeds[...]", seed, low=0)
    if (sbert is None) != (drift_texts is None):
        raise ValueError("sbert and drift_texts go together: give both (to measure drift) or neither")
    if drift_texts is not None:
        drift_texts = _check_texts("drift_texts", drift_texts)
    if probe_data is not None and len(probe_data) != 4:
        raise ValueError("probe_data must be (train_texts, train_labels, dev_texts, dev_labels)")
    if config is not None and not isinstance(config, PretrainConfig):
        raise ValueError(f"config must be None or a PretrainConfig, got {type(config).__name__}")
    base = asdict(config) if config is not None else asdict(PretrainConfig(progress=False))
    for label, overrides in methods.items():              # every bad setting before the first long run
        unknown = sorted(set(dict(overrides)) - set(base))
        if unknown:
            raise ValueError(f"methods[{label!r}] sets {', '.join(unknown)}, which PretrainConfig does not have")
        PretrainConfig(**{**base, **dict(overrides)})
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer()
    say = progress or (lambda _message: None)

    results: dict[str, dict] = {}
    for label, overrides in methods.items():
        runs = []
        for seed in seeds:
            say(f"{label}, seed {seed}: pretraining")
            td, history = pretrain(PretrainConfig(**{**base, **dict(overrides), "seed": seed}), tokenizer=tokenizer)
            dropping = history.config["mode"] != "baseline"
            run: dict[str, Any] = {
                "seed": seed, "dev_mlm_loss": history.dev_losses[-1] if history.evals else None,
                "seconds_per_step": _mean_step_seconds(history.steps), "losses": history.losses,
                "evals": history.evals, "drift": None, "probe": None, "probe_last": None,
                "downstream_accuracy": None}
            if sbert is not None:
                drift = drift_at_checkpoint(td, tokenizer, sbert, drift_texts, seed=seed)
                run["drift"] = drift["masked_dropped" if dropping else "masked"]
            if probe_data is not None:
                train_texts, train_labels, dev_texts, dev_labels = probe_data
                run["probe"] = probe_layers(layer_representations(td, tokenizer, list(train_texts)), train_labels,
                                            layer_representations(td, tokenizer, list(dev_texts)), dev_labels,
                                            seed=seed)
                run["probe_last"] = run["probe"][-1]
            if downstream_kwargs is not None:
                say(f"{label}, seed {seed}: fine-tuning")
                run["downstream_accuracy"] = downstream(td, tokenizer, seed=seed, **dict(downstream_kwargs))
            runs.append(run)
        summary: dict[str, Any] = {"overrides": dict(overrides), "runs": runs, "mean": {}, "sd": {}}
        for metric in QUALITY_METRICS:
            values = [r[metric] for r in runs if r[metric] is not None]
            summary["mean"][metric] = float(np.mean(values)) if values else None
            summary["sd"][metric] = float(np.std(values, ddof=1)) if len(values) > 1 else None
        results[label] = summary
    return results
