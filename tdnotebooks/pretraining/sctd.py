"""ScTD: semantic-consistent token dropping (Zhong et al. 2023, "Revisiting Token Dropping Strategy in
Efficient BERT Pretraining").

Token dropping (Hou et al. 2022, :mod:`tdnotebooks.pretraining.token_dropping`) lets the middle layers skip the
"unimportant" tokens, and the sentence representation drifts away from the one the full model would
build. ScTD uses the full model as its own teacher, once every ``Fi`` steps (Eq. 4)::

    full step:   L = 1/2 MLM* + 1/2 MLM + lambda * (KL_g + KL_l)
    otherwise:   L = MLM*

MLM* is the MLM loss of the token-dropped pass, MLM the loss of the full pass (``drop=False``) of the
same model on the same batch, and (Eq. 2, 3)::

    KL_g = KL( p(X_l)     || p(X~_l) )       last layer                       (full || dropped)
    KL_l = KL( p(X_{l-1}) || p(X~_{l-1}) )   output of the last dropped layer (``drop_end_hidden_state``)

Which steps are full (``ScTDConfig.full_pass_at``): ``"end"`` (default, the paper: Sec. 3 and Fig. 5, "first
(Fi - 1) token-dropping steps, then one semantic-consistent step"), t mod Fi == Fi - 1 with t counted from 0,
so a run of T steps has floor(T / Fi) full steps and none at random initialisation; ``"start"`` (the
official code, which tests its update counter, 0 first, for t mod 10 == 0), t = 0, Fi, 2 Fi, ..., ceil(T / Fi)
full steps. Fi = 10 (Table 5).

The KL's reduction and lambda (``ScTDConfig.reduction``, ``lam``): the official code sums the KL over the
sequences of a micro-batch and adds it to the MLM loss summed over the masked tokens, and fairseq then
divides the gradient of the whole step by the number of tokens of the global batch. Relative to an MLM loss
that is a mean over the masked positions (as here), its weight on the per-sequence mean of the KL is
therefore 0.05 / m, m = predictions per sequence (15 % of 512 tokens: m = 76.8), whatever the batch size
or the number of GPUs. The default reproduces that at the paper's setting, batch- and world-size-free:
``reduction="batchmean"`` (the KL's mean over the sequences) and lam = 0.05 / 76.8 = 6.5e-4 (``DEFAULT_LAM``).
For another block length, lam = 0.05 / (mlm_probability x block length) keeps the official weighting.
Under DDP each rank backpropagates the mean over its own sequences and DDP averages the gradients over the
ranks: with the same batch size on every rank (the pretraining loop's case) that is the mean over the
global batch, so lambda means the same for any batch size and number of processes.
``reduction="sum"`` (the literal ``kl_div(..., reduction="sum")`` of the official code, without the
division by the token count) sums over the process's batch of B sequences, so its lambda grows with B:
lam_sum = lam_mean / B gives the same objective (``lam_for_reduction``).

What p(X) is, the paper does not say; the options (``ScTDConfig.kl_target``):

- ``"cls_hidden_softmax"`` (default, the official code): a softmax over the hidden dimension of the
  [CLS] vector (position 0), one distribution per sequence;
- ``"mean_pooled"``: the same softmax over the mean of the real tokens' hidden vectors (in the official
  code but unused there); at the local layer the dropped tokens enter the mean with the layer start-1
  output they carry past the dropped layers;
- ``"mlm_vocab"``: the MLM vocabulary distribution at each masked position; for KL_l the MLM head is
  applied to the output of the last dropped layer (a "logit lens").

Reduction ``"batchmean"`` (default: divided by the number of distributions, i.e. sequences, or masked
positions for ``"mlm_vocab"``) or ``"sum"`` (see above). ``stop_gradient=True`` detaches the teacher
distribution (the official code does not: gradients flow into both passes).

Differences from the official code, on purpose: this module implements Eq. 4 as written. The official
code computes its "full-model" MLM term from the dropped pass, so the full-model MLM loss never enters
and what it optimises is MLM* + lambda (KL_g + KL_l); ``full_mlm=False`` reproduces that objective.
Here MLM losses are means over the masked positions (the official code divides by all tokens), and t
counts optimizer steps (the official code tests its update counter in every micro-batch of a step).

    >>> td = TokenDroppingBert(mlm, TokenDroppingConfig(keep_fraction=0.5), tok.all_special_ids)
    >>> out = sctd_loss(td, input_ids, attention_mask, labels, step=t)   # ScTDConfig() defaults
    >>> out.total.backward(); optimizer.step(); td.update_importance(out.dropped)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from tdnotebooks.pretraining.token_dropping import TokenDroppingBert, TokenDroppingOutput
from tdnotebooks.validation import check_bool, check_choice, check_int, check_number

__all__ = ["DEFAULT_LAM", "FULL_PASS_AT", "KL_TARGETS", "OFFICIAL_LAM", "PAPER_PREDICTIONS_PER_SEQUENCE",
           "REDUCTIONS", "ScTDConfig", "ScTDOutput", "is_full_step", "kl_from_scores", "lam_for_reduction",
           "sctd_loss", "semantic_kl", "semantic_scores"]

KL_TARGETS = ("cls_hidden_softmax", "mean_pooled", "mlm_vocab")
REDUCTIONS = ("batchmean", "sum")
FULL_PASS_AT = ("end", "start")         # the full step closes each window of Fi steps (paper) or opens it (code)
OFFICIAL_LAM = 0.05                     # the paper's lambda, a literal of the official code (KL summed, / tokens)
PAPER_PREDICTIONS_PER_SEQUENCE = 0.15 * 512     # BERT masking (15 %) of the paper's 512-token sequences
DEFAULT_LAM = OFFICIAL_LAM / PAPER_PREDICTIONS_PER_SEQUENCE     # 6.5e-4: the official weighting, batchmean


@dataclass
class ScTDConfig:
    """Settings of the ScTD objective (Eq. 4); defaults of the paper and its official code (see the module
    docstring for which follows which).

    lam: lambda, weight of KL_g + KL_l, >= 0. Default ``DEFAULT_LAM`` = 0.05 / 76.8 = 6.5e-4: with
        reduction="batchmean" the weight the official code gives the KL (paper: lambda = 0.05 on a KL summed
        over the sequences, the whole loss divided by the token count) at the paper's 512-token sequences.
        Fig. 7's range 0 to 0.5 is in that summed unit: divide by 76.8 here.
    fi: the fixed interval Fi, an int >= 1 (paper: 10; Table 5: 5, 10, 20, 50). Fi = 1 runs the full pass at
        every step.
    full_pass_at: "end" (the paper, Fig. 5: Fi - 1 dropped steps, then the full one; t mod Fi == Fi - 1) or
        "start" (the official code: t mod Fi == 0, t = 0 included).
    kl_target: what p(X) is: "cls_hidden_softmax" (official), "mean_pooled" or "mlm_vocab".
    reduction: "batchmean" (default: the mean over the distributions, independent of the batch size and
        the number of processes) or "sum" (over the process's batch; lam_sum = lam_batchmean / batch size).
    stop_gradient: detach the full pass's distributions (the teacher); official: False.
    full_mlm: add 1/2 MLM of the full pass as Eq. 4 says (True); False gives the objective the official
        code optimises, MLM* + lambda (KL_g + KL_l).
    """

    lam: float = DEFAULT_LAM
    fi: int = 10
    kl_target: str = "cls_hidden_softmax"
    reduction: str = "batchmean"
    stop_gradient: bool = False
    full_mlm: bool = True
    full_pass_at: str = "end"

    def __post_init__(self) -> None:
        self.lam = check_number("lam (lambda, the KL weight)", self.lam, low=0)
        check_int("fi (the interval Fi)", self.fi, low=1)
        check_choice("kl_target", self.kl_target, KL_TARGETS)
        check_choice("reduction", self.reduction, REDUCTIONS)
        check_choice("full_pass_at", self.full_pass_at, FULL_PASS_AT)
        for name in ("stop_gradient", "full_mlm"):
            check_bool(name, getattr(self, name))


def is_full_step(step: int, fi: int, at: str = "end") -> bool:
    """Eq. 4's switch: whether the full pass and the KL terms run at step t (counted from 0).

    at="end" (default, the paper's Fig. 5: Fi - 1 token-dropping steps, then the full one): t mod Fi == Fi - 1,
    i.e. t = Fi - 1, 2 Fi - 1, ... (floor(T / Fi) of T steps). at="start" (the official code): t mod Fi == 0,
    i.e. t = 0, Fi, 2 Fi, ... (ceil(T / Fi)). Fi = 1: every step either way.
    """
    check_int("step", step, low=0)
    check_int("fi (the interval Fi)", fi, low=1)
    check_choice("at (full_pass_at)", at, FULL_PASS_AT)
    return step % fi == (fi - 1 if at == "end" else 0)


def lam_for_reduction(lam: float, batch_size: int, source: str = "batchmean", target: str = "sum") -> float:
    """The lambda that gives the same objective under reduction ``target`` as ``lam`` under ``source``, for a
    process batch of ``batch_size`` sequences: lam_sum = lam_batchmean / batch_size (KL sum = B x KL mean).

    For kl_target="mlm_vocab" the distributions are masked positions: pass their number as batch_size.
    """
    check_number("lam (lambda, the KL weight)", lam, low=0)
    check_int("batch_size", batch_size, low=1)
    check_choice("source", source, REDUCTIONS)
    check_choice("target", target, REDUCTIONS)
    rows = {"batchmean": 1, "sum": batch_size}
    return float(lam) * rows[source] / rows[target]


# ----------------------------------------------------------------------------------------------------------
# p(X) and the KL divergence (Eq. 2, 3)
# ----------------------------------------------------------------------------------------------------------


def kl_from_scores(teacher: torch.Tensor, student: torch.Tensor, reduction: str = "batchmean") -> torch.Tensor:
    """KL( softmax(teacher) || softmax(student) ), softmax over the last dimension.

    teacher, student: (R, D) scores, one distribution per row. "sum" adds the R divergences, "batchmean"
    averages them (0 when R = 0). Computed in float32.
    """
    check_choice("reduction", reduction, REDUCTIONS)
    if teacher.shape != student.shape:
        raise ValueError(f"teacher {tuple(teacher.shape)} and student {tuple(student.shape)} scores must have "
                         "the same shape")
    log_p = F.log_softmax(teacher.float(), dim=-1)
    log_q = F.log_softmax(student.float(), dim=-1)
    kl = F.kl_div(log_q, log_p, reduction="sum", log_target=True)      # sum p (log p - log q)
    rows = max(teacher.numel() // max(teacher.size(-1), 1), 1)
    return kl / rows if reduction == "batchmean" else kl


def semantic_scores(hidden: torch.Tensor, kl_target: str, attention_mask: torch.Tensor | None = None,
                    masked_positions: torch.Tensor | None = None,
                    mlm_head: torch.nn.Module | None = None) -> torch.Tensor:
    """The scores whose softmax is p(X), from hidden states ``hidden`` (B, T, H).

    "cls_hidden_softmax": hidden[:, 0] (B, H). "mean_pooled": the mean over real tokens (attention_mask)
    (B, H). "mlm_vocab": mlm_head(hidden at masked_positions (N, 2)) (N, V).
    """
    check_choice("kl_target", kl_target, KL_TARGETS)
    if kl_target == "cls_hidden_softmax":
        return hidden[:, 0]
    if kl_target == "mean_pooled":
        if attention_mask is None:
            return hidden.mean(dim=1)
        weights = attention_mask.to(hidden.dtype)[..., None]
        return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1)
    if masked_positions is None or mlm_head is None:  # kl_target == "mlm_vocab"
        raise ValueError("kl_target='mlm_vocab' needs masked_positions and mlm_head (run forward with labels)")
    return mlm_head(hidden[masked_positions[:, 0], masked_positions[:, 1]])


def semantic_kl(full: TokenDroppingOutput, dropped: TokenDroppingOutput, config: ScTDConfig,
                attention_mask: torch.Tensor | None = None,
                mlm_head: torch.nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(KL_g, KL_l) of Eq. 2 and 3: full pass = teacher p, dropped pass = student q."""
    pairs = []
    for layer in ("global", "local"):
        scores = []
        for out in (full, dropped):
            if config.kl_target == "mlm_vocab" and layer == "global":
                scores.append(out.logits)                  # the head already ran at the masked positions
            else:
                hidden = out.last_hidden_state if layer == "global" else out.drop_end_hidden_state
                scores.append(semantic_scores(hidden, config.kl_target, attention_mask, out.masked_positions,
                                              mlm_head))
        teacher, student = scores
        if config.stop_gradient:
            teacher = teacher.detach()
        pairs.append(kl_from_scores(teacher, student, config.reduction))
    return pairs[0], pairs[1]


# ----------------------------------------------------------------------------------------------------------
# The objective (Eq. 4)
# ----------------------------------------------------------------------------------------------------------


@dataclass
class ScTDOutput:
    """Every term of one ScTD step (the optional ones are None when ``is_full_step`` is False).

    total: the loss to minimise (Eq. 4). mlm_dropped: MLM* (token-dropped pass). mlm_full: MLM (full pass;
    reported even when ``full_mlm=False`` leaves it out of the total). kl_global, kl_local: Eq. 2, 3.
    dropped / full: the two passes (feed ``dropped`` to ``update_importance``).
    """

    total: torch.Tensor
    mlm_dropped: torch.Tensor
    mlm_full: torch.Tensor | None
    kl_global: torch.Tensor | None
    kl_local: torch.Tensor | None
    is_full_step: bool
    dropped: TokenDroppingOutput
    full: TokenDroppingOutput | None = None

    def terms(self) -> dict[str, float | bool | None]:
        """The terms as Python floats (None where absent), for logging."""
        def value(t: torch.Tensor | None) -> float | None:
            return None if t is None else float(t.detach())

        return {"loss": value(self.total), "mlm_dropped": value(self.mlm_dropped),
                "mlm_full": value(self.mlm_full), "kl_global": value(self.kl_global),
                "kl_local": value(self.kl_local), "is_full_step": self.is_full_step}


def sctd_loss(model: TokenDroppingBert, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
              labels: torch.Tensor, step: int, config: ScTDConfig | None = None,
              token_type_ids: torch.Tensor | None = None,
              generator: torch.Generator | None = None) -> ScTDOutput:
    """The ScTD loss of one batch at training step ``step`` (Eq. 4).

    Always runs the token-dropped pass (MLM*). At a full step (``is_full_step(step, Fi, full_pass_at)``:
    by default step mod Fi == Fi - 1) it also runs the full pass of the same
    model on the same batch and returns 1/2 MLM* + 1/2 MLM + lambda (KL_g + KL_l) (with ``full_mlm=False``:
    MLM* + lambda (KL_g + KL_l), the official code's objective). In training mode the two passes draw
    different dropout masks, as in the official code.

    Example:
        >>> out = sctd_loss(td, input_ids, attention_mask, labels, step=t, config=ScTDConfig(fi=10))
        ...                                                                                 # doctest: +SKIP
        >>> out.total.backward(); optimizer.step(); td.update_importance(out.dropped)     # doctest: +SKIP

    Warning: ``step`` decides whether the full pass runs; pass the global optimizer step (the same on every
    process), not a per-epoch or per-micro-batch counter. Used in notebook 07.
    """
    if not isinstance(model, TokenDroppingBert):
        raise ValueError(f"model must be a TokenDroppingBert (wrap the MLM model: TokenDroppingBert(mlm, ...)), "
                         f"got {type(model).__name__}")
    if config is not None and not isinstance(config, ScTDConfig):
        raise ValueError(f"config must be None or a ScTDConfig, got {type(config).__name__}")
    config = config if config is not None else ScTDConfig()
    if labels is None:
        raise ValueError("labels are required: ScTD is an MLM objective (-100 at positions not masked)")
    full_step = is_full_step(step, config.fi, config.full_pass_at)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    dropped = model(input_ids, attention_mask, labels=labels, token_type_ids=token_type_ids, drop=True,
                    generator=generator)
    if not full_step:
        return ScTDOutput(total=dropped.loss, mlm_dropped=dropped.loss, mlm_full=None, kl_global=None,
                          kl_local=None, is_full_step=False, dropped=dropped)

    needs_grad = config.full_mlm or not config.stop_gradient         # else the full pass is a pure teacher
    with torch.set_grad_enabled(torch.is_grad_enabled() and needs_grad):
        full = model(input_ids, attention_mask, labels=labels, token_type_ids=token_type_ids, drop=False)
    kl_global, kl_local = semantic_kl(full, dropped, config, attention_mask, model.mlm_head)
    kl = config.lam * (kl_global + kl_local)
    if config.full_mlm:
        total = 0.5 * dropped.loss + 0.5 * full.loss + kl
    else:
        total = dropped.loss + kl
    return ScTDOutput(total=total, mlm_dropped=dropped.loss, mlm_full=full.loss, kl_global=kl_global,
                      kl_local=kl_local, is_full_step=True, dropped=dropped, full=full)
