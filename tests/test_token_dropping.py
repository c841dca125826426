"""Token dropping (Hou et al. 2022): exactness when nothing is dropped, the importance update formula,
which tokens are kept, where dropped tokens re-enter, gradients, saved state, distributed tables, FLOPs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tdnotebooks.pretraining.token_dropping import (
    ImportanceTable,
    KeptTokens,
    TokenDroppingBert,
    TokenDroppingConfig,
    flops_ratio,
    gather_tokens,
    layer_flops,
    scatter_tokens,
    select_kept_tokens,
)

# Heavy imports (transformers, the bundled tokenizer) stay inside fixtures: a spawned distributed
# worker (where fork is missing) imports this module too.


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors, one CPU thread


@pytest.fixture(scope="module")
def make_mlm(wordpiece):
    """A factory of tiny random BertForMaskedLM models (4 layers x 32, eval mode)."""
    from transformers import BertForMaskedLM

    from tdnotebooks.models import tiny_bert

    def make(attn_implementation: str = "eager", seed: int = 0):
        torch.manual_seed(seed)
        config = tiny_bert(num_layers=4, hidden_size=32, num_heads=2, intermediate_size=64,
                           tokenizer=wordpiece)
        return BertForMaskedLM._from_config(config, attn_implementation=attn_implementation).eval()

    return make


@pytest.fixture(scope="module")
def batch(wordpiece):
    """3 sequences of real length 12, 9 and 6 (padded to 12), [CLS] ... [SEP], 1-3 masked positions each."""
    tok = wordpiece
    gen = torch.Generator().manual_seed(1)
    lengths = [12, 9, 6]
    ids = torch.randint(2000, 3000, (3, 12), generator=gen)
    attention_mask = torch.zeros(3, 12, dtype=torch.long)
    labels = torch.full((3, 12), -100)
    for b, n in enumerate(lengths):
        attention_mask[b, :n] = 1
        ids[b, 0], ids[b, n - 1], ids[b, n:] = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id
    for b, t in [(0, 2), (0, 7), (1, 3), (1, 4), (2, 1), (0, 9)]:
        labels[b, t] = ids[b, t]
    # [MASK] at 4 of the 6 masked positions; (0, 7) and (1, 4) keep their token (BERT's 80/10/10 rule).
    ids[0, 2] = ids[1, 3] = ids[2, 1] = ids[0, 9] = tok.mask_token_id
    return {"input_ids": ids, "attention_mask": attention_mask, "labels": labels}


def wrap(mlm, wordpiece, **config):
    return TokenDroppingBert(mlm, TokenDroppingConfig(**config), special_token_ids=wordpiece.all_special_ids)


# ----------------------------------------------------------------------------------------------------------
# Exactness: nothing dropped == the plain Hugging Face model
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("mode", ["keep_all", "keep_all_full_kv", "drop_false"])
def test_keep_all_equals_hf_model(make_mlm, wordpiece, batch, attn, mode):
    mlm = make_mlm(attn)
    assert mlm.config._attn_implementation == attn
    config = {"keep_fraction": 1.0 if mode != "drop_false" else 0.5,
              "first_layer_full_kv": mode == "keep_all_full_kv"}
    td = wrap(mlm, wordpiece, **config)
    with torch.no_grad():
        ref = mlm(**batch)
        ref_hidden = mlm.bert(batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        out = td(**batch, drop=mode != "drop_false")
    masked = batch["labels"] != -100
    assert out.logits.shape == (int(masked.sum()), mlm.config.vocab_size)
    torch.testing.assert_close(out.logits, ref.logits[masked], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.loss, ref.loss, rtol=1e-5, atol=1e-6)
    assert torch.equal(out.target_ids, batch["labels"][masked])
    assert torch.equal(out.masked_positions, masked.nonzero())
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(out.last_hidden_state[real], ref_hidden[real], rtol=1e-5, atol=1e-5)


def test_keep_all_equals_hf_roberta():
    from transformers import RobertaConfig, RobertaForMaskedLM

    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=40, pad_token_id=1)
    mlm = RobertaForMaskedLM._from_config(config, attn_implementation="eager").eval()
    ids = torch.randint(5, 100, (2, 10))
    ids[:, 0], ids[0, 9], ids[1, 6], ids[1, 7:] = 0, 2, 2, 1      # <s> ... </s> <pad>
    attention_mask = (ids != 1).long()
    labels = torch.full_like(ids, -100)
    labels[0, 4], labels[1, 2] = ids[0, 4], ids[1, 2]
    ids[0, 4] = ids[1, 2] = 3                                       # <mask>
    td = TokenDroppingBert(mlm, TokenDroppingConfig(keep_fraction=1.0), special_token_ids=[0, 1, 2, 3])
    with torch.no_grad():
        ref = mlm(input_ids=ids, attention_mask=attention_mask).logits[labels != -100]
        out = td(ids, attention_mask, labels)
        half = td.__class__(mlm, TokenDroppingConfig(keep_fraction=0.5))(ids, attention_mask, labels)
    torch.testing.assert_close(out.logits, ref, rtol=1e-5, atol=1e-5)
    assert half.kept.valid.sum(1).tolist() == [5, 4]


@pytest.mark.parametrize("full_kv", [False, True])
def test_keep_all_equals_hf_electra_logits_loss_and_gradients(full_kv):
    """ELECTRA's generator: embeddings of their own width projected to the hidden size, a two-part head."""
    from transformers import ElectraConfig, ElectraForMaskedLM

    torch.manual_seed(0)
    config = ElectraConfig(vocab_size=100, embedding_size=16, hidden_size=32, num_hidden_layers=4,
                           num_attention_heads=2, intermediate_size=64, max_position_embeddings=40)
    mlm = ElectraForMaskedLM._from_config(config, attn_implementation="eager").eval()
    assert hasattr(mlm.electra, "embeddings_project")
    ids = torch.randint(5, 100, (2, 10))
    ids[:, 0], ids[0, 9], ids[1, 6], ids[1, 7:] = 1, 2, 2, 0        # [CLS] ... [SEP] [PAD]
    attention_mask = (ids != 0).long()
    labels = torch.full_like(ids, -100)
    labels[0, 4], labels[1, 2], labels[0, 7] = ids[0, 4], ids[1, 2], ids[0, 7]
    ids[0, 4] = ids[1, 2] = 3                                       # [MASK]
    td = TokenDroppingBert(mlm, TokenDroppingConfig(keep_fraction=1.0, first_layer_full_kv=full_kv),
                           special_token_ids=[0, 1, 2, 3])
    ref = mlm(input_ids=ids, attention_mask=attention_mask, labels=labels)
    ref.loss.backward()
    ref_grads = {name: p.grad.clone() for name, p in mlm.named_parameters()}
    mlm.zero_grad(set_to_none=True)
    out = td(ids, attention_mask, labels)
    out.loss.backward()
    torch.testing.assert_close(out.logits, ref.logits[labels != -100], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.loss, ref.loss, rtol=1e-5, atol=1e-6)
    for name, p in mlm.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    assert set(td.state_dict()) - {"_extra_state"} == {f"mlm.{k}" for k in mlm.state_dict()} | {
        "importance.table", "importance.high_ids", "importance.low_ids"}
    half = TokenDroppingBert(mlm, TokenDroppingConfig(keep_fraction=0.5))(ids, attention_mask, labels)
    assert half.kept.valid.sum(1).tolist() == [5, 4]


