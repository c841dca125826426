"""Fine-tuning with RandomSampler, group_by_length, BucketSampler or TokenDrop + BucketSampler.

A transparent loop for the notebooks and benchmark (:func:`finetune`) and a Hugging Face ``Trainer``
subclass for real projects (:class:`BucketTrainer`). Both build their batches with
:func:`make_batching`, so "what batches does method X make" has one answer.

Methods (``FinetuneConfig.method``):

- ``"random"``: random batches of ``base_batch_size`` padded to their longest (the paper's baseline);
- ``"group_by_length"``: Hugging Face's ``LengthGroupedSampler`` (Trainer's ``group_by_length``);
- ``"bucket"``: BucketSampler (buckets, HWCap, BatchCap, RBM) + LRM, padded to the batch's longest;
- ``"tokendrop_bucket"``: BucketSampler + Algorithm 3 (trim to the batch's shortest by dropping stopwords).
  By default the few examples with too few stopwords to reach their bucket's lower bound are batched
  together (``order_by_reachable``, see ``BucketSampler(reachable_lengths=...)``) and each batch is trimmed
  only as far as its members can go (``trim_to="reachable"``), which keeps padding near zero;
  ``order_by_reachable=False, trim_to="shortest"`` is Algorithms 2 and 3 exactly as written.

``token_drop_rate > 0`` adds TokenDrop at a global rate (Algorithm 1) to ``"random"`` (and to
``"group_by_length"``): the regularizer on its own.

TokenDrop regularizes, so the paper trains with less dropout when it is on (Appendix, Table 6): 0 on data
sets of fewer than 10,000 training examples, 0.025 on larger ones, against 0.1 without it. ``finetune``
and ``BucketTrainer`` do the same (``tokendrop_dropout="paper"``) and restore the model's rates afterwards.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader

from tdnotebooks.finetuning.bucketing import BucketSampler
from tdnotebooks.finetuning.callbacks import FinetuneCallback
from tdnotebooks.finetuning.collate import PadToBatchMax
from tdnotebooks.finetuning.lrm import LRModulator
from tdnotebooks.finetuning.tokendrop import TRIM_TARGETS
from tdnotebooks.padding import PaddingStats
from tdnotebooks.runtime import amp_dtype as pick_amp_dtype
from tdnotebooks.runtime import get_device, seed_everything
from tdnotebooks.validation import check_bool, check_choice, check_int, check_number, is_number

__all__ = [
    "FinetuneConfig", "tokendrop_dropout_rate", "set_dropout", "restore_dropout", "dropout_rate", "Batching",
    "make_batching", "FinetuneHistory", "finetune",
]

METHODS = ("random", "group_by_length", "bucket", "tokendrop_bucket")


def _is_dropout_rate(value: Any) -> bool:
    """A number in [0, 1) (bools are not rates): FinetuneConfig.tokendrop_dropout and set_dropout's rate."""
    return is_number(value) and 0 <= value < 1


