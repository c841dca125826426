"""A table of bad inputs: every public entry point and every command line refuses them at the door, with one clear
message that names the argument, before any work is done (model and data compatibility and checkpoints have
their own tests)."""

import re
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fx(wordpiece):
    """Small real objects the rows call with one bad argument each."""
    from transformers import BertForMaskedLM

    from tdnotebooks.data import load_task
    from tdnotebooks.finetuning.tokendrop import prepare
    from tdnotebooks.models import load_pretrained, tiny_bert
    from tdnotebooks.pretraining.token_dropping import TokenDroppingBert

    rt = load_task("rt_sentiment")
    torch.manual_seed(0)
    mlm = BertForMaskedLM(tiny_bert(num_layers=2, hidden_size=32, num_heads=2, intermediate_size=64,
                                    tokenizer=wordpiece))
    ids = torch.randint(1000, 2000, (2, 16))
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    return SimpleNamespace(tok=wordpiece, raw=rt["train"].select(range(8)),
                           train=prepare(rt["train"].select(range(16)), wordpiece, max_length=32),
                           dev=prepare(rt["dev"].select(range(8)), wordpiece, max_length=32),
                           clf=load_pretrained(kind="classifier", num_layers=1), mlm=mlm,
                           td=TokenDroppingBert(mlm, special_token_ids=wordpiece.all_special_ids), ids=ids,
                           labels=labels)


def _f(module, name):
    """The public name ``name`` of ``tdnotebooks.<module>``, imported when the row runs."""
    import importlib

    return getattr(importlib.import_module(f"tdnotebooks.{module}"), name)


FT, PT, AN = "finetuning", "pretraining", "pretraining.analysis"
NO_CUDA = not torch.cuda.is_available()