def test_dropping_changes_the_output(make_mlm, wordpiece, batch):
    mlm = make_mlm()
    td = wrap(mlm, wordpiece, keep_fraction=0.5)
    with torch.no_grad():
        dropped, full = td(**batch), td(**batch, drop=False)
    assert not torch.allclose(dropped.logits, full.logits)
    assert dropped.kept.indices.shape[1] < batch["input_ids"].shape[1]


# ----------------------------------------------------------------------------------------------------------
# Gather / scatter
# ----------------------------------------------------------------------------------------------------------


def test_gather_scatter_round_trip():
    full = torch.randn(2, 6, 4)
    kept = KeptTokens(indices=torch.tensor([[0, 2, 5], [1, 3, 4]]),
                      valid=torch.tensor([[True, True, True], [True, True, False]]))
    short = gather_tokens(full, kept.indices)
    assert torch.equal(short[1, 0], full[1, 1]) and torch.equal(short[0, 2], full[0, 5])
    assert torch.equal(scatter_tokens(full, short, kept), full)          # gather then scatter: identity
    new = torch.randn(2, 3, 4)
    merged = scatter_tokens(full, new, kept)
    assert torch.equal(gather_tokens(merged, kept.indices)[kept.valid], new[kept.valid])
    assert torch.equal(merged[1, 4], full[1, 4])                         # a filler slot writes nothing
    untouched = torch.ones(2, 6, dtype=torch.bool)
    untouched[0, [0, 2, 5]] = False
    untouched[1, [1, 3]] = False
    assert torch.equal(merged[untouched], full[untouched])