@dataclass
class FinetuneConfig:
    """Hyperparameters; defaults follow the paper where it gives them (width 5, scaling factor 2)."""

    method: str = "random"
    epochs: int = 3
    lr: float = 5e-5
    base_batch_size: int = 32
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    bucket_width: int = 5
    token_budget: int | None = 4096  # HWCap per bucket = token_budget // bucket length
    scaling_factor: float = 2.0       # BatchCap = base_batch_size * scaling_factor ** epoch
    batch_cap: bool = True
    rbm: bool = True
    lrm: bool = True
    token_drop_rate: float = 0.0      # TokenDrop at a global rate (Algorithm 1); 0 = off
    keep_pronouns: bool = False
    trim_to: str = "reachable"        # Algorithm 3 target: "shortest" (as written) or "reachable" (see tokendrop)
    order_by_reachable: bool = True   # tokendrop_bucket: batch stopword-poor examples together (see BucketSampler)
    tokendrop_dropout: float | str | None = "paper"  # dropout while TokenDrop is on; see tokendrop_dropout_rate
    freeze_embeddings: bool = False   # keep word embeddings fixed: a much cheaper optimizer step on CPU
    grad_accum_steps: int = 1
    max_grad_norm: float | None = 1.0
    eval_batch_size: int = 128
    seed: int = 0
    device: str | None = None
    amp: bool = True                  # autocast on CUDA (bf16 where supported); ignored on CPU
    progress: bool = True

    def __post_init__(self) -> None:
        check_choice("method", self.method, METHODS)
        for name in ("epochs", "base_batch_size", "grad_accum_steps", "eval_batch_size", "bucket_width"):
            check_int(name, getattr(self, name), low=1)
        check_int("seed", self.seed, low=0)
        if self.token_budget is not None:
            check_int("token_budget", self.token_budget, low=1)
        check_number("lr", self.lr, low=0, low_open=True)
        check_number("weight_decay", self.weight_decay, low=0)
        if self.max_grad_norm is not None:
            check_number("max_grad_norm", self.max_grad_norm, low=0, low_open=True)
        check_number("scaling_factor", self.scaling_factor, low=1)  # BucketSampler's range
        check_number("token_drop_rate", self.token_drop_rate, low=0, high=1)
        check_number("warmup_ratio", self.warmup_ratio, low=0, high=1, high_open=True)
        for name in ("batch_cap", "rbm", "lrm", "keep_pronouns", "order_by_reachable", "freeze_embeddings", "amp",
                     "progress"):
            check_bool(name, getattr(self, name))
        check_choice("trim_to", self.trim_to, TRIM_TARGETS)
        if self.device is not None and not isinstance(self.device, str):
            raise ValueError(f"device must be None (automatic) or a str such as 'cpu' or 'cuda', got {self.device!r}")
        dropout = self.tokendrop_dropout
        if dropout is not None and dropout != "paper" and not _is_dropout_rate(dropout):
            raise ValueError(f"tokendrop_dropout must be 'paper', None (keep the model's) or a number in [0, 1), "
                             f"got {dropout!r}")
        if self.token_drop_rate > 0 and self.method in ("bucket", "tokendrop_bucket"):
            raise ValueError(f"token_drop_rate applies to method 'random' or 'group_by_length', not {self.method!r}"
                             " (use method='tokendrop_bucket' for TokenDrop with BucketSampler)")


PAPER_DROPOUT_SMALL_DATA = 10_000  # fewer training examples than this: dropout 0 with TokenDrop (Table 6)


def tokendrop_dropout_rate(config: FinetuneConfig, num_train_examples: int) -> float | None:
    """The dropout rate to train with, or None to keep the model's own.

    Only when TokenDrop is on (``method="tokendrop_bucket"`` or ``token_drop_rate > 0``).
    ``tokendrop_dropout="paper"``: 0.0 below 10,000 training examples, else 0.025 (paper, Appendix, Table 6,
    stated for TokenDrop + BucketSampler; the reason it gives is TokenDrop's regularization, so we also apply
    it to TokenDrop alone, ``token_drop_rate > 0``, an extension; the reference code lowers it for
    BucketSampler without TokenDrop too, which we do not). A number: that rate. None: the model's own.
    """
    check_int("num_train_examples", num_train_examples, low=0)
    uses_token_drop = config.method == "tokendrop_bucket" or config.token_drop_rate > 0
    if not uses_token_drop or config.tokendrop_dropout is None:
        return None
    if config.tokendrop_dropout == "paper":
        return 0.0 if num_train_examples < PAPER_DROPOUT_SMALL_DATA else 0.025
    return float(config.tokendrop_dropout)


