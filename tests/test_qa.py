"""Extractive QA: windows, labels that survive TokenDrop, the HF loss, post-processing, SQuAD metrics, training."""

import random
from types import SimpleNamespace

import datasets
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tdnotebooks.finetuning.qa import (
    QATask,
    _best_spans,
    normalize_answer,
    predict_qa,
    prepare_qa,
    squad_metrics,
)
from tdnotebooks.finetuning.tokendrop import (
    TokenDrop,
    TokenDropBucketCollator,
    TokenDropCollator,
    _stopword_tokens,
    encoding_stopwords,
)

pytestmark = pytest.mark.usefixtures("one_thread")
datasets.disable_progress_bars()

STOP = ["the", "of", "and", "a", "to", "in", "is", "it", "that", "he", "she", "was", "for", "on", "with", "his",
        "at", "by", "i", "you", "be", "this", "from", "or", "had", "not", "but", "what", "all", "were", "we"]
CONTENT = ["king", "crown", "sword", "night", "castle", "storm", "letter", "river", "horse", "queen", "battle",
           "honour", "gold", "field", "tower", "ghost", "friend", "wine", "rose", "bell"]
ANSWERS = ["the Duke of York", "Lord of the Isles", "a man of it", "Bishop and the Abbot", "York"]
PUNCT = [",", ".", ";", "!"]


def sentence(rng, n):
    words = [rng.choice(STOP + STOP + CONTENT) for _ in range(n)]
    return " ".join(words).capitalize() + rng.choice(PUNCT)


def make_example(rng, i, answer=None, words_before=30, words_after=30):
    answer = answer or rng.choice(ANSWERS)
    before, after = sentence(rng, words_before), sentence(rng, words_after)
    context = f"{before} {answer} {after}"
    return {"id": f"ex{i}", "title": "t", "context": context, "question": f"Who says {sentence(rng, 4)}?",
            "answers": {"text": [answer], "answer_start": [len(before) + 1]}}


def make_split(n, seed=0, **kwargs):
    rng = random.Random(seed)
    lengths = [(rng.randint(5, 40), rng.randint(5, 40)) for _ in range(n)]
    return datasets.Dataset.from_list([make_example(rng, i, words_before=a, words_after=b, **kwargs)
                                       for i, (a, b) in enumerate(lengths)])


def tiny_qa_model(tokenizer, seed=0):
    from transformers import BertForQuestionAnswering

    from tdnotebooks.models import tiny_bert

    torch.manual_seed(seed)
    return BertForQuestionAnswering(tiny_bert(num_layers=2, hidden_size=32, num_heads=2, intermediate_size=64,
                                              max_position_embeddings=128, tokenizer=tokenizer))


class MarkerModel(torch.nn.Module):
    """A stand-in QA model whose logits we control: start on ``start_id``, end on ``end_id``."""

    def __init__(self, start_id, end_id):
        super().__init__()
        self.start_id, self.end_id = start_id, end_id
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        ramp = torch.arange(input_ids.shape[1], dtype=torch.float) * 1e-3  # ties broken by position
        start = 10.0 * (input_ids == self.start_id).float() - ramp
        end = 10.0 * (input_ids == self.end_id).float() - ramp
        return SimpleNamespace(start_logits=start, end_logits=end)


def single_id(tok, word):
    ids = tok(word, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, word
    return ids[0]


# ---------------------------------------------------------------------------------------------------------- labels
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), seed=st.integers(0, 10_000), epoch=st.integers(0, 5), rate=st.floats(0, 1),
       mode=st.sampled_from(["rate", "to_length"]), max_length=st.sampled_from([32, 48, 128]),
       keep_question=st.booleans())