# ----------------------------------------------------------------------------------------------------------
# Importance table
# ----------------------------------------------------------------------------------------------------------


def test_importance_update_formula_by_hand():
    table = ImportanceTable(10, beta=0.9, initial=10.0, special_token_ids=[1, 2, 0], pad_token_id=0)
    assert table.table[1] == 1e4 and table.table[2] == 1e4 and table.table[0] == -1e4
    ids = torch.tensor([[5, 5, 7, 0], [5, 3, 7, 1]])
    losses = torch.tensor([[1.0, 3.0, 2.0, 9.0], [5.0, 4.0, 6.0, 8.0]])
    valid = torch.tensor([[True, True, True, False], [True, True, True, True]])   # (0, 3) is a padded slot
    table.update(ids, losses, valid)
    expected = torch.full((10,), 10.0)
    expected[5] = 0.9 * 10 + 0.1 * 3.0            # mean of 1, 3, 5: duplicates averaged
    expected[7] = 0.9 * 10 + 0.1 * 4.0            # mean of 2, 6
    expected[3] = 0.9 * 10 + 0.1 * 4.0
    expected[1] = expected[2] = 1e4               # special ids re-pinned after the update
    expected[0] = -1e4                            # the padded slot did not touch [PAD]
    torch.testing.assert_close(table.table, expected)
    table.update(torch.tensor([5, 4]), torch.tensor([1.0, 2.0]))
    expected[5] = 0.9 * expected[5] + 0.1 * 1.0
    expected[4] = 0.9 * 10 + 0.1 * 2.0
    torch.testing.assert_close(table.table, expected)


def test_importance_table_is_saved_and_restored(make_mlm, wordpiece, batch, tmp_path):
    from transformers import BertForMaskedLM

    td = wrap(make_mlm(), wordpiece, keep_fraction=0.25, beta=0.95, selection="importance")
    with torch.no_grad():
        td.update_importance(td(**batch))
    state = td.state_dict()
    assert "importance.table" in state and any(k.startswith("mlm.bert.encoder.layer.") for k in state)
    torch.save(state, tmp_path / "td.pt")
    other = wrap(make_mlm(seed=1), wordpiece)                            # default config, other weights
    other.load_state_dict(torch.load(tmp_path / "td.pt"))
    assert torch.equal(other.importance.table, td.importance.table)
    assert other.config == td.config and (other.start, other.end) == (td.start, td.end) == (1, 3)
    assert other.importance.beta == 0.95
    assert other.to(torch.bfloat16).importance.table.dtype == torch.float32     # the table stays float32
    # After pretraining the model is a plain Hugging Face BERT.
    td.mlm.save_pretrained(tmp_path / "hf")
    plain = BertForMaskedLM.from_pretrained(tmp_path / "hf", attn_implementation="eager").eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(**batch).logits, td.mlm(**batch).logits)


# ----------------------------------------------------------------------------------------------------------
# Selection
# ----------------------------------------------------------------------------------------------------------