# (id, call(fx), exception, regex the message must match: it names the argument)
API_ROWS = [
    # ---------------------------------------------------------------- fine-tuning: configs, batching, planning
    ("FinetuneConfig epochs=0", lambda fx: _f(FT, "FinetuneConfig")(epochs=0), ValueError, r"^epochs must be an int >= 1"),
    ("FinetuneConfig method", lambda fx: _f(FT, "FinetuneConfig")(method="fast"), ValueError, r"^method must be one of"),
    ("FinetuneConfig lr=True", lambda fx: _f(FT, "FinetuneConfig")(lr=True), ValueError, r"^lr must be a number"),
    ("FinetuneConfig token_drop_rate", lambda fx: _f(FT, "FinetuneConfig")(token_drop_rate=1.5), ValueError,
     r"^token_drop_rate must be a number in \[0, 1\]"),
    ("FinetuneConfig trim_to", lambda fx: _f(FT, "FinetuneConfig")(trim_to="longest"), ValueError, r"^trim_to must be"),
    ("FinetuneConfig tokendrop_dropout", lambda fx: _f(FT, "FinetuneConfig")(tokendrop_dropout="x"), ValueError,
     r"^tokendrop_dropout must be"),
    ("FinetuneConfig token_drop_unit", lambda fx: _f(FT, "FinetuneConfig")(token_drop_unit="word"), ValueError,
     r"^token_drop_unit must be one of 'type', 'occurrence'"),
    ("TokenDrop unit", lambda fx: _f(FT, "TokenDrop")(unit="types"), ValueError, r"^unit must be one of"),
    ("TokenDrop.choose unit=type without types", lambda fx: _f(FT, "TokenDrop")().choose([(1, 2)], 0, 0), ValueError,
     r'^unit="type" needs types'),
    ("TokenDropBucketCollator bucket_width",
     lambda fx: _f(FT, "TokenDropBucketCollator")(_f(FT, "TokenDrop")(mode="to_length"), 0, trim_to="bucket_floor",
                                                  bucket_width=0), ValueError, r"^bucket_width must be an int >= 1"),
    ("FinetuneConfig grad_accum_steps", lambda fx: _f(FT, "FinetuneConfig")(grad_accum_steps=0), ValueError,
     r"^grad_accum_steps must be an int >= 1"),
    ("FinetuneConfig warmup_ratio", lambda fx: _f(FT, "FinetuneConfig")(warmup_ratio=1.0), ValueError,
     r"^warmup_ratio must be a number in \[0, 1\)"),
    ("FinetuneConfig amp=1", lambda fx: _f(FT, "FinetuneConfig")(amp=1), ValueError, r"^amp must be True or False"),
    ("FinetuneConfig device=tpu", lambda fx: _f(FT, "FinetuneConfig")(device="tpu"), ValueError,
     r"^device='tpu' is not supported"),
    pytest.param("FinetuneConfig device=cuda", lambda fx: _f(FT, "FinetuneConfig")(device="cuda"), ValueError,
                 r"device='cuda' was requested but no CUDA GPU", marks=pytest.mark.skipif(not NO_CUDA, reason="GPU")),
    ("finetune config='x'", lambda fx: _f(FT, "finetune")(fx.clf, fx.train, fx.dev, config="x"), ValueError,
     r"^config must be None or a FinetuneConfig, got str"),
    ("finetune unknown override", lambda fx: _f(FT, "finetune")(fx.clf, fx.train, fx.dev, epoch=2), TypeError,
     r"'epoch'"),
    ("finetune stop_after=0", lambda fx: _f(FT, "finetune")(fx.clf, fx.train, fx.dev, stop_after=0), ValueError,
     r"^stop_after must be an int >= 1"),
    ("finetune callbacks=[print]", lambda fx: _f(FT, "finetune")(fx.clf, fx.train, fx.dev, callbacks=[print]),
     ValueError, r"^callbacks\[0\] must be a FinetuneCallback"),
    ("finetune train=list", lambda fx: _f(FT, "finetune")(fx.clf, [1, 2], fx.dev), ValueError, r"^train must be"),
    ("finetune task='qa'", lambda fx: _f(FT, "finetune")(fx.clf, fx.train, fx.dev, task="qa"), ValueError,
     r"^task must be None \(classification\) or a FinetuneTask"),
    ("collate_labels answer dropped", lambda fx: _f("finetuning.collate", "collate_labels")(
        [{"input_ids": [1, 2, 3, 4], "start_positions": 2, "end_positions": 3}], [[(1, 3)]]), ValueError,
     r"^start_positions=2 was dropped by TokenDrop"),
    ("TokenDropCollator return_positions", lambda fx: _f("finetuning.tokendrop", "TokenDropCollator")(
        _f("finetuning.tokendrop", "TokenDrop")(), 0, return_positions="yes"), ValueError, r"^return_positions must be"),
    ("make_batching config='x'", lambda fx: _f(FT, "make_batching")("x", fx.train, 0), ValueError,
     r"^config must be a FinetuneConfig"),
    ("make_batching pad='0'", lambda fx: _f(FT, "make_batching")(_f(FT, "FinetuneConfig")(), fx.train, "0"), ValueError,
     r"^pad_token_id must be an int >= 0, got '0'"),
    ("BucketSampler lengths=[]", lambda fx: _f(FT, "BucketSampler")([]), ValueError, r"^lengths is empty"),
    ("BucketSampler lengths 0", lambda fx: _f(FT, "BucketSampler")([0, 3]), ValueError, r"^lengths must be ints >= 1"),
    ("BucketSampler num_replicas", lambda fx: _f(FT, "BucketSampler")([3, 4], num_replicas=2), ValueError,
     r"num_replicas.*ShardedCollator"),
    ("BucketSpec bucket_width=0", lambda fx: _f(FT, "BucketSpec")([3, 4], bucket_width=0), ValueError,
     r"^bucket_width must be an int >= 1"),
    ("BucketSpec max_length", lambda fx: _f(FT, "BucketSpec")([3, 9], max_length=5), ValueError,
     r"^lengths must lie in \[1, max_length=5\]"),
    ("BucketSpec scaling_factor", lambda fx: _f(FT, "BucketSpec")([3, 4], scaling_factor=0.5), ValueError,
     r"^scaling_factor must be a number in \[1, inf\)"),
    ("BucketSpec hwcap", lambda fx: _f(FT, "BucketSpec")([3, 4], hwcap=[0]), ValueError, r"^hwcap\[0\] must be"),
    ("BucketSpec floats", lambda fx: _f(FT, "BucketSpec")([1.5, 3]), ValueError, r"^lengths must be a flat sequence"),
    ("BucketSpec reachable", lambda fx: _f(FT, "BucketSpec")([3, 4], reachable_lengths=[5, 4]), ValueError,
     r"^reachable_lengths\[0\] must be in \[0, lengths\[0\]\]"),
    ("BucketSpec rbm=1", lambda fx: _f(FT, "BucketSpec")([3, 4], rbm=1), ValueError, r"^rbm must be True or False"),
    ("epoch_batches spec='x'", lambda fx: _f(FT, "epoch_batches")("x", seed=0, epoch=0), ValueError,
     r"^spec must be a BucketSpec"),
    ("epoch_batches epoch=-1", lambda fx: _f(FT, "epoch_batches")(_f(FT, "BucketSpec")([3]), seed=0, epoch=-1),
     ValueError, r"^epoch must be an int >= 0"),
    ("merge_residual_batches size 0", lambda fx: _f(FT, "merge_residual_batches")([([1], 0)]), ValueError,
     r"^residuals\[0\]'s batch size must be an int >= 1"),
    ("LRModulator optimizer", lambda fx: _f(FT, "LRModulator")("adam", 8), ValueError,
     r"^optimizer must be a torch optimizer"),
    ("LRModulator base=0", lambda fx: _f(FT, "LRModulator")(torch.optim.SGD([torch.zeros(1, requires_grad=True)], 0.1), 0),
     ValueError, r"^base_batch_size must be an int >= 1"),
    ("lr_factor batch=8.5", lambda fx: _f(FT, "lr_factor")(8.5, 8), ValueError, r"^batch_size must be an int >= 1"),
    ("PadToBatchMax pad=None", lambda fx: _f(FT, "PadToBatchMax")(None), ValueError, r"^pad must be a pad token id"),
    ("PadToBatchMax multiple=0", lambda fx: _f(FT, "PadToBatchMax")(0, pad_to_multiple_of=0), ValueError,
     r"^pad_to_multiple_of must be an int >= 1"),
    ("PadToBatchMax examples=[]", lambda fx: _f(FT, "PadToBatchMax")(0)([]), ValueError, r"^examples is empty"),
    ("TokenDrop rate", lambda fx: _f(FT, "TokenDrop")(rate=1.5), ValueError, r"^rate must be a number in \[0, 1\]"),
    ("TokenDrop mode", lambda fx: _f(FT, "TokenDrop")(mode="all"), ValueError, r"^mode must be one of 'rate'"),
    ("TokenDrop seed", lambda fx: _f(FT, "TokenDrop")(seed=-1), ValueError, r"^seed must be an int >= 0"),
    ("TokenDrop enabled", lambda fx: _f(FT, "TokenDrop")(enabled="yes"), ValueError, r"^enabled must be True or False"),
    ("TokenDropCollator token_drop", lambda fx: _f(FT, "TokenDropCollator")("x", 0), ValueError,
     r"^token_drop must be a TokenDrop"),
    ("TokenDropCollator pad", lambda fx: _f(FT, "TokenDropCollator")(_f(FT, "TokenDrop")(), -1), ValueError,
     r"^pad_token_id .*must be an int >= 0"),
    ("TokenDropBucketCollator trim_to",
     lambda fx: _f(FT, "TokenDropBucketCollator")(_f(FT, "TokenDrop")(mode="to_length"), 0, trim_to="x"),
     ValueError, r"trim_to must be one of"),
    ("TokenDropBucketCollator mode", lambda fx: _f(FT, "TokenDropBucketCollator")(_f(FT, "TokenDrop")(), 0),
     ValueError, r"needs TokenDrop\(mode='to_length'\)"),
    ("prepare max_length=1", lambda fx: _f(FT, "prepare")(fx.raw, fx.tok, max_length=1), ValueError,
     r"^max_length must be an int >= 3"),
    ("prepare text_fields", lambda fx: _f(FT, "prepare")(fx.raw, fx.tok, text_fields=("sentence",)), ValueError,
     r"^text_fields \['sentence'\] not in"),
    ("prepare tokenizer=None", lambda fx: _f(FT, "prepare")(fx.raw, None), ValueError, r"^tokenizer must be a fast"),
    ("find_stopwords texts=str", lambda fx: _f(FT, "find_stopwords")(fx.tok, "a film"), ValueError,
     r"^texts must be a list of strings"),
    ("find_stopwords pairs", lambda fx: _f(FT, "find_stopwords")(fx.tok, ["a", "b"], ["c"]), ValueError,
     r"^text_pairs must be a list of strings, one per text \(2\)"),
    ("reachable_lengths token_drop", lambda fx: _f(FT, "reachable_lengths")(fx.train, "x"), ValueError,
     r"^token_drop must be a TokenDrop"),
    ("reachable_lengths raw data", lambda fx: _f(FT, "reachable_lengths")(fx.raw, _f(FT, "TokenDrop")()), ValueError,
     r"^data must be a split from .*prepare"),
    ("plan_epochs config='x'", lambda fx: _f(FT, "plan_epochs")("x", fx.train, 0), ValueError,
     r"^config must be a FinetuneConfig"),
    ("plan_epochs epochs=0", lambda fx: _f(FT, "plan_epochs")(_f(FT, "FinetuneConfig")(), fx.train, 0, epochs=0),
     ValueError, r"^epochs must be an int >= 1"),
    ("ShardedCollator rank", lambda fx: _f(FT, "ShardedCollator")(_f(FT, "PadToBatchMax")(0), num_replicas=2, rank=2),
     ValueError, r"^rank must be an int in \[0, 1\]"),
    ("ShardedCollator collate", lambda fx: _f(FT, "ShardedCollator")(None), ValueError, r"^collate must be a callable"),
    ("predict batching", lambda fx: _f(FT, "predict")(fx.clf, fx.dev, batching="sorted"), ValueError,
     r"^batching must be one of"),
    ("predict batch_size", lambda fx: _f(FT, "predict")(fx.clf, fx.dev, batch_size=0), ValueError,
     r"^batch_size must be an int >= 1"),
    ("predict token_drop unused", lambda fx: _f(FT, "predict")(fx.clf, fx.dev, token_drop="x"), ValueError,
     r"^token_drop is only used with batching='bucketed_tokendrop'"),
    ("predict tokendrop needs TokenDrop", lambda fx: _f(FT, "predict")(fx.clf, fx.dev, batching="bucketed_tokendrop"),
     ValueError, r"needs token_drop=TokenDrop"),
    ("predict tokendrop rate mode", lambda fx: _f(FT, "predict")(fx.clf, fx.dev, batching="bucketed_tokendrop",
                                                                 token_drop=_f(FT, "TokenDrop")(rate=0.3)),
     ValueError, r"^batching='bucketed_tokendrop' needs token_drop=TokenDrop\(mode='to_length'\), got TokenDrop\(rate"),
    ("latency rate", lambda fx: _f(FT, "latency_at_batch_size_1")(fx.clf, fx.tok, ["a b"], [1], rate=2), ValueError,
     r"^rate must be a number in \[0, 1\]"),
    ("latency texts=str", lambda fx: _f(FT, "latency_at_batch_size_1")(fx.clf, fx.tok, "abc", [1, 1, 1], rate=0.5),
     ValueError, r"^texts must be a list of strings"),
    ("latency lengths", lambda fx: _f(FT, "latency_at_batch_size_1")(fx.clf, fx.tok, ["a", "b"], [1], rate=0.5),
     ValueError, r"^texts and labels must be non-empty and of equal length, got 2 and 1"),
    ("latency warmup", lambda fx: _f(FT, "latency_at_batch_size_1")(fx.clf, fx.tok, ["a"], [1], rate=0.5, warmup=-1),
     ValueError, r"^warmup must be an int >= 0"),
    ("latency repeats", lambda fx: _f(FT, "latency_at_batch_size_1")(fx.clf, fx.tok, ["a"], [1], rate=0.5, repeats=0),
     ValueError, r"^repeats must be an int >= 1"),
    ("latency unit", lambda fx: _f(FT, "latency_at_batch_size_1")(fx.clf, fx.tok, ["a"], [1], rate=0.5, unit="x"),
     ValueError, r"^unit must be one of"),
    ("predict trim_to", lambda fx: _f(FT, "predict")(fx.clf, fx.dev, batching="bucketed_tokendrop", trim_to="longest",
                                                     token_drop=_f(FT, "TokenDrop")(mode="to_length")),
     ValueError, r"^trim_to must be one of 'shortest', 'reachable', 'bucket_floor'"),
    ("profile_hwcap bucket_lengths=[]", lambda fx: _f(FT, "profile_hwcap")(fx.clf, []), ValueError,
     r"^bucket_lengths is empty"),
    ("profile_hwcap max_batch", lambda fx: _f(FT, "profile_hwcap")(fx.clf, [8], max_batch=0), ValueError,
     r"^max_batch must be an int >= 1"),
    ("profile_hwcap device", lambda fx: _f(FT, "profile_hwcap")(fx.clf, [8], device="tpu"), ValueError,
     r"^device='tpu' is not supported"),
    ("BucketTrainer td_config", lambda fx: _f(FT, "BucketTrainer")(td_config={"method": "bucket"}), ValueError,
     r"^td_config must be None or a FinetuneConfig, got dict"),
    # ---------------------------------------------------------------- pretraining: configs, model, loss, data
    ("PretrainConfig steps", lambda fx: _f(PT, "PretrainConfig")(steps=-1), ValueError, r"^steps must be an int >= 1"),
    ("PretrainConfig mode", lambda fx: _f(PT, "PretrainConfig")(mode="electra"), ValueError, r"^mode must be one of"),
    ("PretrainConfig keep_fraction", lambda fx: _f(PT, "PretrainConfig")(keep_fraction=1.5), ValueError,
     r"^keep_fraction must be a number in \(0, 1\]"),
    ("PretrainConfig layers", lambda fx: _f(PT, "PretrainConfig")(start_layer=3, end_layer=2), ValueError,
     r"^start_layer must be < end_layer"),
    ("PretrainConfig checkpoint_dir", lambda fx: _f(PT, "PretrainConfig")(checkpoint_every=5), ValueError,
     r"^checkpoint_dir must be set"),
    ("pretrain unknown override", lambda fx: _f(PT, "pretrain")(steps=1, step=2), TypeError, r"'step'"),
    ("pretrain stop_after", lambda fx: _f(PT, "pretrain")(model=fx.mlm, tokenizer=fx.tok, stop_after=0), ValueError,
     r"^stop_after must be an int >= 1"),
    ("TokenDroppingConfig layers", lambda fx: _f(PT, "TokenDroppingConfig")(start_layer=3, end_layer=2), ValueError,
     r"^start_layer must be < end_layer"),
    ("TokenDroppingConfig both", lambda fx: _f(PT, "TokenDroppingConfig")(keep_fraction=0.5, keep_k=4), ValueError,
     r"keep_fraction or keep_k, not both"),
    ("TokenDroppingConfig beta", lambda fx: _f(PT, "TokenDroppingConfig")(beta=1.0), ValueError,
     r"^beta must be a number in \[0, 1\)"),
    ("TokenDroppingConfig selection", lambda fx: _f(PT, "TokenDroppingConfig")(selection="top"), ValueError,
     r"^selection must be one of"),
    ("TokenDroppingConfig keep_predicted", lambda fx: _f(PT, "TokenDroppingConfig")(keep_predicted="masked"), ValueError,
     r"^keep_predicted must be one of 'mask_only', 'all', got 'masked'"),
    ("TokenDroppingBert config", lambda fx: _f(PT, "TokenDroppingBert")(fx.mlm, {"keep_fraction": 0.5}), ValueError,
     r"^config must be None or a TokenDroppingConfig, got dict"),
    ("TokenDroppingBert end_layer", lambda fx: _f(PT, "TokenDroppingBert")(fx.mlm, _f(PT, "TokenDroppingConfig")(end_layer=9)),
     ValueError, r"^end_layer must be in \[start_layer \+ 1, 2\]"),
    ("ImportanceTable beta", lambda fx: _f(PT, "ImportanceTable")(10, beta=1.0), ValueError, r"^beta must be"),
    ("ImportanceTable low >= high", lambda fx: _f(PT, "ImportanceTable")(10, high=-1.0, low=1.0), ValueError,
     r"^low must be a number in \(-inf, -1\)"),
    ("ImportanceTable pad id", lambda fx: _f(PT, "ImportanceTable")(10, pad_token_id=10), ValueError,
     r"pad_token_id must be in \[0, 9\]"),
    ("keep_counts keep_fraction", lambda fx: _f(PT, "keep_counts")(torch.tensor([5]), torch.tensor([1]), keep_fraction=2.0),
     ValueError, r"^keep_fraction must be a number in \(0, 1\]"),
    ("ScTDConfig lam", lambda fx: _f(PT, "ScTDConfig")(lam=-1), ValueError, r"^lam \(lambda"),
    ("ScTDConfig fi", lambda fx: _f(PT, "ScTDConfig")(fi=0), ValueError, r"^fi \(the interval Fi\) must be an int >= 1"),
    ("ScTDConfig kl_target", lambda fx: _f(PT, "ScTDConfig")(kl_target="cls"), ValueError, r"^kl_target must be one of"),
    ("ScTDConfig reduction", lambda fx: _f(PT, "ScTDConfig")(reduction="mean"), ValueError, r"^reduction must be one of"),
    ("sctd_loss model", lambda fx: _f(PT, "sctd_loss")(fx.mlm, fx.ids, None, fx.labels, 0), ValueError,
     r"^model must be a TokenDroppingBert"),
    ("sctd_loss config", lambda fx: _f(PT, "sctd_loss")(fx.td, fx.ids, None, fx.labels, 0, {"fi": 5}), ValueError,
     r"^config must be None or a ScTDConfig"),
    ("sctd_loss step", lambda fx: _f(PT, "sctd_loss")(fx.td, fx.ids, None, fx.labels, -1), ValueError,
     r"^step must be an int >= 0"),
    ("sctd_loss labels=None", lambda fx: _f(PT, "sctd_loss")(fx.td, fx.ids, None, None, 0), ValueError,
     r"^labels are required"),
    ("is_full_step fi", lambda fx: _f(PT, "is_full_step")(0, 0), ValueError, r"^fi \(the interval Fi\)"),
    ("is_full_step at", lambda fx: _f(PT, "is_full_step")(0, 10, "middle"), ValueError,
     r"^at \(full_pass_at\) must be one of 'end', 'start', got 'middle'"),
    ("ScTDConfig full_pass_at", lambda fx: _f(PT, "ScTDConfig")(full_pass_at="begin"), ValueError,
     r"^full_pass_at must be one of 'end', 'start', got 'begin'"),
    ("is_full_step step", lambda fx: _f(PT, "is_full_step")(1.5, 10), ValueError, r"^step must be an int >= 0"),
    ("flops_ratio keep", lambda fx: _f(PT, "flops_ratio")(4, 1, 3, 0, 128, 64), ValueError, r"^keep_fraction must be"),
    ("flops_ratio layers", lambda fx: _f(PT, "flops_ratio")(4, 1, 9, 0.5, 128, 64), ValueError, r"^end_layer must be in"),
    ("flops_ratio seq_len", lambda fx: _f(PT, "flops_ratio")(4, 1, 3, 0.5, 0, 64), ValueError, r"^seq_len must be"),
    ("layer_flops negative", lambda fx: _f(PT, "layer_flops")(-1, 1, 8, 8), ValueError, r"^q_len must be a number in \[0"),
    ("mask_tokens probability", lambda fx: _f(PT, "mask_tokens")(fx.ids, 103, 30522, [101, 102], None, 0.0), ValueError,
     r"^probability must be a number in \(0, 1\)"),
    ("mask_tokens vocab_size", lambda fx: _f(PT, "mask_tokens")(fx.ids, 103, 0, [101, 102], None), ValueError,
     r"^vocab_size must be an int >= 1"),
    ("mask_tokens 1-D ids", lambda fx: _f(PT, "mask_tokens")(fx.ids[0], 103, 30522, [101, 102], torch.Generator()),
     ValueError, r"^input_ids must be a 2-D tensor of token ids"),
    ("mask_tokens mask id", lambda fx: _f(PT, "mask_tokens")(fx.ids, -1, 30522, [101, 102], torch.Generator()),
     ValueError, r"^mask_token_id must be an int in \[0, 30521\], got -1"),
    ("mask_tokens generator", lambda fx: _f(PT, "mask_tokens")(fx.ids, 103, 30522, [101, 102], 0), ValueError,
     r"^generator must be a torch.Generator"),
    ("pack_blocks one str", lambda fx: _f(PT, "pack_blocks")("a b c", fx.tok, 8), ValueError,
     r"^texts must be a list of strings .* got a single str"),
    ("PretrainConfig corpus", lambda fx: _f(PT, "PretrainConfig")(corpus="bogus"), ValueError,
     r"^corpus='bogus' is not a known corpus"),
    ("pretrain config str", lambda fx: _f(PT, "pretrain")("sctd"), ValueError,
     r"^config must be None or a PretrainConfig, got str"),
    ("pack_blocks block_size", lambda fx: _f(PT, "pack_blocks")(["a b c"], fx.tok, 2), ValueError,
     r"^block_size must be an int >= 3"),
    ("pack_blocks max_blocks", lambda fx: _f(PT, "pack_blocks")(["a b c"], fx.tok, 8, 0), ValueError,
     r"^max_blocks must be an int >= 1"),
    ("corpus_blocks corpus", lambda fx: _f(PT, "corpus_blocks")("gutenberg", "train", fx.tok, 64), ValueError,
     r"^name='gutenberg' is not a known corpus"),
    ("corpus_blocks split", lambda fx: _f(PT, "corpus_blocks")("kjv", "test", fx.tok, 64), ValueError,
     r"has no split 'test'"),
    ("semantic_drift originals", lambda fx: _f(AN, "semantic_drift")(None, [], {"x": []}), ValueError,
     r"^originals must be a non-empty list"),
    ("semantic_drift views", lambda fx: _f(AN, "semantic_drift")(None, ["a", "b"], {"x": ["a"]}), ValueError,
     r"^views\['x'\] must have one text per original"),
    ("probe_layers c", lambda fx: _f(AN, "probe_layers")([np.zeros((4, 2))], [0, 1, 0, 1], [np.zeros((2, 2))], [0, 1], c=0),
     ValueError, r"^c must be a number in \(0, inf\)"),
    ("probe_layers layers", lambda fx: _f(AN, "probe_layers")([np.zeros((4, 2))] * 2, [0, 1, 0, 1], [np.zeros((2, 2))], [0, 1]),
     ValueError, r"^reps_train and reps_dev must hold the same"),
    ("mask_count mask_prob", lambda fx: _f(AN, "mask_count")(10, 1.5), ValueError, r"^mask_prob must be a number in \(0, 1\)"),
    ("mask_count num_maskable", lambda fx: _f(AN, "mask_count")(-1, 0.15), ValueError, r"^num_maskable must be an int >= 0"),
    ("compare_pretraining methods", lambda fx: _f(AN, "compare_pretraining")({}), ValueError, r"^methods must be a non-empty"),
    ("compare_pretraining unknown field", lambda fx: _f(AN, "compare_pretraining")({"td": {"drop": 0.5}}), ValueError,
     r"^methods\['td'\] sets drop, which PretrainConfig does not have"),
    ("compare_pretraining config", lambda fx: _f(AN, "compare_pretraining")({"td": {}}, config="x"), ValueError,
     r"^config must be None or a PretrainConfig"),
    ("compare_pretraining seeds", lambda fx: _f(AN, "compare_pretraining")({"td": {}}, seeds=[-1]), ValueError,
     r"^seeds\[\.\.\.\] must be an int >= 0"),
    ("corrupted_views mask_prob", lambda fx: _f(AN, "corrupted_views")(fx.tok, ["a b c"], mask_prob=0), ValueError,
     r"^mask_prob must be"),
    ("layer_representations pooling", lambda fx: _f(AN, "layer_representations")(fx.mlm, fx.tok, ["a"], pooling="max"),
     ValueError, r"^pooling must be one of"),
    ("downstream train_size", lambda fx: _f(AN, "downstream")(fx.mlm, fx.tok, train_size=0), ValueError,
     r"^train_size must be an int >= 2"),
    ("drift_tracker every", lambda fx: _f(AN, "drift_tracker")(None, None, ["a"], 0, "unused"), ValueError,
     r"^every must be an int >= 1"),
    # ---------------------------------------------------------------- data, models, runtime
    ("load_task unknown", lambda fx: _f("data", "load_task")("sst9"), ValueError, r"^name='sst9' is not a known task"),
    ("load_task None", lambda fx: _f("data", "load_task")(None), ValueError, r"^name must be a non-empty string"),
    ("tokenize max_length", lambda fx: _f("data", "tokenize")(fx.raw, fx.tok, max_length=2), ValueError,
     r"^max_length must be an int >= 3 \(room for the tokenizer's 2 special tokens"),
    ("load_corpus unknown", lambda fx: _f("data", "load_corpus")("gutenberg"), ValueError,
     r"^name='gutenberg' is not a known corpus"),
    ("load_corpus int", lambda fx: _f("data", "load_corpus")(3), ValueError, r"^name=3 is not a known corpus"),
    ("task_spec None", lambda fx: _f("data", "task_spec")(None), ValueError, r"^name must be a non-empty string"),
    ("task_spec glue", lambda fx: _f("data", "task_spec")("glue/sst3"), ValueError, r"^name='glue/sst3' is not a known"),
    ("load_pretrained num_layers", lambda fx: _f("models", "load_pretrained")(num_layers=0), ValueError,
     r"^num_layers must be an int >= 1"),
    ("load_pretrained missing path", lambda fx: _f("models", "load_pretrained")("./no/such/model"), FileNotFoundError,
     r"model path './no/such/model' does not exist"),
    ("load_pretrained device", lambda fx: _f("models", "load_pretrained")(device="tpu"), ValueError,
     r"^device='tpu' is not supported"),
    ("tiny_bert heads", lambda fx: _f("models", "tiny_bert")(hidden_size=30, num_heads=4), ValueError,
     r"^hidden_size \(30\) must be divisible by num_heads \(4\)"),
    ("tiny_bert num_layers", lambda fx: _f("models", "tiny_bert")(num_layers=1), ValueError, r"^num_layers must be an int >= 2"),
    ("load_tokenizer None", lambda fx: _f("models", "load_tokenizer")(None), ValueError,
     r"^name_or_path must be a model name or folder path, got None"),
    ("get_device tpu", lambda fx: _f("runtime", "get_device")("tpu"), ValueError, r"^device='tpu' is not supported"),
    ("get_device int", lambda fx: _f("runtime", "get_device")(3), ValueError, r"^device must be None or a device name"),
    pytest.param("get_device cuda", lambda fx: _f("runtime", "get_device")("cuda"), ValueError,
                 r"^device='cuda' was requested but no CUDA GPU", marks=pytest.mark.skipif(not NO_CUDA, reason="GPU")),
    ("pick missing", lambda fx: _f("runtime", "pick")(1), TypeError, r"'paper'"),
    ("seed_everything -1", lambda fx: _f("runtime", "seed_everything")(-1), ValueError, r"^seed must be an int >= 0"),
    ("seed_everything str", lambda fx: _f("runtime", "seed_everything")("1"), ValueError, r"^seed must be an int >= 0, got '1'"),
    # ---------------------------------------------------------------- charts
    ("length_histogram list", lambda fx: _f("viz.common", "length_histogram")([3, 4]), ValueError,
     r"^lengths must be a non-empty \{data set name"),
    ("length_histogram bin_width", lambda fx: _f("viz.common", "length_histogram")({"a": [3]}, bin_width=0), ValueError,
     r"^bin_width must be an int >= 1"),
    ("padding_bars values", lambda fx: _f("viz.common", "padding_bars")({"random": 3}), ValueError,
     r"^costs\['random'\] must be a PaddingStats"),
    ("batch_picture order", lambda fx: _f("viz.padding_and_buckets", "batch_picture")([3, 4], [[0, 1]], order="x"),
     ValueError, r"^order must be one of"),
    ("batch_picture index", lambda fx: _f("viz.padding_and_buckets", "batch_picture")([3, 4], [[0, 5]]), ValueError,
     r"^batches must hold example indices in \[0, 1\]"),
    ("lr_factor_per_step base", lambda fx: _f("viz.padding_and_buckets", "lr_factor_per_step")([4, 8], 0), ValueError,
     r"^base_batch_size must be an int >= 1"),
    ("loss_curves runs", lambda fx: _f("viz.fast_finetuning", "loss_curves")([]), ValueError,
     r"^runs must be a \{label: FinetuneHistory\} mapping, got list"),
    ("ablation_chart runs", lambda fx: _f("viz.fast_finetuning", "ablation_chart")("random"), ValueError,
     r"^runs must be a \{label: FinetuneHistory\} mapping, got str"),
    ("training_curves runs", lambda fx: _f("viz.tokendrop", "training_curves")({}), ValueError, r"^runs is empty"),
    ("latency_accuracy_chart", lambda fx: _f("viz.fast_inference", "latency_accuracy_chart")({}), ValueError,
     r"^results is empty"),
    ("layer_token_grid lengths", lambda fx: _f("viz.token_dropping", "layer_token_grid")(["a", "b"], [1.0], [True], 4, 1, 3),
     ValueError, r"^tokens, importance and kept must have the same length"),
    ("importance_curves steps", lambda fx: _f("viz.token_dropping", "importance_curves")([0, 1], {"the": [1.0]}),
     ValueError, r"^curves\['the'\] has 1 values for 2 steps"),
    ("probe_chart chance", lambda fx: _f("viz.semantic_loss", "probe_chart")({"a": [0.5]}, chance=2), ValueError,
     r"^chance must be a number in \[0, 1\]"),
    ("cost_curve_chart cost", lambda fx: _f("viz.sctd", "cost_curve_chart")(2.0), ValueError, r"^dropped_cost .*\(0, 1\]"),
    ("moving_average window", lambda fx: _f("viz.sctd", "moving_average")([1.0], 0), ValueError, r"^window must be"),
    # ---------------------------------------------------------------- exercises
    ("check_padding_fraction lengths", lambda fx: _f("exercises.padding_and_buckets", "check_padding_fraction")(0.1, []),
     ValueError, r"^lengths must be a non-empty list"),
    ("check_padding_fraction zero", lambda fx: _f("exercises.padding_and_buckets", "check_padding_fraction")(0.1, [0, 3]),
     ValueError, r"^lengths\[0\] must be an int >= 1"),
    ("check_padding_threshold_width", lambda fx: _f("exercises.padding_and_buckets", "check_padding_threshold_width")(
        3, [3, 4, 5], threshold=2), ValueError, r"^threshold must be a number in \[0, 1\)"),
    ("check_hwcap token_budget", lambda fx: _f("exercises.padding_and_buckets", "check_hwcap")(1, token_budget=0),
     ValueError, r"^token_budget must be an int >= 1"),
    ("check_lr_factor base", lambda fx: _f("exercises.padding_and_buckets", "check_lr_factor")(1.0, base_batch_size=0),
     ValueError, r"^base_batch_size must be an int >= 1"),
    ("check_tokens_to_drop lengths", lambda fx: _f("exercises.fast_finetuning", "check_tokens_to_drop")([], lengths=[]),
     ValueError, r"^lengths must be a non-empty list"),
    ("check_lrm_lr step", lambda fx: _f("exercises.fast_finetuning", "check_lrm_lr")(1.0, step=99, total_steps=40),
     ValueError, r"^step must be an int in \[0, 39\]"),
    ("check_padding_left lengths", lambda fx: _f("exercises.fast_finetuning", "check_padding_left")(1, [3, 4], [1]),
     ValueError, r"^lengths and stopwords must have one entry per sequence"),
    ("check_server_batches budget", lambda fx: _f("exercises.fast_inference", "check_server_batches")(3, token_budget=0),
     ValueError, r"^token_budget must be an int >= 1"),
    ("check_sctd_cost fi", lambda fx: _f("exercises.sctd", "check_sctd_cost")(1.0, fi=0), ValueError,
     r"^fi \(the interval Fi\) must be an int >= 1"),
    ("check_full_steps steps", lambda fx: _f("exercises.sctd", "check_full_steps")(10, steps=-1), ValueError,
     r"^steps must be an int >= 1"),
    ("check_total_loss terms", lambda fx: _f("exercises.sctd", "check_total_loss")(1.0, {"mlm_dropped": 1.0}), ValueError,
     r"^terms must hold a number for each .*missing mlm_full, kl_global, kl_local"),
    ("check_total_loss lam", lambda fx: _f("exercises.sctd", "check_total_loss")(1.0, dict.fromkeys(
        ("mlm_dropped", "mlm_full", "kl_global", "kl_local"), 1.0), lam=-1), ValueError, r"^lam \(lambda\) must be"),
    ("check_break_even_fi r", lambda fx: _f("exercises.sctd", "check_break_even_fi")(3, r=2.0), ValueError,
     r"^r must be a number in \(0, 1\)"),
    ("check_mask_count prob", lambda fx: _f("exercises.semantic_loss", "check_mask_count")(3, mask_prob=2), ValueError,
     r"^mask_prob must be"),
    ("check_probe_layer empty", lambda fx: _f("exercises.semantic_loss", "check_probe_layer")(1, []), ValueError,
     r"^accuracies must be a non-empty list"),
    ("check_keep_count keep", lambda fx: _f("exercises.token_dropping", "check_keep_count")(3, keep_fraction=0), ValueError,
     r"^keep_fraction must be a number in \(0, 1\]"),
    ("check_importance_update beta", lambda fx: _f("exercises.token_dropping", "check_importance_update")(1.0, beta=1.5),
     ValueError, r"^beta must be"),
    ("check_token_share rate", lambda fx: _f("exercises.tokendrop", "check_token_share")(0.1, [], rate=2), ValueError,
     r"^rate must be a number in \[0, 1\]"),
    ("expected_dropped_tokens example", lambda fx: _f("exercises.tokendrop", "expected_dropped_tokens")({}), ValueError,
     r"^example must be a row of a prepared split"),
    ("check_words_dropped rate", lambda fx: _f("exercises.tokendrop", "check_words_dropped")(1, rate=2), ValueError,
     r"^rate must be a number in \[0, 1\]"),
]


