"""Bad model or data: one clear ValueError naming the argument, what was given and what is allowed, raised at
the door of every entry point that takes a model or data, before anything is trained or changed."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from tdnotebooks.checks import (
    check_batch,
    check_classifier,
    check_labels,
    check_lengths_fit,
    check_mlm_model,
    check_special_token,
    check_split,
    check_token_ids,
    max_positions,
    vocab_size,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models, one CPU thread

FAST = {"freeze_embeddings": True, "progress": False, "epochs": 1, "base_batch_size": 8}


# ----------------------------------------------------------------------------------------------------------
# Fixtures: tiny random models (no download, milliseconds) and a small prepared split
# ----------------------------------------------------------------------------------------------------------


def tiny_classifier(wordpiece, max_position_embeddings: int = 128, num_labels: int = 2):
    from transformers import BertForSequenceClassification

    from tdnotebooks.models import tiny_bert

    torch.manual_seed(0)
    config = tiny_bert(num_layers=2, hidden_size=32, num_heads=2, intermediate_size=64,
                       max_position_embeddings=max_position_embeddings, tokenizer=wordpiece, num_labels=num_labels)
    return BertForSequenceClassification(config)


def tiny_mlm(wordpiece, max_position_embeddings: int = 64):
    from transformers import BertForMaskedLM

    from tdnotebooks.models import tiny_bert

    torch.manual_seed(0)
    return BertForMaskedLM(tiny_bert(num_layers=2, hidden_size=32, num_heads=2, intermediate_size=64,
                                     max_position_embeddings=max_position_embeddings, tokenizer=wordpiece))


def gpt2_classifier():
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(0)
    return GPT2ForSequenceClassification(GPT2Config(vocab_size=30522, n_positions=64, n_embd=32, n_layer=1,
                                                    n_head=2, bos_token_id=101, eos_token_id=102))


@pytest.fixture(scope="module")
def split(wordpiece):
    """40 prepared reviews (lengths up to 48 tokens), labels 0/1."""
    from tdnotebooks.data import load_task
    from tdnotebooks.finetuning.tokendrop import prepare

    return prepare(load_task("rt_sentiment")["train"].shuffle(seed=0).select(range(40)), wordpiece, max_length=48)


def with_column(split, name, values):
    return split.remove_columns(name).add_column(name, values)


def snapshot(model):
    return [p.detach().clone() for p in model.parameters()]


def unchanged(model, before, training):
    return (model.training == training and all(p.grad is None for p in model.parameters())
            and all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)))


# ----------------------------------------------------------------------------------------------------------
# The checks themselves
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ids, where", [
    ([[101, 2023, 102], [101, 31000, 102]], "[1]"),                           # rows of a split
    (np.array([[101, 2023, 102], [101, 31000, 102]]), "[1, 1]"),             # a batch
    (torch.tensor([[101, 2023, 102], [101, 31000, 102]]), "[1, 1]"),
])
def test_token_ids_outside_the_vocabulary_are_named_with_the_range(ids, where):
    with pytest.raises(ValueError, match=rf"train: input_ids\{where[:-1]}\] holds token id 31000, but the model's "
                                         r"vocabulary has 30522 ids \(0-30521\); was it tokenized with another"):
        check_token_ids("train: input_ids", ids, 30522)
    check_token_ids("train: input_ids", [[101, 30521, 102]], 30522)


def test_token_ids_of_an_arrow_column_name_the_row(split):
    ids = split.with_format("arrow")["input_ids"]
    check_token_ids("train: input_ids", ids, 30522)
    with pytest.raises(ValueError, match=r"input_ids\[\d+\] holds token id \d+, but the model's vocabulary has 1000 "):
        check_token_ids("train: input_ids", ids, 1000)
    with pytest.raises(ValueError, match=r"input_ids\[0\] holds token id -1"):
        check_token_ids("input_ids", [[-1, 5]], 10)


def test_lengths_longer_than_the_positions_or_empty():
    with pytest.raises(ValueError, match=r"train: length\[1\] is 198 tokens, but the model takes at most 64 \(its "
                                         r"position embeddings\); 1 of 3 example\(s\) are longer.*max_length=64"):
        check_lengths_fit("train: length", [12, 198, 64], 64)
    with pytest.raises(ValueError, match=r"train: length\[2\] is 0: an empty input"):
        check_lengths_fit("train: length", [12, 30, 0], 64)
    check_lengths_fit("train: length", [12, 64], 64)
    check_lengths_fit("train: length", [5000], None)


def test_labels_outside_num_labels():
    with pytest.raises(ValueError, match=r"train: label\[3\] is 5, but the model has num_labels=2 \(labels 0-1\); "
                                         r"load the model with num_labels=6"):
        check_labels("train: label", [0, 1, 1, 5], 2)
    with pytest.raises(ValueError, match=r"label\[0\] is -1, but the model has num_labels=3 \(labels 0-2\); a split "
                                         "without labels"):
        check_labels("label", np.array([-1, 0]), 3)
    with pytest.raises(ValueError, match=r"label holds float64 values .* needs integer labels 0-1"):
        check_labels("label", [0.5, 1.0], 2)
    with pytest.raises(ValueError, match=r"label\[1\] is nan, but a regression"):
        check_labels("label", [0.5, float("nan")], 1)
    check_labels("label", [0.5, 3.2], 1)                                        # regression: any finite number
    check_labels("label", [[0.0, 1.0]], 2, problem_type="multi_label_classification")


def test_the_model_limits(wordpiece):
    from transformers import RobertaConfig

    assert (vocab_size(tiny_classifier(wordpiece)), max_positions(tiny_classifier(wordpiece, 40))) == (30522, 40)
    assert max_positions(RobertaConfig(max_position_embeddings=514, pad_token_id=1)) == 512  # ids start at 2


def test_a_masked_lm_is_not_a_classifier(wordpiece):
    with pytest.raises(ValueError, match=r"model must be a Hugging Face sequence classifier .*got BertForMaskedLM; "
                                         r"BertForMaskedLM is a language model .* kind='classifier'"):
        check_classifier(tiny_mlm(wordpiece))
    with pytest.raises(ValueError, match="got Linear"):
        check_classifier(torch.nn.Linear(2, 2))


def test_a_classifier_needs_its_pad_token():
    model = gpt2_classifier()
    with pytest.raises(ValueError, match=r"model.config.pad_token_id is None: GPT2ForSequenceClassification has no "
                                         r"pad token.*tokenizer.pad_token = tokenizer.eos_token"):
        check_classifier(model)
    model.config.pad_token_id = 102
    check_classifier(model, 102)
    with pytest.raises(ValueError, match=r"pad_token_id=0, but the model's pad token is "
                                         r"model.config.pad_token_id=102; pass pad_token_id=tokenizer.pad_token_id"):
        check_classifier(model, 0)


def test_special_tokens_and_model_types(wordpiece):
    from transformers import GPT2Config

    no_mask = copy.deepcopy(wordpiece)
    no_mask.mask_token = None
    with pytest.raises(ValueError, match=r"tokenizer has no mask_token \(mask_token_id is None\) \(MLM\); .*"
                                         r"add_special_tokens\(\{'mask_token': ...\}\)"):
        check_special_token(no_mask, "mask_token", "MLM")
    assert check_special_token(wordpiece, "mask_token") == wordpiece.mask_token_id
    with pytest.raises(ValueError, match=r"model has model_type='gpt2' \(GPT2Config\); .*: bert, roberta, "
                                         "xlm-roberta, electra"):
        check_mlm_model(GPT2Config())


def test_a_split_that_was_not_prepared(split, wordpiece):
    model = tiny_classifier(wordpiece)
    with pytest.raises(ValueError, match=r"train is missing the columns \['input_ids', 'length'\].*prepare it first"):
        check_split("train", split.select_columns(["text", "label"]), model)
    with pytest.raises(ValueError, match="train must be a datasets.Dataset made by tdnotebooks.finetuning.prepare, "
                                         "got list"):
        check_split("train", [{"input_ids": [101, 102]}], model)
    with pytest.raises(ValueError, match="train is empty"):
        check_split("train", split.select([]), model)
    empty = with_column(with_column(split, "input_ids", [[]] + split["input_ids"][1:]), "length",
                        [0] + split["length"][1:])
    with pytest.raises(ValueError, match=r"train: length\[0\] is 0: an empty input \(no tokens, not even \[CLS\]\)"):
        check_split("train", empty)                     # without a model too
    lengths = list(split["length"])
    lengths[4] += 1
    with pytest.raises(ValueError, match=r"train: length\[4\] is \d+, but input_ids\[4\] has \d+ tokens"):
        check_split("train", with_column(split, "length", lengths), model)


def test_a_split_checks_token_types_and_labels(split, wordpiece):
    model = tiny_classifier(wordpiece)
    model.config.type_vocab_size = 1                    # as RoBERTa: one token type
    types = [[0] * (n - 1) + [1] for n in split["length"]]
    with pytest.raises(ValueError, match=r"train: token_type_ids\[0\] holds token type id 1, but the model has "
                                         r"type_vocab_size=1 \(0-0\)"):
        check_split("train", with_column(split, "token_type_ids", types), model)
    with pytest.raises(ValueError, match=r"train: label\[2\] is 7, but the model has num_labels=2"):
        check_split("train", with_column(split, "label", [0, 1, 7] + [0] * (len(split) - 3)), model)


def test_a_batch_is_checked_cheaply_but_exactly():
    ids = torch.randint(5, 50, (2, 10))
    check_batch(ids, 100, 16, labels=torch.full_like(ids, -100))
    with pytest.raises(ValueError, match=r"input_ids must be an integer tensor of shape \(batch, length\), got \(10,\)"):
        check_batch(ids[0], 100, 16)
    with pytest.raises(ValueError, match=r"attention_mask must have the shape of input_ids \(2, 10\), got \(2, 9\)"):
        check_batch(ids, 100, 16, attention_mask=torch.ones(2, 9))
    labels = torch.full_like(ids, -100)
    labels[1, 3] = 100
    with pytest.raises(ValueError, match=r"labels\[1, 3\] holds label 100, but labels must be -100 \(not predicted\) "
                                         r"or a token id 0-99"):
        check_batch(ids, 100, 16, labels=labels)
    with pytest.raises(ValueError, match=r"token_type_ids\[0, 0\] holds token type id 2, but the model has "
                                         r"type_vocab_size=2 \(0-1\)"):
        check_batch(ids, 100, 16, token_type_ids=torch.full_like(ids, 2), type_vocab_size=2)


# ----------------------------------------------------------------------------------------------------------
# TokenDroppingBert
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, high, match", [
    ((2, 10), 40000, r"input_ids\[\d, \d\] holds token id \d+, but the model's vocabulary has 30522 ids \(0-30521\)"),
    ((2, 198), 2000, r"input_ids has length 198, but the model takes at most 64 tokens \(its position embeddings\)"),
    ((2, 0), 2000, r"input_ids has shape \(2, 0\): an empty batch or inputs of length 0"),
])
def test_token_dropping_refuses_a_batch_the_model_cannot_read(wordpiece, shape, high, match):
    from tdnotebooks.pretraining.token_dropping import TokenDroppingBert

    mlm = tiny_mlm(wordpiece)
    td = TokenDroppingBert(mlm, special_token_ids=wordpiece.all_special_ids)
    ids = torch.randint(high - 1000, high, shape)
    before, table = snapshot(td), td.importance.table.clone()
    with pytest.raises(ValueError, match=match):
        td(ids, labels=ids.clone())
    assert unchanged(td, before, True) and torch.equal(td.importance.table, table)


def test_a_batch_without_masked_positions_has_loss_0_and_zero_gradients(wordpiece):
    from tdnotebooks.pretraining.token_dropping import TokenDroppingBert

    td = TokenDroppingBert(tiny_mlm(wordpiece), special_token_ids=wordpiece.all_special_ids)
    ids = torch.randint(1000, 2000, (2, 10))
    out = td(ids, labels=torch.full_like(ids, -100))
    assert out.loss.item() == 0.0 and out.loss.requires_grad and out.logits.shape == (0, 30522)
    out.loss.backward()
    grads = [p.grad for p in td.parameters() if p.grad is not None]
    assert grads and all(torch.count_nonzero(g) == 0 for g in grads)
    td.update_importance(out)                          # nothing measured: the table is left as it was


@pytest.mark.parametrize("model_type", ["bert", "roberta", "xlm-roberta", "electra"])
def test_every_supported_model_type_can_be_wrapped(model_type):
    from transformers import AutoConfig, AutoModelForMaskedLM

    from tdnotebooks.models import SUPPORTED_MODEL_TYPES
    from tdnotebooks.pretraining.token_dropping import TokenDroppingBert

    assert model_type in SUPPORTED_MODEL_TYPES
    config = AutoConfig.for_model(model_type, vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64, max_position_embeddings=40)
    td = TokenDroppingBert(AutoModelForMaskedLM.from_config(config))
    ids = torch.randint(5, 100, (2, 8))
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    assert td(ids, labels=labels).logits.shape == (2, 100)


def test_an_unsupported_model_names_the_supported_types():
    from transformers import GPT2Config, GPT2LMHeadModel

    from tdnotebooks.pretraining.token_dropping import TokenDroppingBert

    with pytest.raises(ValueError, match=r"model must be a Hugging Face BertForMaskedLM-style model .*model types "
                                         "bert, roberta, xlm-roberta, electra; got GPT2LMHeadModel"):
        TokenDroppingBert(GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100)))


# ----------------------------------------------------------------------------------------------------------
# finetune
# ----------------------------------------------------------------------------------------------------------


def refused_by_finetune(model, train, dev, match, **kwargs):
    from tdnotebooks.finetuning.train import finetune

    before, training = snapshot(model), model.training
    with pytest.raises(ValueError, match=match):
        finetune(model, train, dev, **{**FAST, **kwargs})
    assert unchanged(model, before, training), "the model was touched before the check"


def test_finetune_refuses_labels_beyond_num_labels(split, wordpiece):
    train = with_column(split, "label", [5] + list(split["label"][1:]))
    refused_by_finetune(tiny_classifier(wordpiece), train, split,
                        r"train: label\[0\] is 5, but the model has num_labels=2 \(labels 0-1\)")


def test_finetune_refuses_a_masked_lm_and_a_gpt2_without_pad_token(split, wordpiece):
    refused_by_finetune(tiny_mlm(wordpiece), split, split, "model must be a Hugging Face sequence classifier")
    refused_by_finetune(gpt2_classifier(), split, split, "model.config.pad_token_id is None")


def test_finetune_refuses_a_pad_token_id_that_is_not_the_model_s(split, wordpiece):
    refused_by_finetune(tiny_classifier(wordpiece), split, split, "pad_token_id=1, but the model's pad token",
                        pad_token_id=1)


def test_finetune_refuses_a_split_that_was_not_prepared(split, wordpiece):
    refused_by_finetune(tiny_classifier(wordpiece), split.select_columns(["text", "label"]), split,
                        r"train is missing the columns \['input_ids', 'length'\]")
    refused_by_finetune(tiny_classifier(wordpiece), split.remove_columns(["stopword_spans"]), split,
                        r"train is missing the columns \['stopword_spans'\]", method="tokendrop_bucket")


def test_finetune_refuses_ids_of_another_tokenizer_and_inputs_longer_than_the_positions(split, wordpiece):
    shifted = with_column(split, "input_ids", [[i + 30000 for i in row] for row in split["input_ids"]])
    refused_by_finetune(tiny_classifier(wordpiece), split, shifted,
                        r"dev: input_ids\[0\] holds token id \d+, but the model's vocabulary has 30522 ids")
    refused_by_finetune(tiny_classifier(wordpiece, max_position_embeddings=32), split, split,
                        r"train: length\[\d+\] is \d+ tokens, but the model takes at most 32")


# ----------------------------------------------------------------------------------------------------------
# BucketTrainer
# ----------------------------------------------------------------------------------------------------------


def make_trainer(tmp_path, model, train, tokenizer):
    from transformers import TrainingArguments

    from tdnotebooks.finetuning.hf_trainer import BucketTrainer
    from tdnotebooks.finetuning.train import FinetuneConfig

    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, report_to=[], use_cpu=True,
                             save_strategy="no", logging_strategy="no", disable_tqdm=True)
    return BucketTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer,
                         td_config=FinetuneConfig(method="bucket", base_batch_size=4, token_budget=256))


@pytest.mark.parametrize("case", ["no_pad_token", "too_long", "label", "masked_lm"])
def test_bucket_trainer_refuses_bad_model_or_data_before_training(tmp_path, split, wordpiece, case):
    model, train, tokenizer = tiny_classifier(wordpiece), split, wordpiece
    if case == "no_pad_token":
        tokenizer = copy.deepcopy(wordpiece)
        tokenizer.pad_token = None
        match = r"processing_class must be the tokenizer, with a pad token: .*pad_token_id None"
    elif case == "too_long":
        model = tiny_classifier(wordpiece, max_position_embeddings=32)
        match = r"train_dataset: length\[\d+\] is \d+ tokens, but the model takes at most 32"
    elif case == "label":
        train = with_column(split, "label", [2] * len(split))
        match = r"train_dataset: label\[0\] is 2, but the model has num_labels=2"
    else:
        model = tiny_mlm(wordpiece)
        match = "model must be a Hugging Face sequence classifier"
    before, training = snapshot(model), model.training
    with pytest.raises(ValueError, match=match):
        make_trainer(tmp_path, model, train, tokenizer)
    assert unchanged(model, before, training)


# ----------------------------------------------------------------------------------------------------------
# predict
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["ids", "too_long", "pad", "masked_lm"])
def test_predict_refuses_bad_model_or_data_before_running(split, wordpiece, case):
    from tdnotebooks.finetuning.inference import predict

    model, data, kwargs = tiny_classifier(wordpiece).eval(), split, {}
    if case == "ids":
        data = with_column(split, "input_ids", [[i + 30000 for i in row] for row in split["input_ids"]])
        match = r"data: input_ids\[0\] holds token id \d+, but the model's vocabulary has 30522 ids \(0-30521\)"
    elif case == "too_long":
        model = tiny_classifier(wordpiece, max_position_embeddings=16).eval()
        match = r"data: length\[\d+\] is \d+ tokens, but the model takes at most 16"
    elif case == "pad":
        kwargs, match = {"pad_token_id": 1}, "pad_token_id=1, but the model's pad token"
    else:
        model, match = tiny_mlm(wordpiece).eval(), "model must be a Hugging Face sequence classifier"
    before = snapshot(model)
    with pytest.raises(ValueError, match=match):
        predict(model, data, **kwargs)
    assert unchanged(model, before, False)


# ----------------------------------------------------------------------------------------------------------
# pretrain
# ----------------------------------------------------------------------------------------------------------

SMALL = {"steps": 2, "batch_size": 2, "block_size": 16, "max_texts": 50, "eval_every": 0, "progress": False}


def test_pretrain_refuses_a_tokenizer_without_mask_token_before_anything_runs(wordpiece):
    from tdnotebooks.pretraining.train import PretrainConfig, pretrain

    no_mask = copy.deepcopy(wordpiece)
    no_mask.mask_token = None
    model = tiny_mlm(wordpiece)
    before, rng = snapshot(model), torch.random.get_rng_state()
    with pytest.raises(ValueError, match=r"tokenizer has no mask_token \(mask_token_id is None\) \(masked language "
                                         r"modelling replaces predicted tokens with it\)"):
        pretrain(PretrainConfig(**SMALL), model=model, tokenizer=no_mask)
    assert unchanged(model, before, True) and torch.equal(torch.random.get_rng_state(), rng)


def test_pretrain_refuses_a_gpt2_config(wordpiece):
    from transformers import GPT2Config

    from tdnotebooks.pretraining.train import PretrainConfig, pretrain

    rng = torch.random.get_rng_state()
    with pytest.raises(ValueError, match=r"model has model_type='gpt2' \(GPT2Config\); token dropping and MLM "
                                         "pretraining support BERT-style masked language models: bert, roberta"):
        pretrain(PretrainConfig(**SMALL), model=GPT2Config(n_layer=2, n_embd=32, n_head=2), tokenizer=wordpiece)
    assert torch.equal(torch.random.get_rng_state(), rng)


# ----------------------------------------------------------------------------------------------------------
# prepare, get_device, BucketSpec / BucketSampler, profile_hwcap
# ----------------------------------------------------------------------------------------------------------


def test_prepare_refuses_a_max_length_without_room_for_the_special_tokens(wordpiece):
    from tdnotebooks.finetuning.tokendrop import prepare

    with pytest.raises(ValueError, match=r"max_length must be an int >= 3 \(room for the tokenizer's 2 special "
                                         r"tokens and one text token\), got 1"):
        prepare(["a fine film indeed"], wordpiece, max_length=1)
    assert prepare(["a fine film indeed"], wordpiece, max_length=3)["length"] == [3]
    pairs = {"a": ["a fine film indeed"], "b": ["it was good"]}
    import datasets

    with pytest.raises(ValueError, match=r"max_length must be an int >= 5 \(room for the tokenizer's 3 special "
                                         r"tokens and one text token per segment\), got 4"):
        prepare(datasets.Dataset.from_dict(pairs), wordpiece, text_fields=("a", "b"), max_length=4)
    assert prepare(datasets.Dataset.from_dict(pairs), wordpiece, text_fields=("a", "b"), max_length=5)["length"] == [5]


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_mps_is_refused_where_it_is_not_available():
    from tdnotebooks.runtime import get_device

    with pytest.raises(ValueError, match=r"device='mps' was requested but Apple's MPS backend is not available here"):
        get_device("mps")


def test_a_cuda_index_beyond_the_gpus_is_refused():
    from tdnotebooks.runtime import get_device

    with pytest.raises(ValueError, match="no CUDA GPU is available" if not torch.cuda.is_available()
                       else r"this machine has \d+ CUDA GPU\(s\)"):
        get_device("cuda:64")


@pytest.mark.parametrize("make", ["spec", "sampler"])
def test_bucketing_without_lengths(make):
    from tdnotebooks.finetuning.bucketing import BucketSampler
    from tdnotebooks.finetuning.planning import BucketSpec

    with pytest.raises(ValueError, match=r"lengths must be a sequence of ints >= 1, the tokens of each example .*"
                                         "got None"):
        BucketSpec(None) if make == "spec" else BucketSampler(lengths=None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_profile_hwcap_on_cuda_without_cuda(wordpiece):
    from tdnotebooks.finetuning.hwcap import profile_hwcap

    with pytest.raises(ValueError, match="device='cuda' was requested but no CUDA GPU is available; use 'cpu'"):
        profile_hwcap(tiny_classifier(wordpiece), [8, 16], device="cuda")