def test_special_and_masked_tokens_kept_padding_dropped_first():
    scores = torch.tensor([[0.0, 5.0, 1.0, 0.0, 9.0, 2.0, 8.0, 0.0],
                           [0.0, 7.0, 1.0, 6.0, 0.0, 9.0, 9.0, 9.0]])
    attention_mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])
    forced = torch.zeros(2, 8, dtype=torch.bool)
    forced[0, [0, 3, 7]] = True                  # [CLS], a masked token, [SEP]
    forced[1, [0, 4]] = True
    kept = select_kept_tokens(scores, attention_mask, forced, keep_fraction=0.5)
    # Row 0: 4 of 8 -> the 3 forced + the best other (pos 4, score 9). Row 1: ceil(2.5) = 3 of 5 ->
    # forced 0, 4 + pos 1 (score 7); padding (scores 9) never kept; one filler slot.
    assert kept.indices.shape == (2, 4)
    assert kept.indices[0].tolist() == [0, 3, 4, 7] and kept.valid[0].all()
    assert kept.indices[1][kept.valid[1]].tolist() == [0, 1, 4]
    assert (attention_mask.gather(1, kept.indices)[kept.valid] == 1).all()
    # More forced tokens than the budget: all of them are kept anyway.
    kept = select_kept_tokens(scores, attention_mask, forced, keep_k=1)
    assert kept.indices[0][kept.valid[0]].tolist() == [0, 3, 7]
    assert kept.indices[1][kept.valid[1]].tolist() == [0, 4]
    # keep_k larger than a sequence: at most its real tokens.
    kept = select_kept_tokens(scores, attention_mask, forced, keep_k=7)
    assert kept.valid.sum(1).tolist() == [7, 5]
    assert kept.indices[1][kept.valid[1]].tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("keep_predicted", ["mask_only", "all"])
def test_wrapper_selects_by_importance(make_mlm, wordpiece, batch, keep_predicted):
    td = wrap(make_mlm(), wordpiece, keep_fraction=0.5, keep_predicted=keep_predicted)
    ids = batch["input_ids"]
    td.importance.table[ids[0, 5]] = 50.0                     # make two ordinary tokens of row 0 important
    td.importance.table[ids[0, 10]] = 40.0
    kept = td.select(ids, batch["attention_mask"], batch["labels"] != -100)
    special = torch.isin(ids, torch.tensor(wordpiece.all_special_ids)) & batch["attention_mask"].bool()
    if keep_predicted == "mask_only":
        # Hou: row 0 keeps 6 of 12 = [CLS] 0, [MASK] 2, 9, [SEP] 11, then the two most important tokens (5, 10);
        # the predicted position 7 holds its own (unchanged) id and loses to them (importance 10 < 40).
        assert kept.indices[0][kept.valid[0]].tolist() == [0, 2, 5, 9, 10, 11]
        must = special
    else:
        # row 0: 6 of 12 = [CLS] 0, predicted 2, 7, 9, [SEP] 11, then the most important other token (pos 5).
        assert kept.indices[0][kept.valid[0]].tolist() == [0, 2, 5, 7, 9, 11]
        must = special | (batch["labels"] != -100)
    for b in range(3):
        chosen = set(kept.indices[b][kept.valid[b]].tolist())
        assert set(must[b].nonzero().flatten().tolist()) <= chosen
        assert all(batch["attention_mask"][b, t] == 1 for t in chosen)
        n = int(batch["attention_mask"][b].sum())
        assert len(chosen) == max(math.ceil(n / 2), int(must[b].sum()))


def test_random_mode_same_count_sorted_positions(make_mlm, wordpiece):
    td_imp = wrap(make_mlm(), wordpiece, keep_fraction=0.5)
    td_rnd = wrap(td_imp.mlm, wordpiece, keep_fraction=0.5, selection="random")
    ids = torch.randint(2000, 3000, (2, 64))
    attention_mask = torch.ones(2, 64, dtype=torch.long)
    attention_mask[1, 40:] = 0
    masked = torch.zeros(2, 64, dtype=torch.bool)
    masked[:, 3] = True
    ids[:, 3] = wordpiece.mask_token_id                             # a [MASK]: kept whatever keep_predicted
    imp = td_imp.select(ids, attention_mask, masked)
    one = td_rnd.select(ids, attention_mask, masked, generator=torch.Generator().manual_seed(0))
    two = td_rnd.select(ids, attention_mask, masked, generator=torch.Generator().manual_seed(1))
    assert torch.equal(one.valid.sum(1), imp.valid.sum(1)) and one.valid.sum(1).tolist() == [32, 20]
    for kept in (one, two):
        assert (kept.indices.diff(dim=1) > 0).all()                 # re-sorted into position order
        assert all(3 in kept.indices[b][kept.valid[b]].tolist() for b in range(2))   # the masked token
        assert (attention_mask.gather(1, kept.indices)[kept.valid] == 1).all()
    assert not torch.equal(one.indices, two.indices)


