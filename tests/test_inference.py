"""Server-mode and real-time inference (tdnotebooks.finetuning.inference): order, padding, errors, TokenDrop at batch size 1."""

import numpy as np
import pytest
import torch

from tdnotebooks.data import load_task
from tdnotebooks.finetuning.inference import latency_at_batch_size_1, predict
from tdnotebooks.finetuning.tokendrop import TokenDrop, prepare

MAX_LENGTH = 64


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors, one CPU thread


@pytest.fixture(scope="module")
def model():
    """A one-layer classifier whose new head is scaled up, so different inputs get clearly different logits."""
    from tdnotebooks.models import load_pretrained

    clf = load_pretrained(kind="classifier", num_layers=1, device="cpu").eval()
    torch.manual_seed(0)
    torch.nn.init.normal_(clf.classifier.weight, std=2.0)
    return clf


@pytest.fixture(scope="module")
def data(wordpiece):
    """30 reviews of very different lengths (2 to MAX_LENGTH tokens), both labels."""
    split = load_task("reviews_long")["dev"].shuffle(seed=0).select(range(27))
    texts = list(split["text"]) + ["Great.", "Dull and far too long.", "Not bad at all, really."]
    labels = list(split["label"]) + [1, 0, 1]
    ds = prepare(texts, wordpiece, max_length=MAX_LENGTH).add_column("label", labels)
    assert len(set(ds["length"])) > 10 and min(ds["length"]) < 8 and max(ds["length"]) == MAX_LENGTH
    return ds


@pytest.fixture(scope="module")
def reference(model, data):
    """Logits of a plain forward pass, one example at a time (no padding anywhere)."""
    rows = []
    with torch.no_grad():
        for ex in data:
            inputs = {k: torch.tensor([ex[k]]) for k in ("input_ids", "attention_mask", "token_type_ids")}
            rows.append(model(**inputs).logits[0])
    logits = torch.stack(rows)
    gaps = torch.cdist(logits, logits) + torch.eye(len(logits)) * 1e9
    assert gaps.min() > 1e-3, "examples must differ, or a shuffled order would go unnoticed"
    return logits


@pytest.mark.parametrize("batching, kwargs", [
    ("random", {"batch_size": 4}),
    ("random", {"batch_size": 64}),  # one batch holding everything
    ("bucketed", {"token_budget": 3 * MAX_LENGTH}),  # HWCap = budget // bucket length: batches of 3 to 38
    ("bucketed", {"token_budget": None, "batch_size": 4}),  # no budget: BatchCap = batch_size
    ("bucketed", {"token_budget": MAX_LENGTH, "bucket_width": 1}),  # the longest bucket gets batches of 1
])
def test_predict_returns_the_plain_forward_logits_in_the_original_order(model, data, reference, batching, kwargs):
    pred = predict(model, data, batching=batching, seed=3, **kwargs)
    assert pred.logits.shape == reference.shape
    torch.testing.assert_close(pred.logits, reference, atol=1e-5, rtol=1e-4)  # padding is masked out
    assert np.array_equal(pred.labels, reference.argmax(-1).numpy())
    assert pred.padding.real_tokens == sum(data["length"])


def test_bucketed_tokendrop_keeps_the_order_and_never_widens_a_batch(model, data, reference):
    off = predict(model, data, batching="bucketed_tokendrop", token_budget=3 * MAX_LENGTH,
                  token_drop=TokenDrop(mode="to_length", enabled=False))
    torch.testing.assert_close(off.logits, reference, atol=1e-5, rtol=1e-4)  # nothing dropped: same as bucketed
    bucketed = predict(model, data, batching="bucketed", token_budget=3 * MAX_LENGTH)
    assert off.padding == bucketed.padding
    on = predict(model, data, batching="bucketed_tokendrop", token_budget=3 * MAX_LENGTH,
                 token_drop=TokenDrop(mode="to_length"))
    assert on.padding.num_batches == bucketed.padding.num_batches  # the same batches, trimmed
    assert on.padding.real_tokens < bucketed.padding.real_tokens
    assert on.padding.slot_tokens < bucketed.padding.slot_tokens
    assert on.logits.shape == reference.shape and not torch.allclose(on.logits, reference, atol=1e-3)


def test_bucketed_pads_less_than_random(model, data):
    random = predict(model, data, batching="random", batch_size=8)
    bucketed = predict(model, data, batching="bucketed", token_budget=8 * MAX_LENGTH)
    assert random.padding.real_tokens == bucketed.padding.real_tokens
    assert bucketed.padding.slot_tokens < random.padding.slot_tokens
    assert bucketed.padding.padding_fraction < random.padding.padding_fraction


def test_predictions_accuracy_labels_and_throughput(model, data, reference):
    pred = predict(model, data, batching="random", batch_size=8)
    gold = np.asarray(data["label"])
    assert pred.accuracy(gold) == pytest.approx(np.mean(reference.argmax(-1).numpy() == gold))
    assert pred.accuracy(pred.labels) == 1.0 and pred.accuracy(1 - pred.labels) == 0.0
    assert pred.seconds > 0 and pred.throughput == pytest.approx(len(data) / pred.seconds)


def test_predict_restores_the_training_mode(model, data):
    model.train()
    try:
        predict(model, data.select(range(4)), batching="random", batch_size=2)
        assert model.training
    finally:
        model.eval()
    predict(model, data.select(range(4)), batching="random", batch_size=2)
    assert not model.training


