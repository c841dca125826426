"""Semantic-loss analyses: corrupted views are seeded and counted exactly, Sentence-BERT drift is 1.0 for
identical texts and lower for corrupted ones, probes find separable features and not shuffled labels,
per-layer representations have the right shapes and pooling, fine-tuning starts from the pretrained encoder,
and bad arguments raise one clear error each."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import BertForMaskedLM

from tdnotebooks.models import tiny_bert
from tdnotebooks.pretraining.analysis import (
    classifier_from_mlm,
    compare_pretraining,
    corrupted_views,
    downstream,
    drift_tracker,
    layer_representations,
    mask_count,
    probe_layers,
    semantic_drift,
)
from tdnotebooks.pretraining.token_dropping import TokenDroppingBert, TokenDroppingConfig

TEXTS = [
    "The movie was a delightful surprise from start to finish, warm and very funny.",
    "A dull, lifeless and overlong mess of a film that nobody should have to sit through.",
    "An honest and moving portrait of a family in crisis.",
    "Bad acting.",
]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors, one CPU thread


@pytest.fixture(scope="module")
def td(wordpiece):
    torch.manual_seed(0)
    mlm = BertForMaskedLM(tiny_bert(num_layers=2, hidden_size=32, num_heads=2, intermediate_size=64,
                                    tokenizer=wordpiece))
    return TokenDroppingBert(mlm, TokenDroppingConfig(keep_fraction=0.5), wordpiece.all_special_ids,
                             pad_token_id=wordpiece.pad_token_id)


@pytest.fixture(scope="module")
def sbert():
    from tdnotebooks.models import load_pretrained

    return load_pretrained(kind="sbert", device="cpu")


# ----------------------------------------------------------------------------------------------------------
# Corrupted views
# ----------------------------------------------------------------------------------------------------------


def test_views_are_deterministic_per_seed(wordpiece, td):
    first = corrupted_views(wordpiece, TEXTS, td, seed=3)
    assert first == corrupted_views(wordpiece, TEXTS, td, seed=3)
    other = corrupted_views(wordpiece, TEXTS, td, seed=4)
    assert [v.masked for v in first] != [v.masked for v in other]
    # the masked view does not depend on the wrapper: the same seed masks the same word pieces
    assert [v.masked for v in first] == [v.masked for v in corrupted_views(wordpiece, TEXTS, seed=3)]


def test_mask_count_rule():
    assert [mask_count(n, 0.15) for n in (1, 3, 10, 20, 40)] == [1, 1, 2, 3, 6]
    assert mask_count(2, 0.9) == 2            # at most every maskable piece
    assert mask_count(30, 0.15) == 4 and mask_count(50, 0.15) == 8   # 4.5 -> 4, 7.5 -> 8: halves to even
    with pytest.raises(ValueError, match="num_maskable must be an int >= 0, got 2.5"):
        mask_count(2.5, 0.15)
    with pytest.raises(ValueError, match=r"mask_prob must be a number in \(0, 1\), got 1.0"):
        mask_count(10, 1.0)


def test_masked_view_masks_round_15_percent(wordpiece, td):
    special = set(wordpiece.all_special_ids)
    for view in corrupted_views(wordpiece, TEXTS, td):
        original = wordpiece(view.original)["input_ids"]
        maskable = sum(t not in special for t in original)
        masks = [i for i, t in enumerate(view.masked_ids) if t == wordpiece.mask_token_id]
        assert view.num_masked == len(masks) == max(round(0.15 * maskable), 1)
        assert all(original[i] != view.masked_ids[i] for i in masks)        # only masked pieces changed
        assert sum(a != b for a, b in zip(original, view.masked_ids, strict=True)) == len(masks)
        assert view.masked.count("[MASK]") == len(masks)


@pytest.mark.parametrize("with_wrapper", [True, False])
def test_dropped_view_is_shorter_by_the_dropped_tokens(wordpiece, td, with_wrapper):
    for view in corrupted_views(wordpiece, TEXTS, td if with_wrapper else None, keep_fraction=0.5):
        n = len(view.masked_ids)
        kept = max(math.ceil(0.5 * n), view.num_masked + 2)            # budget, at least [CLS] [SEP] + masks
        assert len(view.dropped_ids) == kept == n - view.num_dropped
        assert view.dropped_ids[0] == wordpiece.cls_token_id and view.dropped_ids[-1] == wordpiece.sep_token_id
        assert view.dropped_ids.count(wordpiece.mask_token_id) == view.num_masked
        rest = iter(view.masked_ids)                                     # an in-order subsequence
        assert all(any(t == u for u in rest) for t in view.dropped_ids)


def test_dropped_view_follows_the_importance_table(wordpiece, td):
    text = "the quick brown fox jumps over the lazy dog near the river bank today"
    word = wordpiece.convert_tokens_to_ids("river")
    saved = td.importance.table.clone()
    try:
        td.importance.table[word] = 1e3                                  # "river" is very hard to predict
        for seed in range(5):
            view = corrupted_views(wordpiece, [text], td, seed=seed)[0]
            assert word in view.dropped_ids or wordpiece.convert_ids_to_tokens(word) not in view.masked.split()
    finally:
        td.importance.table.copy_(saved)


# ----------------------------------------------------------------------------------------------------------
# Semantic drift (Sentence-BERT)
# ----------------------------------------------------------------------------------------------------------


def test_drift_is_one_for_identical_texts_and_lower_for_views(wordpiece, td, sbert):
    views = corrupted_views(wordpiece, TEXTS, td)
    drift = semantic_drift(sbert, TEXTS, {"same": TEXTS, "masked": [v.masked for v in views],
                                          "masked_dropped": [v.masked_dropped for v in views]})
    assert drift["same"]["mean"] == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(drift["same"]["per_example"], 1.0, atol=1e-6)
    assert drift["masked"]["per_example"].shape == (len(TEXTS),)
    assert drift["masked"]["mean"] == pytest.approx(drift["masked"]["per_example"].mean())
    assert drift["masked_dropped"]["mean"] < drift["masked"]["mean"] < 0.99
    assert set(semantic_drift(sbert, TEXTS[:1], TEXTS[:1])) == {"view"}


def test_drift_tracker_measures_every_chunk(wordpiece, sbert, tmp_path):
    from tdnotebooks.pretraining.train import PretrainConfig

    config = PretrainConfig(mode="token_drop", steps=4, batch_size=2, block_size=16, num_layers=2, hidden_size=32,
                            num_heads=2, intermediate_size=64, max_texts=20, eval_every=2, eval_blocks=2,
                            device="cpu", progress=False)
    records = drift_tracker(config, sbert, TEXTS[:2], every=2, checkpoint_dir=tmp_path, tokenizer=wordpiece)
    assert [r["step"] for r in records] == [2, 4]
    assert all(0.0 < r["masked_dropped"] < 1.0 and 0.0 < r["masked"] < 1.0 and r["dev_mlm_loss"] > 0 for r in records)


# ----------------------------------------------------------------------------------------------------------
# Layer-wise probing
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_layer_representations_shapes_and_pooling(wordpiece, td, pooling):
    td.train()
    reps = layer_representations(td, wordpiece, TEXTS, pooling=pooling, batch_size=3)
    assert td.training                                                   # mode restored
    assert len(reps) == td.mlm.config.num_hidden_layers + 1
    assert all(r.shape == (len(TEXTS), 32) for r in reps)
    td.eval()
    enc = wordpiece(TEXTS[3], return_tensors="pt")                       # alone, no padding
    with torch.no_grad():
        hidden = td.mlm.bert(**enc, output_hidden_states=True).hidden_states
    for layer, h in enumerate(hidden):
        expected = h[0].mean(0) if pooling == "mean" else h[0, 0]
        np.testing.assert_allclose(reps[layer][3], expected.numpy(), atol=1e-5)   # padding changes nothing
    # the MLM itself (or its .bert) gives the same vectors as the wrapper
    np.testing.assert_allclose(layer_representations(td.mlm, wordpiece, TEXTS, pooling)[-1], reps[-1], atol=1e-6)


def test_probe_finds_separable_features_and_not_shuffled_labels():
    rng = np.random.default_rng(0)
    y_train, y_dev = rng.integers(0, 2, 300), rng.integers(0, 2, 300)

    def features(y: np.ndarray) -> np.ndarray:          # noise, except feature 0: its sign is the label
        x = rng.normal(size=(len(y), 16))
        x[:, 0] = (2 * y - 1) * rng.uniform(0.5, 2.0, len(y))
        return x

    separable = [features(y_train), features(y_dev)]
    noise = [rng.normal(size=(300, 16)), rng.normal(size=(300, 16))]
    accuracies = probe_layers([separable[0], noise[0]], y_train, [separable[1], noise[1]], y_dev)
    assert accuracies[0] == 1.0
    assert 0.35 < accuracies[1] < 0.65
    shuffled = probe_layers([separable[0]], rng.permutation(y_train), [separable[1]], y_dev)
    assert 0.35 < shuffled[0] < 0.65


# ----------------------------------------------------------------------------------------------------------
# Downstream
# ----------------------------------------------------------------------------------------------------------


def test_classifier_starts_from_the_pretrained_encoder(td):
    classifier = classifier_from_mlm(td)
    encoder = td.mlm.bert.state_dict()
    for name, value in classifier.bert.state_dict().items():
        if not name.startswith("pooler."):
            assert torch.equal(value, encoder[name]), name
    assert classifier.config.num_labels == 2
    assert classifier.bert.encoder.layer[0].attention.self.query.weight is not td.mlm.bert.encoder.layer[0] \
        .attention.self.query.weight                                     # a copy, not shared


def test_downstream_finetunes_a_copy_and_is_seeded(wordpiece, td):
    before = {k: v.clone() for k, v in td.mlm.state_dict().items()}
    settings = dict(train_size=16, dev_size=8, max_length=32, epochs=1, base_batch_size=8)
    accuracy = downstream(td, wordpiece, **settings)
    assert 0.0 <= accuracy <= 1.0 and (accuracy * 8).is_integer()
    assert all(torch.equal(v, td.mlm.state_dict()[k]) for k, v in before.items())
    assert downstream(td, wordpiece, **settings) == accuracy


# ----------------------------------------------------------------------------------------------------------
# Bad arguments: one clear error each
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("call", "message"), [
    (lambda tok, td: corrupted_views(tok, "one string", td), "texts must be a non-empty list"),
    (lambda tok, td: corrupted_views(tok, [], td), "texts must be a non-empty list"),
    (lambda tok, td: corrupted_views(tok, ["ok", ""], td), "non-empty strings"),
    (lambda tok, td: corrupted_views(tok, TEXTS, td, mask_prob=0.0), r"mask_prob must be a number in \(0, 1\), got 0.0"),
    (lambda tok, td: corrupted_views(tok, TEXTS, td, mask_prob=1.5), r"mask_prob must be a number in \(0, 1\)"),
    (lambda tok, td: corrupted_views(tok, TEXTS, keep_fraction=0), r"keep_fraction must be a number in \(0, 1\]"),
    (lambda tok, td: corrupted_views(tok, TEXTS, td, seed=-1), "seed must be an int >= 0"),
    (lambda tok, td: corrupted_views(tok, TEXTS, td_wrapper=td.mlm), "td_wrapper must be a TokenDroppingBert"),
    (lambda tok, td: semantic_drift(object(), TEXTS, {"v": TEXTS}), "sbert must be a SentenceTransformer"),
    (lambda tok, td: semantic_drift(None, TEXTS, {"v": TEXTS[:2]}), r"views\['v'\] must have one text per"),
    (lambda tok, td: semantic_drift(None, TEXTS, {}), "views must name at least one"),
    (lambda tok, td: layer_representations(td, tok, TEXTS, pooling="max"), "pooling must be one of 'mean', 'cls', got 'max'"),
    (lambda tok, td: layer_representations(torch.nn.Linear(2, 2), tok, TEXTS), "model must be a TokenDropping"),
    (lambda tok, td: layer_representations(td, tok, TEXTS, batch_size=0), "batch_size must be an int >= 1"),
    (lambda tok, td: probe_layers([np.ones((4, 2))], [0, 1, 0, 1], [], [0]), "same, non-zero number of layers"),
    (lambda tok, td: probe_layers([np.ones((4, 2))], [1, 1, 1, 1], [np.ones((1, 2))], [0]), "at least 2 classes"),
    (lambda tok, td: probe_layers([np.ones((4, 2))], [0, 1, 0, 1], [np.ones((1, 3))], [0]), "equal width"),
    (lambda tok, td: probe_layers([np.ones((3, 2))], [0, 1, 0, 1], [np.ones((1, 2))], [0]), "3 train / 1 dev"),
    (lambda tok, td: probe_layers([np.ones((4, 2))], [0, 1, 0, 1], [np.ones((1, 2))], [0], c=0),
     r"c must be a number in \(0, inf\), got 0"),
    (lambda tok, td: classifier_from_mlm(torch.nn.Linear(2, 2)), "model must be a TokenDroppingBert or a Bert"),
    (lambda tok, td: classifier_from_mlm(td, num_labels=1), "num_labels must be an int >= 2"),
    (lambda tok, td: downstream(td, tok, train_size=1), "train_size must be an int >= 2"),
    (lambda tok, td: downstream(td, tok, max_length=1000), r"max_length must be an int in \[3, 128\], got 1000"),
])
def test_bad_arguments(wordpiece, td, call, message):
    with pytest.raises(ValueError, match=message):
        call(wordpiece, td)


TINY_RUN = dict(steps=3, batch_size=2, block_size=16, num_layers=2, hidden_size=32, num_heads=2, intermediate_size=64,
                max_texts=20, eval_every=3, eval_blocks=2, device="cpu", progress=False)


def test_compare_pretraining_is_seeded_and_summarises_over_seeds(wordpiece):
    from tdnotebooks.pretraining.train import PretrainConfig

    methods = {"a": {"mode": "baseline"}, "same as a": {"mode": "baseline"}, "td": {"mode": "token_drop"}}
    results = compare_pretraining(methods, PretrainConfig(**TINY_RUN), seeds=(0, 1), tokenizer=wordpiece)
    assert list(results) == list(methods)
    a, same, td = (results[k] for k in methods)
    assert [r["seed"] for r in a["runs"]] == [0, 1]
    assert [r["losses"] for r in a["runs"]] == [r["losses"] for r in same["runs"]]      # same seed, same run
    assert a["runs"][0]["losses"] != a["runs"][1]["losses"]                               # another seed, another run
    dev = [r["dev_mlm_loss"] for r in td["runs"]]
    assert td["mean"]["dev_mlm_loss"] == pytest.approx(np.mean(dev))
    assert td["sd"]["dev_mlm_loss"] == pytest.approx(np.std(dev, ddof=1))
    assert td["mean"]["drift"] is None and td["runs"][0]["probe"] is None              # not asked for
    assert td["overrides"] == {"mode": "token_drop"}


def test_compare_pretraining_measures_drift_and_probes(wordpiece, sbert):
    from tdnotebooks.pretraining.train import PretrainConfig

    texts = ["a great film", "an awful film", "truly great", "truly awful"]
    results = compare_pretraining({"base": {"mode": "baseline"}, "td": {"mode": "token_drop"}},
                                  PretrainConfig(**TINY_RUN), sbert=sbert, drift_texts=TEXTS[:2],
                                  probe_data=(texts, [1, 0, 1, 0], texts, [1, 0, 1, 0]), tokenizer=wordpiece)
    for summary in results.values():
        (run,) = summary["runs"]
        assert 0.0 < run["drift"] < 1.0 and len(run["probe"]) == 2 + 1 and run["probe_last"] == run["probe"][-1]
        assert summary["sd"]["drift"] is None                                              # one seed


@pytest.mark.parametrize("kwargs, message", [
    (dict(methods={}), "methods must be a non-empty"),
    (dict(methods={"x": {"mode": "nope"}}), "mode must be one of"),
    (dict(methods={"x": {"mode": "baseline"}}, seeds=()), "seeds must hold at least one seed"),
    (dict(methods={"x": {"mode": "baseline"}}, seeds=(-1,)), r"seeds\[...\] must be an int >= 0"),
    (dict(methods={"x": {"mode": "baseline"}}, drift_texts=["a"]), "sbert and drift_texts go together"),
    (dict(methods={"x": {"mode": "baseline"}}, probe_data=(["a"], [0])), "probe_data must be"),
])
def test_compare_pretraining_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        compare_pretraining(**kwargs)


def test_seconds_per_step_leaves_out_the_warm_up_step():
    from tdnotebooks.pretraining.analysis import _mean_step_seconds

    assert _mean_step_seconds([{"seconds": 9.0}, {"seconds": 1.0}, {"seconds": 2.0}]) == 1.5
    assert _mean_step_seconds([{"seconds": 4.0}]) == 4.0