# ----------------------------------------------------------------------------------------------------------
# Where dropped tokens re-enter; gradients
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("full_kv", [False, True])
def test_dropped_tokens_reenter_with_their_layer_start_minus_1_output(make_mlm, wordpiece, batch, full_kv):
    mlm = make_mlm()
    td = wrap(mlm, wordpiece, keep_fraction=0.5, first_layer_full_kv=full_kv)
    assert (td.start, td.end) == (1, 3)                       # 4 layers: 0 full, 1-2 dropped, 3 full
    with torch.no_grad():
        out = td(**batch)
        ref = mlm(**batch, output_hidden_states=True).hidden_states   # ref[i] = output of layer i-1
    dropped = batch["attention_mask"].bool().clone()
    for b in range(3):
        dropped[b, out.kept.indices[b][out.kept.valid[b]]] = False
    assert dropped.sum() > 0
    assert torch.equal(out.drop_end_hidden_state[dropped], ref[td.start][dropped])
    kept = ~dropped & batch["attention_mask"].bool()
    assert not torch.allclose(out.drop_end_hidden_state[kept], ref[td.start][kept])


def test_full_kv_first_layer_sees_all_tokens(make_mlm, wordpiece, batch):
    """With queries kept and keys/values full, the kept rows of that layer equal the full model's."""
    mlm = make_mlm()
    td = wrap(mlm, wordpiece, keep_fraction=0.5, start_layer=1, end_layer=2, first_layer_full_kv=True)
    with torch.no_grad():
        out = td(**batch)
        ref = mlm(**batch, output_hidden_states=True).hidden_states
    for b in range(3):
        rows = out.kept.indices[b][out.kept.valid[b]]
        torch.testing.assert_close(out.drop_end_hidden_state[b, rows], ref[2][b, rows], rtol=1e-5, atol=1e-5)


def test_defaults_follow_hous_official_code(make_mlm, wordpiece, batch):
    """Hou's official code: the first dropped layer attends from the kept tokens to all tokens, and only [MASK]
    among the predicted positions is kept for sure. The default wrapper is that model, not the other reading."""
    config = TokenDroppingConfig()
    assert config.first_layer_full_kv is True and config.keep_predicted == "mask_only"
    mlm = make_mlm()
    with torch.no_grad():
        default = wrap(mlm, wordpiece, keep_fraction=0.5)(**batch)
        official = wrap(mlm, wordpiece, keep_fraction=0.5, first_layer_full_kv=True)(**batch)
        described = wrap(mlm, wordpiece, keep_fraction=0.5, first_layer_full_kv=False)(**batch)
    assert torch.equal(default.last_hidden_state, official.last_hidden_state)
    assert not torch.allclose(default.last_hidden_state, described.last_hidden_state)


def test_dropped_predicted_positions_are_still_predicted(make_mlm, wordpiece, batch):
    """keep_predicted="mask_only": a predicted position that holds its own id may be dropped; it re-enters
    before the last layer and the head still predicts it (one logit row per predicted position)."""
    mlm = make_mlm()
    td = wrap(mlm, wordpiece, keep_fraction=0.5)
    ids = batch["input_ids"]
    td.importance.table[ids[0, 5]] = 50.0                     # as above: position 7 of row 0 is dropped
    td.importance.table[ids[0, 10]] = 40.0
    with torch.no_grad():
        out = td(**batch)
    masked = batch["labels"] != -100
    assert 7 not in out.kept.indices[0][out.kept.valid[0]].tolist() and bool(masked[0, 7])
    assert out.logits.shape[0] == int(masked.sum()) == out.per_prediction_loss.numel()
    row = out.masked_positions.tolist().index([0, 7])
    with torch.no_grad():                                     # its prediction: the head on the last layer's row
        expected = mlm.cls(out.last_hidden_state[0, 7][None])[0]
    torch.testing.assert_close(out.logits[row], expected, rtol=1e-5, atol=1e-5)


def test_a_wrapper_saved_before_keep_predicted_keeps_every_predicted_position(make_mlm, wordpiece):
    """Saved states without keep_predicted come from the time every predicted position was kept."""
    td = wrap(make_mlm(), wordpiece, keep_fraction=0.5)
    state = td.state_dict()
    old = {k: v for k, v in state["_extra_state"].items() if k != "keep_predicted"}
    td.load_state_dict({**state, "_extra_state": old})
    assert td.config.keep_predicted == "all"


