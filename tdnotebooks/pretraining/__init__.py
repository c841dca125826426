"""Token-dropping pretraining: Hou et al. (2022) and ScTD (Zhong et al., 2023): notebooks 05-07.

Read it in this order:

1. :mod:`~tdnotebooks.pretraining.token_dropping`  :class:`TokenDroppingBert`: the middle layers see only
   the important tokens; importance is a moving average of each vocabulary id's MLM loss.     (notebook 05)
   Its encoder families (BERT, RoBERTa, ELECTRA; ModernBERT with rotary positions and local windows) are in
   :mod:`~tdnotebooks.pretraining.families`.
2. :mod:`~tdnotebooks.pretraining.sctd`  the semantic-consistent objective of ScTD (Eq. 4): every Fi-th step
   a full and a dropped pass, 0.5 MLM* + 0.5 MLM + lambda (KL_g + KL_l).                      (notebook 07)
3. :mod:`~tdnotebooks.pretraining.train`  :func:`pretrain`: masking, the accelerate-based loop with exact
   resume, and :class:`PretrainConfig`; ``python -m tdnotebooks.pretraining`` is its command line.
4. :mod:`~tdnotebooks.pretraining.analysis`  the semantic-loss analyses: drift, probes, downstream
   accuracy, and the three-way comparison of baseline, token drop and ScTD.           (notebooks 06, 07)

This half may import :mod:`tdnotebooks.finetuning` (the downstream check fine-tunes), never the reverse.
Every name below is re-exported lazily: importing this package imports neither torch nor transformers.

Example:
    >>> from tdnotebooks.pretraining import PretrainConfig, pretrain   # doctest: +SKIP
    >>> model, history = pretrain(PretrainConfig(mode="sctd", steps=50))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tdnotebooks.lazy import exported_names, lazy_exports

EXPORTS: dict[str, tuple[str, ...]] = {
    "token_dropping": ("KEEP_PREDICTED", "ImportanceTable", "KeptTokens", "TokenDroppingBert", "TokenDroppingConfig",
                       "TokenDroppingOutput", "flops_ratio", "gather_tokens", "keep_counts", "layer_flops",
                       "layer_with_full_kv", "scatter_tokens", "select_kept_tokens"),
    "families": ("BertLayout", "EncoderLayout", "LAYOUTS", "ModernBertContext", "ModernBertLayout", "layout_for"),
    "sctd": ("DEFAULT_LAM", "FULL_PASS_AT", "KL_TARGETS", "OFFICIAL_LAM", "PAPER_PREDICTIONS_PER_SEQUENCE",
             "REDUCTIONS", "ScTDConfig", "ScTDOutput", "is_full_step", "kl_from_scores", "lam_for_reduction",
             "sctd_loss", "semantic_kl", "semantic_scores"),
    "train": ("PRETRAIN_MODES", "PretrainConfig", "PretrainHistory", "PretrainObjective", "corpus_blocks",
              "evaluate", "latest_checkpoint", "list_checkpoints", "mask_tokens", "pack_blocks", "pretrain",
              "sample_indices"),
    "analysis": ("POOLINGS", "QUALITY_METRICS", "CorruptedView", "classifier_from_mlm", "compare_pretraining",
                 "corrupted_views", "downstream", "drift_at_checkpoint", "drift_tracker",
                 "layer_representations", "mask_count", "probe_layers", "semantic_drift"),
}

__all__ = exported_names(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time the names come from __getattr__
    from tdnotebooks.pretraining.analysis import *  # noqa: F403
    from tdnotebooks.pretraining.families import *  # noqa: F403
    from tdnotebooks.pretraining.sctd import *  # noqa: F403
    from tdnotebooks.pretraining.token_dropping import *  # noqa: F403
    from tdnotebooks.pretraining.train import *  # noqa: F403
