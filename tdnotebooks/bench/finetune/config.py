"""The fine-tuning benchmark's settings: what is compared (tasks, methods, the baseline) and
:class:`BenchConfig` with its two presets, :func:`quick_config` (a CPU) and :func:`full_config` (a GPU)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tdnotebooks.bench.finetune.corpora import SCALE_CORPORA
from tdnotebooks.bench.finetune.qa_seq2seq import QA_SEQ2SEQ_TASKS, QASeq2SeqSpec
from tdnotebooks.validation import check_bool, check_int, check_number

__all__ = ["BASELINE", "INFERENCE_RATES", "METHODS", "PAPER_METHOD", "QA_SEQ2SEQ_TASKS", "SERVER_BATCHINGS", "TASKS",
           "BenchConfig", "QASeq2SeqSpec", "full_config", "quick_config"]

TASKS = ("rt_sentiment", "reviews_long")  # classification; the QA and seq2seq rows: QA_SEQ2SEQ_TASKS
METHODS = ("random", "group_by_length", "bucket", "tokendrop_bucket")  # = tdnotebooks.finetuning.train.METHODS
BASELINE = "random"
PAPER_METHOD = "tokendrop_bucket"
INFERENCE_RATES = (0.0, 0.5, 1.0)
SERVER_BATCHINGS = ("random", "bucketed", "bucketed_tokendrop")


@dataclass
class BenchConfig:
    """What one benchmark run does. :func:`quick_config` and :func:`full_config` are the two presets.

    ``train_examples`` / ``dev_examples`` / ``test_examples``: per task, a random subset of that many
    examples (seeded, the same for every method); a missing task or None = the whole split. Latency at
    batch size 1 uses the first ``latency_examples`` test examples; server mode the whole test subset.

    ``qa_seq2seq``: the QA and seq2seq rows (:mod:`~tdnotebooks.bench.finetune.qa_seq2seq`), None to skip them;
    ``tasks`` may be empty when they run (then only they run, without the held-out corpora).
    """

    tasks: tuple[str, ...] = TASKS
    methods: tuple[str, ...] = METHODS
    seeds: int = 3
    epochs: int = 3
    num_layers: int | None = None          # None: all 6 layers of the bundled MiniLM
    freeze_embeddings: bool = False
    lr: float = 1e-4
    base_batch_size: int = 32
    token_budget: int = 8192               # HWCap per bucket = token_budget // bucket length (training)
    server_token_budget: int = 8192        # the same for server-mode inference; random batches get
    max_length: int = 128                  # server_token_budget // max_length examples (same peak size)
    train_examples: dict[str, int | None] = field(default_factory=dict)
    dev_examples: dict[str, int | None] = field(default_factory=dict)
    test_examples: dict[str, int | None] = field(default_factory=dict)
    latency_examples: int = 200
    server_repeats: int = 2                # server-mode time = best of this many passes
    device: str | None = None              # None: CUDA when present, else CPU
    threads: int | None = None             # None: torch's current number of threads
    quick: bool = False
    progress: bool = True
    scale_check: bool = True               # padding of every batching over the whole training splits
    scale_corpora: tuple[str, ...] = SCALE_CORPORA  # and over held-out corpora of other shapes (scale_check)
    qa_seq2seq: QASeq2SeqSpec | None = field(default_factory=QASeq2SeqSpec)  # None: no QA / seq2seq rows

    def __post_init__(self) -> None:
        self.tasks, self.methods = tuple(self.tasks), tuple(self.methods)
        self.scale_corpora = tuple(self.scale_corpora)
        if any(c not in SCALE_CORPORA for c in self.scale_corpora):
            raise ValueError(f"scale_corpora must be a selection of {', '.join(SCALE_CORPORA)}, "
                             f"got {self.scale_corpora!r}")
        for name, low in (("seeds", 1), ("epochs", 1), ("base_batch_size", 1), ("latency_examples", 1),
                          ("server_repeats", 1), ("max_length", 2)):
            check_int(name, getattr(self, name), low)
        for name in ("num_layers", "threads"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), 1)
        for name in ("token_budget", "server_token_budget"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < self.max_length:
                raise ValueError(f"{name} must be an int >= max_length ({self.max_length}), got {value!r}")
        check_number("lr", self.lr, 0, low_open=True)
        for name in ("freeze_embeddings", "quick", "progress", "scale_check"):
            check_bool(name, getattr(self, name))
        if self.qa_seq2seq is not None and not isinstance(self.qa_seq2seq, QASeq2SeqSpec):
            raise ValueError(f"qa_seq2seq must be None (skip the QA and seq2seq rows) or a QASeq2SeqSpec, "
                             f"got {type(self.qa_seq2seq).__name__}")
        if (not self.tasks and self.qa_seq2seq is None) or any(t not in TASKS for t in self.tasks):
            raise ValueError(f"tasks must be a non-empty selection of {', '.join(TASKS)} (empty only with the QA "
                             f"and seq2seq rows, qa_seq2seq), got {self.tasks!r}")
        if self.qa_seq2seq is not None:
            longest = max(self.qa_seq2seq.qa_max_length, self.qa_seq2seq.max_source_length)
            if self.token_budget < longest:
                raise ValueError(f"token_budget must be an int >= the longest QA window or seq2seq source "
                                 f"({longest}) when the QA and seq2seq rows run, got {self.token_budget!r}")
        if BASELINE not in self.methods or any(m not in METHODS for m in self.methods):
            raise ValueError(f"methods must include {BASELINE!r} (the baseline) and come from "
                             f"{', '.join(METHODS)}, got {self.methods!r}")
        for name in ("train_examples", "dev_examples", "test_examples"):
            for task, n in getattr(self, name).items():
                if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 2):
                    raise ValueError(f"{name}[{task!r}] must be None (whole split) or an int >= 2, got {n!r}")

    def finetune_kwargs(self) -> dict[str, Any]:
        """The :class:`tdnotebooks.finetuning.train.FinetuneConfig` fields every method shares."""
        return {"epochs": self.epochs, "lr": self.lr, "base_batch_size": self.base_batch_size,
                "token_budget": self.token_budget, "freeze_embeddings": self.freeze_embeddings,
                "device": self.device, "progress": False}


def quick_config(**overrides: Any) -> BenchConfig:
    """A few minutes on 2 CPU cores: 2 layers, frozen embeddings, small subsets, 1 epoch, 1 seed, 1 thread;
    the QA and seq2seq timed runs: 1 layer (each half for seq2seq), 32 raw examples, 3 interleaved repeats.

    One torch thread: on a small CPU shared with other work, OpenMP threads wait for each other far more
    than they compute (an AdamW step took 0.1-3 s with 2 threads and about 0.05 s with 1 on a busy 2-core
    machine), which would swamp the differences being measured.
    """
    settings: dict[str, Any] = {
        "quick": True, "seeds": 1, "epochs": 1, "num_layers": 2, "freeze_embeddings": True, "lr": 2e-4,
        "token_budget": 4096, "server_token_budget": 4096, "threads": 1,
        "train_examples": {"rt_sentiment": 384, "reviews_long": 128},
        "dev_examples": {"rt_sentiment": 192, "reviews_long": 96},
        "test_examples": {"rt_sentiment": 192, "reviews_long": 96},
        "latency_examples": 16,
        "qa_seq2seq": QASeq2SeqSpec(num_layers=1, train_examples={"shakespeare_qa": 32, "shakespeare_cast": 32}),
    }
    return BenchConfig(**{**settings, **overrides})


def full_config(**overrides: Any) -> BenchConfig:
    """For a GPU: whole splits, all 6 layers, 3 epochs, 3 seeds; the QA and seq2seq timed runs: one epoch over
    the whole training split per run, 3 interleaved repeats."""
    return BenchConfig(**overrides)