def test_every_parameter_gets_a_gradient(make_mlm, wordpiece, batch):
    td = wrap(make_mlm(), wordpiece, keep_fraction=0.5).train()
    out = td(**batch)
    assert out.kept.indices.shape[1] < batch["input_ids"].shape[1]
    out.loss.backward()
    for name, p in td.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# ----------------------------------------------------------------------------------------------------------
# Configuration errors and the default split
# ----------------------------------------------------------------------------------------------------------


def test_default_split_matches_the_paper():
    assert TokenDroppingConfig().layer_range(12) == (5, 11)   # layers 0-4 full, 5-10 dropped, 11 full
    assert TokenDroppingConfig().layer_range(24) == (11, 23)
    assert TokenDroppingConfig().layer_range(4) == (1, 3)
    assert TokenDroppingConfig(keep_fraction=0.75).drop_fraction == 0.25


@pytest.mark.parametrize("kwargs, match", [
    ({"keep_fraction": 0.0}, "keep_fraction"),
    ({"keep_fraction": 1.5}, "keep_fraction"),
    ({"keep_fraction": -0.2}, "keep_fraction"),
    ({"keep_fraction": 0.5, "keep_k": 3}, "keep_fraction"),
    ({"keep_k": 0}, "keep_k"),
    ({"beta": 1.0}, "beta"),
    ({"beta": -0.1}, "beta"),
    ({"selection": "topk"}, "selection"),
    ({"start_layer": 4}, "start_layer"),
    ({"start_layer": -1}, "start_layer"),
    ({"start_layer": 2, "end_layer": 2}, "end_layer"),
    ({"end_layer": 5}, "end_layer"),
])
def test_bad_settings_raise_one_clear_error(make_mlm, wordpiece, kwargs, match):
    with pytest.raises(ValueError, match=match):
        wrap(make_mlm(), wordpiece, **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({"keep_fraction": True}, r"keep_fraction must be a number in \(0, 1\], got True"),
    ({"keep_k": 2.0}, "keep_k must be an int >= 1, got 2.0"),
    ({"beta": "0.9"}, r"beta must be a number in \[0, 1\), got '0.9'"),
    ({"selection": "topk"}, "selection must be one of 'importance', 'random', got 'topk'"),
    ({"first_layer_full_kv": 1}, "first_layer_full_kv must be True or False, got 1"),
    ({"keep_predicted": "masked"}, "keep_predicted must be one of 'mask_only', 'all', got 'masked'"),
    ({"initial_importance": float("inf")}, r"initial_importance must be a number in \(-inf, inf\), got inf"),
    ({"start_layer": 1.0}, "start_layer must be an int >= 0, got 1.0"),
])
def test_config_checks_every_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TokenDroppingConfig(**kwargs)


def test_bad_model_and_table_errors():
    with pytest.raises(ValueError, match="model"):
        TokenDroppingBert(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="beta"):
        ImportanceTable(10, beta=1.0)
    with pytest.raises(ValueError, match="special_token_ids"):
        ImportanceTable(10, special_token_ids=[12])


# ----------------------------------------------------------------------------------------------------------
# FLOPs
# ----------------------------------------------------------------------------------------------------------


def test_flops_ratio_by_hand():
    # n = 8, h = 2, f = 4, k = 4:  layer(8, 8) = 8*8*4 + 4*64*2 + 4*8*2*4 = 1024
    # layer(4, 4) = 8*4*4 + 4*16*2 + 4*4*2*4 = 384
    # layer(4 queries, 8 keys/values) = Q 32 + KV 128 + scores/weighted sum 256 + output 32 + FFN 128 = 576
    assert layer_flops(8, 8, 2, 4) == 1024 and layer_flops(4, 4, 2, 4) == 384
    assert layer_flops(4, 8, 2, 4) == 576
    assert flops_ratio(4, 1, 3, 0.5, 8, 2, 4, first_layer_full_kv=False) == (2 * 1024 + 2 * 384) / (4 * 1024)
    assert flops_ratio(4, 1, 3, 0.5, 8, 2, 4, first_layer_full_kv=True) == (2 * 1024 + 576 + 384) / 4096
    assert flops_ratio(4, 1, 3, 0.5, 8, 2, 4) == (2 * 1024 + 576 + 384) / 4096  # default: Hou's official layer
    head = 2 * 3 * 2 * 2 + 2 * 3 * 2 * 10                     # 3 predictions, vocabulary of 10
    ratio = flops_ratio(4, 1, 3, 0.5, 8, 2, 4, num_predictions=3, vocab_size=10, first_layer_full_kv=False)
    assert ratio == (2816 + head) / (4096 + head)
    assert flops_ratio(12, 5, 11, 1.0, 128, 768) == 1.0
    assert 0.73 < flops_ratio(12, 5, 11, 0.5, 512, 768) < 0.75   # about the paper's 25% saving