@pytest.mark.parametrize("kwargs, message", [
    ({"batching": "sorted"}, "batching must be one of 'random', 'bucketed', 'bucketed_tokendrop', got 'sorted'"),
    ({"batching": "random", "batch_size": 0}, "batch_size must be an int >= 1, got 0"),
    ({"batching": "bucketed", "batch_size": 2.5}, "batch_size must be an int >= 1"),
    ({"batching": "bucketed_tokendrop"}, "needs token_drop=TokenDrop"),
    ({"batching": "bucketed", "token_budget": 8}, "token_budget must be >= the longest length"),
])
def test_predict_rejects_bad_arguments(model, data, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        predict(model, data, **kwargs)


def test_predict_rejects_a_rate_mode_tokendrop(model, data):
    with pytest.raises(ValueError, match="mode='to_length'"):
        predict(model, data, batching="bucketed_tokendrop", token_drop=TokenDrop(rate=0.5))


@pytest.mark.parametrize("batching", ["random", "bucketed"])
def test_predict_rejects_empty_data(model, data, batching):
    with pytest.raises(ValueError, match="data is empty"):
        predict(model, data.select([]), batching=batching)


def test_batch_size_1_at_rate_0_is_the_plain_forward_pass(model, wordpiece, data, reference):
    texts, labels = data["text"], data["label"]
    result = latency_at_batch_size_1(model, wordpiece, texts, labels, rate=0.0, max_length=MAX_LENGTH)
    assert result.rate == 0.0 and result.median_ms > 0
    assert result.mean_tokens == pytest.approx(np.mean(data["length"]))
    assert result.accuracy == pytest.approx(np.mean(reference.argmax(-1).numpy() == np.asarray(labels)))
    assert result.accuracy == pytest.approx(predict(model, data, batching="bucketed").accuracy(labels))


def test_batch_size_1_drops_stopwords_and_feeds_shorter_inputs(model, wordpiece, data):
    texts, labels = data["text"], data["label"]
    rates = (0.0, 0.5, 1.0)
    results = [latency_at_batch_size_1(model, wordpiece, texts, labels, rate=r, max_length=MAX_LENGTH, warmup=0)
               for r in rates]
    tokens = [r.mean_tokens for r in results]
    assert tokens[0] > tokens[1] > tokens[2]
    stopword_tokens = np.mean([sum(e - s for s, e in spans) for spans in data["stopword_spans"]])
    assert tokens[2] == pytest.approx(tokens[0] - stopword_tokens)  # rate 1 drops every stopword
    assert all(0.0 <= r.accuracy <= 1.0 for r in results)


@pytest.mark.parametrize("texts, labels", [(["a", "b"], [1]), (["a"], [0, 1]), ([], [])])
def test_batch_size_1_rejects_mismatched_or_empty_inputs(model, wordpiece, texts, labels):
    with pytest.raises(ValueError, match="texts and labels must be non-empty and of equal length"):
        latency_at_batch_size_1(model, wordpiece, texts, labels, rate=0.5)


def test_batch_size_1_rejects_a_bad_rate(model, wordpiece):
    with pytest.raises(ValueError, match=r"rate must be a number in \[0, 1\], got 1.5"):
        latency_at_batch_size_1(model, wordpiece, ["a fine film"], [1], rate=1.5)


def test_server_mode_trim_to_is_an_argument(model, data):
    """Issue 16: trim_to is predict's argument; "reachable" (the default) is what it used to hard-code."""
    common = {"batching": "bucketed_tokendrop", "token_budget": 3 * MAX_LENGTH}
    runs = {t: predict(model, data, token_drop=TokenDrop(mode="to_length"), trim_to=t, **common)
            for t in ("reachable", "shortest", "bucket_floor")}
    default = predict(model, data, token_drop=TokenDrop(mode="to_length"), **common)
    assert default.padding == runs["reachable"].padding
    torch.testing.assert_close(default.logits, runs["reachable"].logits)
    # reachable never trims below what a batch needs: no more slots than "shortest", fewer tokens dropped
    assert runs["reachable"].padding.slot_tokens <= runs["shortest"].padding.slot_tokens
    assert runs["reachable"].padding.real_tokens >= runs["shortest"].padding.real_tokens
    assert len({p.padding.real_tokens for p in runs.values()}) > 1  # the readings differ on these lengths
    with pytest.raises(ValueError, match="trim_to must be one of 'shortest', 'reachable', 'bucket_floor', got 'x'"):
        predict(model, data, token_drop=TokenDrop(mode="to_length"), trim_to="x", **common)


def test_batch_size_1_latency_is_end_to_end_with_the_forward_pass_beside_it(model, wordpiece, data, monkeypatch):
    """median_ms includes finding the stopwords (text in, label out); forward_median_ms is the forward pass only."""
    import time as time_module

    import tdnotebooks.finetuning.tokendrop as tokendrop

    real = tokendrop._find_stopwords

    def slow(*args, **kwargs):  # stopword finding made 40 ms slower: only the end-to-end figure sees it
        time_module.sleep(0.04)
        return real(*args, **kwargs)

    monkeypatch.setattr(tokendrop, "_find_stopwords", slow)
    texts, labels = data["text"][:6], data["label"][:6]
    result = latency_at_batch_size_1(model, wordpiece, texts, labels, rate=0.5, max_length=MAX_LENGTH, warmup=0,
                                     repeats=2)
    assert result.median_ms >= 40 and result.p25_ms >= 40
    assert result.forward_median_ms < 40 and result.forward_p25_ms <= result.forward_median_ms <= result.forward_p75_ms
    assert result.p25_ms <= result.median_ms <= result.p75_ms
    plain = latency_at_batch_size_1(model, wordpiece, texts, labels, rate=0.0, max_length=MAX_LENGTH, warmup=0)
    assert plain.median_ms < 40  # rate 0 looks for no stopwords: tokenize, forward, argmax
    with pytest.raises(ValueError, match="repeats must be an int >= 1, got 0"):
        latency_at_batch_size_1(model, wordpiece, texts, labels, rate=0.5, repeats=0)
