"""The task contract of the training loops (tdnotebooks.finetuning.tasks) and the label collation every
collator shares (collate.collate_labels): class labels, seq2seq targets, QA answer positions moved with the drop."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tdnotebooks.finetuning.collate import IGNORE_INDEX, PadToBatchMax, collate_labels, shift_positions
from tdnotebooks.finetuning.tasks import ClassificationTask, FinetuneTask
from tdnotebooks.finetuning.tokendrop import TokenDrop, TokenDropBucketCollator, TokenDropCollator
from tdnotebooks.finetuning.train import finetune

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = {"freeze_embeddings": True, "progress": False}


@pytest.fixture(scope="module")
def tiny_task(wordpiece):
    from tdnotebooks.data import load_task
    from tdnotebooks.finetuning.tokendrop import prepare

    rt = load_task("rt_sentiment")
    return (prepare(rt["train"].shuffle(seed=1).select(range(48)), wordpiece, max_length=40),
            prepare(rt["dev"].shuffle(seed=1).select(range(16)), wordpiece, max_length=40))


def tiny_model():
    from tdnotebooks.models import load_pretrained

    torch.manual_seed(0)
    return load_pretrained(kind="classifier", num_layers=1)


# ------------------------------------------------------------------------------------------ collate_labels
def test_sequence_targets_are_padded_with_ignore_index_and_class_labels_stay_flat():
    seq = collate_labels([{"labels": [5, 6, 7]}, {"labels": [8]}])
    assert seq["labels"].tolist() == [[5, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX]]
    assert collate_labels([{"label": 1}, {"label": 0}])["labels"].tolist() == [1, 0]
    assert collate_labels([{"input_ids": [1]}]) == {}


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_answer_positions_move_by_the_tokens_dropped_before_them(data):
    length = data.draw(st.integers(4, 40))
    start = data.draw(st.integers(0, length - 1))
    end = data.draw(st.integers(start, length - 1))
    # non-overlapping dropped ranges that avoid [start, end]
    cuts = sorted(data.draw(st.sets(st.integers(0, length), max_size=10)))
    spans = [(a, b) for a, b in zip(cuts[::2], cuts[1::2], strict=False) if a < b and (b <= start or a > end)]
    ids = list(range(100, 100 + length))
    kept = [t for p, t in enumerate(ids) if not any(a <= p < b for a, b in spans)]
    out = collate_labels([{"start_positions": start, "end_positions": end}], [spans])
    new_start, new_end = int(out["start_positions"][0]), int(out["end_positions"][0])
    assert kept[new_start:new_end + 1] == ids[start:end + 1]  # the span is the same tokens, shifted


def test_a_dropped_answer_position_is_refused():
    with pytest.raises(ValueError, match=r"^end_positions=3 was dropped by TokenDrop \(span \[2, 4\)\)"):
        shift_positions(3, [(2, 4)], "end_positions")


def test_original_positions_point_each_kept_slot_back_to_its_token(wordpiece):
    from tdnotebooks.finetuning.tokendrop import prepare

    texts = ["the cat sat on the mat and it was the best of the days", "a dog is in the house",
             "it is what it is and that is the thing"]
    data = prepare(texts, wordpiece, max_length=32)
    examples = [data[i] for i in range(len(data))]
    for collate in (TokenDropCollator(TokenDrop(rate=0.7, seed=3), 0, return_positions=True),
                    TokenDropBucketCollator(TokenDrop(mode="to_length", seed=3), 0, return_positions=True)):
        batch = collate(examples)
        for row, example in enumerate(examples):
            positions = batch["original_positions"][row]
            real = positions >= 0
            assert real.sum() == batch["attention_mask"][row].sum()
            assert batch["input_ids"][row][real].tolist() == [example["input_ids"][p] for p in positions[real]]
            assert positions[real].tolist() == sorted(positions[real].tolist())
        assert batch["input_ids"].shape[1] < max(len(ex["input_ids"]) for ex in examples)
    assert "original_positions" not in TokenDropCollator(TokenDrop(rate=0.7), 0)(examples)


def test_pad_to_batch_max_collates_labels_the_same_way():
    examples = [{"input_ids": [1, 2, 3], "labels": [4, 5]}, {"input_ids": [1], "labels": [6, 7, 8]}]
    assert PadToBatchMax(0)(examples)["labels"].tolist() == [[4, 5, IGNORE_INDEX], [6, 7, 8]]


# ------------------------------------------------------------------------------------------ the task contract
def test_an_explicit_classification_task_is_the_default(tiny_task):
    train, dev = tiny_task
    common = {"method": "tokendrop_bucket", "epochs": 1, "base_batch_size": 8, "token_budget": 256, **FAST}
    default = finetune(tiny_model(), train, dev, **common)
    explicit = finetune(tiny_model(), train, dev, task=ClassificationTask(), **common)
    assert [s["loss"] for s in default.steps] == [s["loss"] for s in explicit.steps]
    assert default.final_dev_metric == default.final_dev_accuracy == explicit.final_dev_accuracy
    assert default.config["task"] == "classification" and default.config["main_metric"] == "dev_accuracy"


class _HalfLossTask(ClassificationTask):
    """Classification with every example's loss halved and a metric of its own: what the loop must use."""

    name, main_metric = "half", "dev_twice_accuracy"

    def __init__(self):
        self.checked = []

    def check(self, model, train, dev, pad_token_id, columns=("length",), train_name="train"):
        self.checked.append(tuple(columns))
        super().check(model, train, dev, pad_token_id, columns, train_name)

    def example_losses(self, outputs, labels, model):
        return super().example_losses(outputs, labels, model) / 2

    def evaluate(self, model, dev, **kwargs):
        return {"dev_twice_accuracy": 2 * super().evaluate(model, dev, **kwargs)["dev_accuracy"]}


def test_finetune_uses_the_tasks_check_losses_and_metrics(tiny_task):
    train, dev = tiny_task
    common = {"method": "random", "epochs": 1, "base_batch_size": 16, "lr": 1e-12, "warmup_ratio": 0.0, **FAST}
    plain = finetune(tiny_model(), train, dev, **common)
    task = _HalfLossTask()
    half = finetune(tiny_model(), train, dev, task=task, token_drop_rate=0.0, **common)
    assert task.checked == [("length",)]
    assert [s["loss"] for s in half.steps] == pytest.approx([s["loss"] / 2 for s in plain.steps], rel=1e-5)
    assert half.final_dev_metric == pytest.approx(2 * plain.final_dev_accuracy)
    assert "dev_accuracy" not in half.epochs[-1] and half.config["task"] == "half"


def test_a_task_without_losses_says_what_to_implement(tiny_task):
    train, dev = tiny_task
    with pytest.raises(NotImplementedError):
        finetune(tiny_model(), train, dev, task=FinetuneTask(), epochs=1, **FAST)
