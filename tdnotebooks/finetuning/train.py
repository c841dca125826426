"""Fine-tuning with RandomSampler, group_by_length, BucketSampler or TokenDrop + BucketSampler.

A transparent loop for the notebooks and benchmark (:func:`finetune`) and a Hugging Face ``Trainer``
subclass for real projects (:class:`BucketTrainer`). Both build their batches with
:func:`make_batching`, so "what batches does method X make" has one answer.

Methods (``FinetuneConfig.method``):

- ``"random"``: random batches of ``base_batch_size`` padded to their longest (the paper's baseline);
- ``"group_by_length"``: Hugging Face's ``LengthGroupedSampler`` (Trainer's ``group_by_length``);
- ``"bucket"``: BucketSampler (buckets, HWCap, BatchCap, RBM) + LRM, padded to the batch's longest;
- ``"tokendrop_bucket"``: BucketSampler + Algorithm 3 (trim the batch by dropping stopwords). The default
  is this package's own reading, not the paper's nor its code's: full batches are cut only from examples
  that can be trimmed to their bucket's floor, all other examples (the stopword-poor ones and the buckets'
  leftovers) are merged by the width they can be trimmed to (``order_by_reachable``, ``rbm_by_reachable``;
  see :mod:`tdnotebooks.finetuning.planning`), and each batch is trimmed only as far as its members can go
  (``trim_to="reachable"``): padding stays near zero on any length distribution.
  ``trim_to="shortest", order_by_reachable=False, rbm_by_reachable=False`` is Algorithms 2 and 3 exactly as
  written (trim to the batch's shortest member); ``trim_to="bucket_floor", order_by_reachable=False,
  rbm_by_reachable=False`` is the reference code (every sequence trimmed to its bucket's lower edge).
  Which stopwords go first: ``token_drop_unit="type"`` (Algorithm 1 and the reference code: shuffled
  stopword types) or ``"occurrence"`` (shuffled stopword words), see :class:`~tdnotebooks.finetuning.tokendrop.TokenDrop`.

``token_drop_rate > 0`` adds TokenDrop at a global rate (Algorithm 1) to ``"random"`` (and to
``"group_by_length"``): the regularizer on its own.

TokenDrop regularizes, so the paper trains with less dropout when it is on (Appendix, Table 6): 0 on data
sets of fewer than 10,000 training examples, 0.025 on larger ones, against 0.1 without it. ``finetune``
and ``BucketTrainer`` do the same (``tokendrop_dropout="paper"``) and restore the model's rates afterwards.
"""

from __future__ import annotations

import math
import numbers
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader

from tdnotebooks.checkpoints import check_checkpoint_dir
from tdnotebooks.finetuning.bucketing import BucketSampler
from tdnotebooks.finetuning.callbacks import FinetuneCallback
from tdnotebooks.finetuning.collate import PadToBatchMax
from tdnotebooks.finetuning.lrm import LRModulator
from tdnotebooks.finetuning.tasks import FinetuneTask, check_task
from tdnotebooks.finetuning.tokendrop import DROP_UNITS, TRIM_TARGETS
from tdnotebooks.padding import PaddingStats
from tdnotebooks.runtime import amp_dtype as pick_amp_dtype
from tdnotebooks.runtime import default_run_name, end_tracking, get_device, seed_everything, start_tracking
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
    token_drop_unit: str = "type"     # which stopwords go first: "type" (Algorithm 1 / reference code: shuffled
                                      # stopword types) or "occurrence" (shuffled stopword words); see TokenDrop
    keep_pronouns: bool = False
    trim_to: str = "reachable"        # Algorithm 3 target. "reachable": the package's own reading (default);
                                      # "shortest": Algorithm 3 as written; "bucket_floor": the reference code
    order_by_reachable: bool = True   # tokendrop_bucket: batch stopword-poor examples together (package's own)
    rbm_by_reachable: bool = True     # tokendrop_bucket: merge leftovers by the width they can be trimmed to
                                      # (planning.merge_by_reachable, package's own); False: Algorithm 2's RBM
    tokendrop_dropout: float | str | None = "paper"  # dropout while TokenDrop is on; see tokendrop_dropout_rate
    freeze_embeddings: bool = False   # keep word embeddings fixed: a much cheaper optimizer step on CPU
    grad_accum_steps: int = 1
    max_grad_norm: float | None = 1.0
    eval_batch_size: int = 128
    seed: int = 0
    device: str | None = None
    amp: bool = True                  # autocast on CUDA (bf16 where supported); ignored on CPU
    progress: bool = True
    checkpoint_dir: str | None = None  # where checkpoints go (a folder; created, checked before step 0)
    checkpoint_every: int | None = None  # optimizer steps between checkpoints (and one at the end); None: none
    keep_checkpoints: int | None = None  # keep only the newest N (None: all)
    resume: bool = False              # go on from the newest complete checkpoint of checkpoint_dir, exactly
    # experiment tracking through accelerate's trackers (tdnotebooks.runtime.check_report_to): "tensorboard",
    # "wandb", "all", a list, None/"none"; TensorBoard writes only with a logging_dir (to logging_dir/run_name)
    report_to: str | list[str] | None = "tensorboard"
    logging_dir: str | None = None
    run_name: str | None = None       # None: the method and the time ("tokendrop_bucket-20250101-120000")

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
        for name in ("batch_cap", "rbm", "lrm", "keep_pronouns", "order_by_reachable", "rbm_by_reachable",
                     "freeze_embeddings", "amp", "progress", "resume"):
            check_bool(name, getattr(self, name))
        check_choice("trim_to", self.trim_to, TRIM_TARGETS)
        check_choice("token_drop_unit", self.token_drop_unit, DROP_UNITS)
        for name in ("checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), low=1)
        for name in ("checkpoint_dir", "logging_dir"):
            if getattr(self, name) is not None:
                if not isinstance(getattr(self, name), (str, os.PathLike)):
                    raise ValueError(f"{name} must be None or a folder path, got {getattr(self, name)!r}")
                setattr(self, name, os.fspath(getattr(self, name)))
        if self.run_name is not None and (not isinstance(self.run_name, str) or not self.run_name.strip()):
            raise ValueError(f"run_name must be None or a non-empty str, got {self.run_name!r}")
        self.trackers()  # report_to: known names, installed where they will run
        if (self.checkpoint_every is not None or self.resume) and self.checkpoint_dir is None:
            raise ValueError("checkpoint_every and resume=True need checkpoint_dir (a folder), got checkpoint_dir=None")
        if self.device is not None and not isinstance(self.device, str):
            raise ValueError(f"device must be None (automatic) or a str such as 'cpu' or 'cuda', got {self.device!r}")
        get_device(self.device)     # 'tpu', or 'cuda' on a machine without one: refused now, not at training time
        dropout = self.tokendrop_dropout
        if dropout is not None and dropout != "paper" and not _is_dropout_rate(dropout):
            raise ValueError(f"tokendrop_dropout must be 'paper', None (keep the model's) or a number in [0, 1), "
                             f"got {dropout!r}")
        if self.token_drop_rate > 0 and self.method in ("bucket", "tokendrop_bucket"):
            raise ValueError(f"token_drop_rate applies to method 'random' or 'group_by_length', not {self.method!r}"
                             " (use method='tokendrop_bucket' for TokenDrop with BucketSampler)")

    def trackers(self) -> list[str]:
        """The trackers this run reports to (accelerate's names; [] for none), see ``report_to``."""
        from tdnotebooks.runtime import check_report_to

        return check_report_to(self.report_to, self.logging_dir)


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
    token_drop = TokenDrop(mode="to_length", seed=config.seed, keep_pronouns=config.keep_pronouns,
                           unit=config.token_drop_unit)
    if config.method in ("bucket", "tokendrop_bucket"):
        reachable = None
        if config.method == "tokendrop_bucket" and config.order_by_reachable:
            reachable = reachable_lengths(train, token_drop)
        sampler: Any = BucketSampler(lengths=lengths, bucket_width=config.bucket_width,
                                     token_budget=config.token_budget, base_batch_size=config.base_batch_size,
                                     scaling_factor=config.scaling_factor, batch_cap=config.batch_cap,
                                     rbm=config.rbm, seed=config.seed, reachable_lengths=reachable,
                                     rbm_by_reachable=config.rbm_by_reachable)
    elif config.method == "group_by_length":
        from transformers.trainer_pt_utils import LengthGroupedSampler

        generator = torch.Generator().manual_seed(config.seed)
        grouped = LengthGroupedSampler(config.base_batch_size, lengths=list(lengths), generator=generator)
        sampler = BatchSampler(grouped, config.base_batch_size, drop_last=False)
        sampler.set_epoch = lambda epoch: generator.manual_seed(config.seed + epoch)
    else:
        sampler = _SeededRandomBatches(len(lengths), config.base_batch_size, config.seed)

    if config.method == "tokendrop_bucket":
        collate: Any = TokenDropBucketCollator(token_drop, pad_token_id, trim_to=config.trim_to,
                                               bucket_width=config.bucket_width)
    elif config.token_drop_rate > 0:
        collate = TokenDropCollator(TokenDrop(rate=config.token_drop_rate, seed=config.seed,
                                              keep_pronouns=config.keep_pronouns, unit=config.token_drop_unit),
                                    pad_token_id)
    else:
        collate = PadToBatchMax(pad_token_id)

    def set_epoch(epoch: int) -> None:
        sampler.set_epoch(epoch)
        if hasattr(collate, "set_epoch"):
            collate.set_epoch(epoch)

    return Batching(sampler, collate, set_epoch, variable_batch_size=config.method in ("bucket", "tokendrop_bucket"))


@dataclass
class FinetuneHistory:
    """Per optimizer step and per epoch records, ready for ``pandas.DataFrame(history.steps)``.

    steps: step, epoch, loss, batch_size (examples), seq_len, lr (with LRM's factor), lrm_factor, real_tokens and
    slot_tokens of the step's batches (all ranks), padding_fraction. epochs: train_loss, train_seconds, the task's
    ``dev_*`` metrics, real_tokens, slot_tokens, num_batches.
    """

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

    @property
    def final_dev_metric(self) -> float:
        """The task's main dev metric after the last epoch (accuracy, SQuAD F1, ROUGE-L, ...)."""
        return self.epochs[-1][self.config["main_metric"]]

    def as_dict(self) -> dict:
        return asdict(self)


def _collator_counts(collate: Any) -> tuple[int, int, int]:
    stats = collate.stats
    return stats.real_tokens, stats.slot_tokens, stats.num_batches


# Settings a resumed run may change; every other FinetuneConfig field must equal the checkpoint's.
RESUME_MAY_DIFFER = ("progress", "eval_batch_size", "device", "checkpoint_dir", "checkpoint_every",
                     "keep_checkpoints", "resume", "report_to", "logging_dir", "run_name")

def _data_fingerprint(train: Any) -> str:
    """Which examples in which order, by length: a resumed run must see the same training split."""
    import hashlib

    return hashlib.sha256(np.asarray(train["length"], dtype=np.int64).tobytes()).hexdigest()[:16]


def _optimizer_steps(batches: list, grad_accum_steps: int) -> list[list]:
    """An epoch's batches grouped into optimizer steps of ``grad_accum_steps`` micro-batches; the last step
    takes what is left (it is stepped too)."""
    return [batches[i:i + grad_accum_steps] for i in range(0, len(batches), grad_accum_steps)]


@dataclass
class _EpochTally:
    """What an epoch record sums, carried across a resume inside the epoch."""

    loss_sum: float = 0.0      # sum over optimizer steps of (mean loss of the step x its examples)
    examples: int = 0
    seconds: float = 0.0
    real_tokens: int = 0
    slot_tokens: int = 0
    num_batches: int = 0


def finetune(model: torch.nn.Module, train: Any, dev: Any, config: FinetuneConfig | None = None, *,
             pad_token_id: int = 0, callbacks: Sequence[FinetuneCallback] = (), stop_after: int | None = None,
             task: FinetuneTask | None = None, **overrides: Any) -> FinetuneHistory:
    """Fine-tune ``model`` on ``train`` and evaluate on ``dev`` after every epoch (notebooks 03 and 08).

    Args:
        model: a Hugging Face model for the task (a sequence classifier by default); trained in place (with
            ``resume=True`` its weights are replaced by the checkpoint's).
        train, dev: splits from :func:`tdnotebooks.finetuning.tokendrop.prepare` (QA:
            :func:`tdnotebooks.finetuning.qa.prepare_qa`; seq2seq: :func:`tdnotebooks.finetuning.seq2seq.prepare_seq2seq`).
        config: a :class:`FinetuneConfig`; keyword ``overrides`` replace its fields
            (``finetune(model, train, dev, method="bucket", epochs=2)``).
        pad_token_id: the tokenizer's pad id.
        callbacks: :class:`FinetuneCallback` instances that observe the run.
        stop_after: return after this many optimizer steps in total, as if the run were killed there (no
            evaluation of the unfinished epoch); for resume demos and tests.
        task: what the labels are, the loss per example and the dev metrics (:mod:`tdnotebooks.finetuning.tasks`);
            None: sequence classification.

    AdamW, linear warm-up and decay over the exact number of optimizer steps of all epochs, LRM from the
    examples of each optimizer step, AMP on CUDA, the paper's lower dropout while TokenDrop is on
    (:func:`tokendrop_dropout_rate`; recorded in ``history.config["train_dropout"]``). Gradient accumulation
    groups ``grad_accum_steps`` consecutive batches into one optimizer step (an epoch's last step takes what
    is left), each example weighted equally. Several processes (``torchrun``): one global batch per step,
    its rows split across the ranks (:mod:`tdnotebooks.finetuning.distributed`). Checkpoints
    (``checkpoint_dir``, ``checkpoint_every`` optimizer steps, ``resume=True``) resume exactly: the same
    batches, token drops, dropout masks and weights as the uninterrupted run. Experiment tracking
    (``report_to``, ``logging_dir``, ``run_name``; accelerate's trackers, main process only): per optimizer step
    loss, learning rate, LRM factor, batch size, padding fraction, tokens/s; per epoch the task's dev metrics.

    Example:
        >>> history = finetune(model, train, dev, method="tokendrop_bucket", epochs=2)   # doctest: +SKIP
        >>> history.final_dev_accuracy, history.padding.padding_fraction                  # doctest: +SKIP
    """
    if config is not None and not isinstance(config, FinetuneConfig):
        raise ValueError(f"config must be None or a FinetuneConfig, got {type(config).__name__}")
    config = FinetuneConfig(**{**asdict(config or FinetuneConfig()), **overrides})
    if stop_after is not None:
        check_int("stop_after", stop_after, low=1)
    check_int("pad_token_id", pad_token_id, low=0)
    for i, callback in enumerate(callbacks):
        if not isinstance(callback, FinetuneCallback):
            raise ValueError(f"callbacks[{i}] must be a FinetuneCallback, got {type(callback).__name__}")
    task = check_task(task)
    uses_token_drop = config.method == "tokendrop_bucket" or config.token_drop_rate > 0
    needed = ("length", "stopword_spans", "idx") if uses_token_drop else ("length",)
    task.check(model, train, dev, pad_token_id, needed)  # model and data: one clear error before the model is touched
    run = _set_up(model, train, config, pad_token_id)
    history = FinetuneHistory(config={**asdict(config), "train_dropout": tokendrop_dropout_rate(config, len(train)),
                                      "world_size": run.world, "task": task.name, "main_metric": task.main_metric})
    position = _resume(run, config, train, history) if config.resume else (0, 0, _EpochTally())
    start_tracking(run.accelerator, config.run_name or default_run_name(config.method), history.config)
    try:
        with dropout_rate(model, history.config["train_dropout"]):
            _train(run, config, task, train, dev, history, position, pad_token_id, callbacks, stop_after)
    finally:
        end_tracking(run.accelerator)
    return history


@dataclass
class _Run:
    """Everything :func:`finetune` sets up before its first step."""

    model: Any            # the model being trained (unwrapped)
    ddp_model: Any        # the same, wrapped for DDP when several processes run
    accelerator: Any
    device: torch.device
    dtype: torch.dtype | None
    optimizer: Any
    scheduler: Any
    scaler: Any
    batching: Batching
    steps_per_epoch: list[int]
    world: int            # processes
    rank: int             # this process's index
    collate: Any = None   # ShardedCollator around batching.collate, made once the callbacks saw the batching


def _set_up(model: Any, train: Any, config: FinetuneConfig, pad_token_id: int) -> _Run:
    from transformers import get_linear_schedule_with_warmup

    from tdnotebooks.runtime import make_accelerator

    device = get_device(config.device)
    accelerator = make_accelerator(cpu=device.type != "cuda", log_with=config.trackers(), project_dir=config.logging_dir)
    if accelerator.num_processes > 1:
        device = accelerator.device
    if config.checkpoint_dir is not None:  # before step 0: a writable folder; stale .tmp-step-* removed
        check_checkpoint_dir(config.checkpoint_dir, clean=accelerator.is_main_process)
    seed_everything(config.seed)
    if accelerator.process_index > 0:  # every rank its own dropout masks; rank 0 draws as one process would
        torch.manual_seed(config.seed + 7919 * accelerator.process_index)
    dtype = pick_amp_dtype(device) if config.amp else None
    model.to(device).train()
    if config.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    batching = make_batching(config, train, pad_token_id)
    steps_per_epoch = [math.ceil(batching.num_batches(e) / config.grad_accum_steps) for e in range(config.epochs)]
    total_steps = sum(steps_per_epoch)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": [p for p in trainable if p.ndim > 1], "weight_decay": config.weight_decay},
                                   {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0}], lr=config.lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    optimizer.zero_grad(set_to_none=True)  # gradients left over from earlier use must not leak into step 0
    return _Run(model=model, ddp_model=accelerator.prepare_model(model, device_placement=False),
                accelerator=accelerator, device=device, dtype=dtype, optimizer=optimizer, scheduler=scheduler,
                scaler=torch.amp.GradScaler(device.type, enabled=dtype == torch.float16), batching=batching,
                steps_per_epoch=steps_per_epoch, world=accelerator.num_processes, rank=accelerator.process_index)


