"""Seq2seq (summarization): TokenDrop on the encoder inputs only, targets padded with -100, ROUGE on dev."""

from functools import lru_cache

import datasets
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tdnotebooks.finetuning.collate import IGNORE_INDEX
from tdnotebooks.finetuning.seq2seq import (
    Seq2SeqTask,
    check_seq2seq_model,
    generate_summaries,
    load_seq2seq_model,
    prepare_seq2seq,
    rouge_scores,
)
from tdnotebooks.finetuning.tokendrop import TokenDrop, TokenDropBucketCollator, TokenDropCollator
from tdnotebooks.finetuning.train import FinetuneConfig, finetune, make_batching

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["HELENA", "COUNTESS", "LAFEU", "BERTRAM", "PAROLLES", "KING", "CLOWN", "DIANA"]
LINES = ["I think it would be the death of the king's disease, madam.",
         "In delivering my son from me, I bury a second husband.",
         "You shall find of the king a husband, madam; you, sir, a father.",
         "What hope is there of his majesty's amendment?",
         "He hath abandoned his physicians, madam, under whose practices he hath persecuted time with hope.",
         "This young gentlewoman had a father, whose skill was almost as great as his honesty.",
         "Be thou blest, Bertram, and succeed thy father in manners as in shape!"]


def cast_data(n: int, seed: int = 0) -> datasets.Dataset:
    """Dialogue excerpts and their speakers, like load_task("shakespeare_cast"), of varied lengths."""
    import random

    rng = random.Random(seed)
    docs, summaries = [], []
    for _ in range(n):
        speakers = rng.sample(NAMES, rng.randint(1, 4))
        speeches = [(s, " ".join(rng.sample(LINES, rng.randint(1, 2)))) for s in speakers]
        docs.append("\n".join(f"{s}: {line}" for s, line in speeches))
        summaries.append(f"Speakers: {', '.join(speakers)}.")
    return datasets.Dataset.from_dict({"id": [str(i) for i in range(n)], "document": docs, "summary": summaries})


@lru_cache(maxsize=8)
def prepared(max_target_length: int = 16, n: int = 32, seed: int = 0, max_source_length: int = 96):
    from tdnotebooks.models import load_tokenizer

    return prepare_seq2seq(cast_data(n, seed), load_tokenizer(), max_source_length=max_source_length,
                           max_target_length=max_target_length)


def tiny_bert2bert(tok, seed: int = 0):
    from transformers import BertConfig, EncoderDecoderConfig, EncoderDecoderModel

    torch.manual_seed(seed)
    size = dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0)
    config = EncoderDecoderConfig.from_encoder_decoder_configs(
        BertConfig(**size), BertConfig(**size, is_decoder=True, add_cross_attention=True))
    config.decoder_start_token_id, config.pad_token_id = tok.cls_token_id, tok.pad_token_id
    config.eos_token_id, config.vocab_size = tok.sep_token_id, len(tok)
    return EncoderDecoderModel(config=config)


def tiny_t5(tok, seed: int = 0):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    return T5ForConditionalGeneration(T5Config(
        vocab_size=len(tok), d_model=32, d_kv=16, d_ff=64, num_layers=1, num_decoder_layers=1, num_heads=2,
        dropout_rate=0.0, decoder_start_token_id=tok.pad_token_id, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.sep_token_id))


def quick(method="tokendrop_bucket", **overrides):
    return FinetuneConfig(**{"method": method, "epochs": 1, "base_batch_size": 8, "eval_batch_size": 16,
                             "progress": False, "lr": 1e-3, **overrides})


# ---------------------------------------------------------------------------------------------------- data