def _ids(rows):
    return [r.values[0] if hasattr(r, "values") else r[0] for r in rows]


@pytest.mark.parametrize("name, call, error, message", API_ROWS, ids=_ids(API_ROWS))
def test_a_bad_argument_is_refused_at_the_door_with_a_message_naming_it(fx, name, call, error, message):
    with pytest.raises(error) as info:
        call(fx)
    assert type(info.value) is error, f"{name}: {type(info.value).__name__}: {info.value}"
    assert re.search(message, str(info.value)), f"{name}: {info.value}"


# ---------------------------------------------------------------------------- training entry points: no work done
def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _unchanged(model, before):
    return all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


TRAINING_ROWS = [
    ("finetune epochs=0", lambda fx, m: _f(FT, "finetune")(m, fx.train, fx.dev, epochs=0, progress=False),
     r"^epochs must be an int >= 1"),
    ("finetune token_drop_rate", lambda fx, m: _f(FT, "finetune")(m, fx.train, fx.dev, token_drop_rate=2.0, progress=False),
     r"^token_drop_rate must be a number"),
    ("finetune callbacks", lambda fx, m: _f(FT, "finetune")(m, fx.train, fx.dev, callbacks=[object()], progress=False),
     r"^callbacks\[0\] must be a FinetuneCallback"),
    ("finetune pad_token_id", lambda fx, m: _f(FT, "finetune")(m, fx.train, fx.dev, pad_token_id=-1, progress=False),
     r"^pad_token_id must be an int >= 0"),
]