@pytest.mark.parametrize("kwargs, match", [
    (dict(intermediate_size=-5), "intermediate_size must be an int >= 1, got -5"),
    (dict(num_predictions=-1), "num_predictions must be an int >= 0, got -1"),
    (dict(vocab_size=2.5), "vocab_size must be an int >= 0, got 2.5"),
    (dict(seq_len=0), "seq_len must be an int >= 1, got 0"),
])
def test_flops_ratio_bad_arguments(kwargs, match):
    settings = dict(num_layers=4, start_layer=1, end_layer=3, keep_fraction=0.5, seq_len=8, hidden_size=2)
    with pytest.raises(ValueError, match=match):
        flops_ratio(**{**settings, **kwargs})


def test_select_accepts_a_generator_and_inputs_on_their_own_device(make_mlm, wordpiece):
    td = TokenDroppingBert(make_mlm(), TokenDroppingConfig(keep_fraction=0.5, selection="random"),
                           wordpiece.all_special_ids, pad_token_id=wordpiece.pad_token_id)
    ids = torch.tensor([[101, 2023, 2003, 1037, 2204, 3185, 102]])
    masked = torch.zeros_like(ids, dtype=torch.bool)
    a = td.select(ids, torch.ones_like(ids), masked, generator=torch.Generator().manual_seed(3))
    b = td.select(ids, torch.ones_like(ids), masked, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.indices, b.indices) and a.indices.device == ids.device
    assert {0, 6} <= set(a.indices[0][a.valid[0]].tolist())          # [CLS] and [SEP] always kept


# ----------------------------------------------------------------------------------------------------------
# Distributed: every rank ends with the same table (gloo, 2 CPU processes)
# ----------------------------------------------------------------------------------------------------------

RANK_BATCHES = {  # (ids, losses, valid) per rank and step: different data on each rank
    0: [([5, 5, 3], [1.0, 2.0, 3.0], [True, True, True]), ([6, 1], [2.0, 7.0], [True, True])],
    1: [([5, 7, 0], [4.0, 5.0, 9.0], [True, True, False]), ([6, 6, 5], [4.0, 8.0, 1.0], [True, True, True])],
}


def _new_table() -> ImportanceTable:
    return ImportanceTable(10, beta=0.9, special_token_ids=[1], pad_token_id=0)


def _distributed_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        table = _new_table()
        for ids, losses, valid in RANK_BATCHES[rank]:
            table.update(torch.tensor(ids), torch.tensor(losses), torch.tensor(valid))
        torch.save(table.table, f"{out_dir}/table{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_distributed_tables_stay_identical(tmp_path):
    import torch.multiprocessing as mp

    # fork: the workers inherit the imported torch (a spawned worker re-imports it: ~10 s on a busy
    # machine). Safe here: the workers only touch tiny CPU tensors, never a thread pool or CUDA.
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(_distributed_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2,
                       join=True, start_method=method)
    zero, one = torch.load(tmp_path / "table0.pt"), torch.load(tmp_path / "table1.pt")
    assert torch.equal(zero, one)
    # Same as one process seeing both ranks' predictions of each step.
    single = _new_table()
    for step in range(2):
        parts = [RANK_BATCHES[r][step] for r in (0, 1)]
        single.update(*(torch.tensor(sum((p[i] for p in parts), [])) for i in range(3)))
    torch.testing.assert_close(zero, single.table)
    assert math.isclose(float(zero[5]), 0.9 * (0.9 * 10 + 0.1 * 7 / 3) + 0.1 * 1.0, rel_tol=1e-6)