def test_prepare_seq2seq_labels_are_the_target_and_sep_while_length_counts_the_source(wordpiece):
    data = prepared(8)
    row = data[0]
    target = wordpiece(row["summary"])["input_ids"]           # [CLS] ... [SEP]
    assert row["length"] == len(row["input_ids"])             # buckets by input length
    assert row["labels"][-1] == wordpiece.sep_token_id and wordpiece.cls_token_id not in row["labels"]
    assert all(len(r) <= 8 for r in data["labels"])           # truncated, the end token kept
    long = [r for r in data if len(wordpiece(r["summary"])["input_ids"]) > 9]
    assert long and all(r["labels"][-1] == wordpiece.sep_token_id and len(r["labels"]) == 8 for r in long)
    short = [r for r in data if len(wordpiece(r["summary"])["input_ids"]) <= 9][0]
    assert short["labels"] == wordpiece(short["summary"])["input_ids"][1:]
    assert target[0] == wordpiece.cls_token_id and row["stopword_spans"]  # stopwords found on the source


def test_prefix_tokens_are_never_offered_to_tokendrop(wordpiece):
    plain = prepare_seq2seq(cast_data(4), wordpiece, max_source_length=256)
    data = prepare_seq2seq(cast_data(4), wordpiece, max_source_length=256, prefix="to: ")  # "to" is a stopword
    shift = len(wordpiece("to:", add_special_tokens=False)["input_ids"])
    for a, b in zip(plain, data, strict=True):
        assert b["input_ids"][1:1 + shift] == wordpiece("to:", add_special_tokens=False)["input_ids"]
        assert all(start >= 1 + shift for start, _ in b["stopword_spans"])
        assert [[s + shift, e + shift] for s, e in a["stopword_spans"]] == b["stopword_spans"]
        assert len(b["stopword_is_pronoun"]) == len(b["stopword_spans"])
        assert a["labels"] == b["labels"] and "_tdn_source" not in data.column_names


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 1000), epoch=st.integers(0, 5), rate=st.floats(0, 1),
       max_target_length=st.sampled_from([2, 5, 9, 16]), bucket=st.booleans(),
       rows=st.lists(st.integers(0, 11), min_size=1, max_size=6, unique=True))
def test_tokendrop_drops_only_source_stopwords_and_leaves_the_labels_exact(seed, epoch, rate, max_target_length,
                                                                           bucket, rows):
    data = prepared(max_target_length, n=12)
    examples = [data[i] for i in rows]
    if bucket:
        collate = TokenDropBucketCollator(TokenDrop(mode="to_length", seed=seed), 0, trim_to="reachable",
                                          return_positions=True)
    else:
        collate = TokenDropCollator(TokenDrop(rate=rate, seed=seed), 0, return_positions=True)
    collate.set_epoch(epoch)
    batch = collate(examples)
    width = max(len(ex["labels"]) for ex in examples)
    assert batch["labels"].tolist() == [ex["labels"] + [IGNORE_INDEX] * (width - len(ex["labels"]))
                                        for ex in examples]
    for row, ex in enumerate(examples):
        kept = [p for p in batch["original_positions"][row].tolist() if p >= 0]
        assert kept == sorted(kept) and batch["input_ids"][row, :len(kept)].tolist() == [ex["input_ids"][p] for p in kept]
        stopword = {p for start, end in ex["stopword_spans"] for p in range(start, end)}
        assert set(range(ex["length"])) - stopword <= set(kept)  # every non-stopword token is kept


# ---------------------------------------------------------------------------------------------------- model side


@pytest.mark.parametrize("family", ["bert2bert", "t5"])
def test_the_model_builds_decoder_inputs_from_the_labels(wordpiece, family):
    model = (tiny_bert2bert if family == "bert2bert" else tiny_t5)(wordpiece).eval()
    start = model.config.decoder_start_token_id
    labels = torch.tensor([[7, 8, 102], [9, 102, IGNORE_INDEX]])
    shifted = (model.prepare_decoder_input_ids_from_labels(labels) if family == "bert2bert"
               else model._shift_right(labels))
    assert shifted.tolist() == [[start, 7, 8], [start, 9, 102]]
    labels2 = torch.tensor([[7, IGNORE_INDEX, IGNORE_INDEX]])
    shifted2 = (model.prepare_decoder_input_ids_from_labels(labels2) if family == "bert2bert"
                else model._shift_right(labels2))
    assert shifted2.tolist() == [[start, 7, wordpiece.pad_token_id]]  # -100 became pad
    task = Seq2SeqTask(wordpiece)
    batch = {"input_ids": torch.tensor([[101, 2023, 102], [101, 2003, 102]]),
             "attention_mask": torch.ones(2, 3, dtype=torch.long), "token_type_ids": torch.zeros(2, 3, dtype=torch.long)}
    inputs = task.model_inputs(batch, {"labels": labels})
    assert set(inputs) == {"input_ids", "attention_mask", "labels"}
    with torch.no_grad():
        implicit = model(**inputs).logits
        explicit = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         decoder_input_ids=shifted,
                         decoder_attention_mask=shifted.ne(wordpiece.pad_token_id).long()
                         if family == "bert2bert" else None).logits
    torch.testing.assert_close(implicit, explicit)