def test_answer_span_survives_any_token_drop(wordpiece, data, seed, epoch, rate, mode, max_length, keep_question):
    rng = random.Random(seed)
    example = make_example(rng, 0, answer=data.draw(st.sampled_from(ANSWERS)),
                           words_before=data.draw(st.integers(0, 40)), words_after=data.draw(st.integers(0, 40)))
    features = prepare_qa(datasets.Dataset.from_list([example]), wordpiece, max_length=max_length, stride=8,
                          keep_question=keep_question)
    gold = wordpiece.decode(wordpiece(example["answers"]["text"][0], add_special_tokens=False)["input_ids"])
    labelled = [f for f in features if f["start_positions"] > 0]
    assert labelled, "the answer fits in a window, so some window holds it"
    for f in labelled:
        s, e = f["start_positions"], f["end_positions"]
        assert wordpiece.decode(f["input_ids"][s:e + 1]) == gold
        if mode == "rate":
            collate = TokenDropCollator(TokenDrop(rate=rate, seed=seed), wordpiece.pad_token_id, return_positions=True)
            batch_rows = [f]
        else:  # trim to a random target: a shorter companion row sets the batch's shortest length
            target = data.draw(st.integers(1, f["length"]))
            companion = {**f, "input_ids": f["input_ids"][:target], "attention_mask": f["attention_mask"][:target],
                         "token_type_ids": f["token_type_ids"][:target], "stopword_spans": [],
                         "stopword_is_pronoun": [], "start_positions": 0, "end_positions": 0, "idx": f["idx"] + 1}
            collate = TokenDropBucketCollator(TokenDrop(mode="to_length", seed=seed), wordpiece.pad_token_id,
                                              return_positions=True)
            batch_rows = [f, companion]
        collate.set_epoch(epoch)
        batch = collate(batch_rows)
        if mode == "rate" and rate >= 0.5 and f["stopword_spans"]:
            assert collate.dropped_tokens > 0
        s2, e2 = int(batch["start_positions"][0]), int(batch["end_positions"][0])
        assert wordpiece.decode(batch["input_ids"][0, s2:e2 + 1].tolist()) == gold
        assert batch["original_positions"][0, s2] == s and batch["original_positions"][0, e2] == e


def test_window_stopwords_match_the_full_text_finder(wordpiece):
    rng = random.Random(3)
    example = make_example(rng, 0, words_before=80, words_after=80)
    enc = wordpiece([example["question"]], [example["context"]], truncation="only_second", max_length=40,
                    stride=10, return_overflowing_tokens=True, return_offsets_mapping=True)
    assert len(enc.encodings) > 3
    for encoding in enc.encodings:
        full = _stopword_tokens(encoding, [example["question"], example["context"]])
        assert encoding_stopwords(encoding, [example["question"], example["context"]]) == (
            [[f.start, f.end] for f in full], [f.pronoun for f in full])


def test_question_stopwords_kept_by_default_droppable_on_request(wordpiece):
    data = make_split(4)
    kept, droppable = (prepare_qa(data, wordpiece, max_length=128, stride=32, keep_question=k) for k in (True, False))
    for k, d in zip(kept, droppable, strict=True):
        question_end = d["token_type_ids"].index(1)  # the first context token
        assert all(s >= question_end for s, _ in k["stopword_spans"])
        assert any(e <= question_end for _, e in d["stopword_spans"])  # "who", "says", quoted stopwords
        assert set(map(tuple, k["stopword_spans"])) < set(map(tuple, d["stopword_spans"]))
    row = droppable[0]
    dropped = TokenDropCollator(TokenDrop(rate=1.0), wordpiece.pad_token_id)([row])["input_ids"][0].tolist()
    assert wordpiece.decode(dropped[:dropped.index(wordpiece.sep_token_id)], skip_special_tokens=True).split()[0] != "who"
    # the answer's stopwords are protected ("the Duke of York": "the" and "of" stay), unless protect_answer=False
    answer_tokens = range(row["start_positions"], row["end_positions"] + 1)
    assert not any(set(range(s, e)) & set(answer_tokens) for s, e in row["stopword_spans"])


