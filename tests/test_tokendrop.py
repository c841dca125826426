"""TokenDrop: whole stopword words only, exact counts, determinism, Algorithm 3 trimming, clear errors."""

from __future__ import annotations

import math
import re
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tdnotebooks.data import load_task
from tdnotebooks.finetuning.tokendrop import (
    TokenDrop,
    TokenDropBucketCollator,
    TokenDropCollator,
    drop_stopwords_for_inference,
    find_stopwords,
    highlight_dropped,
    prepare,
    reachable_lengths,
    remove_articles_and_punctuation,
    split_words,
)
from tdnotebooks.models import bundled_model_path, byte_level_bpe
from tdnotebooks.padding import padding_stats
from tdnotebooks.stopwords import PRONOUNS, STOPWORDS, stopword_set

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Whitespace-separated words whose stopword status is known. Several split into many tokens:
# WordPiece: "It's" -> it ' s, "..." -> . . ., "SHOULD'VE"; byte-level BPE: "Ourselves" -> ĠOur selves,
# "HIMSELF" -> ĠH I M S EL F, "it’s" (curly apostrophe, 3 byte tokens).
STOP_POOL = ["the", "The", "a", "an", "and", "of", "it", "It's", "it’s", "you're", "SHOULD'VE", "that'll",
             "themselves", "Ourselves", "yourselves", "HIMSELF", "Hers", "being", "(", ")", "...", ".", ";",
             "-", "--", ").", "...."]
CONTENT_POOL = ["movie", "Schwarzenegger", "unbelievably", "gorgeously", "can't", "don't", "isn't", "not",
                "no", "nor", "3.5", "well-made", "co-writer", "?", "!", "''", "?)", "Tolkien's", "J.R.R",
                "Wasabi", "theirselves", "thee"]
MARKS = set("-.;()")


@pytest.fixture(scope="module")
def bpe():
    return byte_level_bpe()  # trained once per session (cached)


@pytest.fixture(scope="module")
def tokenizers(wordpiece, bpe):
    return {"wordpiece": wordpiece, "bpe": bpe}


@pytest.fixture(scope="module")
def rt_wp(wordpiece):
    return prepare(load_task("rt_sentiment")["train"], wordpiece)


@pytest.fixture(scope="module")
def rt_bpe(bpe):
    return prepare(load_task("rt_sentiment")["train"].select(range(1500)), bpe)


def half_up(rate: float, n: int) -> int:
    return math.floor(Fraction(str(rate)) * n + Fraction(1, 2))


def specials(tok) -> set[int]:
    return set(tok.all_special_ids)


# ----------------------------------------------------------------------------- the list
def test_stopword_list_is_the_papers():
    assert len(STOPWORDS) == len(set(STOPWORDS)) == 134
    assert STOPWORDS[:4] == ("i", "me", "my", "myself")
    assert STOPWORDS[-7:] == ("now", "-", ".", ";", "...", "(", ")")
    assert {"not", "no", "nor", "don't"}.isdisjoint(STOPWORDS)  # negations stay
    assert set(PRONOUNS) < set(STOPWORDS) and {"he", "it's", "themselves", "those"} <= set(PRONOUNS)
    assert "the" not in PRONOUNS and "am" not in PRONOUNS
    assert stopword_set() == frozenset(STOPWORDS)
    kept = stopword_set(keep_pronouns=True)
    assert "the" in kept and "..." in kept and not (kept & set(PRONOUNS))


def test_words_split_punctuation_off_but_keep_contractions():
    text = "It's (best) movie... can't 3.5 well-made ''Conan''"
    assert [text[w.start:w.end] for w in split_words(text)] == [
        "It's", "(", "best", ")", "movie", "...", "can't", "3.5", "well-made", "''", "Conan", "''"]


# ----------------------------------------------------------------------------- whole words only
def expected_blocks(tok, words):
    """Token ids of each word as it is tokenized inside ' '.join(words) (a BPE word after a space gets Ġ)."""
    return [tok(w if i == 0 else " " + w, add_special_tokens=False)["input_ids"] for i, w in enumerate(words)]


@FAST
@given(words=st.lists(st.tuples(st.booleans(), st.integers(0, 100)), min_size=1, max_size=25),
       name=st.sampled_from(["wordpiece", "bpe"]), rate=st.sampled_from([0.0, 0.3, 0.5, 0.8, 1.0]),
       seed=st.integers(0, 2**31), epoch=st.integers(0, 20))
