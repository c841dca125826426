"""MLM pretraining from scratch on a bundled corpus: baseline, token dropping, random dropping, ScTD.

One loop for four methods (``PretrainConfig.mode``), all on :class:`~tdnotebooks.pretraining.token_dropping.TokenDroppingBert`
(so every mode runs the MLM head at the masked positions only, as the official BERT code does):

- ``"baseline"``: the full model (``drop=False``);
- ``"token_drop"``: Hou et al. 2022, the middle layers see the most important tokens (importance table);
- ``"random_drop"``: the same layers see a uniform random subset (Random-LTD style);
- ``"sctd"``: token dropping + the ScTD objective (Eq. 4 of Zhong et al. 2023, :mod:`tdnotebooks.pretraining.sctd`).

Data: the corpus is tokenized with the bundled WordPiece, concatenated (documents separated by [SEP])
and cut into blocks ``[CLS] + block_size - 2 tokens + [SEP]`` (no padding, [CLS] at position 0 for
ScTD's KL). Masking as in BERT's data pipeline: 15% of each block's non-special tokens (rounded, at
least one) are predicted; of those 80% become [MASK], 10% a random id, 10% stay.

Reproducible and resumable by construction: the batch of step t is a pure function of
(seed, t, rank): the sample order comes from a seeded permutation per epoch, the masks from a generator
seeded with (seed, t, rank). A checkpoint (every ``checkpoint_every`` steps; written to a temporary
folder, then renamed) holds the model with its importance table, optimizer, scheduler, gradient scaler,
every rank's RNG states, the step, the data position, the history and a manifest of its files;
``resume=True`` continues from the newest complete one (a damaged one is skipped with a warning), and on CPU
the resumed run's per-step losses equal the uninterrupted run's. A resume keeps the settings, the model's
sizes and the global batch (processes x batch_size) of its checkpoint, or says which differ.

Built on accelerate: the same code runs on CPU, one GPU (AMP through ``mixed_precision``) and several
GPUs or CPU processes (``accelerate launch -m tdnotebooks.pretraining ...`` or ``torchrun``, DDP).
``batch_size`` is per process. The importance table is all-reduced, so every rank drops alike.

    >>> wrapper, history = pretrain(PretrainConfig(mode="sctd", steps=50, block_size=64))
    >>> wrapper.mlm.save_pretrained("my-bert")          # a plain BertForMaskedLM
    $ python -m tdnotebooks.pretraining --mode sctd --steps 50 --block-size 64
"""

from __future__ import annotations

import argparse
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tdnotebooks.checkpoints import (
    check_architecture,
    check_checkpoint_dir,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    model_architecture,
    save_checkpoint,
    set_rng_state,
)
from tdnotebooks.checks import check_mlm_model, check_special_token
from tdnotebooks.checks import max_positions as model_max_positions
from tdnotebooks.pretraining.sctd import DEFAULT_LAM, REDUCTIONS, ScTDConfig, is_full_step, sctd_loss
from tdnotebooks.pretraining.token_dropping import IGNORE_INDEX, TokenDroppingBert, TokenDroppingConfig
from tdnotebooks.validation import check_bool, check_choice, check_int, check_number

__all__ = [
    "PretrainConfig", "pack_blocks", "corpus_blocks", "sample_indices", "mask_tokens", "PretrainObjective",
    "PretrainHistory", "list_checkpoints", "latest_checkpoint", "pretrain", "evaluate", "main",
]

PRETRAIN_MODES = ("baseline", "token_drop", "random_drop", "sctd")
DEVICES = ("auto", "cpu", "cuda")
MIXED_PRECISIONS = ("auto", "no", "bf16", "fp16")
DEFAULT_BETA = {"token_drop": 0.995, "sctd": 0.95}  # Hou et al.'s and ScTD's official code


# ----------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------