def test_long_context_windows_label_the_answer_where_it_is_and_prediction_maps_back(wordpiece):
    rng = random.Random(7)
    before, after = sentence(rng, 120), sentence(rng, 120)
    answer = "Duke  of York"  # two spaces: the prediction is the original substring, not a decoded one
    context = f"{before} {answer}, {after}"
    example = {"id": "long", "context": context, "question": "Who says so?",
               "answers": {"text": [answer], "answer_start": [len(before) + 1]}}
    examples = datasets.Dataset.from_list([example])
    features = prepare_qa(examples, wordpiece, max_length=64, stride=16, protect_answer=False)
    assert len(features) >= 5 and set(features["example_id"]) == {"long"}
    assert list(features["idx"]) == list(range(len(features)))
    a, b = len(before) + 1, len(before) + 1 + len(answer)
    holders = []
    for k, f in enumerate(features):
        chars = [o for o in f["offset_mapping"] if o[0] >= 0]
        holds = chars[0][0] <= a and chars[-1][1] >= b
        if holds:
            holders.append(k)
            s, e = f["start_positions"], f["end_positions"]
            assert context[f["offset_mapping"][s][0]:f["offset_mapping"][e][1]] == answer
        else:
            assert f["start_positions"] == f["end_positions"] == 0  # [CLS]
    assert 1 <= len(holders) < len(features)
    only = prepare_qa(datasets.DatasetDict({"train": examples}), wordpiece, max_length=64, stride=16,
                      answerless_windows="drop")["train"]
    assert list(only["input_ids"]) == [features[k]["input_ids"] for k in holders]
    assert list(only["idx"]) == list(range(len(holders)))
    model = MarkerModel(single_id(wordpiece, "duke"), single_id(wordpiece, "york"))
    for batching in ("random", "bucketed"):
        pred = predict_qa(model, features, examples, batching=batching, batch_size=3, pad_token_id=0)
        assert pred.answers == {"long": answer}
        assert squad_metrics(pred, examples) == {"exact_match": 100.0, "f1": 100.0}
        assert pred.candidates["long"][0] == (answer, pytest.approx(20.0, abs=0.2))


def test_best_spans_skip_dropped_tokens_and_keep_the_original_text_between():
    # slots hold original tokens 0, 1, 2, 4, 5 (3 was dropped) and one pad slot; 0 is [CLS], 1 a question token
    offsets = [[-1, -1], [-1, -1], [0, 3], [4, 7], [8, 11], [12, 15]]
    positions = torch.tensor([0, 1, 2, 4, 5, -1])
    start = torch.tensor([9.0, 9.0, 5.0, 1.0, 0.0, 9.0])   # [CLS], question and padding are never boundaries
    end = torch.tensor([9.0, 9.0, 0.0, 4.0, 1.0, 9.0])
    found = []
    _best_spans(start, end, positions, offsets, max_answer_length=30, n_best=3, into=found)
    assert found[0] == (9.0, 0, 11)  # tokens 2..4: characters 0-11, the dropped token 3 (chars 4-7) included
    found = []
    _best_spans(start, end, positions, offsets, max_answer_length=2, n_best=3, into=found)
    assert (9.0, 0, 11) not in found  # 2..4 is 3 original tokens long, even though only 2 slots


# ---------------------------------------------------------------------------------------------------------- loss
def test_example_losses_average_to_the_models_own_loss(wordpiece):
    from tdnotebooks.finetuning.collate import PadToBatchMax

    features = prepare_qa(make_split(6), wordpiece, max_length=48, stride=8)
    model = tiny_qa_model(wordpiece)
    batch = PadToBatchMax(wordpiece.pad_token_id)([features[i] for i in range(len(features))])
    labels = {k: batch.pop(k) for k in QATask.label_keys}
    out = model(**batch, **labels)
    losses = QATask().example_losses(out, labels, model)
    assert losses.shape == (len(features),)
    assert losses.mean().item() == pytest.approx(out.loss.item(), rel=1e-5)