def test_only_whole_stopword_words_are_found_and_dropped(tokenizers, words, name, rate, seed, epoch):
    tok = tokenizers[name]
    words = [(STOP_POOL if stop else CONTENT_POOL)[k % len(STOP_POOL if stop else CONTENT_POOL)]
             for stop, k in words]
    is_stop = [w in STOP_POOL for w in words]
    blocks = expected_blocks(tok, words)
    columns = find_stopwords(tok, [" ".join(words)])
    ids = columns["input_ids"][0]
    assert ids[1:-1] == [t for b in blocks for t in b]  # the oracle's premise
    starts = np.cumsum([1] + [len(b) for b in blocks]).tolist()
    stop_spans = [[starts[i], starts[i] + len(blocks[i])] for i in range(len(words)) if is_stop[i]]
    assert columns["stopword_spans"][0] == stop_spans  # every stopword word, all its pieces, nothing else

    example = {k: v[0] for k, v in columns.items()}
    result = TokenDrop(rate=rate, seed=seed).apply(example, epoch=epoch, index=0)
    dropped_words = {i for i in range(len(words)) if [starts[i], starts[i] + len(blocks[i])] in
                     [list(s) for s in result.dropped_spans]}
    assert all(is_stop[i] for i in dropped_words) and len(dropped_words) == result.dropped_words
    assert result.dropped_words == half_up(rate, sum(is_stop))
    kept = [t for i, b in enumerate(blocks) if i not in dropped_words for t in b]
    assert result.input_ids == [ids[0], *kept, ids[-1]]  # [CLS]/<s> and [SEP]/</s> stay
    assert len(result.attention_mask) == len(result.input_ids)


@pytest.mark.parametrize("name, word", [
    ("wordpiece", "It's"), ("wordpiece", "..."), ("wordpiece", "SHOULD'VE"),
    ("bpe", "Ourselves"), ("bpe", "HIMSELF"), ("bpe", "it’s"),
])
def test_multi_piece_stopword_dropped_with_all_pieces_or_none(tokenizers, name, word):
    tok = tokenizers[name]
    blocks = expected_blocks(tok, ["movie", word, "the", "movie"])
    assert len(blocks[1]) > 1, f"{word!r} should be several tokens for {name}"
    example = {k: v[0] for k, v in find_stopwords(tok, [f"movie {word} the movie"]).items()}
    start, end = 1 + len(blocks[0]), 1 + len(blocks[0]) + len(blocks[1])
    assert example["stopword_spans"] == [[start, end], [end, end + 1]]  # the word, then "the"
    without_word = [example["input_ids"][0], *blocks[0], *blocks[2], *blocks[3], example["input_ids"][-1]]
    without_the = [example["input_ids"][0], *blocks[0], *blocks[1], *blocks[3], example["input_ids"][-1]]
    outcomes = []
    for epoch in range(30):  # round(0.5 * 2) = 1 word per epoch: all pieces of `word`, or "the"
        kept = TokenDrop(rate=0.5).apply(example, epoch=epoch, index=0).input_ids
        assert kept in (without_word, without_the)
        outcomes.append(kept == without_word)
    assert 0 < sum(outcomes) < 30


def test_word_cut_by_truncation_is_not_matched(wordpiece, bpe):
    # "it's" cut after "it" (WordPiece) and "Ourselves" cut after "ĠOur" (BPE) must not count as "it"/"our"
    assert find_stopwords(wordpiece, ["x it's"], max_length=4)["stopword_spans"] == [[]]
    assert find_stopwords(wordpiece, ["x it's"], max_length=6)["stopword_spans"] == [[[2, 5]]]
    assert find_stopwords(bpe, ["x Ourselves"], max_length=4)["stopword_spans"] == [[]]
    assert find_stopwords(bpe, ["x Ourselves"], max_length=5)["stopword_spans"] == [[[2, 4]]]


def test_word_ids_glued_punctuation_with_a_whitespace_pre_tokenizer():
    # A tokenizer that splits only on whitespace (like SentencePiece) makes "(the" and "the," one word each:
    # their "the" is not a whole word of its own, so it stays; the free-standing "the" is found.
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "(", "##the", "the", "movie", "##,"]
    vocab = {w: i for i, w in enumerate(words)}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                           special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", cls_token="[CLS]",
                                  sep_token="[SEP]", pad_token="[PAD]")
    columns = find_stopwords(tok, ["the movie (the movie the,"])
    assert tok.convert_ids_to_tokens(columns["input_ids"][0])[3:8] == ["(", "##the", "movie", "the", "##,"]
    assert columns["stopword_spans"] == [[[1, 2]]]


@pytest.mark.parametrize("name", ["wordpiece", "bpe"])
def test_real_sentences_drop_only_stopwords(name, rt_wp, rt_bpe, tokenizers):
    tok, data = tokenizers[name], (rt_wp if name == "wordpiece" else rt_bpe)
    everything = TokenDrop(rate=1.0)
    found = 0
    for row in data.select(range(400)):
        text, ids = row["text"], row["input_ids"]
        offsets = tok(text, return_offsets_mapping=True, truncation=True, max_length=128)["offset_mapping"]
        result = everything.apply(row, epoch=0)
        dropped = {p for s, e in result.dropped_spans for p in range(s, e)}
        assert result.input_ids == [t for p, t in enumerate(ids) if p not in dropped]
        assert not dropped & {p for p, t in enumerate(ids) if t in specials(tok)}
        for s, e in result.dropped_spans:
            a, b = offsets[s][0], offsets[e - 1][1]
            while text[a].isspace():
                a += 1
            word = text[a:b].lower().replace("’", "'")
            if any(c.isalnum() for c in word):  # a word: in the list, not part of a longer word
                assert word in STOPWORDS, word
                assert not (a > 0 and text[a - 1].isalnum()) and not (b < len(text) and text[b].isalnum())
            else:  # punctuation: only the marks of the list, and the whole run of it
                assert set(word) <= MARKS, word
                assert not (a > 0 and not text[a - 1].isspace() and not text[a - 1].isalnum())
                assert not (b < len(text) and not text[b].isspace() and not text[b].isalnum())
        found += len(result.dropped_spans)
        if row["length"] < 128:  # every free-standing listed word ("the", "It's", ...) was dropped
            dropped_chars = {(offsets[s][0] + (text[offsets[s][0]] == " "), offsets[e - 1][1])
                             for s, e in result.dropped_spans}
            for chunk in re.finditer(r"\S+", text):
                if chunk.group().lower().replace("’", "'") in STOPWORDS:
                    assert chunk.span() in dropped_chars, chunk.group()
    assert found > 2000