@dataclass
class PretrainConfig:
    """All settings of a pretraining run (every field is also a CLI flag: ``--block-size 64``).

    mode: "baseline", "token_drop", "random_drop" or "sctd".
    steps: optimizer steps; batch_size: blocks per step and process; block_size: tokens per block.
    lr, warmup (a fraction of steps), weight_decay, max_grad_norm: AdamW with linear warm-up and decay.
    keep_fraction: tokens the dropped layers keep, in (0, 1] (drop fraction 1 - keep_fraction in [0, 1)).
    start_layer, end_layer: dropped layers [start_layer, end_layer), 0-based; None = the paper's split.
    beta: importance moving average; None = the mode's paper (token_drop: Hou 0.995, sctd: ScTD 0.95).
    first_layer_full_kv: the first dropped layer attends from the kept tokens to all tokens (default True,
    Hou's official code; False: the papers' description). keep_predicted: "mask_only" (default, Hou's code:
    only [MASK] inputs among the predicted positions are always kept) or "all" (see
    :class:`~tdnotebooks.pretraining.token_dropping.TokenDroppingConfig`).
    lam, fi, full_pass_at, kl_target, kl_reduction, stop_gradient, full_mlm: ScTD (see
    :class:`~tdnotebooks.pretraining.sctd.ScTDConfig`; defaults: lam 0.05 / 76.8 with kl_reduction "batchmean",
    the official code's weighting at the paper's 512 tokens, independent of batch size and processes;
    full_pass_at "end", the paper's Fig. 5).
    num_layers, hidden_size, num_heads, intermediate_size: the tiny BERT built when no model is given.
    corpus, max_texts (first texts of the train split; None = all), mlm_probability: the data.
    checkpoint_every (0 = never), checkpoint_dir (a folder, checked before step 0), keep_checkpoints (newest
    kept; None = all), resume (from the newest complete checkpoint; steps must be the checkpoint's).
    eval_every (0 = never; the last step is evaluated too), eval_blocks, eval_batch_size: dev MLM loss
    of the full model (drop=False) on the first eval_blocks dev blocks, masked the same way every time.
    device: "auto", "cpu" or "cuda"; mixed_precision: "auto" (bf16 or fp16 on CUDA, none on CPU), "no",
    "bf16", "fp16" (CUDA only). output_dir: save the final model, tokenizer and history there.
    report_to, logging_dir, run_name: experiment tracking through accelerate's trackers (see
    :func:`~tdnotebooks.runtime.check_report_to`): "tensorboard" (default), "wandb", "all", a list, or None /
    "none". TensorBoard writes only when logging_dir is set, to logging_dir/run_name (default: mode and time);
    per step loss, learning_rate, the Eq. 4 terms, batch size, padding, tokens/s; per evaluation the dev loss.
    """

    mode: str = "baseline"
    steps: int = 200
    batch_size: int = 32
    block_size: int = 64
    lr: float = 5e-4
    warmup: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float | None = 1.0
    keep_fraction: float = 0.5
    start_layer: int | None = None
    end_layer: int | None = None
    beta: float | None = None
    first_layer_full_kv: bool = True
    keep_predicted: str = "mask_only"
    lam: float = DEFAULT_LAM
    fi: int = 10
    full_pass_at: str = "end"
    kl_target: str = "cls_hidden_softmax"
    kl_reduction: str = "batchmean"
    stop_gradient: bool = False
    full_mlm: bool = True
    num_layers: int = 4
    hidden_size: int = 128
    num_heads: int = 4
    intermediate_size: int = 512
    corpus: str = "shakespeare"
    max_texts: int | None = None
    mlm_probability: float = 0.15
    seed: int = 0
    checkpoint_every: int = 0
    checkpoint_dir: str | None = None
    keep_checkpoints: int | None = 2
    resume: bool = False
    eval_every: int = 50
    eval_blocks: int = 64
    eval_batch_size: int = 32
    device: str = "auto"
    mixed_precision: str = "auto"
    progress: bool = True
    output_dir: str | None = None
    report_to: str | list[str] | None = "tensorboard"
    logging_dir: str | None = None
    run_name: str | None = None

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, PRETRAIN_MODES)
        # the model sizes: tiny_bert's bounds (used when no model is given, checked whatever the case)
        for name, low in (("steps", 1), ("batch_size", 1), ("block_size", 8), ("seed", 0), ("checkpoint_every", 0),
                          ("eval_every", 0), ("eval_blocks", 1), ("eval_batch_size", 1), ("num_layers", 2),
                          ("hidden_size", 8), ("num_heads", 1), ("intermediate_size", 8)):
            check_int(name, getattr(self, name), low=low)
        for name in ("max_texts", "keep_checkpoints"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), low=1)
        check_number("lr", self.lr, low=0, low_open=True)
        check_number("warmup", self.warmup, low=0, high=1, high_open=True)
        check_number("weight_decay", self.weight_decay, low=0)
        if self.max_grad_norm is not None:
            check_number("max_grad_norm", self.max_grad_norm, low=0, low_open=True)
        check_number("mlm_probability", self.mlm_probability, low=0, high=1, low_open=True, high_open=True)
        for name in ("resume", "progress"):             # first_layer_full_kv, stop_gradient, full_mlm: below
            check_bool(name, getattr(self, name))
        from tdnotebooks.data import check_corpus_name

        check_corpus_name(self.corpus, name_of="corpus")
        for name in ("checkpoint_dir", "output_dir", "logging_dir"):  # a str: the config is saved as JSON
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be None or a folder path as a str, got {getattr(self, name)!r}")
        check_choice("kl_reduction", self.kl_reduction, REDUCTIONS)  # ScTDConfig calls it reduction
        self.token_dropping_config()                    # keep_fraction, layers, beta, full kv, keep_predicted
        self.sctd_config()                              # lam, fi, full_pass_at, kl_target, stop_gradient, full_mlm
        if (self.checkpoint_every > 0 or self.resume) and not self.checkpoint_dir:
            raise ValueError("checkpoint_dir must be set when checkpoint_every > 0 or resume=True")
        check_choice("device", self.device, DEVICES)
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' was requested but no CUDA GPU is available; use 'cpu' or 'auto'")
        check_choice("mixed_precision", self.mixed_precision, MIXED_PRECISIONS)
        if self.mixed_precision == "fp16" and self.resolved_device() == "cpu":
            raise ValueError("mixed_precision='fp16' needs a CUDA GPU; on CPU use 'no' or 'bf16'")
        if self.run_name is not None and (not isinstance(self.run_name, str) or not self.run_name.strip()):
            raise ValueError(f"run_name must be None or a non-empty str, got {self.run_name!r}")
        self.trackers()                                 # report_to: known names, installed where they will run

    def trackers(self) -> list[str]:
        """The trackers this run reports to (accelerate's names; [] for none), see ``report_to``."""
        from tdnotebooks.runtime import check_report_to

        return check_report_to(self.report_to, self.logging_dir)

    def resolved_device(self) -> str:
        """"cpu" or "cuda"."""
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    def resolved_mixed_precision(self) -> str:
        """"auto" -> bf16 on GPUs that support it, else fp16 on CUDA; "no" on CPU."""
        if self.mixed_precision != "auto":
            return self.mixed_precision
        if self.resolved_device() != "cuda":
            return "no"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"

    def token_dropping_config(self) -> TokenDroppingConfig:
        """The :class:`TokenDroppingConfig` of this run (random selection in mode "random_drop")."""
        beta = self.beta if self.beta is not None else DEFAULT_BETA.get(self.mode, 0.995)
        return TokenDroppingConfig(keep_fraction=self.keep_fraction, start_layer=self.start_layer,
                                   end_layer=self.end_layer, beta=beta,
                                   selection="random" if self.mode == "random_drop" else "importance",
                                   first_layer_full_kv=self.first_layer_full_kv,
                                   keep_predicted=self.keep_predicted)

    def sctd_config(self) -> ScTDConfig:
        """The :class:`ScTDConfig` of this run (used in mode "sctd")."""
        return ScTDConfig(lam=self.lam, fi=self.fi, kl_target=self.kl_target, reduction=self.kl_reduction,
                          stop_gradient=self.stop_gradient, full_mlm=self.full_mlm,
                          full_pass_at=self.full_pass_at)