# ---------------------------------------------------------------------------------------------------------- metrics
def test_squad_metrics_normalise_and_take_the_best_gold():
    assert normalize_answer("The  Duke, of York!") == "duke of york"
    assert normalize_answer("An apple a day") == "apple day"
    examples = datasets.Dataset.from_list([
        {"id": "1", "context": "the Duke of York", "question": "?",
         "answers": {"text": ["Duke of York", "York"], "answer_start": [4, 12]}},
        {"id": "2", "context": "Duke of York", "question": "?",
         "answers": {"text": ["Duke of York"], "answer_start": [0]}},
        {"id": "3", "context": "a rose", "question": "?", "answers": {"text": ["rose"], "answer_start": [2]}},
    ])
    scores = squad_metrics({"1": "the duke of YORK.", "2": "Duke of", "3": "king"}, examples)
    # 1: exact after normalisation; 2: P=1, R=2/3 -> F1 0.8; 3: nothing in common
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 0.8 + 0) / 3)
    assert squad_metrics(["York", "Duke of York", "rose"], examples) == {"exact_match": 100.0, "f1": 100.0}
    with pytest.raises(ValueError, match="no answer for 1 of 3"):
        squad_metrics({"1": "York", "2": "York"}, examples)


# ---------------------------------------------------------------------------------------------------------- server mode
def test_server_mode_tokendrop_gives_the_same_answers_as_bucketed(wordpiece):
    examples = make_split(24, seed=5, answer="Bishop and the Abbot")
    features = prepare_qa(examples, wordpiece, max_length=96, stride=16, protect_answer=False)
    model = MarkerModel(single_id(wordpiece, "bishop"), single_id(wordpiece, "abbot"))
    plain = predict_qa(model, features, examples, batching="bucketed", batch_size=8, token_budget=512,
                       pad_token_id=0)
    server = predict_qa(model, features, examples, batching="bucketed_tokendrop", batch_size=8, token_budget=512,
                        token_drop=TokenDrop(mode="to_length", seed=1), pad_token_id=0)
    assert server.answers == plain.answers == dict.fromkeys(plain.answers, "Bishop and the Abbot")
    assert server.padding.padding_fraction < plain.padding.padding_fraction
    assert server.padding.real_tokens < plain.padding.real_tokens  # stopwords were dropped ("and the" too)
    # a model that points at stopwords: whatever TokenDrop removed, answers stay substrings of the context
    odd = MarkerModel(single_id(wordpiece, "the"), single_id(wordpiece, "of"))
    preds = predict_qa(odd, features, examples, batching="bucketed_tokendrop", batch_size=8, token_budget=512,
                       token_drop=TokenDrop(mode="to_length", seed=1), pad_token_id=0)
    for ex in examples:
        text = preds.answers[ex["id"]]
        assert text in ex["context"]
        assert all(t in ex["context"] for t, _ in preds.candidates[ex["id"]])


# ---------------------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def qa_data(wordpiece):
    train_ex, dev_ex = make_split(48, seed=1), make_split(12, seed=2)
    return (prepare_qa(train_ex, wordpiece, max_length=64, stride=16),
            prepare_qa(dev_ex, wordpiece, max_length=64, stride=16, protect_answer=False), dev_ex)


@pytest.mark.parametrize("method, rate", [("tokendrop_bucket", 0.0), ("random", 0.3), ("bucket", 0.0)])
def test_finetune_with_qa_task(wordpiece, qa_data, method, rate):
    from tdnotebooks.finetuning.train import FinetuneConfig, finetune

    train, dev, dev_ex = qa_data
    model = tiny_qa_model(wordpiece)
    config = FinetuneConfig(method=method, token_drop_rate=rate, epochs=1, base_batch_size=8, token_budget=512,
                            lr=1e-3, progress=False, eval_batch_size=16)
    history = finetune(model, train, dev, config, task=QATask(dev_ex), pad_token_id=wordpiece.pad_token_id)
    record = history.epochs[-1]
    assert 0 <= record["dev_exact_match"] <= record["dev_f1"] <= 100
    assert history.final_dev_metric == record["dev_f1"] and history.config["task"] == "extractive_qa"
    assert all(torch.isfinite(torch.tensor(s["loss"])) for s in history.steps)
    if method == "tokendrop_bucket":
        assert history.padding.padding_fraction < 0.05


