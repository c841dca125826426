"""Bundled data: counts, balance, deterministic splits, offline behaviour, clear errors."""

import gzip
import json

import pytest

from tdnotebooks.data import (
    BUNDLED_CORPORA,
    BUNDLED_TASKS,
    DATA_DIR,
    HubUnavailableError,
    hub_offline,
    load_corpus,
    load_task,
    task_spec,
    tokenize,
)
from tdnotebooks.data import build as data_build


def test_tests_run_offline():
    assert hub_offline(), "the pytest plugin tdnotebooks.testing must set HF_HUB_OFFLINE"


def test_rt_sentiment_counts_balance_and_split_sizes():
    rt = load_task("rt_sentiment")
    assert set(rt) == {"train", "dev", "test"}
    sizes = {s: rt[s].num_rows for s in rt}
    assert sum(sizes.values()) == 10072  # 10,605 snippets minus 533 with |score| < 0.5
    total = sum(sizes.values())
    assert abs(sizes["train"] / total - 0.8) < 0.01 and abs(sizes["dev"] / total - 0.1) < 0.01
    for split in rt:
        labels = rt[split]["label"]
        assert 0.47 < sum(labels) / len(labels) < 0.53, split  # balanced in every split (stratified)
    assert rt["train"].features["label"].names == ["negative", "positive"]


def test_rt_labels_agree_with_scores_and_drop_neutral():
    rt = load_task("rt_sentiment")
    for split in rt:
        for score, label in zip(rt[split]["score"], rt[split]["label"], strict=True):
            assert abs(score) >= data_build.NEUTRAL_BAND
            assert label == int(score > 0)


def test_splits_are_disjoint_and_deterministic():
    a, b = load_task("rt_sentiment"), load_task("rt_sentiment")
    ids = {s: set(a[s]["id"]) for s in a}
    assert not ids["train"] & ids["dev"] and not ids["train"] & ids["test"] and not ids["dev"] & ids["test"]
    assert a["dev"]["id"] == b["dev"]["id"]
    # the split is a pure function of the labels and the seed
    labels = [i % 2 for i in range(1000)]
    assert data_build.stratified_split(labels) == data_build.stratified_split(labels)
    assert data_build.stratified_split(labels, seed=1) != data_build.stratified_split(labels)


def test_reviews_long_has_a_long_tail_of_lengths():
    long = load_task("reviews_long")
    words = sorted(len(t.split()) for t in long["train"]["text"])
    median, p95 = words[len(words) // 2], words[int(0.95 * len(words))]
    assert words[-1] > 5 * median and p95 > 3 * median
    assert set(long["train"]["source"]) == {"amazon", "nyt"}
    labels = long["train"]["label"]
    assert 0.4 < sum(labels) / len(labels) < 0.6


@pytest.mark.parametrize("name", sorted(BUNDLED_CORPORA))
def test_corpora_have_train_and_dev_from_different_works(name):
    corpus = load_corpus(name)
    assert set(corpus) == {"train", "dev"}
    assert corpus["train"].num_rows > 5 * corpus["dev"].num_rows > 0
    key = "work" if name == "shakespeare" else "book"
    assert not set(corpus["train"][key]) & set(corpus["dev"][key])
    assert all(len(t.split()) >= 4 for t in corpus["dev"]["text"])


def test_shakespeare_cleaning_removes_speakers_and_stage_directions():
    raw = "ACT 1\nSCENE 1\n[Enter MIRANDA]\n\nMIRANDA.\nO, the heavens! what foul play\nhad we?\n\nCor.\nGood my lord, you have begot me.\n"
    assert data_build.clean_shakespeare(raw) == ["O, the heavens! what foul play had we?",
                                                 "Good my lord, you have begot me."]
    texts = load_corpus("shakespeare")["train"]["text"][:2000]
    assert not any("[" in t or "@" in t for t in texts)


def test_bundled_files_are_small_and_deterministic_gzip():
    files = sorted(DATA_DIR.glob("*.jsonl.gz"))
    assert {f.name.split(".")[0] for f in files} == set(BUNDLED_TASKS) | set(BUNDLED_CORPORA)
    assert sum(f.stat().st_size for f in files) < 10 * 2**20
    for f in files:
        assert f.read_bytes()[4:8] == b"\0\0\0\0", f"{f.name} must be written with gzip mtime 0"


def test_write_jsonl_gz_is_byte_identical(tmp_path):
    records = [{"text": "ä", "label": 1}, {"text": "b", "label": 0}]
    a, b = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
    data_build.write_jsonl_gz(a, records)
    data_build.write_jsonl_gz(b, records)
    assert a.read_bytes() == b.read_bytes()
    assert [json.loads(line) for line in gzip.open(a, "rt", encoding="utf-8")] == records


def test_data_card_states_counts_that_match_the_files():
    card = (DATA_DIR / "DATA.md").read_text()
    for name in [*BUNDLED_TASKS, *BUNDLED_CORPORA]:
        assert name in card
    assert "10,072" in card and "29,811" in card and "1,946" in card and "1,189" in card


def test_tokenize_adds_length_column(wordpiece):
    rt = tokenize(load_task("rt_sentiment"), wordpiece, max_length=32)
    row = rt["dev"][0]
    assert row["length"] == len(row["input_ids"]) <= 32
    assert row["input_ids"][0] == wordpiece.cls_token_id and row["input_ids"][-1] == wordpiece.sep_token_id
    assert max(rt["train"]["length"]) == 32  # some snippets are longer and were truncated


def test_tokenize_sentence_pairs_and_bad_arguments(wordpiece):
    from datasets import Dataset

    pairs = Dataset.from_dict({"a": ["a cat sat"], "b": ["on the mat"]})
    out = tokenize(pairs, wordpiece, text_fields=("a", "b"))
    assert out[0]["input_ids"].count(wordpiece.sep_token_id) == 2
    with pytest.raises(ValueError, match="text_fields"):
        tokenize(pairs, wordpiece, text_fields=("nope",))
    with pytest.raises(ValueError, match="max_length"):
        tokenize(pairs, wordpiece, text_fields=("a",), max_length=1)


def test_unknown_names_give_one_clear_error():
    with pytest.raises(ValueError, match="name='sst9' is not a known task; allowed"):
        load_task("sst9")
    with pytest.raises(ValueError, match="not a known corpus"):
        load_corpus("wikipedia")
    with pytest.raises(ValueError, match="glue"):
        task_spec("glue/nope")
    assert task_spec("glue/mrpc").text_fields == ("sentence1", "sentence2")


def test_hub_names_fail_fast_offline():
    import time

    start = time.perf_counter()
    with pytest.raises(HubUnavailableError, match="HF_HUB_OFFLINE"):
        load_task("glue/sst2")
    assert time.perf_counter() - start < 10


def test_hub_unreachable_is_a_fast_clear_error(monkeypatch):
    import socket

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)

    def refuse(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(HubUnavailableError, match="cannot be reached.*bundled name"):
        load_task("glue/mrpc")