def _train(run: _Run, config: FinetuneConfig, task: FinetuneTask, train: Any, dev: Any, history: FinetuneHistory,
           position: tuple[int, int, _EpochTally], pad_token_id: int, callbacks: Sequence[FinetuneCallback],
           stop_after: int | None) -> None:
    """The epochs: optimizer steps of accumulated micro-batches, then the dev evaluation."""
    from tqdm.auto import tqdm

    from tdnotebooks.finetuning.distributed import ShardedCollator

    for callback in callbacks:
        callback.on_batching(run.batching)  # may wrap batching.collate
    run.collate = ShardedCollator(run.batching.collate, run.world, run.rank)
    start_epoch, start_step, tally = position
    global_step = sum(run.steps_per_epoch[:start_epoch]) + start_step
    nominal = config.base_batch_size * config.grad_accum_steps  # LRM's base: the examples of a full step
    use_lrm = config.lrm and run.batching.variable_batch_size
    modulator = LRModulator(run.optimizer, nominal)
    for epoch in range(start_epoch, config.epochs):
        run.batching.set_epoch(epoch)
        steps = _optimizer_steps(list(run.batching.batch_sampler), config.grad_accum_steps)
        first = start_step if epoch == start_epoch else 0
        tally = tally if epoch == start_epoch else _EpochTally()
        counts0 = _collator_counts(run.collate)
        loader = DataLoader(train, batch_sampler=[b for step in steps[first:] for b in step], collate_fn=run.collate,
                            generator=torch.Generator())  # its own: the global RNG (dropout) is left untouched
        micro_batches = iter(loader)
        bar = tqdm(total=len(steps), initial=first, desc=f"{config.method} epoch {epoch + 1}/{config.epochs}",
                   disable=not (config.progress and run.accelerator.is_main_process), leave=False)
        for index in range(first, len(steps)):
            _synchronize(run.device)
            start = time.perf_counter()
            examples = sum(len(b) for b in steps[index])  # N: every rank's rows of every micro-batch
            counts_before = _collator_counts(run.collate)  # the global batches' tokens (every rank collates them)
            loss_sum = torch.zeros((), device=run.device)
            for j in range(len(steps[index])):
                batch = {k: v.to(run.device, non_blocking=True) for k, v in next(micro_batches).items()}
                weight = batch.pop("example_weight")
                batch.pop("global_batch_size")
                labels = {key: batch.pop(key) for key in task.label_keys}
                last = j == len(steps[index]) - 1
                with run.accelerator.no_sync(run.ddp_model) if not last else nullcontext():
                    with torch.autocast(run.device.type, dtype=run.dtype, enabled=run.dtype is not None):
                        outputs = run.ddp_model(**task.model_inputs(batch, labels))
                    weighted = (weight * task.example_losses(outputs, labels, run.model)).sum()
                    run.scaler.scale(weighted * run.world / examples).backward()
                loss_sum += weighted.detach()
            if config.max_grad_norm:
                run.scaler.unscale_(run.optimizer)
                torch.nn.utils.clip_grad_norm_(run.model.parameters(), config.max_grad_norm)
            lr = run.scheduler.get_last_lr()[0]
            with modulator.modulated(examples if use_lrm else nominal) as factor:
                run.scaler.step(run.optimizer)
            run.scaler.update()
            run.scheduler.step()
            run.optimizer.zero_grad(set_to_none=True)
            step_loss = float(run.accelerator.reduce(loss_sum, reduction="sum")) / examples
            _synchronize(run.device)
            seconds = time.perf_counter() - start
            tally.seconds += seconds
            tally.loss_sum, tally.examples = tally.loss_sum + step_loss * examples, tally.examples + examples
            real, slots, _ = (now - before for now, before in zip(_collator_counts(run.collate), counts_before,
                                                                  strict=True))
            history.steps.append({"step": global_step, "epoch": epoch, "loss": step_loss, "batch_size": examples,
                                  "seq_len": int(batch["input_ids"].shape[1]), "lr": lr * factor,
                                  "lrm_factor": factor, "real_tokens": real, "slot_tokens": slots,
                                  "padding_fraction": 1 - real / slots if slots else 0.0})
            if run.accelerator.trackers:  # main process only; after the timed step, from the record
                run.accelerator.log(_step_scalars(history.steps[-1], seconds), step=global_step + 1)
            for callback in callbacks:
                callback.on_step_end(history.steps[-1])
            global_step += 1
            bar.update(1)
            if _checkpoint_due(config, global_step) and index + 1 < len(steps):  # at an epoch's end: after eval
                _save(run, config, train, history, global_step, (epoch, index + 1, _with_counts(tally, run, counts0)))
            if stop_after is not None and global_step >= stop_after:
                bar.close()
                return
        bar.close()
        tally = _with_counts(tally, run, counts0)
        for callback in callbacks:
            callback.on_evaluate_begin(epoch)
        metrics = task.evaluate(run.model, dev, batch_size=config.eval_batch_size, pad_token_id=pad_token_id,
                                amp_dtype=run.dtype)
        for callback in callbacks:
            callback.on_evaluate_end(epoch)
        run.model.train()
        history.epochs.append({
            "epoch": epoch, "train_loss": tally.loss_sum / tally.examples, "train_seconds": tally.seconds,
            **metrics,
            "real_tokens": tally.real_tokens, "slot_tokens": tally.slot_tokens, "num_batches": tally.num_batches,
        })
        if run.accelerator.trackers:
            run.accelerator.log(_epoch_scalars(history.epochs[-1], metrics), step=global_step)
        for callback in callbacks:
            callback.on_epoch_end(history.epochs[-1])
        if _checkpoint_due(config, global_step) or (config.checkpoint_every and epoch + 1 == config.epochs):
            _save(run, config, train, history, global_step, (epoch + 1, 0, _EpochTally()))