def set_dropout(model: torch.nn.Module, rate: float | None) -> list[tuple[torch.nn.Dropout, float]]:
    """Set the rate of every ``nn.Dropout`` in ``model`` (embeddings, attention, hidden, classifier) to ``rate``;
    returns each module's previous rate for :func:`restore_dropout`. ``rate=None`` changes nothing."""
    if rate is not None and not _is_dropout_rate(rate):
        raise ValueError(f"rate must be None (keep the model's dropout) or a number in [0, 1), got {rate!r}")
    modules = [] if rate is None else [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    saved = [(m, m.p) for m in modules]
    for module in modules:
        module.p = float(rate)
    return saved


def restore_dropout(saved: list[tuple[torch.nn.Dropout, float]]) -> None:
    """Put back the rates :func:`set_dropout` returned."""
    for module, p in saved:
        module.p = p


@contextmanager
def dropout_rate(model: torch.nn.Module, rate: float | None) -> Iterator[None]:
    """:func:`set_dropout` while inside, then the model's own rates again (also after an exception)."""
    saved = set_dropout(model, rate)
    try:
        yield
    finally:
        restore_dropout(saved)


@dataclass
class Batching:
    """What one method feeds the model: a batch sampler and a collator (which counts padding)."""

    batch_sampler: Any
    collate: Callable
    set_epoch: Callable[[int], None]
    variable_batch_size: bool

    def loader(self, data: Any) -> DataLoader:
        return DataLoader(data, batch_sampler=self.batch_sampler, collate_fn=self.collate)

    def num_batches(self, epoch: int) -> int:
        self.set_epoch(epoch)
        return len(self.batch_sampler)


class _SeededRandomBatches(torch.utils.data.Sampler):
    """Random batches of a fixed size, reshuffled per epoch from (seed, epoch): the RandomSampler baseline."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __iter__(self):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n).tolist()
        return iter([order[i:i + self.batch_size] for i in range(0, self.n, self.batch_size)])


def make_batching(config: FinetuneConfig, train: Any, pad_token_id: int) -> Batching:
    """Batch sampler + collator of ``config.method`` over a tokenized, :func:`tokendrop.prepare`-d split."""
    if not isinstance(config, FinetuneConfig):
        raise ValueError(f"config must be a FinetuneConfig, got {type(config).__name__}")
    check_int("pad_token_id", pad_token_id, low=0)
    from tdnotebooks.finetuning.tokendrop import (
        TokenDrop,
        TokenDropBucketCollator,
        TokenDropCollator,
        reachable_lengths,
    )

    lengths = train["length"]
    token_drop = TokenDrop(mode="to_length", seed=config.seed, keep_pronouns=config.keep_pronouns)
    if config.method in ("bucket", "tokendrop_bucket"):
        reachable = None
        if config.method == "tokendrop_bucket" and config.order_by_reachable:
            reachable = reachable_lengths(train, token_drop)
        sampler: Any = BucketSampler(lengths=lengths, bucket_width=config.bucket_width,
                                     token_budget=config.token_budget, base_batch_size=config.base_batch_size,
                                     scaling_factor=config.scaling_factor, batch_cap=config.batch_cap,
                                     rbm=config.rbm, seed=config.seed, reachable_lengths=reachable)
    elif config.method == "group_by_length":
        from transformers.trainer_pt_utils import LengthGroupedSampler

        generator = torch.Generator().manual_seed(config.seed)
        grouped = LengthGroupedSampler(config.base_batch_size, lengths=list(lengths), generator=generator)
        sampler = BatchSampler(grouped, config.base_batch_size, drop_last=False)
        sampler.set_epoch = lambda epoch: generator.manual_seed(config.seed + epoch)
    else:
        sampler = _SeededRandomBatches(len(lengths), config.base_batch_size, config.seed)

    if config.method == "tokendrop_bucket":
        collate: Any = TokenDropBucketCollator(token_drop, pad_token_id, trim_to=config.trim_to)
    elif config.token_drop_rate > 0:
        collate = TokenDropCollator(TokenDrop(rate=config.token_drop_rate, seed=config.seed,
                                              keep_pronouns=config.keep_pronouns), pad_token_id)
    else:
        collate = PadToBatchMax(pad_token_id)

    def set_epoch(epoch: int) -> None:
        sampler.set_epoch(epoch)
        if hasattr(collate, "set_epoch"):
            collate.set_epoch(epoch)

    return Batching(sampler, collate, set_epoch, variable_batch_size=config.method in ("bucket", "tokendrop_bucket"))


@dataclass
class FinetuneHistory:
    """Per optimizer step and per epoch records, ready for ``pandas.DataFrame(history.steps)``."""

    config: dict
    steps: list[dict] = field(default_factory=list)
    epochs: list[dict] = field(default_factory=list)

    @property
    def train_seconds(self) -> float:
        return sum(e["train_seconds"] for e in self.epochs)

    @property
    def padding(self) -> PaddingStats:
        return PaddingStats(sum(e["real_tokens"] for e in self.epochs), sum(e["slot_tokens"] for e in self.epochs),
                            sum(e["num_batches"] for e in self.epochs))

    @property
    def final_dev_accuracy(self) -> float:
        return self.epochs[-1]["dev_accuracy"]

    def as_dict(self) -> dict:
        return asdict(self)


def _collator_counts(collate: Any) -> tuple[int, int, int]:
    stats = collate.stats
    return stats.real_tokens, stats.slot_tokens, stats.num_batches


def finetune(model: torch.nn.Module, train: Any, dev: Any, config: FinetuneConfig | None = None, *,
             pad_token_id: int = 0, callbacks: Sequence[FinetuneCallback] = (), **overrides: Any
             ) -> FinetuneHistory:
    """Fine-tune a sequence classifier on ``train`` and evaluate on ``dev`` after every epoch.

    ``train``/``dev``: splits from :func:`tdnotebooks.finetuning.tokendrop.prepare` (``input_ids``, ``length``,
    ``stopword_spans``, ``idx``, ``label``). Keyword overrides replace config fields
    (``finetune(model, train, dev, method="bucket", epochs=2)``). AdamW, linear warm-up and decay over
    the exact number of optimizer steps of all epochs, LRM on variable-size batches, AMP on CUDA, the
    paper's lower dropout while TokenDrop is on (:func:`tokendrop_dropout_rate`; recorded in
    ``history.config["train_dropout"]``, None = the model's own). ``callbacks``: :class:`FinetuneCallback`
    instances that observe the run.
    """
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    from tdnotebooks.finetuning.inference import predict

    config = FinetuneConfig(**{**asdict(config or FinetuneConfig()), **overrides})
    seed_everything(config.seed)
    device = get_device(config.device)
    dtype = pick_amp_dtype(device) if config.amp else None
    model.to(device).train()

    if config.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    batching = make_batching(config, train, pad_token_id)
    for callback in callbacks:
        callback.on_batching(batching)
    steps_per_epoch = [math.ceil(batching.num_batches(e) / config.grad_accum_steps) for e in range(config.epochs)]
    total_steps = sum(steps_per_epoch)
    trainable = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.ndim > 1]
    no_decay = [p for p in trainable if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    use_lrm = config.lrm and batching.variable_batch_size
    modulator = LRModulator(optimizer, config.base_batch_size)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    history = FinetuneHistory(config={**asdict(config), "train_dropout": tokendrop_dropout_rate(config, len(train))})
    with dropout_rate(model, history.config["train_dropout"]):
        loader = batching.loader(train)
        optimizer.zero_grad(set_to_none=True)  # gradients left over from earlier use must not leak into step 0
        step = 0

        for epoch in range(config.epochs):
            batching.set_epoch(epoch)
            real0, slots0, batches0 = _collator_counts(batching.collate)
            losses, examples_in_step, micro = [], 0, 0
            bar = tqdm(total=len(loader), desc=f"{config.method} epoch {epoch + 1}/{config.epochs}",
                       disable=not config.progress, leave=False)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            for batch in loader:
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    loss = model(**batch).loss
                scaler.scale(loss / config.grad_accum_steps).backward()
                losses.append(loss.item())
                examples_in_step += batch["input_ids"].shape[0]
                micro += 1
                bar.update(1)
                if micro % config.grad_accum_steps and micro < len(loader):
                    continue
                if config.max_grad_norm:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                lr = scheduler.get_last_lr()[0]
                with modulator.modulated(examples_in_step if use_lrm else config.base_batch_size) as factor:
                    scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                history.steps.append({"step": step, "epoch": epoch, "loss": float(np.mean(losses[-micro:])),
                                      "batch_size": examples_in_step, "seq_len": int(batch["input_ids"].shape[1]),
                                      "lr": lr * factor})
                for callback in callbacks:
                    callback.on_step_end(history.steps[-1])
                step, examples_in_step, micro = step + 1, 0, 0
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_seconds = time.perf_counter() - start
            bar.close()
            real1, slots1, batches1 = _collator_counts(batching.collate)
            for callback in callbacks:
                callback.on_evaluate_begin(epoch)
            dev_pred = predict(model, dev, batching="bucketed", batch_size=config.eval_batch_size,
                               pad_token_id=pad_token_id, amp_dtype=dtype)
            for callback in callbacks:
                callback.on_evaluate_end(epoch)
            model.train()
            history.epochs.append({
                "epoch": epoch, "train_loss": float(np.mean(losses)), "train_seconds": train_seconds,
                "dev_accuracy": dev_pred.accuracy(dev["label"]),
                "dev_loss": float(torch.nn.functional.cross_entropy(dev_pred.logits, torch.as_tensor(dev["label"]))),
                "real_tokens": real1 - real0, "slot_tokens": slots1 - slots0, "num_batches": batches1 - batches0,
            })
            for callback in callbacks:
                callback.on_epoch_end(history.epochs[-1])
    return history