# ----------------------------------------------------------------------------------------------------------
# Data: packed blocks, deterministic order and masking
# ----------------------------------------------------------------------------------------------------------

_BLOCK_CACHE: dict[tuple, torch.Tensor] = {}


def pack_blocks(texts: list[str], tokenizer: Any, block_size: int, max_blocks: int | None = None) -> torch.Tensor:
    """(N, block_size) long tensor: the texts' tokens, documents separated by [SEP], cut into blocks
    ``[CLS] + block_size - 2 tokens + [SEP]``; the incomplete tail is dropped. Stops after max_blocks."""
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise ValueError("texts must be a list of strings (one document each), got "
                         f"{'a single str' if isinstance(texts, str) else type(texts).__name__}")
    check_int("block_size", block_size, low=3)          # at least one token between [CLS] and [SEP]
    if max_blocks is not None:
        check_int("max_blocks", max_blocks, low=1)
    body = block_size - 2
    stream: list[int] = []
    blocks: list[list[int]] = []
    for start in range(0, len(texts), 512):
        chunk = texts[start:start + 512]
        # Not backend_tokenizer.encode_batch: a tokenizer.json may switch on padding and truncation there.
        encoded = tokenizer(chunk, add_special_tokens=False, truncation=False, padding=False, verbose=False)
        for ids in encoded["input_ids"]:
            stream.extend(ids)
            stream.append(tokenizer.sep_token_id)
        while len(stream) >= body:
            blocks.append([tokenizer.cls_token_id, *stream[:body], tokenizer.sep_token_id])
            del stream[:body]
        if max_blocks is not None and len(blocks) >= max_blocks:
            blocks = blocks[:max_blocks]
            break
    if not blocks:
        raise ValueError(f"the texts hold fewer than block_size - 2 = {body} tokens: no block can be made")
    return torch.tensor(blocks, dtype=torch.long)


def corpus_blocks(corpus: str, split: str, tokenizer: Any, block_size: int, max_texts: int | None = None,
                  max_blocks: int | None = None) -> torch.Tensor:
    """Packed blocks of a corpus split (see :func:`pack_blocks`), cached in memory per settings."""
    key = (corpus, split, getattr(tokenizer, "name_or_path", id(tokenizer)), len(tokenizer), block_size,
           max_texts, max_blocks)
    if key not in _BLOCK_CACHE:
        from tdnotebooks.data import load_corpus

        data = load_corpus(corpus)
        if split not in data:
            raise ValueError(f"corpus {corpus!r} has no split {split!r} (it has {', '.join(data)})")
        rows = data[split] if max_texts is None else data[split].select(range(min(max_texts, len(data[split]))))
        _BLOCK_CACHE[key] = pack_blocks(rows[:]["text"], tokenizer, block_size, max_blocks)
    return _BLOCK_CACHE[key]


