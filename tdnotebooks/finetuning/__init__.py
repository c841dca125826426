"""Fast fine-tuning with TokenDrop + BucketSampler (Nagarajan & Raghunathan, 2023): notebooks 01-04.

Read it in this order:

1. :mod:`~tdnotebooks.finetuning.planning`  length buckets, HWCap, BatchCap, Residual Batch Merging
   (Algorithm 2) as a pure per-epoch plan, :func:`epoch_batches`; :mod:`~tdnotebooks.finetuning.bucketing`
   the :class:`BucketSampler` that serves it; :mod:`~tdnotebooks.finetuning.hwcap` HWCap by profiling;
   :mod:`~tdnotebooks.finetuning.lrm` Learning Rate Modulation (Eq. 1);
   :mod:`~tdnotebooks.finetuning.collate` padding-to-batch-max collation.                   (notebook 01)
2. :mod:`~tdnotebooks.finetuning.tokendrop`  TokenDrop: drop a random subset of stopwords per sequence and
   epoch (Algorithm 1); with buckets, trim every batch so that it needs no padding (Algorithm 3).  (notebook 02)
3. :mod:`~tdnotebooks.finetuning.train`  :func:`finetune`, the training loop, and :class:`FinetuneConfig`;
   :mod:`~tdnotebooks.finetuning.tasks` what a task tells the loop (labels, loss per example, dev metrics);
   :mod:`~tdnotebooks.finetuning.callbacks` its hooks; :mod:`~tdnotebooks.finetuning.padding_plan`
   :func:`plan_epochs`, each epoch's batches and padding without a model;
   :mod:`~tdnotebooks.finetuning.distributed` several processes: one global batch per step, its rows split
   across the ranks (:class:`ShardedCollator`).                                              (notebook 03)
4. :mod:`~tdnotebooks.finetuning.hf_trainer`  :class:`BucketTrainer`, the same batching in HF's ``Trainer``.
5. :mod:`~tdnotebooks.finetuning.inference`  prediction, TokenDrop at batch size 1, server mode.  (notebook 04)
6. :mod:`~tdnotebooks.finetuning.qa`  extractive QA (SQuAD): context windows, answer spans TokenDrop never cuts,
   :class:`QATask` for the loops, :func:`predict_qa` (also in server mode), exact match and F1.
7. :mod:`~tdnotebooks.finetuning.seq2seq`  summarization (the paper's T5 setting): TokenDrop on the encoder inputs
   only, targets padded with -100, :class:`Seq2SeqTask` for the loops, bucketed generation, ROUGE.

Every name below is re-exported lazily: importing this package imports neither torch nor transformers.

Example:
    >>> from tdnotebooks.finetuning import BucketSampler, finetune, prepare   # doctest: +SKIP
    >>> history = finetune(model, prepare(train, tokenizer), prepare(dev, tokenizer), method="tokendrop_bucket")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tdnotebooks.lazy import exported_names, lazy_exports

EXPORTS: dict[str, tuple[str, ...]] = {
    "planning": ("WIDEN_PADDING", "Bucket", "BucketSpec", "bucket_upper_lengths", "epoch_batches",
                 "merge_by_reachable", "merge_residual_batches"),
    "bucketing": ("BucketSampler",),
    "hwcap": ("measure_peak_memory", "profile_hwcap"),
    "lrm": ("LRModulator", "lr_factor"),
    "collate": ("IGNORE_INDEX", "POSITION_KEYS", "PadToBatchMax", "collate_labels", "shift_positions"),
    "tokendrop": ("DROP_MODES", "DROP_UNITS", "TRIM_TARGETS", "DropResult", "HighlightedText", "TokenDrop",
                  "TokenDropBucketCollator", "TokenDropCollator", "Word", "drop_stopwords_for_inference",
                  "find_stopwords", "highlight_dropped", "is_stopword", "prepare", "reachable_lengths",
                  "remove_articles_and_punctuation", "split_words"),
    "tasks": ("ClassificationTask", "FinetuneTask", "check_task"),
    "callbacks": ("FinetuneCallback",),
    "train": ("Batching", "FinetuneConfig", "FinetuneHistory", "dropout_rate", "finetune", "make_batching",
              "restore_dropout", "set_dropout", "tokendrop_dropout_rate"),
    "padding_plan": ("EpochPlan", "plan_epochs"),
    "distributed": ("ShardedCollator", "example_losses"),
    "hf_trainer": ("BucketSeq2SeqTrainer", "BucketTrainer"),
    "inference": ("BATCHINGS", "LatencyResult", "Predictions", "check_server_batching", "latency_at_batch_size_1",
                  "predict", "server_batches"),
    "qa": ("ANSWERLESS_WINDOWS", "QA_BATCHINGS", "QAPredictions", "QATask", "normalize_answer", "predict_qa",
           "prepare_qa", "squad_metrics"),
    "seq2seq": ("ROUGE_TYPES", "Seq2SeqTask", "check_seq2seq_model", "generate_summaries", "load_seq2seq_model",
                "prepare_seq2seq", "rouge_scores"),
}

__all__ = exported_names(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time the names come from __getattr__
    from tdnotebooks.finetuning.bucketing import *  # noqa: F403
    from tdnotebooks.finetuning.callbacks import *  # noqa: F403
    from tdnotebooks.finetuning.collate import *  # noqa: F403
    from tdnotebooks.finetuning.distributed import *  # noqa: F403
    from tdnotebooks.finetuning.hf_trainer import *  # noqa: F403
    from tdnotebooks.finetuning.hwcap import *  # noqa: F403
    from tdnotebooks.finetuning.inference import *  # noqa: F403
    from tdnotebooks.finetuning.lrm import *  # noqa: F403
    from tdnotebooks.finetuning.padding_plan import *  # noqa: F403
    from tdnotebooks.finetuning.planning import *  # noqa: F403
    from tdnotebooks.finetuning.qa import *  # noqa: F403
    from tdnotebooks.finetuning.seq2seq import *  # noqa: F403
    from tdnotebooks.finetuning.tasks import *  # noqa: F403
    from tdnotebooks.finetuning.tokendrop import *  # noqa: F403
    from tdnotebooks.finetuning.train import *  # noqa: F403