# ----------------------------------------------------------------------------- counts and determinism
@FAST
@given(row=st.integers(0, 1499), rate=st.sampled_from([0.05, 0.1, 0.25, 0.3, 0.5, 0.7, 0.75, 0.9]),
       seed=st.integers(0, 1000), epoch=st.integers(0, 10))
def test_rate_mode_drops_exactly_round_rate_times_n_words(rt_wp, rt_bpe, row, rate, seed, epoch):
    for data in (rt_wp, rt_bpe):
        example = data[row]
        spans = example["stopword_spans"]
        result = TokenDrop(rate=rate, seed=seed).apply(example, epoch=epoch)
        assert result.dropped_words == half_up(rate, len(spans))
        assert result.dropped_tokens == sum(e - s for s, e in result.dropped_spans)
        assert len(result.input_ids) == example["length"] - result.dropped_tokens
        assert all(list(s) in spans for s in result.dropped_spans)
        assert len(result.attention_mask) == len(result.input_ids)
        if example.get("token_type_ids") is not None:
            assert len(result.token_type_ids) == len(result.input_ids)


@FAST
@given(sizes=st.lists(st.integers(1, 3), max_size=12), filler=st.integers(2, 20), cut=st.integers(0, 30),
       seed=st.integers(0, 100), epoch=st.integers(0, 5))
def test_to_length_rule(sizes, filler, cut, seed, epoch):
    spans, pos = [], 1
    for size in sizes:  # stopword words of `size` tokens, separated by one content token
        spans.append([pos, pos + size])
        pos += size + 1
    length = pos + filler
    target = max(2, length - cut)
    example = {"input_ids": list(range(length)), "stopword_spans": spans, "idx": 7}
    result = TokenDrop(mode="to_length", seed=seed).apply(example, epoch=epoch, target_length=target)
    excess, stop_tokens = length - target, sum(sizes)
    if stop_tokens <= excess:  # too few stopwords: all of them go, the rest is padding
        assert result.dropped_words == len(sizes) and len(result.input_ids) == length - stop_tokens
    else:
        assert len(result.input_ids) <= target  # at most target tokens ...
        assert len(result.input_ids) > target - max(sizes)  # ... overshooting by less than one word
        if sizes.count(1) >= excess:
            assert len(result.input_ids) == target  # exact whenever one-token words suffice


def test_same_seed_epoch_idx_same_subset_other_epoch_other_subset(rt_wp):
    rich = next(r for r in rt_wp if len(r["stopword_spans"]) >= 12)
    td = TokenDrop(rate=0.5, seed=3)
    np_state, torch_state = np.random.get_state(), torch.random.get_rng_state()
    first = td.apply(rich, epoch=1)
    assert np.array_equal(np.random.get_state()[1], np_state[1])  # the global RNGs are not used ...
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    np.random.seed(123)
    torch.manual_seed(123)
    assert td.apply(rich, epoch=1) == first  # ... nor do they have a say
    assert TokenDrop(rate=0.5, seed=3).apply(rich, epoch=1) == first
    subsets = {tuple(map(tuple, td.apply(rich, epoch=e).dropped_spans)) for e in range(10)}
    assert len(subsets) >= 9
    assert td.apply(rich, epoch=1, index=rich["idx"] + 1).dropped_spans != first.dropped_spans
    assert TokenDrop(rate=0.5, seed=4).apply(rich, epoch=1).dropped_spans != first.dropped_spans


def test_disabled_and_rate_zero_drop_nothing_rate_one_drops_all(rt_wp):
    rows = rt_wp.select(range(200))
    for td in (TokenDrop(rate=0.0), TokenDrop(rate=0.7, enabled=False)):
        for row in rows:
            result = td.apply(row, epoch=2)
            assert result.input_ids == row["input_ids"] and result.dropped_tokens == 0
    off = TokenDrop(mode="to_length", enabled=False)
    assert off.apply(rows[0], epoch=0, target_length=3).input_ids == rows[0]["input_ids"]
    for row in rows:
        result = TokenDrop(rate=1.0).apply(row, epoch=0)
        assert result.dropped_words == len(row["stopword_spans"])
        assert len(result.input_ids) == row["length"] - sum(e - s for s, e in row["stopword_spans"])