def test_bucket_trainer_trains_with_qa_task(tmp_path, wordpiece, qa_data):
    from transformers import TrainingArguments

    from tdnotebooks.finetuning.hf_trainer import BucketTrainer
    from tdnotebooks.finetuning.train import FinetuneConfig

    train, dev, dev_ex = qa_data
    model = tiny_qa_model(wordpiece)
    before = model.qa_outputs.weight.detach().clone()
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, learning_rate=1e-3, warmup_steps=0,
                             report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="no",
                             logging_strategy="no", per_device_train_batch_size=8)
    trainer = BucketTrainer(model=model, args=args, train_dataset=train, processing_class=wordpiece,
                            td_config=FinetuneConfig(method="tokendrop_bucket", base_batch_size=8, token_budget=512),
                            task=QATask(dev_ex))
    trainer.train()
    assert trainer.state.global_step == 2
    assert not torch.equal(before, model.qa_outputs.weight)
    scores = trainer.task.evaluate(trainer.model, dev, batch_size=16, pad_token_id=wordpiece.pad_token_id,
                                   amp_dtype=None)
    assert set(scores) == {"dev_exact_match", "dev_f1"}


# ---------------------------------------------------------------------------------------------------------- bad inputs
def test_bad_inputs_are_refused_clearly(wordpiece, qa_data):
    from transformers import BertForSequenceClassification

    from tdnotebooks.finetuning.train import finetune
    from tdnotebooks.models import tiny_bert

    train, dev, dev_ex = qa_data
    examples = make_split(3)
    with pytest.raises(ValueError, match="stride must be an int < max_length"):
        prepare_qa(examples, wordpiece, max_length=64, stride=64)
    with pytest.raises(ValueError, match="question\\[0\\] has .* tokens"):
        prepare_qa(examples, wordpiece, max_length=16, stride=8)
    with pytest.raises(ValueError, match="missing the columns \\['context'\\]"):
        prepare_qa(examples.remove_columns("context"), wordpiece)
    with pytest.raises(ValueError, match="answer_start must be the character offset"):
        prepare_qa(examples.map(lambda ex: {"answers": {"text": ["zzz"], "answer_start": [0]}}), wordpiece)
    with pytest.raises(ValueError, match="keep_question must be"):
        prepare_qa(examples, wordpiece, keep_question="yes")
    with pytest.raises(ValueError, match="answerless_windows must be"):
        prepare_qa(examples, wordpiece, answerless_windows="skip")
    classifier = BertForSequenceClassification(tiny_bert(num_layers=2, hidden_size=32, num_heads=2,
                                                         intermediate_size=64, tokenizer=wordpiece))
    with pytest.raises(ValueError, match="AutoModelForQuestionAnswering"):
        finetune(classifier, train, dev, task=QATask(dev_ex), pad_token_id=0, progress=False)
    model = tiny_qa_model(wordpiece)
    with pytest.raises(ValueError, match="missing the columns \\['start_positions', 'end_positions'\\]"):
        finetune(model, train.remove_columns(["start_positions", "end_positions"]), dev, task=QATask(dev_ex),
                 pad_token_id=0, progress=False)
    with pytest.raises(ValueError, match="features and examples do not match"):
        finetune(model, train, dev, task=QATask(examples), pad_token_id=0, progress=False)
    with pytest.raises(ValueError, match="features and examples do not match"):
        predict_qa(model, dev, dev_ex.select(range(5)), pad_token_id=0)
    with pytest.raises(ValueError, match="needs token_drop=TokenDrop"):
        predict_qa(model, dev, dev_ex, batching="bucketed_tokendrop", pad_token_id=0)
    with pytest.raises(ValueError, match="max_answer_length must be"):
        predict_qa(model, dev, dev_ex, max_answer_length=0, pad_token_id=0)