@pytest.mark.parametrize("name, call, message", TRAINING_ROWS, ids=[r[0] for r in TRAINING_ROWS])
def test_fine_tuning_refuses_before_touching_the_weights(fx, name, call, message):
    before = _snapshot(fx.clf)
    with pytest.raises(ValueError, match=message):
        call(fx, fx.clf)
    assert _unchanged(fx.clf, before)


@pytest.mark.parametrize("overrides, message", [
    ({"steps": 0}, r"^steps must be an int >= 1"),
    ({"fi": 0, "mode": "sctd"}, r"^fi \(the interval Fi\)"),
    ({"lr": -1.0}, r"^lr must be a number in \(0, inf\)"),
    ({"corpus": "gutenberg", "steps": 1, "eval_every": 0}, r"^corpus='gutenberg' is not a known corpus"),
])
def test_pretraining_refuses_before_touching_the_weights(fx, overrides, message):
    from tdnotebooks.pretraining.train import pretrain

    before = _snapshot(fx.mlm)
    with pytest.raises(ValueError, match=message):
        pretrain(model=fx.mlm, tokenizer=fx.tok, progress=False, **overrides)
    assert _unchanged(fx.mlm, before)


def test_bucket_trainer_refuses_a_bad_td_config_before_training(fx, tmp_path):
    from transformers import TrainingArguments

    from tdnotebooks.finetuning import BucketTrainer, FinetuneConfig

    before = _snapshot(fx.clf)
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    with pytest.raises(ValueError, match=r"^base_batch_size must be an int >= 1"):
        BucketTrainer(model=fx.clf, args=args, train_dataset=fx.train,
                      td_config=FinetuneConfig(method="bucket", base_batch_size=0))
    assert _unchanged(fx.clf, before)