@pytest.mark.parametrize("mode", ["rate", "to_length"])
def test_keep_pronouns_never_drops_a_pronoun(rt_wp, mode):
    keep = TokenDrop(rate=1.0, mode=mode, keep_pronouns=True)
    pronouns_seen = 0
    for row in rt_wp.select(range(300)):
        flags = row["stopword_is_pronoun"]
        pronoun_spans = [tuple(s) for s, p in zip(row["stopword_spans"], flags, strict=True) if p]
        other_tokens = sum(e - s for (s, e), p in zip(row["stopword_spans"], flags, strict=True) if not p)
        target = 2 if mode == "to_length" else None  # more than the stopwords can give
        result = keep.apply(row, epoch=0, target_length=target)
        assert not set(result.dropped_spans) & set(pronoun_spans)
        assert result.dropped_tokens == other_tokens  # every other stopword went
        pronouns_seen += len(pronoun_spans)
    assert pronouns_seen > 100
    with pytest.raises(ValueError, match="stopword_is_pronoun"):
        keep.apply({"input_ids": [1, 2, 3], "stopword_spans": [[1, 2]], "idx": 0}, 0, target_length=target)


# ----------------------------------------------------------------------------- collators
def bucket_batches(lengths, width=5, batch_size=32, seed=0):
    lengths, rng, batches = np.asarray(lengths), np.random.default_rng(seed), []
    for low in range(0, int(lengths.max()) + 1, width):
        members = np.nonzero((lengths >= low) & (lengths < low + width))[0]
        rng.shuffle(members)
        batches += [members[i:i + batch_size].tolist() for i in range(0, len(members), batch_size)]
    return batches


def test_bucket_collator_trims_to_the_shortest_and_removes_padding(rt_wp, wordpiece):
    rows = rt_wp.remove_columns(["text"]).to_list()
    batches = bucket_batches([r["length"] for r in rows])
    shortest = TokenDropBucketCollator(TokenDrop(mode="to_length", seed=1), wordpiece.pad_token_id)
    reachable = TokenDropBucketCollator(TokenDrop(mode="to_length", seed=1), wordpiece.pad_token_id,
                                        trim_to="reachable")
    for batch_ids in batches:
        examples = [rows[i] for i in batch_ids]
        out = shortest(examples)
        target = min(ex["length"] for ex in examples)
        real = out["attention_mask"].sum(1).tolist()
        for ex, n in zip(examples, real, strict=True):
            excess = ex["length"] - target
            sizes = [e - s for s, e in ex["stopword_spans"]]
            if sizes.count(1) >= excess:
                assert n == target  # Algorithm 3: exactly the batch's shortest length
            elif sum(sizes) <= excess:
                assert n == ex["length"] - sum(sizes)  # all stopwords dropped, the rest padded
        assert out["input_ids"].shape[1] == max(real)
        assert (out["input_ids"][out["attention_mask"] == 0] == wordpiece.pad_token_id).all()
        assert out["labels"].tolist() == [ex["label"] for ex in examples]
        assert "token_type_ids" in out
        wide = reachable(examples)
        assert wide["input_ids"].shape[1] <= out["input_ids"].shape[1]
    no_drop = padding_stats([r["length"] for r in rows], batches).padding_fraction
    assert shortest.stats.num_batches == len(batches)
    assert shortest.stats.padding_fraction < no_drop / 3
    assert reachable.stats.padding_fraction <= 0.005  # the paper's ~0.2% regime
    assert reachable.dropped_tokens < shortest.dropped_tokens
    shortest.reset_stats()
    assert shortest.stats.slot_tokens == 0 and shortest.dropped_tokens == 0


def test_reachable_lengths_subtract_every_droppable_stopword_token(rt_wp):
    data = rt_wp.select(range(300))
    full = reachable_lengths(data, TokenDrop(mode="to_length"))
    assert full == [len(ids) - sum(e - s for s, e in spans)
                    for ids, spans in zip(data["input_ids"], data["stopword_spans"], strict=True)]
    keep = reachable_lengths(data, TokenDrop(mode="to_length", keep_pronouns=True))
    pronoun_tokens = [sum(e - s for (s, e), p in zip(spans, flags, strict=True) if p)
                      for spans, flags in zip(data["stopword_spans"], data["stopword_is_pronoun"], strict=True)]
    assert [k - f for k, f in zip(keep, full, strict=True)] == pronoun_tokens and any(pronoun_tokens)
    assert reachable_lengths(data, TokenDrop(mode="to_length", enabled=False)) == data["length"]
    # it is the length TokenDrop really gets to when asked for less than it can give
    drop = TokenDrop(mode="to_length", seed=3)
    for row, floor in zip(data.select(range(40)), full, strict=False):
        assert len(drop.apply(row, epoch=0, target_length=1).input_ids) == floor
    with pytest.raises(ValueError, match="token_drop must be a TokenDrop"):
        reachable_lengths(data, 0.5)
    with pytest.raises(ValueError, match="data must be a split from tdnotebooks.finetuning.tokendrop.prepare"):
        reachable_lengths(load_task("rt_sentiment")["dev"], TokenDrop(mode="to_length"))