@pytest.mark.parametrize("family", ["bert2bert", "t5"])
def test_example_losses_average_to_the_models_loss_only_when_targets_are_equally_long(wordpiece, family):
    model = (tiny_bert2bert if family == "bert2bert" else tiny_t5)(wordpiece).eval()
    task = Seq2SeqTask(wordpiece)
    batch = {"input_ids": torch.tensor([[101, 2023, 2003, 102], [101, 2009, 102, 0]]),
             "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])}
    with torch.no_grad():
        equal = {"labels": torch.tensor([[2023, 2003, 102], [2009, 2003, 102]])}
        out = model(**task.model_inputs(batch, equal))
        losses = task.example_losses(out, equal, model)
        assert losses.shape == (2,)
        torch.testing.assert_close(losses.mean(), out.loss)
        unequal = {"labels": torch.tensor([[2023, 2003, 2009, 2023, 102], [2009, 102] + [IGNORE_INDEX] * 3])}
        out = model(**task.model_inputs(batch, unequal))
        losses = task.example_losses(out, unequal, model)
        token = torch.nn.functional.cross_entropy(out.logits.transpose(1, 2), unequal["labels"], reduction="none")
        mask = unequal["labels"].ne(IGNORE_INDEX)
        torch.testing.assert_close(losses, (token * mask).sum(1) / mask.sum(1))  # each example: its token mean
        torch.testing.assert_close(out.loss, token[mask].mean())                  # HF: the batch's token mean
        assert not torch.isclose(losses.mean(), out.loss)


def test_tokendrop_bucket_batches_have_no_source_padding_while_targets_are_padded(wordpiece):
    train = prepared(16, n=64)
    batching = make_batching(quick(), train, wordpiece.pad_token_id)
    batching.set_epoch(0)
    batches = [batching.collate([train[i] for i in b]) for b in batching.batch_sampler]
    stats = batching.collate.stats
    assert stats.padding_fraction < 0.02, stats
    assert any((b["labels"] == IGNORE_INDEX).any() for b in batches)  # targets of one batch differ in length
    for b, indices in zip(batches, batching.batch_sampler, strict=True):
        assert b["labels"].tolist() == [train[i]["labels"] + [IGNORE_INDEX] * (b["labels"].shape[1]
                                        - len(train[i]["labels"])) for i in indices]


# ---------------------------------------------------------------------------------------------------- training


@pytest.mark.parametrize("method,extra", [("tokendrop_bucket", {}), ("random", {"token_drop_rate": 0.3}),
                                          ("bucket", {})])
def test_finetune_with_seq2seq_task_trains_and_records_rouge(wordpiece, method, extra):
    model = tiny_bert2bert(wordpiece)
    before = [p.detach().clone() for p in model.parameters()]
    task = Seq2SeqTask(wordpiece, max_new_tokens=6, dev_examples=6)
    history = finetune(model, prepared(16), prepared(16, n=8, seed=1), quick(method, **extra), task=task,
                       pad_token_id=wordpiece.pad_token_id)
    epoch = history.epochs[-1]
    for key in ("dev_loss", "dev_rouge1", "dev_rouge2", "dev_rougeL", "dev_gen_tokens"):
        assert key in epoch and epoch[key] == epoch[key]  # present, not NaN
    assert 0 <= epoch["dev_rougeL"] <= 100 and history.final_dev_metric == epoch["dev_rougeL"]
    assert history.config["task"] == "seq2seq" and history.config["main_metric"] == "dev_rougeL"
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    if method == "tokendrop_bucket":
        assert history.padding.padding_fraction < 0.02


def test_a_t5_layout_model_trains_and_generates_through_finetune(wordpiece):
    model = tiny_t5(wordpiece)
    history = finetune(model, prepared(16), prepared(16, n=8, seed=1), quick("tokendrop_bucket"),
                       task=Seq2SeqTask(wordpiece, max_new_tokens=4), pad_token_id=wordpiece.pad_token_id)
    assert history.epochs[-1]["dev_loss"] > 0 and "dev_rougeL" in history.epochs[-1]
    summaries = generate_summaries(model, ["HELENA: I think so.", "KING: Be thou blest."], wordpiece,
                                   max_new_tokens=3)
    assert len(summaries) == 2 and all(isinstance(s, str) for s in summaries)


def test_bucket_seq2seq_trainer_trains_two_steps(tmp_path, wordpiece):
    from transformers import Seq2SeqTrainingArguments

    from tdnotebooks.finetuning.hf_trainer import BucketSeq2SeqTrainer

    model = tiny_bert2bert(wordpiece)
    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path), max_steps=2, learning_rate=1e-3, report_to=[],
                                    use_cpu=True, disable_tqdm=True, save_strategy="no", logging_strategy="no",
                                    per_device_train_batch_size=8, remove_unused_columns=False)
    trainer = BucketSeq2SeqTrainer(model=model, args=args, train_dataset=prepared(16), processing_class=wordpiece,
                                   td_config=FinetuneConfig(method="tokendrop_bucket", base_batch_size=8),
                                   task=Seq2SeqTask(wordpiece))
    result = trainer.train()
    assert trainer.state.global_step == 2 and result.training_loss > 0
    metrics = trainer.task.evaluate(trainer.model, prepared(16, n=8, seed=1), batch_size=8,
                                    pad_token_id=wordpiece.pad_token_id, amp_dtype=None)
    assert {"dev_loss", "dev_rougeL"} <= set(metrics)


