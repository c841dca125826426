"""ScTD (Zhong et al. 2023): Eq. 4 recomputed independently, the t mod Fi schedule, KL properties,
the stop-gradient switch, gradients, and one clear error per bad setting."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from tdnotebooks.pretraining.sctd import (
    DEFAULT_LAM,
    KL_TARGETS,
    ScTDConfig,
    is_full_step,
    kl_from_scores,
    lam_for_reduction,
    sctd_loss,
)
from tdnotebooks.pretraining.token_dropping import TokenDroppingBert, TokenDroppingConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors, one CPU thread

FULL = 9    # a full step under the defaults (Fi = 10, full_pass_at="end": t mod Fi == Fi - 1)


@pytest.fixture(scope="module")
def make_td(wordpiece):
    """Tiny random BertForMaskedLM (4 layers x 32, eval mode: no dropout) wrapped for token dropping."""
    from transformers import BertForMaskedLM

    from tdnotebooks.models import tiny_bert

    def make(keep_fraction: float = 0.5, seed: int = 0) -> TokenDroppingBert:
        torch.manual_seed(seed)
        config = tiny_bert(num_layers=4, hidden_size=32, num_heads=2, intermediate_size=64, tokenizer=wordpiece)
        mlm = BertForMaskedLM._from_config(config, attn_implementation="eager").eval()
        return TokenDroppingBert(mlm, TokenDroppingConfig(keep_fraction=keep_fraction),
                                 special_token_ids=wordpiece.all_special_ids)

    return make


@pytest.fixture(scope="module")
def batch(wordpiece):
    """3 packed blocks of 16 tokens ([CLS] ... [SEP], no padding), 3 masked positions each."""
    tok = wordpiece
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(2000, 6000, (3, 16), generator=gen)
    ids[:, 0], ids[:, -1] = tok.cls_token_id, tok.sep_token_id
    labels = torch.full_like(ids, -100)
    for b, t in [(0, 2), (0, 5), (0, 11), (1, 1), (1, 8), (1, 14), (2, 3), (2, 4), (2, 9)]:
        labels[b, t] = ids[b, t]
        if t % 2:
            ids[b, t] = tok.mask_token_id           # some positions keep their token (BERT's 80/10/10)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def manual_kl(p_scores: torch.Tensor, q_scores: torch.Tensor) -> torch.Tensor:
    """sum over rows of sum_d p (log p - log q), written out (no F.kl_div)."""
    log_p, log_q = torch.log_softmax(p_scores, -1), torch.log_softmax(q_scores, -1)
    return (log_p.exp() * (log_p - log_q)).sum()


# ----------------------------------------------------------------------------------------------------------
# Eq. 4 and the KL terms
# ----------------------------------------------------------------------------------------------------------


def test_kl_by_hand():
    """p = softmax([0, 0]) = (1/2, 1/2), q = softmax([ln 3, 0]) = (3/4, 1/4): KL = 1/2 ln(4/3)."""
    teacher = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    student = torch.tensor([[math.log(3.0), 0.0], [1.0, 2.0]])
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert expected == pytest.approx(0.5 * math.log(4 / 3))
    assert float(kl_from_scores(teacher, student, "sum")) == pytest.approx(expected, abs=1e-6)
    assert float(kl_from_scores(teacher, student, "batchmean")) == pytest.approx(expected / 2, abs=1e-6)


@pytest.mark.parametrize("kl_target", KL_TARGETS)
@pytest.mark.parametrize("reduction", ["sum", "batchmean"])
def test_eq4_total_recomputed_independently(make_td, batch, kl_target, reduction):
    """total = 1/2 MLM* + 1/2 MLM + lambda (KL_g + KL_l), each term recomputed from the plain HF model."""
    td = make_td()
    lam = 0.3
    out = sctd_loss(td, **batch, step=FULL, config=ScTDConfig(lam=lam, kl_target=kl_target, reduction=reduction))
    assert out.is_full_step

    # 1. From the returned terms.
    expected = 0.5 * out.mlm_dropped + 0.5 * out.mlm_full + lam * (out.kl_global + out.kl_local)
    torch.testing.assert_close(out.total, expected, rtol=0, atol=1e-6)

    # 2. Independently: the full pass is the unwrapped Hugging Face model.
    mlm, labels = td.mlm, batch["labels"]
    masked = labels.ne(-100)
    with torch.no_grad():
        hf = mlm(batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels,
                 output_hidden_states=True)
        dropped = td(batch["input_ids"], batch["attention_mask"], labels=labels, drop=True)
        full_last, full_local = hf.hidden_states[-1], hf.hidden_states[td.end]   # output of layer end-1
        if kl_target == "cls_hidden_softmax":
            kl_g = manual_kl(full_last[:, 0], dropped.last_hidden_state[:, 0])
            kl_l = manual_kl(full_local[:, 0], dropped.drop_end_hidden_state[:, 0])
            rows = batch["input_ids"].shape[0]
        elif kl_target == "mean_pooled":
            kl_g = manual_kl(full_last.mean(1), dropped.last_hidden_state.mean(1))
            kl_l = manual_kl(full_local.mean(1), dropped.drop_end_hidden_state.mean(1))
            rows = batch["input_ids"].shape[0]
        else:
            head = mlm.cls
            kl_g = manual_kl(hf.logits[masked], dropped.logits)
            kl_l = manual_kl(head(full_local[masked]), head(dropped.drop_end_hidden_state[masked]))
            rows = int(masked.sum())
    if reduction == "batchmean":
        kl_g, kl_l = kl_g / rows, kl_l / rows
    assert float(kl_g) > 0 and float(kl_l) > 0
    torch.testing.assert_close(out.kl_global.detach(), kl_g, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out.kl_local.detach(), kl_l, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out.mlm_full.detach(), hf.loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.mlm_dropped.detach(), dropped.loss, rtol=0, atol=0)
    independent = 0.5 * dropped.loss + 0.5 * hf.loss + lam * (kl_g + kl_l)
    torch.testing.assert_close(out.total.detach(), independent, rtol=1e-5, atol=1e-5)


def test_official_objective_without_full_mlm(make_td, batch):
    """full_mlm=False: MLM* + lambda (KL_g + KL_l), what the official code optimises (full pass at t = 0)."""
    config = ScTDConfig(full_mlm=False, lam=0.05, reduction="sum", full_pass_at="start")
    out = sctd_loss(make_td(), **batch, step=0, config=config)
    expected = out.mlm_dropped + 0.05 * (out.kl_global + out.kl_local)
    torch.testing.assert_close(out.total, expected, rtol=0, atol=1e-6)
    assert out.mlm_full is not None                     # still reported for logging


@pytest.mark.parametrize("at", ["end", "start"])
def test_schedule_follows_t_mod_fi(make_td, batch, at):
    """Steps 0..2 Fi: the full pass (drop=False) runs exactly at t mod Fi == Fi - 1 ("end", the paper's Fig. 5)
    or t mod Fi == 0 ("start", the official code); otherwise L = MLM*."""
    fi = 3
    td = make_td()
    calls: list[bool] = []
    handle = td.register_forward_pre_hook(lambda module, args, kwargs: calls.append(kwargs.get("drop", True)),
                                          with_kwargs=True)
    with torch.no_grad():
        dropped_loss = td(batch["input_ids"], batch["attention_mask"], labels=batch["labels"]).loss
    calls.clear()
    try:
        for t in range(2 * fi + 1):
            out = sctd_loss(td, **batch, step=t, config=ScTDConfig(fi=fi, full_pass_at=at))
            full = t % fi == (fi - 1 if at == "end" else 0)
            assert is_full_step(t, fi, at) is full and out.is_full_step is full
            assert calls == ([True, False] if full else [True])
            calls.clear()
            if full:
                assert out.full is not None and out.kl_global is not None and out.mlm_full is not None
            else:
                assert out.full is None and out.kl_global is None and out.kl_local is None and out.mlm_full is None
                torch.testing.assert_close(out.total.detach(), dropped_loss, rtol=0, atol=0)
                assert out.terms() == {"loss": float(dropped_loss), "mlm_dropped": float(dropped_loss),
                                       "mlm_full": None, "kl_global": None, "kl_local": None,
                                       "is_full_step": False}
    finally:
        handle.remove()
    assert [t for t in range(21) if is_full_step(t, 10, at)] == ([9, 19] if at == "end" else [0, 10, 20])
    assert all(is_full_step(t, 1, at) for t in range(5))


def test_default_schedule_is_the_papers():
    """Fig. 5: Fi - 1 token-dropping steps, then the full one; none at step 0 (random initialisation)."""
    assert ScTDConfig().full_pass_at == "end"
    assert [t for t in range(30) if is_full_step(t, 10)] == [9, 19, 29]
    for steps in (1, 9, 10, 95, 100):       # floor(T / Fi) full steps ("end") against ceil(T / Fi) ("start")
        assert sum(is_full_step(t, 10) for t in range(steps)) == steps // 10
        assert sum(is_full_step(t, 10, "start") for t in range(steps)) == math.ceil(steps / 10)


def test_kl_nonnegative_on_random_scores():
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        teacher, student = torch.randn(4, 7, generator=gen) * 3, torch.randn(4, 7, generator=gen) * 3
        assert float(kl_from_scores(teacher, student)) >= 0
        assert float(kl_from_scores(teacher, teacher)) == 0.0


@pytest.mark.parametrize("kl_target", KL_TARGETS)
def test_kl_exactly_zero_when_nothing_is_dropped(make_td, batch, kl_target):
    """keep_fraction=1.0: the dropped pass is the full pass, so both KL terms are exactly 0 and L = MLM."""
    with torch.no_grad():
        out = sctd_loss(make_td(keep_fraction=1.0), **batch, step=FULL, config=ScTDConfig(kl_target=kl_target))
    assert float(out.kl_global) == 0.0 and float(out.kl_local) == 0.0
    assert float(out.total) == float(out.mlm_full) == float(out.mlm_dropped)


def _grads(td: TokenDroppingBert) -> dict[str, torch.Tensor]:
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in td.named_parameters()}


def test_stop_gradient_stops_gradients_into_the_full_pass(make_td, batch):
    """stop_gradient=True: d(KL)/d(params) equals the gradient with the full pass run under no_grad;
    without it, gradients also flow through the full pass (official behaviour) and differ."""
    td = make_td()
    kwargs = {**batch, "step": FULL}

    def kl_grads(stop_gradient: bool) -> dict[str, torch.Tensor]:
        td.zero_grad(set_to_none=True)
        out = sctd_loss(td, **kwargs, config=ScTDConfig(stop_gradient=stop_gradient, reduction="sum"))
        (out.kl_global + out.kl_local).backward()
        return _grads(td)

    stopped, flowing = kl_grads(True), kl_grads(False)

    td.zero_grad(set_to_none=True)                      # reference: teacher computed without autograd
    with torch.no_grad():
        full = td(batch["input_ids"], batch["attention_mask"], labels=batch["labels"], drop=False)
    dropped = td(batch["input_ids"], batch["attention_mask"], labels=batch["labels"], drop=True)
    kl = F.kl_div(F.log_softmax(dropped.last_hidden_state[:, 0], -1), F.log_softmax(full.last_hidden_state[:, 0], -1),
                  reduction="sum", log_target=True)
    kl = kl + F.kl_div(F.log_softmax(dropped.drop_end_hidden_state[:, 0], -1),
                       F.log_softmax(full.drop_end_hidden_state[:, 0], -1), reduction="sum", log_target=True)
    kl.backward()
    reference = _grads(td)
    for name in reference:
        torch.testing.assert_close(stopped[name], reference[name], rtol=1e-5, atol=1e-8, msg=name)
    assert any(not torch.allclose(flowing[n], reference[n], rtol=1e-3, atol=1e-7) for n in reference)

    # A pure teacher (no full MLM term, stop_gradient): the full pass is not even recorded by autograd.
    out = sctd_loss(td, **kwargs, config=ScTDConfig(stop_gradient=True, full_mlm=False))
    assert not out.full.last_hidden_state.requires_grad and out.dropped.last_hidden_state.requires_grad


def test_every_parameter_gets_a_gradient_on_a_full_step(make_td, batch):
    td = make_td().train()
    out = sctd_loss(td, **batch, step=FULL)
    out.total.backward()
    missing = [n for n, p in td.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []
    assert all(math.isfinite(v) for k, v in out.terms().items() if k != "is_full_step")


# ----------------------------------------------------------------------------------------------------------
# Bad settings: one clear error each
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, match", [
    ({"lam": -0.1}, r"lam \(lambda, the KL weight\) must be a number in \[0, inf\), got -0.1"),
    ({"lam": float("nan")}, r"lam \(lambda, the KL weight\) must be a number in \[0, inf\), got nan"),
    ({"lam": True}, r"lam \(lambda, the KL weight\) must be a number in \[0, inf\), got True"),
    ({"fi": 0}, r"fi \(the interval Fi\) must be an int >= 1"),
    ({"fi": 2.5}, r"fi \(the interval Fi\) must be an int >= 1"),
    ({"kl_target": "cls"}, r"kl_target must be one of 'cls_hidden_softmax', 'mean_pooled', 'mlm_vocab', got 'cls'"),
    ({"reduction": "mean"}, r"reduction must be one of 'batchmean', 'sum', got 'mean'"),
    ({"full_pass_at": "middle"}, r"full_pass_at must be one of 'end', 'start', got 'middle'"),
    ({"stop_gradient": "yes"}, r"stop_gradient must be True or False"),
    ({"full_mlm": 1}, r"full_mlm must be True or False"),
])
def test_bad_settings_raise_one_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ScTDConfig(**kwargs)


def test_bad_calls_raise_clear_errors(make_td, batch):
    with pytest.raises(ValueError, match=r"step must be an int >= 0"):
        is_full_step(-1, 10)
    with pytest.raises(ValueError, match=r"fi \(the interval Fi\)"):
        is_full_step(3, 0)
    with pytest.raises(ValueError, match=r"at \(full_pass_at\) must be one of 'end', 'start', got 'first'"):
        is_full_step(3, 10, "first")
    with pytest.raises(ValueError, match=r"batch_size must be an int >= 1"):
        lam_for_reduction(0.1, 0)
    with pytest.raises(ValueError, match=r"labels are required"):
        sctd_loss(make_td(), batch["input_ids"], batch["attention_mask"], None, step=0)
    with pytest.raises(ValueError, match=r"same shape"):
        kl_from_scores(torch.zeros(2, 3), torch.zeros(2, 4))


# ----------------------------------------------------------------------------------------------------------
# The KL's reduction and lambda: batch- and world-size independence, the official weighting
# ----------------------------------------------------------------------------------------------------------


def _loss_and_grads(td: TokenDroppingBert, batch: dict, config: ScTDConfig, copies: int = 1):
    """(ScTDOutput, gradients of its total) on ``copies`` stacked copies of the batch (eval mode: no dropout)."""
    doubled = {k: torch.cat([v] * copies) for k, v in batch.items()}
    td.zero_grad(set_to_none=True)
    out = sctd_loss(td, **doubled, step=FULL, config=config)
    out.total.backward()
    return out, _grads(td)


def test_default_lambda_means_the_same_at_batch_b_and_2b(make_td, batch):
    """Default (batchmean): B sequences and the same B twice (2B) give the same loss and the same gradient,
    so lambda does not depend on the batch size (nor, under DDP, on the number of processes: DDP averages
    the ranks' gradients). Under "sum" the KL, and the KL's gradient, double."""
    td = make_td()
    config = ScTDConfig(lam=0.3)
    assert config.reduction == "batchmean"
    one, grads_one = _loss_and_grads(td, batch, config)
    two, grads_two = _loss_and_grads(td, batch, config, copies=2)
    torch.testing.assert_close(two.total, one.total, rtol=1e-5, atol=1e-7)
    for name in grads_one:
        torch.testing.assert_close(grads_two[name], grads_one[name], rtol=1e-4, atol=1e-7, msg=name)

    summed = ScTDConfig(lam=0.3, reduction="sum")
    one, _ = _loss_and_grads(td, batch, summed)
    two, _ = _loss_and_grads(td, batch, summed, copies=2)
    torch.testing.assert_close(two.kl_global, 2 * one.kl_global, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(two.kl_local, 2 * one.kl_local, rtol=1e-5, atol=1e-8)

    def kl_grads(copies: int) -> dict[str, torch.Tensor]:
        td.zero_grad(set_to_none=True)
        doubled = {k: torch.cat([v] * copies) for k, v in batch.items()}
        out = sctd_loss(td, **doubled, step=FULL, config=summed)
        (out.kl_global + out.kl_local).backward()
        return _grads(td)

    g1, g2 = kl_grads(1), kl_grads(2)
    for name in g1:
        torch.testing.assert_close(g2[name], 2 * g1[name], rtol=1e-3, atol=1e-6, msg=name)


def test_lam_for_reduction_converts_between_reductions(make_td, batch):
    """lam_sum = lam_batchmean / B gives the same total."""
    td, rows = make_td(), batch["input_ids"].shape[0]
    assert lam_for_reduction(0.3, rows) == pytest.approx(0.3 / rows)
    assert lam_for_reduction(0.1, rows, "sum", "batchmean") == pytest.approx(0.1 * rows)
    with torch.no_grad():
        mean = sctd_loss(td, **batch, step=FULL, config=ScTDConfig(lam=0.3))
        summed = sctd_loss(td, **batch, step=FULL, config=ScTDConfig(lam=lam_for_reduction(0.3, rows), reduction="sum"))
    torch.testing.assert_close(summed.total, mean.total, rtol=1e-6, atol=1e-7)


def test_default_lambda_is_the_official_weighting(make_td, batch):
    """The official code minimises (sum of MLM* over masked tokens + 0.05 sum of KL over sequences) / tokens
    (fairseq divides by the step's token count). With the KL's mean over sequences and MLM's mean over the
    masked positions, lam = 0.05 / m (m = predictions per sequence) is the same objective up to the factor
    tokens / masked; the default is that at the paper's 512-token sequences (m = 0.15 x 512 = 76.8)."""
    assert DEFAULT_LAM == pytest.approx(0.05 / (0.15 * 512)) and ScTDConfig().lam == DEFAULT_LAM
    td = make_td()
    masked = int(batch["labels"].ne(-100).sum())
    rows, tokens = batch["input_ids"].shape[0], batch["input_ids"].numel()
    ours = ScTDConfig(lam=0.05 / (masked / rows), full_mlm=False)
    with torch.no_grad():
        out = sctd_loss(td, **batch, step=FULL, config=ours)
        official = sctd_loss(td, **batch, step=FULL, config=ScTDConfig(lam=0.05, reduction="sum", full_mlm=False))
    official_value = (official.mlm_dropped * masked + 0.05 * (official.kl_global + official.kl_local)) / tokens
    torch.testing.assert_close(out.total * masked / tokens, official_value, rtol=1e-6, atol=1e-8)