def test_bucket_collator_bpe_and_disabled(rt_bpe, bpe):
    rows = rt_bpe.remove_columns(["text"]).to_list()
    batches = bucket_batches([r["length"] for r in rows])
    collate = TokenDropBucketCollator(TokenDrop(mode="to_length"), bpe.pad_token_id, trim_to="reachable")
    off = TokenDropBucketCollator(TokenDrop(mode="to_length", enabled=False), bpe.pad_token_id)
    for batch_ids in batches:
        out = collate([rows[i] for i in batch_ids])
        assert "token_type_ids" not in out and out["input_ids"].dtype == torch.long
        off([rows[i] for i in batch_ids])
    assert collate.stats.padding_fraction <= 0.005
    assert off.stats == padding_stats([r["length"] for r in rows], batches)  # plain padding, nothing dropped


def test_token_drop_collator_rate_pads_to_batch_max_and_follows_epoch(rt_wp, wordpiece):
    rows = rt_wp.remove_columns(["text"]).select(range(64)).to_list()
    collate = TokenDropCollator(TokenDrop(rate=0.3, seed=5), wordpiece.pad_token_id)
    loader = torch.utils.data.DataLoader(rows, batch_size=16, shuffle=False, collate_fn=collate)
    epoch0 = [b["input_ids"] for b in loader]
    assert [b.tolist() for b in epoch0] == [b["input_ids"].tolist() for b in loader]
    collate.set_epoch(1)
    assert [b.tolist() for b in epoch0] != [b["input_ids"].tolist() for b in loader]
    collate.set_epoch(0)
    collate.reset_stats()
    expected_real = 0
    for batch_ids in range(0, 64, 16):
        examples = rows[batch_ids:batch_ids + 16]
        out = collate(examples)
        kept = [ex["length"] - TokenDrop(rate=0.3, seed=5).apply(ex, 0).dropped_tokens for ex in examples]
        assert out["attention_mask"].sum(1).tolist() == kept
        assert out["input_ids"].shape == (16, max(kept)) == out["token_type_ids"].shape
        expected_real += sum(kept)
    assert collate.stats.real_tokens == expected_real and collate.stats.num_batches == 4
    assert collate.dropped_words == sum(half_up(0.3, len(ex["stopword_spans"])) for ex in rows)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_rate_outside_0_1_is_rejected(rate):
    with pytest.raises(ValueError, match=r"rate .*\[0, 1\]"):
        TokenDrop(rate=rate)


def test_unknown_mode_and_wrong_collator_mode_are_rejected(wordpiece):
    with pytest.raises(ValueError, match=r"mode must be one of 'rate', 'to_length', got 'bucket'"):
        TokenDrop(mode="bucket")
    with pytest.raises(ValueError, match="mode='to_length'"):
        TokenDropCollator(TokenDrop(mode="to_length"), wordpiece.pad_token_id)
    with pytest.raises(ValueError, match="mode='rate'"):
        TokenDropBucketCollator(TokenDrop(), wordpiece.pad_token_id)
    with pytest.raises(ValueError, match="trim_to"):
        TokenDropBucketCollator(TokenDrop(mode="to_length"), wordpiece.pad_token_id, trim_to="longest")
    with pytest.raises(ValueError, match="target_length"):
        TokenDrop(mode="to_length").apply({"input_ids": [1, 2], "stopword_spans": [], "idx": 0}, epoch=0)
    with pytest.raises(ValueError, match="idx"):
        TokenDrop().apply({"input_ids": [1, 2], "stopword_spans": []}, epoch=0)


@pytest.mark.parametrize("kwargs, message", [
    ({"rate": True}, r"rate must be a number in \[0, 1\], got True"),
    ({"rate": "0.3"}, r"rate must be a number in \[0, 1\], got '0.3'"),
    ({"seed": -1}, "seed must be an int >= 0, got -1"),
    ({"seed": True}, "seed must be an int >= 0, got True"),
    ({"keep_pronouns": "yes"}, "keep_pronouns must be True or False, got 'yes'"),
    ({"enabled": 0}, "enabled must be True or False, got 0"),
])
def test_token_drop_checks_its_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TokenDrop(**kwargs)