def _step_scalars(record: dict, seconds: float) -> dict:
    """What a tracker gets of a step record (at step = optimizer steps done), named as ``Trainer`` names them:
    loss, learning_rate (with LRM's factor), lrm_factor, batch_size (examples), padding_fraction (slot vs real
    tokens of the step's batches), seq_len, tokens_per_second (real tokens / the step's seconds)."""
    return {"train/loss": record["loss"], "train/learning_rate": record["lr"], "train/lrm_factor": record["lrm_factor"],
            "train/batch_size": record["batch_size"], "train/padding_fraction": record["padding_fraction"],
            "train/seq_len": record["seq_len"], "train/tokens_per_second": record["real_tokens"] / seconds,
            "train/step_seconds": seconds}


def _epoch_scalars(record: dict, metrics: dict) -> dict:
    """The dev metrics of an epoch (``dev_accuracy`` -> ``eval/accuracy``, as ``Trainer`` names ``eval_*``), the
    epoch's mean train loss and padding fraction."""
    values = {f"eval/{k.removeprefix('dev_')}": float(v) for k, v in metrics.items()
              if isinstance(v, numbers.Real) and not isinstance(v, bool)}
    values["train/epoch_loss"] = record["train_loss"]
    if record["slot_tokens"]:
        values["train/epoch_padding_fraction"] = 1 - record["real_tokens"] / record["slot_tokens"]
    return values