def _seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (seed, step, rank, stream)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint64)[0] >> 1)


def sample_indices(position: int, count: int, num_blocks: int, seed: int) -> torch.Tensor:
    """Blocks at stream positions [position, position + count): epoch e = p // num_blocks visits the
    blocks in a permutation seeded by (seed, e), so a position alone says which block comes next."""
    for name, value, low in (("position", position, 0), ("count", count, 0), ("num_blocks", num_blocks, 1),
                             ("seed", seed, 0)):
        check_int(name, value, low=low)
    out = []
    for p in range(position, position + count):
        epoch, offset = divmod(p, num_blocks)
        out.append(_epoch_order(seed, epoch, num_blocks)[offset])
    return torch.stack(out)


_ORDER_CACHE: dict[tuple[int, int, int], torch.Tensor] = {}


def _epoch_order(seed: int, epoch: int, num_blocks: int) -> torch.Tensor:
    key = (seed, epoch, num_blocks)
    if key not in _ORDER_CACHE:
        if len(_ORDER_CACHE) > 8:
            _ORDER_CACHE.clear()
        _ORDER_CACHE[key] = torch.randperm(num_blocks, generator=torch.Generator().manual_seed(_seed(seed, epoch)))
    return _ORDER_CACHE[key]


def mask_tokens(input_ids: torch.Tensor, mask_token_id: int, vocab_size: int, special_ids: Any,
                generator: torch.Generator, probability: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: per row, round(probability * non-special tokens) positions (at least 1) are predicted;
    80% of them become [MASK], 10% a random id, 10% stay. Returns (inputs, labels with -100 elsewhere)."""
    check_number("probability", probability, low=0, high=1, low_open=True, high_open=True)
    check_int("vocab_size", vocab_size, low=1)
    check_int("mask_token_id", mask_token_id, low=0, high=vocab_size - 1)
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.dtype not in (torch.long, torch.int):
        raise ValueError(f"input_ids must be a 2-D tensor of token ids (rows x tokens), got "
                         f"{getattr(input_ids, 'dtype', type(input_ids).__name__)} of shape "
                         f"{tuple(getattr(input_ids, 'shape', ()))}")
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator (seeded: masking is reproducible), got {generator!r}")
    special = torch.isin(input_ids, torch.as_tensor(list(special_ids), dtype=input_ids.dtype))
    maskable = ~special
    counts = torch.clamp(torch.round(maskable.sum(1) * probability), min=1).long()
    counts = torch.minimum(counts, maskable.sum(1))
    scores = torch.rand(input_ids.shape, generator=generator).masked_fill(special, 2.0)
    rank = scores.argsort(dim=1).argsort(dim=1)
    chosen = maskable & (rank < counts[:, None])
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    action = torch.rand(input_ids.shape, generator=generator)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator, dtype=input_ids.dtype)
    inputs = torch.where(chosen & (action < 0.8), torch.full_like(input_ids, mask_token_id), input_ids)
    inputs = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, inputs)
    return inputs, labels


# ----------------------------------------------------------------------------------------------------------
# The objective of one step, as one module (one forward per backward, as DDP wants)
# ----------------------------------------------------------------------------------------------------------


class PretrainObjective(nn.Module):
    """The loss of one step in ``mode``; both ScTD passes run inside one ``forward``.

    Returns (loss, terms: dict of scalar tensors for logging, the pass that feeds the importance table).
    """

    def __init__(self, td: TokenDroppingBert, mode: str, sctd: ScTDConfig | None = None) -> None:
        super().__init__()
        check_choice("mode", mode, PRETRAIN_MODES)
        self.td, self.mode, self.sctd = td, mode, sctd if sctd is not None else ScTDConfig()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor, step: int,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict, Any]:
        if self.mode == "sctd":
            out = sctd_loss(self.td, input_ids, attention_mask, labels, step, self.sctd, generator=generator)
            terms = {"mlm_dropped": out.mlm_dropped, "mlm_full": out.mlm_full, "kl_global": out.kl_global,
                     "kl_local": out.kl_local}
            return out.total, {k: v for k, v in terms.items() if v is not None}, out.dropped
        drop = self.mode != "baseline"
        out = self.td(input_ids, attention_mask, labels=labels, drop=drop, generator=generator)
        return out.loss, {"mlm_dropped" if drop else "mlm_full": out.loss}, out


# ----------------------------------------------------------------------------------------------------------
# PretrainHistory
# ----------------------------------------------------------------------------------------------------------

TERMS = ("mlm_dropped", "mlm_full", "kl_global", "kl_local")


@dataclass
class PretrainHistory:
    """Per-step records (``pandas.DataFrame(history.steps)``) and periodic dev evaluations.

    steps: step, loss, mlm_dropped, mlm_full, kl_global, kl_local (None where a term is absent),
    is_full_step (ScTD's full pass ran), lr, seconds (the model's step: forward, backward, optimizer,
    importance update; not the data preparation), tokens_per_second (block tokens of all processes / seconds).
    evals: step (after which it ran), dev_mlm_loss (full model). resumed_from: the step a resumed run
    continued from (None if it started fresh).
    """

    config: dict
    steps: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    resumed_from: int | None = None

    @property
    def losses(self) -> list[float]:
        return [s["loss"] for s in self.steps]

    @property
    def dev_losses(self) -> list[float]:
        return [e["dev_mlm_loss"] for e in self.evals]

    @property
    def train_seconds(self) -> float:
        return float(sum(s["seconds"] for s in self.steps))

    def as_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------


# Settings a resumed run must share with its checkpoint (others, like eval_every or checkpoint_every, may
# change). steps too: the learning rate decays to 0 over steps, so a run resumed with other steps would follow
# neither run's schedule. batch_size is checked as the global batch, processes x batch_size (_check_world_size);
# the model's sizes as its architecture (tdnotebooks.checkpoints.check_architecture).
RESUME_MUST_MATCH = ("mode", "steps", "block_size", "lr", "warmup", "weight_decay", "max_grad_norm",
                     "keep_fraction", "start_layer", "end_layer", "beta", "first_layer_full_kv", "keep_predicted",
                     "lam", "fi", "full_pass_at", "kl_target", "kl_reduction", "stop_gradient", "full_mlm", "corpus",
                     "max_texts", "mlm_probability", "seed")
# What a checkpoint written before a setting existed ran with (issue 16 added these two).
LEGACY_SETTINGS = {"keep_predicted": "all", "full_pass_at": "start"}


# ----------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------


def _accelerator(config: PretrainConfig) -> Any:
    from tdnotebooks.runtime import make_accelerator

    return make_accelerator(cpu=config.resolved_device() == "cpu", mixed_precision=config.resolved_mixed_precision(),
                            log_with=config.trackers(), project_dir=config.logging_dir)


def _build_model(config: PretrainConfig, model: Any, tokenizer: Any) -> Any:
    from transformers import AutoModelForMaskedLM, BertForMaskedLM, PretrainedConfig

    from tdnotebooks.models import tiny_bert

    if model is None:
        model = BertForMaskedLM(tiny_bert(num_layers=config.num_layers, hidden_size=config.hidden_size,
                                          num_heads=config.num_heads, intermediate_size=config.intermediate_size,
                                          max_position_embeddings=max(128, config.block_size),
                                          tokenizer=tokenizer))
    elif isinstance(model, PretrainedConfig):
        model = AutoModelForMaskedLM.from_config(model)
    return model


def pretrain(config: PretrainConfig | None = None, model: Any = None, tokenizer: Any = None, *,
             stop_after: int | None = None, **overrides: Any) -> tuple[TokenDroppingBert, PretrainHistory]:
    """Pretrain ``model`` (a BertForMaskedLM-style model, a model config, or None: a tiny BERT from the
    config) with masked language modelling in ``config.mode``; returns (wrapper, history).

    ``wrapper.mlm`` is the trained Hugging Face model (plain, ``save_pretrained`` works); the wrapper holds
    the importance table. A model passed in is trained in place (with resume=True its weights are replaced
    by the checkpoint's). Keyword overrides replace config fields (``pretrain(cfg, mode="sctd")``).
    stop_after: return after this many steps in total, as if the run were killed there (no final
    checkpoint or evaluation; the LR schedule still spans ``config.steps``); for resume demos and tests.

    Example:
        >>> wrapper, history = pretrain(mode="sctd", steps=50, block_size=64)          # doctest: +SKIP
        >>> wrapper.mlm.save_pretrained("my-bert")                                       # doctest: +SKIP

    Warning: ``resume=True`` goes on from the newest complete checkpoint of ``checkpoint_dir`` only if every
    setting that shapes the run (``RESUME_MUST_MATCH``, the model's architecture, the global batch) is the
    same; a changed setting is an error, not a silent fresh start. Used in notebooks 05-07.
    """
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    from tdnotebooks.models import load_tokenizer
    from tdnotebooks.runtime import default_run_name, end_tracking, seed_everything, start_tracking

    if config is not None and not isinstance(config, PretrainConfig):
        raise ValueError(f"config must be None or a PretrainConfig, got {type(config).__name__}")
    config = PretrainConfig(**{**asdict(config or PretrainConfig()), **overrides})
    if stop_after is not None:
        check_int("stop_after", stop_after, low=1)
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer()
    check_special_token(tokenizer, "mask_token", "masked language modelling replaces predicted tokens with it")
    check_special_token(tokenizer, "cls_token", "every block starts with it")
    check_special_token(tokenizer, "sep_token", "it ends every block and separates documents")
    if model is not None and not isinstance(model, nn.Module):
        check_mlm_model(model)                          # a config of another type, before from_config
    seed_everything(config.seed)
    mlm = _build_model(config, model, tokenizer)
    td = TokenDroppingBert(mlm, config.token_dropping_config(), special_token_ids=tokenizer.all_special_ids,
                           pad_token_id=tokenizer.pad_token_id)     # bad layout / layer range: clear errors
    max_positions = model_max_positions(mlm)            # RoBERTa: max_position_embeddings - pad_token_id - 1
    if max_positions is not None and config.block_size > max_positions:
        raise ValueError(f"block_size must be <= the model's max_position_embeddings ({max_positions}), "
                         f"got {config.block_size}")
    if mlm.config.vocab_size < len(tokenizer):
        raise ValueError(f"the model's vocab_size ({mlm.config.vocab_size}) is smaller than the tokenizer's "
                         f"({len(tokenizer)})")

    accelerator = _accelerator(config)
    rank, world = accelerator.process_index, accelerator.num_processes
    train_blocks = corpus_blocks(config.corpus, "train", tokenizer, config.block_size, config.max_texts)
    special_ids = tokenizer.all_special_ids
    if config.eval_every:                       # the same dev blocks, masked the same way, at every evaluation
        dev_blocks = corpus_blocks(config.corpus, "dev", tokenizer, config.block_size,
                                   max_blocks=config.eval_blocks)
        dev_inputs, dev_labels = mask_tokens(dev_blocks, tokenizer.mask_token_id, len(tokenizer), special_ids,
                                             torch.Generator().manual_seed(_seed(config.seed, 2**31)),
                                             config.mlm_probability)

    decay = [p for n, p in td.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in td.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr, eps=1e-6)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup * config.steps), config.steps)
    objective = PretrainObjective(td, config.mode, config.sctd_config())
    objective, optimizer = accelerator.prepare(objective, optimizer)
    device = accelerator.device

    if config.checkpoint_dir:                   # before step 0: a writable folder; stale .tmp-step-* removed
        check_checkpoint_dir(config.checkpoint_dir, clean=accelerator.is_main_process)
    if rank > 0:                                # every rank its own dropout masks; rank 0 draws as one process would
        torch.manual_seed(_seed(config.seed, rank, 3))
    history = PretrainHistory(config=asdict(config))
    step, position = 0, 0
    source = latest_checkpoint(config.checkpoint_dir) if config.resume else None   # newest complete one
    if source is not None:
        step, position, history = _load_checkpoint(source, config, td, optimizer, scheduler, accelerator)

    end = config.steps if stop_after is None else min(config.steps, stop_after)
    updates_importance = config.mode in ("token_drop", "sctd")
    bar = tqdm(total=config.steps, initial=step, desc=config.mode,
               disable=not (config.progress and accelerator.is_main_process), leave=False)
    start_tracking(accelerator, config.run_name or default_run_name(config.mode), history.config)
    try:
        while step < end:
            rows = sample_indices(position + rank * config.batch_size, config.batch_size, len(train_blocks),
                                  config.seed)
            inputs, labels = mask_tokens(train_blocks[rows], tokenizer.mask_token_id, len(tokenizer), special_ids,
                                         torch.Generator().manual_seed(_seed(config.seed, step, rank, 0)),
                                         config.mlm_probability)
            inputs, labels = inputs.to(device), labels.to(device)
            drop_generator = torch.Generator(device=device).manual_seed(_seed(config.seed, step, rank, 1))
            _synchronize(device)
            start = time.perf_counter()
            loss, terms, out = objective(inputs, torch.ones_like(inputs), labels, step, drop_generator)
            accelerator.backward(loss)
            if config.max_grad_norm is not None:
                accelerator.clip_grad_norm_(objective.parameters(), config.max_grad_norm)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            if not accelerator.optimizer_step_was_skipped:
                scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if updates_importance:
                td.update_importance(out)                   # a collective under DDP: every rank calls it
            values = _log_values(accelerator, loss, terms)
            _synchronize(device)
            seconds = time.perf_counter() - start
            full_step = config.mode == "sctd" and is_full_step(step, config.fi, config.full_pass_at)
            history.steps.append({"step": step, **values, "is_full_step": full_step, "lr": lr, "seconds": seconds,
                                  "tokens_per_second": world * config.batch_size * config.block_size / seconds})
            if accelerator.trackers:                # main process only; after the timed step, from the record
                accelerator.log(_step_scalars(history.steps[-1], world * config.batch_size), step=step + 1)
            step, position = step + 1, position + world * config.batch_size
            bar.update(1)
            bar.set_postfix(loss=f"{values['loss']:.3f}")
            last = step == config.steps
            if config.eval_every and (step % config.eval_every == 0 or last):
                dev_loss = evaluate(td, dev_inputs, dev_labels, config.eval_batch_size, accelerator)
                history.evals.append({"step": step, "dev_mlm_loss": dev_loss})
                if accelerator.trackers:
                    accelerator.log({"eval/mlm_loss": dev_loss}, step=step)
                objective.train()
            if config.checkpoint_every and (step % config.checkpoint_every == 0 or last):
                _save_checkpoint(config, step, position, td, optimizer, scheduler, history, accelerator)
    finally:
        bar.close()
        end_tracking(accelerator)

    if config.output_dir and step == config.steps and accelerator.is_main_process:
        out_dir = Path(config.output_dir)
        td.mlm.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        import json

        (out_dir / "history.json").write_text(json.dumps(history.as_dict(), indent=1))
    accelerator.wait_for_everyone()
    return td, history


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step_scalars(record: dict, blocks: int) -> dict:
    """What a tracker gets of a step record (at step = steps done): loss, learning rate, the Eq. 4 terms that ran,
    blocks in the step, padding (0: blocks are full), tokens/s and the step's seconds."""
    values = {"train/loss": record["loss"], "train/learning_rate": record["lr"], "train/batch_size": blocks,
              "train/padding_fraction": 0.0, "train/tokens_per_second": record["tokens_per_second"],
              "train/step_seconds": record["seconds"]}
    values.update({f"train/{name}": record[name] for name in TERMS if record[name] is not None})
    return values


def _log_values(accelerator: Any, loss: torch.Tensor, terms: dict) -> dict:
    """Loss and terms as floats (None where absent), averaged over processes."""
    names = ("loss", *TERMS)
    vector = torch.tensor([float("nan")] * len(names), device=loss.device)
    for i, name in enumerate(names):
        value = loss if name == "loss" else terms.get(name)
        if value is not None:
            vector[i] = value.detach().float()
    if accelerator.num_processes > 1:
        vector = accelerator.reduce(vector, reduction="mean")
    return {name: None if math.isnan(v) else v for name, v in zip(names, vector.tolist(), strict=True)}


@torch.no_grad()
def evaluate(td: TokenDroppingBert, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int = 32,
             accelerator: Any = None) -> float:
    """Dev MLM loss of the full model (drop=False): mean cross-entropy over all masked positions."""
    check_int("batch_size", batch_size, low=1)
    was_training = td.training
    td.eval()
    device = next(td.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(inputs), batch_size):
        ids, lab = inputs[start:start + batch_size].to(device), labels[start:start + batch_size].to(device)
        context = accelerator.autocast() if accelerator is not None else torch.autocast(device.type, enabled=False)
        with context:
            out = td(ids, torch.ones_like(ids), labels=lab, drop=False)
        total += float(out.per_prediction_loss.float().sum())
        count += out.per_prediction_loss.numel()
    td.train(was_training)
    return total / max(count, 1)


def _save_checkpoint(config: PretrainConfig, step: int, position: int, td: TokenDroppingBert, optimizer: Any,
                     scheduler: Any, history: PretrainHistory, accelerator: Any) -> Path:
    """Write checkpoint_dir/step-NNNNNN (atomically, see :func:`tdnotebooks.checkpoints.save_checkpoint`)."""
    scaler = getattr(accelerator, "scaler", None)
    state = {"step": step, "position": position, "model": td.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
             "history": history.as_dict(), "config": asdict(config), "world_size": accelerator.num_processes,
             "architecture": model_architecture(td.mlm)}
    return save_checkpoint(config.checkpoint_dir, step, state, accelerator, keep=config.keep_checkpoints)


def _load_checkpoint(path: Path, config: PretrainConfig, td: TokenDroppingBert, optimizer: Any, scheduler: Any,
                     accelerator: Any) -> tuple[int, int, PretrainHistory]:
    """Load a checkpoint into the run after checking the settings, the architecture and the global batch."""
    import warnings

    state, rng = load_checkpoint(path, accelerator.process_index)   # a missing RNG file: a ValueError
    saved = state["config"]
    saved = {**LEGACY_SETTINGS, **saved}
    differs = [f"{k}: checkpoint {saved.get(k)!r}, now {getattr(config, k)!r}" for k in RESUME_MUST_MATCH
               if saved.get(k) != getattr(config, k)]
    if differs:
        note = (" (the learning-rate schedule spans steps: to stop earlier use stop_after, to train longer start "
                "a new checkpoint_dir)" if saved.get("steps") != config.steps else "")
        raise ValueError(f"cannot resume from {path}: settings differ ({'; '.join(differs)}){note}")
    check_architecture(path, state.get("architecture"), td.mlm)       # one clear error, not size mismatches
    world_change = _check_world_size(path, saved, state["world_size"], config, accelerator.num_processes)
    td.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler = getattr(accelerator, "scaler", None)
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    if world_change is None:
        set_rng_state(rng)
    else:                                       # another number of processes: fresh, but seeded, streams
        warnings.warn(world_change, stacklevel=3)
        torch.manual_seed(_seed(config.seed, state["step"], accelerator.process_index, 2))
    saved_history = state["history"]
    history = PretrainHistory(config=asdict(config), steps=saved_history["steps"], evals=saved_history["evals"],
                              resumed_from=state["step"])
    return state["step"], state["position"], history


def _check_world_size(path: Path, saved: dict, saved_world: int, config: PretrainConfig, world: int) -> str | None:
    """None when processes and batch_size are the checkpoint's. The global batch (processes x batch_size
    blocks) must stay: another split of it is allowed (the message to warn with is returned), another size
    is a ValueError that says which batch_size keeps it."""
    saved_batch = saved["batch_size"]
    saved_global, now_global = saved_world * saved_batch, world * config.batch_size
    if (saved_world, saved_batch) == (world, config.batch_size):
        return None
    if now_global == saved_global:
        return (f"resuming from {path} with {world} process(es) x batch_size={config.batch_size} (saved with "
                f"{saved_world} x {saved_batch}): the same global batch of {saved_global} blocks in the same "
                "order, but the masks and dropout are drawn afresh, so the run is not bit-identical to an "
                "uninterrupted one")
    keep = (f"batch_size={saved_global // world} (--batch-size {saved_global // world}) with {world} process(es)"
            if saved_global % world == 0 else f"a number of processes that divides {saved_global}")
    raise ValueError(f"cannot resume from {path}: the global batch would change from {saved_world} process(es) x "
                     f"batch_size={saved_batch} = {saved_global} blocks to {world} x {config.batch_size} = "
                     f"{now_global}; to keep it, resume with {keep}, or with {saved_world} process(es) and "
                     f"batch_size={saved_batch}")


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tdnotebooks.pretraining",
                                     description="MLM pretraining: baseline, token_drop, random_drop or sctd.")
    scalar = {"int": int, "float": float, "str": str}
    for f in fields(PretrainConfig):
        flag = "--" + f.name.replace("_", "-")
        names = [flag, "--lambda"] if f.name == "lam" else [flag]
        kind = str(f.type).replace(" ", "")
        if kind == "bool":
            parser.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default)
            continue
        base, optional = kind.split("|")[0], kind.endswith("|None")
        choices = {"mode": PRETRAIN_MODES, "device": DEVICES, "mixed_precision": MIXED_PRECISIONS}.get(f.name)
        parser.add_argument(*names, dest=f.name, type=_field_type(f.name, scalar[base], optional), default=f.default,
                            choices=choices, help=f"default: {f.default}")
    return parser


def _field_type(name: str, convert: Any, optional: bool) -> Any:
    """The argparse ``type`` of a config field: the text converted, then checked by :class:`PretrainConfig` itself
    (one source of truth for every range), so ``--steps -1`` is a usage error naming ``--steps``. A refusal that
    names another field (``checkpoint_dir must be set when checkpoint_every > 0``) is left to :func:`main`, which
    sees every option."""
    def parse(text: str) -> Any:
        if optional and text.lower() == "none":
            value = None
        else:
            try:
                value = convert(text)
            except ValueError:
                value = text                            # the config refuses it in its own words: "got 'abc'"
        try:
            PretrainConfig(**{name: value})
            if name == "corpus":                        # load_corpus's rule, before the model is built
                from tdnotebooks.data import check_corpus_name

                check_corpus_name(value, name_of="corpus")
        except ValueError as error:
            if re.match(rf"{name}\b(?!_)", str(error)):
                raise argparse.ArgumentTypeError(str(error)) from None
        return value

    parse.__name__ = convert.__name__                   # argparse's fallback: "invalid int value"
    return parse


def main(argv: list[str] | None = None) -> PretrainHistory:
    """CLI entry point: ``python -m tdnotebooks.pretraining --mode sctd --steps 50`` (any config field)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        config = PretrainConfig(**vars(args))
        if config.checkpoint_dir:               # a file, or not writable: a usage error before anything runs
            check_checkpoint_dir(config.checkpoint_dir, clean=False)
    except ValueError as error:
        parser.error(str(error))                # exit status 2, the message after the usage line
    from tdnotebooks.data import HubUnavailableError

    try:
        _, history = pretrain(config)
    except ValueError as error:                 # refused at pretrain's door (e.g. a checkpoint to resume that
        parser.error(str(error))                # does not match these settings): a usage error too
    except HubUnavailableError as error:        # a hub corpus while offline: not a usage error, but one line
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    if history.steps and int(os.environ.get("RANK", "0")) == 0:       # one summary line, not one per process
        last = history.steps[-1]
        speed = float(np.mean([s["tokens_per_second"] for s in history.steps]))
        dev = f", dev MLM loss {history.evals[-1]['dev_mlm_loss']:.4f}" if history.evals else ""
        print(f"{config.mode}: {len(history.steps)} steps, last loss {last['loss']:.4f}{dev}, "
              f"{speed:,.0f} tokens/s, {history.train_seconds:.1f} s")
    return history


if __name__ == "__main__":
    main()