def test_public_methods_check_their_arguments_at_the_door(wordpiece):
    example = {"input_ids": [1, 2, 3], "stopword_spans": [[1, 2]], "idx": 0}
    rate, to_length = TokenDrop(rate=0.5), TokenDrop(mode="to_length")
    with pytest.raises(ValueError, match="epoch must be an int >= 0, got -1"):
        rate.apply(example, epoch=-1)
    with pytest.raises(ValueError, match="epoch must be an int >= 0, got True"):
        rate.generator(True, 0)
    with pytest.raises(ValueError, match="index must be an int >= 0, got 1.5"):
        rate.apply(example, epoch=0, index=1.5)
    with pytest.raises(ValueError, match="index must be an int >= 0, got -2"):
        rate.choose([(1, 2)], 0, -2)
    with pytest.raises(ValueError, match="target_length must be an int >= 0, got 2.5"):
        to_length.apply(example, epoch=0, target_length=2.5)
    with pytest.raises(ValueError, match="excess must be an int >= 0, got -1"):
        to_length.choose([(1, 2)], 0, 0, excess=-1)
    with pytest.raises(ValueError, match='mode "to_length" needs excess'):
        to_length.choose([(1, 2)], 0, 0)
    with pytest.raises(ValueError, match=r"max_length must be an int >= 3 \(room for the tokenizer.s 2 special"):
        find_stopwords(wordpiece, ["the movie"], max_length=0)
    with pytest.raises(ValueError, match=r"max_length must be an int >= 3 \(room for the tokenizer.s 2 special"):
        prepare(["the movie"], wordpiece, max_length=0)
    with pytest.raises(ValueError, match="keep_pronouns must be True or False, got 'no'"):
        highlight_dropped(wordpiece, "the movie", keep_pronouns="no")
    collate = TokenDropCollator(TokenDrop(), wordpiece.pad_token_id)
    with pytest.raises(ValueError, match="epoch must be an int >= 0, got -1"):
        collate.set_epoch(-1)
    collate.set_epoch(np.int64(2))
    assert collate.epoch == 2 and type(collate.epoch) is int
    with pytest.raises(ValueError, match=r"pad_token_id \(tokenizer.pad_token_id\) must be an int >= 0, got None"):
        TokenDropCollator(TokenDrop(), None)
    with pytest.raises(ValueError, match="trim_to must be one of 'shortest', 'reachable', 'bucket_floor', got 'longest'"):
        TokenDropBucketCollator(TokenDrop(mode="to_length"), wordpiece.pad_token_id, trim_to="longest")


def test_collators_do_not_recheck_arguments_per_example(rt_wp, wordpiece, monkeypatch):
    """The epoch and the settings are checked when set (constructor, set_epoch), not once per example."""
    import tdnotebooks.finetuning.tokendrop as module

    rows = rt_wp.remove_columns(["text"]).select(range(32)).to_list()
    rate = TokenDropCollator(TokenDrop(rate=0.3), wordpiece.pad_token_id)
    trim = TokenDropBucketCollator(TokenDrop(mode="to_length"), wordpiece.pad_token_id, trim_to="reachable")
    rate.set_epoch(1)
    trim.set_epoch(1)
    expected = [rate(rows)["input_ids"], trim(rows)["input_ids"]]
    calls = []
    for name in ("check_int", "check_number", "check_bool", "check_choice"):
        monkeypatch.setattr(module, name, lambda *args, _name=name: calls.append(_name))
    assert torch.equal(rate(rows)["input_ids"], expected[0]) and torch.equal(trim(rows)["input_ids"], expected[1])
    assert calls == []


def test_slow_tokenizer_is_rejected():
    from transformers import BertTokenizerLegacy

    slow = BertTokenizerLegacy(vocab_file=str(bundled_model_path() / "vocab.txt"))
    assert not slow.is_fast

    class NotFast:
        is_fast = False

    for tok in (slow, NotFast()):
        with pytest.raises(ValueError, match="tokenizer must be a fast"):
            find_stopwords(tok, ["the movie"])
        with pytest.raises(ValueError, match="tokenizer must be a fast"):
            prepare(["the movie"], tok)
        with pytest.raises(ValueError, match="tokenizer must be a fast"):
            drop_stopwords_for_inference(tok, ["the movie"], rate=0.5)


# ----------------------------------------------------------------------------- data, inference, notebooks
def test_prepare_dataset_dict_pairs_and_all_empty_batches(wordpiece, bpe):
    from datasets import Dataset, DatasetDict

    data = DatasetDict({"train": Dataset.from_dict({"a": ["Great film!", "the end"], "b": ["Wow", "of it"]})})
    out = TokenDrop().prepare(data, wordpiece, text_fields=("a", "b"))["train"]
    assert out["idx"] == [0, 1]
    assert out["stopword_spans"] == [[], [[1, 2], [4, 5], [5, 6]]]  # "the", then "of" "it" in the 2nd text
    assert out["stopword_is_pronoun"] == [[], [False, False, True]]
    assert out["token_type_ids"][1] == [0, 0, 0, 0, 1, 1, 1]
    kept = TokenDrop(rate=1.0, keep_pronouns=True).apply(out[1], epoch=0)
    assert kept.input_ids == [out[1]["input_ids"][p] for p in (0, 2, 3, 5, 6)]  # "it" stays
    assert kept.token_type_ids == [0, 0, 0, 1, 1]
    empty = prepare(["Great film!", "Wow"], bpe)  # no stopword at all: the column keeps its type
    assert empty["stopword_spans"] == [[], []] and "int32" in str(empty.features["stopword_spans"])
    with pytest.raises(ValueError, match="text_fields"):
        prepare(data, wordpiece, text_fields=("sentence",))


