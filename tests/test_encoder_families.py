"""Token dropping (Hou et al. 2022) and ScTD (Zhong et al. 2023) on every supported encoder family: BERT,
RoBERTa, ELECTRA (generator) and ModernBERT. Keeping every token must reproduce the plain Hugging Face model
(logits, loss, every parameter's gradient), with padding, eager and sdpa attention, and both variants of the
first dropped layer. For ModernBERT, dropping is checked against references built independently: kept
tokens keep their original rotary positions, and local windows are measured in original positions."""

from __future__ import annotations

import pytest
import torch

from tdnotebooks.pretraining.families import BertLayout, ModernBertLayout
from tdnotebooks.pretraining.sctd import ScTDConfig, sctd_loss
from tdnotebooks.pretraining.token_dropping import KeptTokens, TokenDroppingBert, TokenDroppingConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors, one CPU thread

FAMILIES = ("bert", "roberta", "electra", "modernbert")
# (cls, sep, pad, mask) ids in a 100-id vocabulary; RoBERTa: <s>=0, <pad>=1, </s>=2, <mask>=3.
SPECIALS = {"bert": (1, 2, 0, 3), "roberta": (0, 2, 1, 3), "electra": (1, 2, 0, 3), "modernbert": (1, 2, 0, 3)}
LOCAL = 8                                  # ModernBERT's local_attention: +-4 positions, sequences of 20


def make_mlm(family: str, attn: str, wordpiece, seed: int = 0):
    """A tiny random masked LM of ``family`` (4 layers, eval mode: no dropout). The BERT-layout families run
    in float64. ModernBERT runs in float32: its eager attention takes the softmax in float32, so a float64
    mask minimum becomes -inf and padded rows of local layers turn NaN in Hugging Face's own forward."""
    from transformers import (
        BertConfig,
        BertForMaskedLM,
        ElectraConfig,
        ElectraForMaskedLM,
        ModernBertForMaskedLM,
        RobertaConfig,
        RobertaForMaskedLM,
    )

    from tdnotebooks.models import tiny_modernbert

    torch.manual_seed(seed)
    cls, sep, pad, _ = SPECIALS[family]
    sizes = dict(vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=40, pad_token_id=pad)
    if family == "modernbert":
        config = tiny_modernbert(num_layers=4, hidden_size=64, num_heads=4, intermediate_size=96,
                                 local_attention=LOCAL, global_attn_every_n_layers=2, tokenizer=wordpiece,
                                 vocab_size=100, pad_token_id=pad, cls_token_id=cls, sep_token_id=sep,
                                 bos_token_id=cls, eos_token_id=sep)
        return ModernBertForMaskedLM._from_config(config, attn_implementation=attn, dtype=torch.float32).eval()
    model_class, config = {
        "bert": (BertForMaskedLM, BertConfig(**sizes)),
        "roberta": (RobertaForMaskedLM, RobertaConfig(**sizes)),
        "electra": (ElectraForMaskedLM, ElectraConfig(embedding_size=16, **sizes)),
    }[family]
    return model_class._from_config(config, attn_implementation=attn, dtype=torch.float64).eval()


def make_batch(family: str, seed: int = 1) -> dict:
    """3 sequences of real length 20, 13 and 7 (padded to 20), 6 masked positions, 5 of them [MASK]."""
    cls, sep, pad, mask = SPECIALS[family]
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (3, 20), generator=gen)
    attention_mask = torch.zeros_like(ids)
    for b, n in enumerate([20, 13, 7]):
        attention_mask[b, :n] = 1
        ids[b, 0], ids[b, n - 1], ids[b, n:] = cls, sep, pad
    labels = torch.full_like(ids, -100)
    for b, t in [(0, 2), (0, 9), (0, 17), (1, 4), (1, 11), (2, 3)]:
        labels[b, t] = ids[b, t]
    ids[0, 2] = ids[0, 17] = ids[1, 4] = ids[1, 11] = ids[2, 3] = mask       # (0, 9) keeps its token
    return {"input_ids": ids, "attention_mask": attention_mask, "labels": labels}