def _with_counts(tally: _EpochTally, run: _Run, counts0: tuple[int, int, int]) -> _EpochTally:
    """``tally`` plus the real/slot tokens and batches the collator made since it counted ``counts0``."""
    real, slots, batches = (now - before for now, before in zip(_collator_counts(run.collate), counts0, strict=True))
    return replace(tally, real_tokens=tally.real_tokens + real, slot_tokens=tally.slot_tokens + slots,
                   num_batches=tally.num_batches + batches)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------------------
# Checkpoints: exact resume at any optimizer step
# ----------------------------------------------------------------------------------------------------------


def _checkpoint_due(config: FinetuneConfig, global_step: int) -> bool:
    return bool(config.checkpoint_every) and global_step % config.checkpoint_every == 0


def _save(run: _Run, config: FinetuneConfig, train: Any, history: FinetuneHistory, global_step: int,
          position: tuple[int, int, _EpochTally]) -> None:
    from tdnotebooks.checkpoints import model_architecture, save_checkpoint

    epoch, step_in_epoch, tally = position
    state = {"global_step": global_step, "epoch": epoch, "step_in_epoch": step_in_epoch, "tally": asdict(tally),
             "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
             "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(),
             "history": history.as_dict(), "config": asdict(config), "world_size": run.world,
             "architecture": model_architecture(run.model, classifier=True),
             "data": {"examples": len(train), "fingerprint": _data_fingerprint(train)}}
    save_checkpoint(config.checkpoint_dir, global_step, state, run.accelerator, keep=config.keep_checkpoints)