def test_inference_time_token_drop(wordpiece):
    texts = ["It's the best movie of the year ... and I loved it", "Not good"]
    full = drop_stopwords_for_inference(wordpiece, texts, rate=0.0)
    assert [x["input_ids"].tolist() for x in full] == [[ids] for ids in wordpiece(texts)["input_ids"]]
    bare = drop_stopwords_for_inference(wordpiece, texts, rate=1.0)
    assert wordpiece.decode(bare[0]["input_ids"][0]) == "[CLS] best movie year loved [SEP]"
    assert bare[1]["input_ids"].shape == (1, 4)
    assert set(bare[0]) == {"input_ids", "attention_mask", "token_type_ids"}
    half = drop_stopwords_for_inference(wordpiece, texts[0], rate=0.5, seed=1)  # 4 of the 8 stopword words
    assert len(half) == 1 and bare[0]["input_ids"].shape[1] + 4 <= half[0]["input_ids"].shape[1]
    assert half[0]["input_ids"].shape[1] <= full[0]["input_ids"].shape[1] - 4
    again = drop_stopwords_for_inference(wordpiece, texts[0], rate=0.5, seed=1)
    assert torch.equal(half[0]["input_ids"], again[0]["input_ids"])


def test_highlight_dropped_marks_the_words_the_collator_drops(bpe):
    text = "The <b>film</b> is, in the end, a mess"
    shown = highlight_dropped(bpe, text, rate=0.5, seed=2, epoch=1)
    words = [w for w, _ in shown.pairs]
    assert words == ["The", "<", "b>film</b", ">", "is", ",", "in", "the", "end", ",", "a", "mess"]
    n_stop = sum(shown.stopword)
    assert n_stop == 5 and sum(d for _, d in shown.pairs) == half_up(0.5, n_stop)
    assert all(stop for (_, dropped), stop in zip(shown.pairs, shown.stopword, strict=True) if dropped)
    assert "&lt;b&gt;film" in shown.html and shown.html.count("<s ") == 3 and "<b>" not in shown.html
    assert re.sub(r"[\[\]]", "", str(shown)) == text
    again = highlight_dropped(bpe, text, rate=0.5, seed=2, epoch=1)
    assert again.pairs == shown.pairs
    others = [highlight_dropped(bpe, text, rate=0.5, seed=2, epoch=e).pairs for e in range(2, 6)]
    assert any(pairs != shown.pairs for pairs in others)


def test_remove_articles_and_punctuation():
    text = "The movie, it's an ode to a friend -- Then another well-made (one)."
    assert remove_articles_and_punctuation(text) == "movie its ode to friend Then another well made one"
    assert remove_articles_and_punctuation("A theory: an answer!") == "theory answer"


# ---------------------------------------------------------------------------------------- issue 16: unit, bucket_floor
def _type_model(ids, spans, seed, epoch, index):
    """Algorithm 1 / the reference code, written out: shuffle the distinct stopword types (in order of first
    occurrence) with the (seed, epoch, index) generator, then take each type's words in text order."""
    groups = {}
    for k, (s, e) in enumerate(spans):
        groups.setdefault(tuple(ids[s:e]), []).append(k)
    words = list(groups.values())
    perm = np.random.default_rng((seed, epoch, index)).permutation(len(words))
    return [k for g in perm for k in words[int(g)]]


# ids: 10 = "the" (3 times), 11 = "of", 12 = "a", 13 = "it's" (2 tokens); 1-5: content tokens
TYPE_EXAMPLE = {"input_ids": [101, 10, 1, 11, 10, 2, 12, 3, 10, 13, 14, 4, 102],
                "stopword_spans": [[1, 2], [3, 4], [4, 5], [6, 7], [8, 9], [9, 11]], "idx": 5}


def test_default_unit_is_type_and_drops_whole_types_in_shuffled_type_order():
    assert TokenDrop().unit == "type" and TokenDrop(mode="to_length").unit == "type"
    ids, spans = TYPE_EXAMPLE["input_ids"], TYPE_EXAMPLE["stopword_spans"]
    firsts = set()
    for seed in range(40):
        order = _type_model(ids, spans, seed, 1, 5)
        for rate, k in ((0.2, 1), (0.5, 3), (1.0, 6)):  # round(rate * 6 stopword words), halves up
            got = TokenDrop(rate=rate, seed=seed).apply(TYPE_EXAMPLE, epoch=1)
            assert got.dropped_spans == sorted(tuple(spans[j]) for j in order[:k])
        firsts.add(tuple(TokenDrop(rate=0.2, seed=seed).apply(TYPE_EXAMPLE, epoch=1).dropped_spans))
    # one word dropped: the first "the" or one of the other types, never the 2nd or 3rd "the"
    assert firsts == {((1, 2),), ((3, 4),), ((6, 7),), ((9, 11),)}
    # to_length walks the same order: 4 tokens to remove -> as many whole words, in type order, as fit
    for seed in range(40):
        order = _type_model(ids, spans, seed, 0, 5)
        got = TokenDrop(mode="to_length", seed=seed).apply(TYPE_EXAMPLE, epoch=0, target_length=len(ids) - 4)
        need, expected = 4, []
        for j in order:
            size = spans[j][1] - spans[j][0]
            if size <= need:
                expected.append(tuple(spans[j]))
                need -= size
        assert need == 0 and got.dropped_spans == sorted(expected)


