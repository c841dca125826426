"""The pretraining benchmark's settings: the modes compared, the model sizes (:class:`SizeSpec`), the quality
comparison (:class:`QualitySpec`) and :class:`BenchConfig` with its presets, :func:`quick_config` (a CPU) and
:func:`full_config` (a GPU)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["BASELINE", "FIS", "HF_PEER", "QUALITY_METHODS", "RANDOM_DROP", "SCTD", "SCTD_UNIT_FI", "TOKEN_DROP",
           "BenchConfig", "QualitySpec", "SizeSpec", "base_size", "full_config", "quick_config", "tiny_size"]

FIS = (5, 10, 20, 50)
BASELINE = "baseline"
TOKEN_DROP = "token_drop"
RANDOM_DROP = "random_drop"
HF_PEER = "hf_bert_mlm"
SCTD = "sctd"          # the unit timed and counted once for every sctd_fi{Fi} row (its full and dropped steps)
SCTD_UNIT_FI = 2       # the schedule it runs while timed / counted: 2 consecutive steps hold one of each kind
QUALITY_METHODS = ("baseline", "token_drop", "sctd")


@dataclass
class SizeSpec:
    """One model size: a BERT of ``num_layers`` x ``hidden_size`` trained on blocks of ``block_size`` tokens.

    Timing: ``rounds`` interleaved rounds; in each, every timed unit runs on a fresh copy of the initial
    weights ``warmup_steps`` untimed, then ``timed_steps`` timed steps (ScTD at least 2 of each). budget_seconds:
    skip the timing (never the FLOPs count) when its estimate exceeds this.
    """

    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    block_size: int
    batch_size: int
    timed_steps: int
    warmup_steps: int = 1
    budget_seconds: float | None = None   # skip the timing when its estimated run time exceeds this
    rounds: int = 3

    def __post_init__(self) -> None:
        for name, low in (("num_layers", 2), ("hidden_size", 8), ("num_heads", 1), ("intermediate_size", 8),
                          ("block_size", 8), ("batch_size", 1), ("timed_steps", 1), ("warmup_steps", 1),
                          ("rounds", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{self.name}: {name} must be an int >= {low}, got {value!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"{self.name}: hidden_size ({self.hidden_size}) must be divisible by num_heads "
                             f"({self.num_heads})")
        if self.budget_seconds is not None and not self.budget_seconds > 0:
            raise ValueError(f"{self.name}: budget_seconds must be None or > 0, got {self.budget_seconds!r}")


def tiny_size(**overrides: Any) -> SizeSpec:
    """tdnotebooks.models.tiny_bert's defaults (4 layers x 128), blocks of 64, batch 32 (PretrainConfig's);
    5 rounds of 2 warm-up + 10 timed steps."""
    settings = {"name": "tiny", "num_layers": 4, "hidden_size": 128, "num_heads": 4, "intermediate_size": 512,
                "block_size": 64, "batch_size": 32, "timed_steps": 10, "warmup_steps": 2, "rounds": 5}
    return SizeSpec(**{**settings, **overrides})


def base_size(**overrides: Any) -> SizeSpec:
    """BERT-base: 12 layers x 768, 12 heads, feed-forward 3072, blocks of 128; 5 rounds of 2 warm-up + 10 timed
    steps."""
    settings = {"name": "bert-base", "num_layers": 12, "hidden_size": 768, "num_heads": 12,
                "intermediate_size": 3072, "block_size": 128, "batch_size": 32, "timed_steps": 10, "warmup_steps": 2,
                "rounds": 5}
    return SizeSpec(**{**settings, **overrides})


@dataclass
class QualitySpec:
    """The quality comparison: ``steps`` of pretraining per method and seed, then the analyses.

    probe_size / drift_size / downstream_size: Rotten Tomatoes snippets used (train and dev each);
    downstream_epochs: fine-tuning epochs of :func:`tdnotebooks.pretraining.analysis.downstream`.
    """

    steps: int = 150
    batch_size: int = 16
    block_size: int = 64
    max_texts: int | None = 4000
    seeds: tuple[int, ...] = (0,)
    fi: int = 10
    lam: float | None = None  # None: the official code's ScTD weighting at block_size (see quality_lam)
    drift_size: int = 64
    probe_size: int = 256
    downstream_size: int = 256
    downstream_epochs: int = 2

    def __post_init__(self) -> None:
        self.seeds = tuple(self.seeds)
        for name, low in (("steps", 1), ("batch_size", 1), ("block_size", 8), ("fi", 1), ("drift_size", 1),
                          ("probe_size", 4), ("downstream_size", 4), ("downstream_epochs", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"quality: {name} must be an int >= {low}, got {value!r}")
        if not self.seeds or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in self.seeds):
            raise ValueError(f"quality: seeds must be a non-empty tuple of ints >= 0, got {self.seeds!r}")
        if self.lam is not None and (isinstance(self.lam, bool) or not isinstance(self.lam, (int, float))
                                     or self.lam < 0):
            raise ValueError(f"quality: lam must be None or a number >= 0, got {self.lam!r}")


@dataclass
class BenchConfig:
    """What one benchmark run does. :func:`quick_config` and :func:`full_config` are the two presets.

    fis: the ScTD intervals; target_fi: the one the ScTD target reads (must be in fis). keep_fraction:
    tokens kept by the dropped layers (0.5 = the paper's 50 %). hf_peer: also time HF's BertForMaskedLM.
    quality: the ScTD vs token drop quality comparison (None: skip it).
    """

    sizes: tuple[SizeSpec, ...] = field(default_factory=lambda: (tiny_size(), base_size()))
    fis: tuple[int, ...] = FIS
    target_fi: int = 10
    keep_fraction: float = 0.5
    hf_peer: bool = True
    lr: float = 1e-4
    seed: int = 0
    device: str | None = None      # None: CUDA when present, else CPU
    threads: int | None = None     # None: torch's current number of threads
    quick: bool = False
    quality: QualitySpec | None = field(default_factory=lambda: QualitySpec(steps=2000, batch_size=32, seeds=(0, 1, 2),
                                                                          max_texts=None, downstream_epochs=3))

    def __post_init__(self) -> None:
        self.sizes, self.fis = tuple(self.sizes), tuple(self.fis)
        if not self.sizes or not all(isinstance(s, SizeSpec) for s in self.sizes):
            raise ValueError(f"sizes must be a non-empty tuple of SizeSpec, got {self.sizes!r}")
        if not self.fis or any(isinstance(f, bool) or not isinstance(f, int) or f < 1 for f in self.fis):
            raise ValueError(f"fis must be a non-empty tuple of ints >= 1, got {self.fis!r}")
        if self.target_fi not in self.fis:
            raise ValueError(f"target_fi must be one of fis {self.fis}, got {self.target_fi!r}")
        f = self.keep_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 < f < 1.0:
            raise ValueError(f"keep_fraction must be in (0, 1), got {f!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise ValueError(f"threads must be None or an int >= 1, got {self.threads!r}")
        if self.quality is not None and not isinstance(self.quality, QualitySpec):
            raise ValueError(f"quality must be a QualitySpec or None, got {type(self.quality).__name__}")

    @property
    def modes(self) -> tuple[str, ...]:
        """Row names: our modes, then the HF peer."""
        peer = (HF_PEER,) if self.hf_peer else ()
        return (BASELINE, TOKEN_DROP, RANDOM_DROP, *(f"sctd_fi{fi}" for fi in self.fis), *peer)

    @property
    def units(self) -> tuple[str, ...]:
        """What is timed and counted: the modes, with one ``sctd`` unit behind every ``sctd_fi{Fi}`` row (a
        step of ScTD is the same computation at every Fi; only how often the full step comes differs)."""
        peer = (HF_PEER,) if self.hf_peer else ()
        return (BASELINE, TOKEN_DROP, RANDOM_DROP, SCTD, *peer)


def quick_config(**overrides: Any) -> BenchConfig:
    """A few minutes on 2 CPU cores, 1 torch thread (see ``finetune.quick_config`` for why one thread):
    the tiny size (5 rounds of 2 warm-up + 5 timed steps) and BERT-base at batch 4 (3 rounds of 1 warm-up + 2
    timed steps), whose timing is skipped when its estimate (from the FLOPs-counting steps) exceeds 5 minutes;
    its FLOPs row is always there. Quality: 150 pretraining steps per method, one seed."""
    settings: dict[str, Any] = {
        "quick": True, "threads": 1, "quality": QualitySpec(),
        "sizes": (tiny_size(timed_steps=5, rounds=5),
                  base_size(batch_size=4, timed_steps=2, warmup_steps=1, rounds=3, budget_seconds=300.0)),
    }
    return BenchConfig(**{**settings, **overrides})


def full_config(**overrides: Any) -> BenchConfig:
    """For a GPU: tiny (batch 32) and BERT-base (batch 32), 5 rounds of 2 warm-up + 10 timed steps each;
    quality: 2,000 pretraining steps at batch 32 per method on the whole corpus, seeds 0, 1, 2."""
    return BenchConfig(**overrides)


def quality_lam(spec: QualitySpec, mlm_probability: float = 0.15) -> float:
    """ScTD's lambda (on the per-sequence mean KL) for the quality runs: ``spec.lam``, or when None the official
    code's weighting, 0.05 on a summed KL over a loss divided by the masked-token count, which is 0.05 over the
    predictions per sequence (``mlm_probability x block_size``; 0.05 / 76.8 at the paper's 512 tokens)."""
    from tdnotebooks.pretraining.sctd import OFFICIAL_LAM

    return spec.lam if spec.lam is not None else OFFICIAL_LAM / (mlm_probability * spec.block_size)