def _resume(run: _Run, config: FinetuneConfig, train: Any, history: FinetuneHistory) -> tuple[int, int, _EpochTally]:
    """Load the newest complete checkpoint of ``config.checkpoint_dir`` into ``run`` and ``history`` (after
    checking the settings, the data and the model's architecture); where to go on. Another number of processes
    is allowed with a warning: the global batches do not depend on it, only the dropout masks do."""
    import warnings

    from tdnotebooks.checkpoints import check_architecture, latest_checkpoint, load_checkpoint, set_rng_state

    path = latest_checkpoint(config.checkpoint_dir)  # the newest complete one; damaged ones: skipped, warned
    if path is None:
        return 0, 0, _EpochTally()
    state, rng = load_checkpoint(path, run.rank)  # rng None only for a rank the checkpoint did not have
    saved = state["config"]
    differs = [f"{k}: checkpoint {saved.get(k)!r}, now {v!r}" for k, v in asdict(config).items()
               if k not in RESUME_MAY_DIFFER and saved.get(k) != v]
    if state["data"] != {"examples": len(train), "fingerprint": _data_fingerprint(train)}:
        differs.append(f"train: checkpoint {state['data']['examples']} examples, now {len(train)} (or other lengths)")
    if differs:
        raise ValueError(f"cannot resume from {path}: settings differ ({'; '.join(differs)})")
    check_architecture(path, state.get("architecture"), run.model, classifier=True)
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    if rng is not None and state["world_size"] == run.world:
        set_rng_state(rng)
    else:
        warnings.warn(f"resuming from {path} with {run.world} process(es) (saved with {state['world_size']}): the "
                      "global batches are the same, but dropout masks are drawn afresh", stacklevel=3)
        seed_everything(config.seed + 104729 * (state["global_step"] + 1) + 7919 * run.rank)
    history.steps[:] = state["history"]["steps"]
    history.epochs[:] = state["history"]["epochs"]
    history.config["resumed_from"] = state["global_step"]
    return state["epoch"], state["step_in_epoch"], _EpochTally(**state["tally"])