def test_unit_occurrence_keeps_the_earlier_reading():
    spans = TYPE_EXAMPLE["stopword_spans"]
    firsts = set()
    for seed in range(40):
        perm = [int(k) for k in np.random.default_rng((seed, 1, 5)).permutation(len(spans))]
        got = TokenDrop(rate=0.5, seed=seed, unit="occurrence").apply(TYPE_EXAMPLE, epoch=1)
        assert got.dropped_spans == sorted(tuple(spans[j]) for j in perm[:3])
        firsts.add(tuple(TokenDrop(rate=0.2, seed=seed, unit="occurrence").apply(TYPE_EXAMPLE, epoch=1).dropped_spans))
    assert ((4, 5),) in firsts or ((8, 9),) in firsts  # a later "the" can go first: not so by type
    # same budget in both units, on real data: round(rate * n) words, n counting occurrences
    assert TokenDrop(rate=0.5, unit="occurrence").apply(TYPE_EXAMPLE, 0).dropped_words == 3
    assert TokenDrop(rate=0.5).apply(TYPE_EXAMPLE, 0).dropped_words == 3


def test_choose_needs_types_in_unit_type():
    with pytest.raises(ValueError, match='unit="type" needs types'):
        TokenDrop().choose([(1, 2)], 0, 0)
    with pytest.raises(ValueError, match=r"types must have one key per span \(1\), got 2"):
        TokenDrop().choose([(1, 2)], 0, 0, types=["the", "a"])
    assert TokenDrop(rate=1.0).choose([(1, 2), (2, 3)], 0, 0, types=["the", "the"]) == [0, 1]
    assert TokenDrop(unit="occurrence", rate=1.0).choose([(1, 2)], 0, 0) == [0]
    with pytest.raises(ValueError, match="unit must be one of 'type', 'occurrence', got 'word'"):
        TokenDrop(unit="word")
    assert "unit='type'" in repr(TokenDrop())


def test_bucket_floor_trims_each_sequence_to_its_buckets_lower_edge():
    def example(length, stop, idx):  # `stop` one-token stopwords right after [CLS]
        return {"input_ids": list(range(100, 100 + length)), "stopword_spans": [[p, p + 1] for p in range(1, 1 + stop)],
                "idx": idx}

    collate = TokenDropBucketCollator(TokenDrop(mode="to_length"), 0, trim_to="bucket_floor", bucket_width=5)
    same_bucket = [example(10, 4, 0), example(12, 4, 1), example(14, 4, 2)]
    assert collate.target_lengths(same_bucket) == [10, 10, 10]
    batch = collate(same_bucket)
    assert batch["input_ids"].shape == (3, 10) and bool(batch["attention_mask"].all())
    assert collate.dropped_tokens == 0 + 2 + 4
    merged = [example(7, 4, 3), example(13, 4, 4), example(22, 1, 5)]  # a merged residual batch; one stopword-poor
    assert collate.target_lengths(merged) == [5, 10, 20]
    collate.reset_stats()
    batch = collate(merged)
    assert batch["attention_mask"].sum(1).tolist() == [5, 10, 21]  # own floors; the poor one keeps 21, pads the rest
    assert collate.stats.slot_tokens == 3 * 21 and collate.dropped_tokens == 2 + 3 + 1
    assert TokenDropBucketCollator(TokenDrop(mode="to_length"), 0, trim_to="bucket_floor",
                                   bucket_width=4).target_lengths(same_bucket) == [8, 12, 12]
    # the other readings trim the same-bucket batch to one width: its shortest (10) either way here
    for trim_to in ("shortest", "reachable"):
        assert TokenDropBucketCollator(TokenDrop(mode="to_length"), 0, trim_to=trim_to).target_lengths(same_bucket) == [
            10, 10, 10]
    with pytest.raises(ValueError, match="bucket_width must be an int >= 1, got 0"):
        TokenDropBucketCollator(TokenDrop(mode="to_length"), 0, trim_to="bucket_floor", bucket_width=0)


def test_bucket_floor_matches_the_sampler_buckets(rt_wp, wordpiece):
    """The floor the collator computes from bucket_width is the lower edge of the BucketSpec bucket."""
    from tdnotebooks.finetuning.planning import BucketSpec

    spec = BucketSpec(rt_wp["length"], bucket_width=5)
    collate = TokenDropBucketCollator(TokenDrop(mode="to_length"), wordpiece.pad_token_id, trim_to="bucket_floor")
    rows = rt_wp.select(range(200)).remove_columns(["text"]).to_list()
    assert collate.target_lengths(rows) == [spec.buckets[spec.bucket_of(r["length"])].min_len for r in rows]