def tolerances(mlm, what: str = "logits") -> dict:
    """Logits: float64 models match to rounding. Losses and gradients: TokenDroppingBert takes the cross-entropy
    in float32 (for bf16 training), so they match to float32 rounding."""
    if mlm.dtype == torch.float64 and what == "logits":
        return {"rtol": 1e-9, "atol": 1e-11}
    return {"rtol": 1e-5, "atol": 1e-6} if what != "grads" else {"rtol": 1e-4, "atol": 1e-6}


def grads(mlm) -> dict:
    out = {name: p.grad.clone() for name, p in mlm.named_parameters() if p.grad is not None}
    mlm.zero_grad(set_to_none=True)
    return out


def plain(mlm, batch):
    """The plain model's forward with labels (its loss: the mean MLM loss over the masked positions)."""
    out = mlm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    out.loss.backward()
    return out, grads(mlm)


def wrap(mlm, family, **config):
    return TokenDroppingBert(mlm, TokenDroppingConfig(**config), special_token_ids=list(SPECIALS[family]))


# ----------------------------------------------------------------------------------------------------------
# Keeping every token == the plain model, for every family
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("full_kv", [False, True])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("family", FAMILIES)
def test_keep_all_equals_the_plain_model_logits_loss_and_every_gradient(wordpiece, family, attn, full_kv):
    mlm, batch = make_mlm(family, attn, wordpiece), make_batch(family)
    assert mlm.config._attn_implementation == attn
    ref, ref_grads = plain(mlm, batch)
    td = wrap(mlm, family, keep_fraction=1.0, first_layer_full_kv=full_kv)
    assert isinstance(td.layout, ModernBertLayout if family == "modernbert" else BertLayout)
    out = td(**batch)
    out.loss.backward()
    got = grads(mlm)
    masked = batch["labels"] != -100
    assert out.kept.valid.sum(1).tolist() == [20, 13, 7]                 # every real token kept
    torch.testing.assert_close(out.logits, ref.logits[masked], **tolerances(mlm))
    torch.testing.assert_close(out.loss.to(ref.loss.dtype), ref.loss, **tolerances(mlm, "loss"))
    assert set(got) == set(ref_grads) == {name for name, _ in mlm.named_parameters()}
    for name, grad in ref_grads.items():
        torch.testing.assert_close(got[name], grad, **tolerances(mlm, "grads"), msg=name)


@pytest.mark.parametrize("family", FAMILIES)
def test_sctd_with_every_token_kept_is_the_plain_mlm_loss(wordpiece, family):
    """Both passes coincide: KL_g = KL_l = 0, MLM* = MLM = the plain loss, and so are the gradients."""
    attn = "sdpa" if family == "modernbert" else "eager"
    mlm, batch = make_mlm(family, attn, wordpiece), make_batch(family)
    ref, ref_grads = plain(mlm, batch)
    td = wrap(mlm, family, keep_fraction=1.0)
    for kl_target in ("cls_hidden_softmax", "mean_pooled", "mlm_vocab"):
        out = sctd_loss(td, **batch, step=9, config=ScTDConfig(kl_target=kl_target, lam=0.5))  # t = Fi - 1: full
        assert out.is_full_step
        for kl in (out.kl_global, out.kl_local):
            torch.testing.assert_close(kl, torch.zeros_like(kl), rtol=0, atol=1e-9)
        for term in (out.mlm_dropped, out.mlm_full, out.total):
            torch.testing.assert_close(term.to(ref.loss.dtype), ref.loss, **tolerances(mlm, "loss"))
        out.total.backward()
        got = grads(mlm)
        for name, grad in ref_grads.items():
            torch.testing.assert_close(got[name], grad, **tolerances(mlm, "grads"), msg=f"{kl_target} {name}")


# ----------------------------------------------------------------------------------------------------------
# ModernBERT with dropping on: original rotary positions, windows in original positions
# ----------------------------------------------------------------------------------------------------------


def kept_rows() -> list[list[int]]:
    """Kept positions of the 3 sequences of make_batch (masked and special tokens among them), with gaps,
    so that renumbering them 0..k-1 changes both the rotary angles and who is inside a +-4 window."""
    return [[0, 2, 3, 9, 10, 11, 17, 19], [0, 1, 4, 5, 11, 12], [0, 3, 6]]


