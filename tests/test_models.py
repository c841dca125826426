"""The bundled model loads offline in every form, gives the right shapes, and errors are clear."""


import pytest
import torch

from tdnotebooks.data import HubUnavailableError
from tdnotebooks.models import (
    BUNDLED_MODEL,
    bundled_model_path,
    byte_level_bpe,
    count_parameters,
    load_pretrained,
    load_tokenizer,
    resolve_model,
    tiny_bert,
)


def test_bundled_tokenizer_is_the_fast_wordpiece(wordpiece):
    assert wordpiece.is_fast and len(wordpiece) == 30522
    tokens = wordpiece.tokenize("tokenization")
    assert tokens[0] == "token" and tokens[1].startswith("##")


def test_encoder_forward_shapes(wordpiece, minilm_encoder):
    batch = wordpiece(["a short one", "a somewhat longer sentence than the first"], padding=True,
                      return_tensors="pt")
    with torch.no_grad():
        out = minilm_encoder(**batch)
    assert out.last_hidden_state.shape == (2, batch["input_ids"].shape[1], 384)
    assert minilm_encoder.config.num_hidden_layers == 6
    assert minilm_encoder.newly_initialized == []  # every encoder weight came from the checkpoint


def test_classifier_has_new_head_only(wordpiece):
    clf = load_pretrained(kind="classifier", num_labels=3)
    assert sorted(clf.newly_initialized) == ["classifier.bias", "classifier.weight"]
    logits = clf(**wordpiece(["fine"], return_tensors="pt")).logits
    assert logits.shape == (1, 3)


def test_mlm_head_is_new_and_flagged(wordpiece):
    with pytest.warns(UserWarning, match="no MLM head.*NEW"):
        mlm = load_pretrained(kind="mlm")
    assert any(k.startswith("cls.predictions.transform") for k in mlm.newly_initialized)
    # the vocabulary projection is tied to the (pretrained) word embeddings
    assert mlm.cls.predictions.decoder.weight.data_ptr() == mlm.bert.embeddings.word_embeddings.weight.data_ptr()
    out = mlm(**wordpiece(["the [MASK] sat"], return_tensors="pt"))
    assert out.logits.shape[-1] == 30522


def test_sbert_paraphrase_is_closer_than_unrelated():
    sbert = load_pretrained(kind="sbert")
    emb = sbert.encode(["A man is playing a guitar.", "Someone plays the guitar.",
                        "The central bank raised interest rates."], convert_to_tensor=True)
    sims = torch.nn.functional.cosine_similarity(emb[0:1], emb[1:])
    assert sims[0] > 0.6 > sims[1] + 0.3


def test_attention_maps_with_eager(wordpiece):
    enc = load_pretrained(kind="encoder", attn_implementation="eager")
    out = enc(**wordpiece(["hello world"], return_tensors="pt"), output_attentions=True)
    assert len(out.attentions) == 6 and out.attentions[0].shape[1] == 12


def test_local_folder_loads_like_the_bundled_name(tmp_path, wordpiece, minilm_encoder):
    minilm_encoder.save_pretrained(tmp_path)
    wordpiece.save_pretrained(tmp_path)
    again = load_pretrained(str(tmp_path)).eval()
    ids = wordpiece(["same weights"], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(again(**ids).last_hidden_state, minilm_encoder(**ids).last_hidden_state)


def test_tiny_bert_is_small_and_uses_bundled_vocab():
    from transformers import BertForMaskedLM

    config = tiny_bert()
    assert config.vocab_size == 30522 and config.num_hidden_layers == 4
    assert 1e6 < count_parameters(BertForMaskedLM(config)) < 10e6
    with pytest.raises(ValueError, match="num_layers must be an int >= 2"):
        tiny_bert(num_layers=1)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        tiny_bert(hidden_size=130, num_heads=4)


def test_byte_level_bpe_has_word_alignment():
    tok = byte_level_bpe(vocab_size=2000)
    enc = tok("themselves tokenization")
    assert tok.convert_ids_to_tokens(enc["input_ids"])[0] == "<s>"
    assert enc.word_ids()[0] is None and enc.word_ids()[-1] is None
    with pytest.raises(ValueError, match="vocab_size must be an int in"):
        byte_level_bpe(vocab_size=10)


def test_clear_errors_for_bad_names_and_paths(tmp_path):
    with pytest.raises(ValueError, match="kind must be one of 'encoder', 'classifier', 'mlm', 'sbert', got 'decoder'"):
        load_pretrained(kind="decoder")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained("./no/such/model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        resolve_model(tmp_path / "empty")
    with pytest.raises(HubUnavailableError, match="HF_HUB_OFFLINE"):
        load_pretrained("someone/not-cached-model")
    with pytest.raises(ValueError, match=r"num_labels \(1 = regression\) must be an int >= 1, got 0"):
        load_pretrained(kind="classifier", num_labels=0)
    with pytest.raises(ValueError, match="num_layers must be an int >= 1, got True"):
        load_pretrained(num_layers=True)
    with pytest.raises(ValueError, match=r"num_layers \(of 'all-MiniLM-L6-v2'\) must be an int in \[1, 6\], got 7"):
        load_pretrained(num_layers=7)


def test_unsupported_architecture_is_rejected(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_type='gpt2'.*BERT-style"):
        load_pretrained(str(tmp_path))


def test_bundled_aliases_resolve_to_the_package_folder():
    assert resolve_model(BUNDLED_MODEL) == str(bundled_model_path())
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2") == str(bundled_model_path())
    assert load_tokenizer("minilm").vocab_size == 30522