# ---------------------------------------------------------------------------------------------------- ROUGE, models


def test_rouge_scores_match_hand_computed_values():
    scores = rouge_scores(["the cat sat"], ["the cat sat down"])
    # unigrams: P = 3/3, R = 3/4 -> F = 6/7; bigrams: P = 2/2, R = 2/3 -> F = 4/5; LCS 3 -> as ROUGE-1
    assert scores == pytest.approx({"rouge1": 600 / 7, "rouge2": 80.0, "rougeL": 600 / 7})
    assert rouge_scores(["Dogs running!"], ["dog runs"])["rouge1"] == pytest.approx(100.0)  # stemmed, lower-cased
    two = rouge_scores(["a b", "x y"], ["a b", "c d"])
    assert two == pytest.approx({"rouge1": 50.0, "rouge2": 50.0, "rougeL": 50.0})
    assert rouge_scores(["b a"], ["a b"]) == pytest.approx({"rouge1": 100.0, "rouge2": 0.0, "rougeL": 50.0})


@pytest.mark.slow
def test_load_seq2seq_model_builds_the_bundled_bert2bert_offline_quietly_and_generates(wordpiece):
    import logging

    class Records(logging.Handler):
        def __init__(self):
            super().__init__()
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    seen, library = Records(), logging.getLogger("transformers")
    library.addHandler(seen)
    try:
        model = load_seq2seq_model(num_layers=1)
    finally:
        library.removeHandler(seen)
    assert not any("LOAD REPORT" in m or "tied weights" in m for m in seen.messages), seen.messages
    config = model.config
    assert config.is_encoder_decoder and type(model).__name__ == "EncoderDecoderModel"
    assert (config.decoder_start_token_id, config.pad_token_id, config.eos_token_id, config.vocab_size) == (
        wordpiece.cls_token_id, wordpiece.pad_token_id, wordpiece.sep_token_id, len(wordpiece))
    assert model.generation_config.decoder_start_token_id == wordpiece.cls_token_id
    assert any("crossattention" in k for k in model.newly_initialized)
    assert not any(k.startswith("encoder.") for k in model.newly_initialized)  # the encoder is MiniLM as it is
    assert model.decoder.config.num_hidden_layers == 1 and model.decoder.config.add_cross_attention
    check_seq2seq_model(model, wordpiece.pad_token_id)
    summaries = generate_summaries(model, ["HELENA: I think it would be the death of the king."], wordpiece,
                                   max_new_tokens=4)
    assert len(summaries) == 1 and isinstance(summaries[0], str)