def fixed_selection(td, rows):
    """Make ``td`` keep exactly ``rows`` (filler slots: the padding positions after the row's real ones)."""
    width = max(map(len, rows))
    indices = torch.zeros(len(rows), width, dtype=torch.long)
    valid = torch.zeros(len(rows), width, dtype=torch.bool)
    for b, row in enumerate(rows):
        filler = [t for t in range(19, -1, -1) if t not in row][: width - len(row)]
        indices[b] = torch.tensor(sorted(row + filler))
        valid[b] = torch.isin(indices[b], torch.tensor(row))
    td.select = lambda *args, **kwargs: KeptTokens(indices, valid)


def sharpened(mlm):
    """Larger attention weights: at the default initialisation (std 0.02) attention is nearly uniform and
    positions barely matter; with these, a wrong position or window changes the logits visibly."""
    with torch.no_grad():
        for layer in mlm.model.layers:
            layer.attn.Wqkv.weight.normal_(0, 0.3)
    return mlm


def window_masks(positions: torch.Tensor, attn: str, dtype: torch.dtype, window: int) -> dict:
    """The masks ModernBertModel takes as a dict, built here by hand: full layers see every token, local
    layers the tokens whose POSITIONS (not indices) are within ``window`` of the query's."""
    k = len(positions)
    local = torch.tensor([[abs(int(positions[i]) - int(positions[j])) <= window for j in range(k)] for i in range(k)])
    allowed = {"full_attention": torch.ones(k, k, dtype=torch.bool), "sliding_attention": local}
    if attn == "sdpa":
        return {kind: a[None, None] for kind, a in allowed.items()}
    return {kind: torch.zeros(1, 1, k, k, dtype=dtype).masked_fill(~a, torch.finfo(dtype).min)
            for kind, a in allowed.items()}


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_modernbert_dropping_equals_a_model_that_never_saw_the_dropped_tokens(wordpiece, attn):
    """Every layer dropped (start 0, end L): each sequence's kept tokens must give what the plain
    ModernBertForMaskedLM gives on those tokens alone, fed with their original position ids and with masks
    whose local windows are measured in original positions. The two wrong ways (positions renumbered
    0..k-1; windows counted in kept indices) give something else, so this test would catch them."""
    mlm, batch = sharpened(make_mlm("modernbert", attn, wordpiece)), make_batch("modernbert")
    td = wrap(mlm, "modernbert", keep_fraction=0.5, start_layer=0, end_layer=4,
              first_layer_full_kv=False)                  # no layer sees the dropped tokens
    rows = kept_rows()
    fixed_selection(td, rows)
    with torch.no_grad():
        out = td(**batch)
    half = mlm.config.sliding_window
    assert half == LOCAL // 2
    masked = batch["labels"] != -100
    logits = iter(out.logits)
    for b, row in enumerate(rows):
        row = torch.tensor(row)
        ids = batch["input_ids"][b, row][None]
        masks = window_masks(row, attn, mlm.dtype, half)
        with torch.no_grad():
            ref = mlm(input_ids=ids, attention_mask=masks, position_ids=row[None]).logits[0]
            renumbered = mlm(input_ids=ids, attention_mask=masks, position_ids=torch.arange(len(row))[None]).logits[0]
            by_index = mlm(input_ids=ids, attention_mask=window_masks(torch.arange(len(row)), attn, mlm.dtype, half),
                           position_ids=row[None]).logits[0]
        for t, position in enumerate(row.tolist()):
            if masked[b, position]:
                got = next(logits)
                torch.testing.assert_close(got, ref[t], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(ref, renumbered, atol=1e-2)
        assert not torch.allclose(ref, by_index, atol=1e-2)
    assert next(logits, None) is None


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_modernbert_full_kv_first_layer_is_the_full_layer_at_the_kept_rows(wordpiece, attn):
    """first_layer_full_kv with the dropped range = layer 1 only (a local layer): the kept rows get exactly
    the full model's layer-1 output (queries at their rotary positions, keys = every token in the window),
    the dropped rows re-enter with their layer-0 output."""
    mlm, batch = make_mlm("modernbert", attn, wordpiece), make_batch("modernbert")
    assert mlm.config.layer_types[1] == "sliding_attention"
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    td = wrap(mlm, "modernbert", keep_fraction=0.5, start_layer=1, end_layer=2, first_layer_full_kv=True)
    fixed_selection(td, kept_rows())
    with torch.no_grad():
        out = td(**inputs)
        after_1 = wrap(mlm, "modernbert", start_layer=1, end_layer=2)(**inputs, drop=False).drop_end_hidden_state
        after_0 = wrap(mlm, "modernbert", start_layer=0, end_layer=1)(**inputs, drop=False).drop_end_hidden_state
    real = batch["attention_mask"].bool()
    kept = torch.zeros_like(real)
    for b, row in enumerate(kept_rows()):
        kept[b, row] = True
    torch.testing.assert_close(out.drop_end_hidden_state[kept], after_1[kept], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.drop_end_hidden_state[real & ~kept], after_0[real & ~kept], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(after_1[real & ~kept], after_0[real & ~kept], atol=1e-3)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_modernbert_dropping_equals_masking_the_dropped_tokens_out(wordpiece, attn):
    """Every layer dropped: the same as the plain model on the full-length batch with the dropped tokens
    marked as padding (Hugging Face's own masks and rotary positions, windows over sequence positions)."""
    mlm, batch = sharpened(make_mlm("modernbert", attn, wordpiece)), make_batch("modernbert")
    td = wrap(mlm, "modernbert", keep_fraction=0.5, start_layer=0, end_layer=4,
              first_layer_full_kv=False)                  # no layer sees the dropped tokens
    fixed_selection(td, kept_rows())
    only_kept = torch.zeros_like(batch["attention_mask"])
    for b, row in enumerate(kept_rows()):
        only_kept[b, row] = 1
    with torch.no_grad():
        out = td(**batch)
        ref = mlm(input_ids=batch["input_ids"], attention_mask=only_kept, labels=batch["labels"])
        everything = mlm(**batch)
    masked = batch["labels"] != -100
    torch.testing.assert_close(out.logits, ref.logits[masked], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.loss, ref.loss, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out.logits, everything.logits[masked], atol=1e-2)


# ----------------------------------------------------------------------------------------------------------
# ModernBERT at the doors: supported type, clear errors, pretrain
# ----------------------------------------------------------------------------------------------------------


def test_modernbert_is_a_supported_type_with_clear_errors(wordpiece):
    from transformers import GPT2Config, GPT2LMHeadModel

    from tdnotebooks.checks import check_mlm_model
    from tdnotebooks.models import SUPPORTED_MODEL_TYPES

    mlm, batch = make_mlm("modernbert", "sdpa", wordpiece), make_batch("modernbert")
    assert "modernbert" in SUPPORTED_MODEL_TYPES
    check_mlm_model(mlm)
    td = wrap(mlm, "modernbert")
    assert td.encoder_model is mlm.model and (td.start, td.end) == (1, 3)
    assert list(td.mlm_head) == [mlm.head, mlm.decoder]
    with pytest.raises(ValueError, match="ModernBERT has no token type embeddings"):
        td(**batch, token_type_ids=torch.zeros_like(batch["input_ids"]))
    mlm.config._attn_implementation = "flex_attention"
    with pytest.raises(ValueError, match=r"supports attn_implementation 'eager' or 'sdpa' .*'flex_attention'"):
        td(**batch)
    mlm.config._attn_implementation = "sdpa"
    with pytest.raises(ValueError, match=r"or a ModernBertForMaskedLM .*got GPT2LMHeadModel"):
        TokenDroppingBert(GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100)))


@pytest.mark.parametrize("mode", ["token_drop", "sctd"])
def test_pretrain_runs_a_tiny_modernbert(wordpiece, mode):
    import math

    from transformers import ModernBertForMaskedLM

    from tdnotebooks.models import tiny_modernbert
    from tdnotebooks.pretraining.train import PretrainConfig, pretrain

    config = tiny_modernbert(num_layers=4, hidden_size=32, num_heads=2, intermediate_size=64, tokenizer=wordpiece)
    td, history = pretrain(PretrainConfig(mode=mode, steps=2, batch_size=4, block_size=32, max_texts=200, fi=1,
                                          eval_every=0, device="cpu", progress=False), model=config,
                           tokenizer=wordpiece)
    assert isinstance(td.mlm, ModernBertForMaskedLM)
    assert len(history.steps) == 2 and all(math.isfinite(loss) for loss in history.losses)
    if mode == "sctd":
        assert all(s["kl_global"] >= 0 and s["kl_local"] >= 0 for s in history.steps)
    assert bool((td.importance.table[1000:] != 10.0).any())