# ---------------------------------------------------------------------------- command lines, in process
def _pretraining(argv):
    from tdnotebooks.pretraining.train import main

    return main(argv)


def _bench(argv):
    from tdnotebooks.bench import main

    return main(argv)


def _build(argv):
    from tdnotebooks.data.build import main

    return main(argv)


def _site(argv):
    from tdnotebooks.site import main

    return main(argv)


CLI_ROWS = [
    (_pretraining, ["--steps", "-1"], r"argument --steps: steps must be an int >= 1, got -1"),
    (_pretraining, ["--steps", "many"], r"argument --steps: steps must be an int >= 1, got 'many'"),
    (_pretraining, ["--fi", "0"], r"argument --fi: fi \(the interval Fi\) must be an int >= 1, got 0"),
    (_pretraining, ["--full-pass-at", "middle"], r"argument --full-pass-at: full_pass_at must be one of 'end', 'start'"),
    (_pretraining, ["--keep-predicted", "none"], r"argument --keep-predicted: keep_predicted must be one of 'mask_only'"),
    (_pretraining, ["--kl-reduction", "mean"], r"argument --kl-reduction: kl_reduction must be one of 'batchmean', 'sum'"),
    (_pretraining, ["--keep-fraction", "1.5"], r"argument --keep-fraction: keep_fraction must be a number in \(0, 1\]"),
    (_pretraining, ["--lambda", "-1"], r"argument --lam/--lambda: lam \(lambda"),
    (_pretraining, ["--corpus", "bogus"], r"argument --corpus: corpus='bogus' is not a known corpus"),
    (_pretraining, ["--mode", "electra"], r"argument --mode: mode must be one of"),
    (_pretraining, ["--max-texts", "0"], r"argument --max-texts: max_texts must be an int >= 1, got 0"),
    (_pretraining, ["--beta", "1"], r"argument --beta: beta must be a number in \[0, 1\)"),
    (_pretraining, ["--kl-target", "cls"], r"argument --kl-target: kl_target must be one of"),
    (_pretraining, ["--warmup", "nan"], r"argument --warmup: warmup must be a number in \[0, 1\), got nan"),
    (_pretraining, ["--checkpoint-every", "5"], r"error: checkpoint_dir must be set when checkpoint_every > 0"),
    (_pretraining, ["--start-layer", "3", "--end-layer", "2"], r"error: start_layer must be < end_layer"),
    (_pretraining, ["--bogus"], r"unrecognized arguments: --bogus"),
    (_bench, ["finetune", "--seeds", "0"], r"argument --seeds: must be an int >= 1, got 0"),
    (_bench, ["finetune", "--epochs", "two"], r"argument --epochs: must be an int >= 1, got 'two'"),
    (_bench, ["finetune", "--tasks", "glue"], r"argument --tasks: invalid choice: 'glue'"),
    (_bench, ["finetune", "--threads", "0"], r"argument --threads: must be an int >= 1, got 0"),
    (_bench, ["finetune", "--out", "."], r"argument --out: must be a file path for the JSON results"),
    (_bench, ["pretrain", "--quality-steps", "0"], r"argument --quality-steps: must be an int >= 1, got 0"),
    (_bench, ["pretrain", "--device", "tpu"], r"argument --device: invalid choice: 'tpu'"),
    (_bench, ["pretrain", "--out", "README.md/x.json"], r"argument --out: cannot create 'README.md/x.json'"),
    (_bench, ["gpu", "--budget-seconds", "59"], r"argument --budget-seconds: must be an int >= 60, got 59"),
    (_bench, ["gpu", "--sections", "inference"], r"argument --sections: invalid choice: 'inference'"),
    (_bench, ["gpu", "--seeds", "-2"], r"argument --seeds: must be an int >= 1, got -2"),
    (_bench, [], r"the following arguments are required: COMMAND"),
    (_build, ["--out", "README.md"], r"argument --out: must be a folder, got the file 'README.md'"),
    (_build, ["--out", "no/such/folder"], r"argument --out: must be an existing folder, got 'no/such/folder'"),
    (_build, ["--sources", "README.md"], r"argument --sources: must be a folder, got the file 'README.md'"),
    (_site, ["--root", "no/such/folder"], r"argument --root: must be an existing folder"),
    (_site, ["--out", "README.md"], r"argument --out: must be a folder, got the file 'README.md'"),
    (_site, ["--root", "tdnotebooks"], r"--root 'tdnotebooks' has no notebooks/ folder"),
]
if NO_CUDA:
    CLI_ROWS += [(_pretraining, ["--device", "cuda"], r"argument --device: device='cuda' was requested but no CUDA"),
                 (_pretraining, ["--mixed-precision", "fp16"], r"argument --mixed-precision: mixed_precision='fp16' "
                                                                r"needs a CUDA GPU"),
                 (_bench, ["finetune", "--device", "cuda"], r"argument --device: .*no CUDA GPU is available"),
                 (_bench, ["pretrain", "--device", "cuda"], r"argument --device: .*no CUDA GPU is available")]