# ---------------------------------------------------------------------------------------------------- bad inputs


def test_bad_inputs_are_refused_with_clear_errors(wordpiece):
    from tdnotebooks.finetuning.tokendrop import prepare
    from tdnotebooks.models import load_pretrained

    data = cast_data(4)
    with pytest.raises(ValueError, match=r"target must be a column name"):
        prepare_seq2seq(data, wordpiece, target="")
    with pytest.raises(ValueError, match=r"no column\(s\) \['abstract'\].*source= and target="):
        prepare_seq2seq(data, wordpiece, target="abstract")
    for bad in (0, 1, 2.5, True):
        with pytest.raises(ValueError, match=r"max_target_length .* must be an int >= 2, got"):
            prepare_seq2seq(data, wordpiece, max_target_length=bad)
    with pytest.raises(ValueError, match=r"max_source_length must be an int >= 1, got 0"):
        prepare_seq2seq(data, wordpiece, max_source_length=0)
    with pytest.raises(ValueError, match=r"prefix must be a str"):
        prepare_seq2seq(data, wordpiece, prefix=None)
    with pytest.raises(ValueError, match=r"must be a datasets.Dataset or DatasetDict"):
        prepare_seq2seq(["a text"], wordpiece)
    with pytest.raises(ValueError, match=r"every target must be a str"):
        prepare_seq2seq(data.map(lambda r: {"summary": None}), wordpiece)
    for kwargs in ({"max_new_tokens": 0}, {"num_beams": 0}, {"dev_examples": 0}, {"bucket_width": 1.5}):
        with pytest.raises(ValueError, match=f"{next(iter(kwargs))} must be an int >= 1"):
            Seq2SeqTask(wordpiece, **kwargs)
    with pytest.raises(ValueError, match=r"tokenizer must be the tokenizer"):
        Seq2SeqTask(None)

    train, task = prepared(16), Seq2SeqTask(wordpiece)
    classifier = load_pretrained(kind="classifier", num_layers=1)
    with pytest.raises(ValueError, match=r"encoder-decoder .*BertForSequenceClassification is a classifier"):
        finetune(classifier, train, train, quick(), task=task)
    model = tiny_bert2bert(wordpiece)
    with pytest.raises(ValueError, match=r"missing the columns \['labels'\].*prepare_seq2seq"):
        finetune(model, prepare(data, wordpiece, text_fields=("document",)), train, quick(), task=task)
    with pytest.raises(ValueError, match=r"labels holds one value per example"):
        finetune(model, train.remove_columns("labels").add_column("labels", [0] * len(train)), train, quick(),
                 task=task)
    with pytest.raises(ValueError, match=r"pad_token_id=5, but the model's pad token is"):
        finetune(model, train, train, quick(), task=task, pad_token_id=5)
    model.config.decoder_start_token_id = None
    with pytest.raises(ValueError, match=r"decoder_start_token_id is None"):
        finetune(model, train, train, quick(), task=task)
    small = tiny_bert2bert(wordpiece)
    small.config.decoder.vocab_size = 100
    small.decoder.cls.predictions.decoder = torch.nn.Linear(32, 100)
    with pytest.raises(ValueError, match=r"train: labels\[0\] holds token id \d+, but the model's vocabulary has 100"):
        finetune(small, train, train, quick(), task=task)
    with pytest.raises(ValueError, match=r"equal length"):
        rouge_scores(["a"], ["a", "b"])
    with pytest.raises(ValueError, match=r"lists of strings"):
        rouge_scores("a", "a")
    with pytest.raises(ValueError, match=r"data must be a list of texts"):
        generate_summaries(tiny_bert2bert(wordpiece), "one text", wordpiece)