@pytest.mark.parametrize("main, argv, message", CLI_ROWS,
                         ids=[f"{m.__name__[1:]} {' '.join(a)}" for m, a, _ in CLI_ROWS])
def test_a_bad_command_line_is_a_usage_error(main, argv, message, capsys, monkeypatch):
    monkeypatch.chdir(__import__("pathlib").Path(__file__).resolve().parents[1])   # README.md, tdnotebooks/
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert re.search(r"^python -m tdnotebooks\.[a-z.]+( [a-z]+)?: error: ", last), err
    assert re.search(message, last), err


# ---------------------------------------------------------------------------- command lines, real processes
SUBPROCESS_ROWS = [
    (["tdnotebooks.pretraining", "--steps", "-1"], r"argument --steps: steps must be an int >= 1, got -1"),
    (["tdnotebooks.pretraining", "--keep-fraction", "1.5"], r"argument --keep-fraction: keep_fraction must be"),
    (["tdnotebooks.pretraining", "--corpus", "bogus"], r"argument --corpus: corpus='bogus' is not a known corpus"),
    (["tdnotebooks.bench", "finetune", "--seeds", "0"], r"argument --seeds: must be an int >= 1, got 0"),
    (["tdnotebooks.data.build", "--out", "README.md"], r"argument --out: must be a folder"),
    (["tdnotebooks.site", "--root", "no/such/folder"], r"argument --root: must be an existing folder"),
]
if NO_CUDA:
    SUBPROCESS_ROWS.append((["tdnotebooks.pretraining", "--device", "cuda"], r"argument --device: .*no CUDA GPU"))


@pytest.mark.parametrize("argv, message", SUBPROCESS_ROWS, ids=[" ".join(a) for a, _ in SUBPROCESS_ROWS])
def test_a_bad_command_line_exits_2_with_one_error_line(argv, message):
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", *argv], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and re.search(message, errors[0]), done.stderr
