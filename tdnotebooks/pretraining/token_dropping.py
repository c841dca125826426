"""Token dropping for BERT pretraining (Hou et al., 2022, "Token Dropping for Efficient BERT Pretraining").

The idea in one sentence: the middle layers of BERT only process the tokens that are still hard to
predict; the others skip those layers and re-enter, unchanged, just before the last layer.

For a model with ``L`` layers (0-based indices, ``[a, b)`` = layers a..b-1)::

    layers [0, start)    all tokens                  (default start = L // 2 - 1)
    layers [start, end)  only the kept tokens        (default end   = L - 1)
    layers [end, L)      all tokens again: dropped tokens re-enter with their output of layer start-1

For BERT-base (L = 12) that is layers 0-4 full, 5-10 dropped, 11 full: the split of Hou et al.'s
official code. ScTD (Sec. 2.1, Fig. 2b) describes the same split 1-based: the first l/2-1 layers on
the full sequence, the dropped range up to layer l-1, the last layer on all tokens. The official code
lets the first dropped layer take the kept tokens as queries but all tokens as keys/values; that
variant is the default (``first_layer_full_kv=True``); ``first_layer_full_kv=False`` drops from the
first dropped layer on (the papers' description, one switch away). Dropping happens whenever
``drop=True``, in eval mode too (as in the official code); ``drop=False`` runs the full model with the
same weights.

Which tokens are kept (Hou et al. 2022, official code): the importance of a vocabulary id is a moving
average of the MLM loss it had when it was masked (:class:`ImportanceTable`); each sequence keeps its
special tokens, [MASK] included, then its most important tokens (ties: the earlier position); padding
goes first. As in the official code, a predicted position is kept for sure only when its input is
[MASK] (pinned high in the table): the 10 % of predicted positions replaced by a random id and the 10 %
left unchanged compete by importance like any other token, so being kept does not give away which
tokens are targets (``keep_predicted="mask_only"``, the default; ``"all"`` keeps every predicted
position). A predicted position that was dropped still gets its prediction: it re-enters before the
last layers, and the MLM head reads the last layer's output at every predicted position.
``selection="random"`` keeps a uniform random subset instead (Random-LTD style, Yao et al. 2022), for
comparison.

Families (:mod:`tdnotebooks.pretraining.families`): BERT, RoBERTa / XLM-RoBERTa, ELECTRA (generator) and
ModernBERT. ModernBERT has no position embeddings: its kept tokens carry their original rotary positions
(cos/sin of the original position ids) through the dropped layers, and its local-attention layers build
their windows from the kept tokens' original positions, which is exact, not an approximation.

The MLM head runs only at the masked positions (as in the official TF and NVIDIA BERT code), in every
mode. The wrapped model is not copied: after pretraining, ``wrapper.mlm`` is a plain Hugging Face
``BertForMaskedLM`` (``save_pretrained`` works, no wrapper is needed to fine-tune it).

    >>> td = TokenDroppingBert(mlm, TokenDroppingConfig(keep_fraction=0.5), tok.all_special_ids)
    >>> out = td(input_ids, attention_mask, labels=labels)     # labels: -100 where not masked
    >>> out.loss.backward(); optimizer.step()
    >>> td.update_importance(out)                              # Hou's moving average, once per step
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from tdnotebooks.checks import check_batch, max_positions
from tdnotebooks.pretraining.families import (
    BertLayout,
    EncoderLayout,
    ModernBertLayout,
    layer_with_full_kv,
    layout_for,
)
from tdnotebooks.validation import check_bool, check_choice, check_int, check_number

__all__ = [
    "KEEP_PREDICTED", "TokenDroppingConfig", "ImportanceTable", "KeptTokens", "keep_counts", "select_kept_tokens",
    "gather_tokens", "scatter_tokens", "layer_with_full_kv", "TokenDroppingOutput", "TokenDroppingBert",
    "layer_flops", "flops_ratio",
]

SELECTIONS = ("importance", "random")
KEEP_PREDICTED = ("mask_only", "all")   # which predicted positions are always kept (Hou: "mask_only")
# A wrapper state saved before issue 16 has no keep_predicted: it kept every predicted position.
_LEGACY_STATE = {"keep_predicted": "all"}
IGNORE_INDEX = -100  # labels at positions that are not masked (Hugging Face convention)


# ----------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------


@dataclass
class TokenDroppingConfig:
    """Settings of token dropping (Hou et al. 2022; defaults of its official code unless noted).

    keep_fraction: fraction of each sequence's real (non-padding) tokens that the dropped layers process,
        in (0, 1] (equivalently a drop fraction in [0, 1)); rounded up. Default 0.5 (Hou: 256 of 512).
    keep_k: instead of a fraction, keep this many tokens per sequence (at most its real length).
        Give one of keep_fraction / keep_k. Special and masked tokens are always kept, so a sequence with
        more of them than the budget keeps more.
    start_layer, end_layer: the dropped range is layers [start_layer, end_layer), 0-based. None means the
        paper's split: start = L // 2 - 1, end = L - 1 (12 layers: 5..10 dropped).
    beta: moving-average factor of the importance table, in [0, 1). Hou: 0.995; ScTD uses 0.95.
    selection: "importance" (Hou) or "random" (Random-LTD style baseline).
    first_layer_full_kv: layer start_layer attends from the kept tokens to all tokens (queries kept,
        keys/values full), as Hou et al.'s official code does (default True). False: the first dropped
        layer sees the kept tokens only, as both papers describe the split.
    keep_predicted: which predicted (masked) positions are always kept. "mask_only" (default, Hou's
        official code): only those whose input is [MASK], through the special ids (so pass [MASK] in
        ``special_token_ids``, as ``tokenizer.all_special_ids`` does); the predicted positions that hold
        a random or the unchanged id compete by importance. "all": every predicted position (this
        package's reading before issue 16).
    initial_importance: starting importance of every id (official code: 10.0; once MLM losses fall
        below it, ids not yet measured rank above measured ones).
    """

    keep_fraction: float | None = None
    keep_k: int | None = None
    start_layer: int | None = None
    end_layer: int | None = None
    beta: float = 0.995
    selection: str = "importance"
    first_layer_full_kv: bool = True
    initial_importance: float = 10.0
    keep_predicted: str = "mask_only"

    def __post_init__(self) -> None:
        if self.keep_fraction is not None and self.keep_k is not None:
            raise ValueError("give keep_fraction or keep_k, not both")
        if self.keep_fraction is None and self.keep_k is None:
            self.keep_fraction = 0.5
        if self.keep_fraction is not None:
            self.keep_fraction = check_number("keep_fraction", self.keep_fraction, low=0, high=1, low_open=True)
        if self.keep_k is not None:
            check_int("keep_k", self.keep_k, low=1)
        check_number("beta", self.beta, low=0, high=1, high_open=True)
        check_choice("selection", self.selection, SELECTIONS)
        check_bool("first_layer_full_kv", self.first_layer_full_kv)
        check_choice("keep_predicted", self.keep_predicted, KEEP_PREDICTED)
        check_number("initial_importance", self.initial_importance)
        for name in ("start_layer", "end_layer"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), low=0)
        if self.start_layer is not None and self.end_layer is not None and self.start_layer >= self.end_layer:
            raise ValueError(f"start_layer must be < end_layer (dropped layers [start_layer, end_layer)), got "
                             f"start_layer={self.start_layer}, end_layer={self.end_layer}")

    @property
    def drop_fraction(self) -> float | None:
        """1 - keep_fraction (None in keep_k mode)."""
        return None if self.keep_fraction is None else 1.0 - self.keep_fraction

    def layer_range(self, num_layers: int) -> tuple[int, int]:
        """The dropped range ``(start, end)`` (layers start..end-1, 0-based) for a model with num_layers."""
        if num_layers < 2:
            raise ValueError(f"token dropping needs a model with at least 2 layers, got {num_layers}")
        start = num_layers // 2 - 1 if self.start_layer is None else self.start_layer
        end = num_layers - 1 if self.end_layer is None else self.end_layer
        if not 0 <= start <= num_layers - 1:
            raise ValueError(f"start_layer must be in [0, {num_layers - 1}] for {num_layers} layers, "
                             f"got {start}")
        if not start < end <= num_layers:
            raise ValueError(f"end_layer must be in [start_layer + 1, {num_layers}] = [{start + 1}, "
                             f"{num_layers}] for {num_layers} layers, got {end} (start_layer={start})")
        return start, end


# ----------------------------------------------------------------------------------------------------------
# Importance: a moving average of the MLM loss per vocabulary id (Hou et al. 2022)
# ----------------------------------------------------------------------------------------------------------


class ImportanceTable(nn.Module):
    """One importance score per vocabulary id; a buffer, so it is saved in ``state_dict``.

    ``update`` applies, for every id seen at a masked position in this step with mean loss m,
        imp[id] = beta * imp[id] + (1 - beta) * m
    Unlike the official code: several predictions of one id in a batch are averaged (not last write
    wins), padded prediction slots are excluded (``valid``), the pinned ids are re-pinned after every
    update, and under torch.distributed the per-id sums and counts are all-reduced first, so every rank
    holds the same table and drops the same way (``update`` is then a collective: call it on every rank).
    """

    def __init__(self, vocab_size: int, beta: float = 0.995, initial: float = 10.0,
                 special_token_ids: Sequence[int] = (), pad_token_id: int | None = None,
                 high: float = 1e4, low: float = -1e4) -> None:
        super().__init__()
        check_int("vocab_size", vocab_size, low=1)
        check_number("beta", beta, low=0, high=1, high_open=True)
        check_number("initial", initial)
        check_number("high", high)
        check_number("low", low, high=high, high_open=True)     # pinned low must stay below pinned high
        high_ids = sorted({int(i) for i in special_token_ids if i is not None and i != pad_token_id})
        for i in [*high_ids, *([] if pad_token_id is None else [pad_token_id])]:
            if not 0 <= i < vocab_size:
                raise ValueError(f"special_token_ids / pad_token_id must be in [0, {vocab_size - 1}], "
                                 f"got {i}")
        self.beta, self.high, self.low = float(beta), float(high), float(low)
        self.register_buffer("table", torch.full((vocab_size,), float(initial)))
        self.register_buffer("high_ids", torch.tensor(high_ids, dtype=torch.long))
        self.register_buffer("low_ids", torch.tensor([] if pad_token_id is None else [pad_token_id],
                                                      dtype=torch.long))
        self.pin()

    def _apply(self, fn: Any, recurse: bool = True) -> ImportanceTable:
        """Keep the table in float32 when the model is cast (in bf16, +0.005 * loss steps would vanish)."""
        super()._apply(fn, recurse)
        if self.table.dtype != torch.float32:
            self.table = self.table.float()
        return self

    @torch.no_grad()
    def pin(self) -> None:
        """Special ids very important (always kept), [PAD] very unimportant (dropped first)."""
        self.table[self.high_ids] = self.high
        self.table[self.low_ids] = self.low

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Importance of each input token (same shape and device as input_ids, wherever the table lives)."""
        return self.table[input_ids.to(self.table.device)].to(input_ids.device)

    @torch.no_grad()
    def update(self, token_ids: torch.Tensor, losses: torch.Tensor,
               valid: torch.Tensor | None = None) -> None:
        """Fold one step's per-prediction MLM losses into the table.

        token_ids: original (unmasked) ids at the masked positions, any shape; losses: same shape, the
        per-prediction cross-entropy; valid: optional bool mask of the same shape (False = padded slot).
        """
        if token_ids.shape != losses.shape or (valid is not None and valid.shape != token_ids.shape):
            raise ValueError(f"token_ids {tuple(token_ids.shape)}, losses {tuple(losses.shape)} and valid "
                             "must have the same shape")
        ids = token_ids.reshape(-1).to(self.table.device, torch.long)
        loss = losses.detach().reshape(-1).to(self.table.device, torch.float64)
        keep = torch.ones_like(ids, dtype=torch.bool) if valid is None else valid.reshape(-1).bool()
        keep = keep.to(ids.device)
        ids, loss = ids[keep], loss[keep]
        stats = torch.zeros(2, self.table.numel(), dtype=torch.float64, device=self.table.device)
        stats[0].index_add_(0, ids, loss)                       # per-id loss sums
        stats[1].index_add_(0, ids, torch.ones_like(loss))      # per-id counts
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(stats)                 # every rank: the same global sums
        seen = stats[1] > 0
        mean = (stats[0][seen] / stats[1][seen]).to(self.table.dtype)
        self.table[seen] = self.beta * self.table[seen] + (1.0 - self.beta) * mean
        self.pin()


# ----------------------------------------------------------------------------------------------------------
# Selection of the kept positions
# ----------------------------------------------------------------------------------------------------------


@dataclass
class KeptTokens:
    """Positions processed by the dropped layers, in position order.

    indices: (B, K) positions into the full sequence (unique per row, increasing).
    valid: (B, K) False for filler slots of sequences that keep fewer than K tokens; a filler slot is not
        attended to and its result is not written back.
    """

    indices: torch.Tensor
    valid: torch.Tensor


def keep_counts(real_lengths: torch.Tensor, forced_counts: torch.Tensor, keep_fraction: float | None = None,
                keep_k: int | None = None) -> torch.Tensor:
    """Tokens each sequence keeps: ceil(keep_fraction * n) or keep_k, at least the forced ones, at most n."""
    if keep_fraction is not None and keep_k is not None:
        raise ValueError("give keep_fraction or keep_k, not both")
    if keep_fraction is not None:
        check_number("keep_fraction", keep_fraction, low=0, high=1, low_open=True)
        budget = torch.ceil(real_lengths.double() * keep_fraction - 1e-9).long()
    elif keep_k is not None:
        budget = torch.full_like(real_lengths, check_int("keep_k", keep_k, low=1))
    else:
        raise ValueError("give keep_fraction or keep_k")
    return torch.minimum(torch.maximum(budget, forced_counts), real_lengths)


def select_kept_tokens(scores: torch.Tensor, attention_mask: torch.Tensor, forced: torch.Tensor,
                       keep_fraction: float | None = None, keep_k: int | None = None) -> KeptTokens:
    """Per sequence: forced tokens first, then the highest ``scores``, padding last; re-sorted by position.

    scores: (B, T) importance (or random numbers); attention_mask: (B, T), 1 = real token; forced: (B, T)
    bool, tokens that must be kept (special and masked tokens). Ties go to the earlier position.
    """
    real = attention_mask.bool()
    forced = forced.bool() & real
    counts = keep_counts(real.sum(1), forced.sum(1), keep_fraction, keep_k)
    width = max(int(counts.max()), 1)
    inf = torch.finfo(torch.float32).max
    priority = torch.where(forced, inf, torch.where(real, scores.float(), -inf))
    ranked = torch.sort(priority, dim=1, descending=True, stable=True).indices[:, :width]
    rank_valid = torch.arange(width, device=scores.device)[None, :] < counts[:, None]
    indices, order = torch.sort(ranked, dim=1)                  # back into position order
    return KeptTokens(indices=indices, valid=rank_valid.gather(1, order))


# ----------------------------------------------------------------------------------------------------------
# Gather / scatter
# ----------------------------------------------------------------------------------------------------------


def gather_tokens(hidden: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """(B, T, H) -> (B, K, H): the rows at ``indices`` (B, K)."""
    return hidden.gather(1, indices[..., None].expand(-1, -1, hidden.size(-1)))


def scatter_tokens(full: torch.Tensor, kept: torch.Tensor, kept_tokens: KeptTokens) -> torch.Tensor:
    """Write the kept rows back into a copy of ``full`` (B, T, H); other positions keep ``full``'s rows.

    Filler slots (valid=False) write back ``full``'s own row, so they change nothing.
    """
    idx = kept_tokens.indices
    src = torch.where(kept_tokens.valid[..., None], kept, gather_tokens(full, idx))
    return full.scatter(1, idx[..., None].expand(-1, -1, full.size(-1)), src)


# ----------------------------------------------------------------------------------------------------------
# The wrapper
# ----------------------------------------------------------------------------------------------------------


@dataclass
class TokenDroppingOutput:
    """What one forward pass returns. N = number of masked positions in the batch (row-major order).

    loss: mean cross-entropy over the masked positions (None without labels); 0 when no position is masked
        (every label -100), still part of the graph, so ``backward`` adds zero gradients instead of NaN.
    logits: (N, V) MLM logits at the masked positions only.
    per_prediction_loss: (N,) cross-entropy of each prediction (feeds the importance table).
    target_ids: (N,) original ids at the masked positions; masked_positions: (N, 2) (batch, position).
    last_hidden_state: (B, T, H) output of the last layer (ScTD's global constraint compares its [CLS]).
    drop_end_hidden_state: (B, T, H) output of layer end-1, the last dropped layer, full length after the
        scatter (dropped positions hold their layer start-1 output); ScTD's local constraint.
        For ModernBERT (pre-LayerNorm) both hidden states pass through its ``final_norm``, as the head reads them.
    kept: the kept positions (None when drop=False).
    """

    loss: torch.Tensor | None
    logits: torch.Tensor | None
    per_prediction_loss: torch.Tensor | None
    target_ids: torch.Tensor | None
    masked_positions: torch.Tensor | None
    last_hidden_state: torch.Tensor
    drop_end_hidden_state: torch.Tensor
    kept: KeptTokens | None


class TokenDroppingBert(nn.Module):
    """Token dropping around a Hugging Face masked LM such as ``BertForMaskedLM``, holding a reference to it
    (no copy).

    Families (``models.SUPPORTED_MODEL_TYPES``; the per-family code is in
    :mod:`tdnotebooks.pretraining.families`): BERT, RoBERTa / XLM-RoBERTa and ELECTRA (the generator),
    one layer layout with heads ``cls`` / ``lm_head`` / ``generator_predictions`` + ``generator_lm_head``;
    and ModernBERT (``ModernBertForMaskedLM``, eager or sdpa attention), whose kept tokens keep their
    original rotary positions in the dropped layers and whose local layers' windows are built from the
    kept tokens' original positions, so nothing is approximated.
    Every forward checks its batch first (:func:`tdnotebooks.checks.check_batch`: shapes, length <= the
    position embeddings, ids in the vocabulary; one reduction, i.e. one synchronisation on a GPU).

    special_token_ids: ids always kept and pinned high in the importance table (e.g. a tokenizer's
    ``all_special_ids``; [PAD] in that list is ignored). pad_token_id: pinned low (default: the model
    config's). The state dict holds the model (``mlm.*``), the importance table (``importance.*``) and the
    resolved config (``_extra_state``), so a loaded wrapper drops exactly as the saved one did.

    Args:
        mlm: the masked language model to wrap (trained in place).
        config: which layers drop and how many tokens they keep (:class:`TokenDroppingConfig`).
        special_token_ids, pad_token_id: as above.

    Example:
        >>> td = TokenDroppingBert(BertForMaskedLM(tiny_bert()), TokenDroppingConfig(keep_fraction=0.5),
        ...                        tokenizer.all_special_ids)                              # doctest: +SKIP
        >>> out = td(input_ids, attention_mask, labels=labels); out.loss.backward()        # doctest: +SKIP
        >>> td.update_importance(out)        # Hou et al.'s moving average of each id's MLM loss  # doctest: +SKIP

    Warning: dropping also runs in ``eval()`` mode, as in Hou et al.'s code; pass ``drop=False`` to evaluate
    the full model (what the saved checkpoint is: a plain ``BertForMaskedLM``). Used in notebooks 05-07.
    """

    def __init__(self, mlm: nn.Module, config: TokenDroppingConfig | None = None,
                 special_token_ids: Sequence[int] = (), pad_token_id: int | None = None) -> None:
        super().__init__()
        layout = layout_for(mlm) if isinstance(mlm, nn.Module) else None
        if layout is None:
            bert, modern = BertLayout, ModernBertLayout
            raise ValueError(f"model must be a Hugging Face BertForMaskedLM-style model ({bert.parts}) or a "
                             f"ModernBertForMaskedLM ({modern.parts}, model type modernbert); BERT-style model "
                             f"types {', '.join(bert.model_types)}; got {type(mlm).__name__}")
        if getattr(mlm.config, "is_decoder", False):
            raise ValueError("model must be a bidirectional encoder (config.is_decoder=False)")
        self.mlm = mlm
        if config is not None and not isinstance(config, TokenDroppingConfig):
            raise ValueError(f"config must be None or a TokenDroppingConfig, got {type(config).__name__}")
        config = config if config is not None else TokenDroppingConfig()
        self.start, self.end = config.layer_range(len(layout.layers))
        self.config = replace(config, start_layer=self.start, end_layer=self.end)   # resolved, saved as is
        pad = mlm.config.pad_token_id if pad_token_id is None else pad_token_id
        self.importance = ImportanceTable(mlm.config.vocab_size, self.config.beta,
                                          self.config.initial_importance, special_token_ids, pad)

    @property
    def layout(self) -> EncoderLayout:
        """The wrapped model's family: :class:`~tdnotebooks.pretraining.families.BertLayout` or
        :class:`~tdnotebooks.pretraining.families.ModernBertLayout`."""
        return layout_for(self.mlm)

    @property
    def encoder_model(self) -> nn.Module:
        """The wrapped model's encoder (``mlm.bert``; ``mlm.roberta`` for RoBERTa; ``mlm.model`` for ModernBERT)."""
        return self.layout.encoder

    @property
    def mlm_head(self) -> nn.Module:
        """The wrapped model's MLM head: transform + vocabulary projection (``mlm.cls`` / ``mlm.lm_head``;
        ModernBERT: ``mlm.head`` then ``mlm.decoder``)."""
        return self.layout.head

    # Saved state: the resolved config travels with the weights and the table.
    def get_extra_state(self) -> dict:
        return asdict(self.config)

    def set_extra_state(self, state: dict) -> None:
        self.config = TokenDroppingConfig(**{**_LEGACY_STATE, **state})
        self.start, self.end = self.config.layer_range(len(self.layout.layers))
        self.importance.beta = self.config.beta

    def select(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, masked: torch.Tensor,
               generator: torch.Generator | None = None) -> KeptTokens:
        """Kept positions: special tokens ([MASK] included) and, with ``keep_predicted="all"``, every masked
        (predicted) position; then by importance (or at random); padding last.

        Works on the inputs' device (a CPU batch with a CUDA model is fine); ``generator`` may live on
        another device than the inputs (its random numbers are moved).
        """
        forced = torch.isin(input_ids, self.importance.high_ids.to(input_ids.device))
        if self.config.keep_predicted == "all":
            forced = forced | masked.to(input_ids.device)
        if self.config.selection == "random":
            device = generator.device if generator is not None else input_ids.device
            scores = torch.rand(input_ids.shape, device=device, generator=generator).to(input_ids.device)
        else:
            scores = self.importance(input_ids)
        config = self.config
        return select_kept_tokens(scores, attention_mask, forced, config.keep_fraction, config.keep_k)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, drop: bool = True,
                generator: torch.Generator | None = None) -> TokenDroppingOutput:
        """One MLM forward. labels: (B, T) original ids at masked positions, -100 elsewhere.

        drop=False runs the full model with the same weights (the baseline pass of ScTD).
        """
        layout = self.layout
        layout.check(drop)
        check_batch(input_ids, layout.vocab_size, max_positions(self.mlm), attention_mask=attention_mask,
                    labels=labels, token_type_ids=token_type_ids, type_vocab_size=layout.type_vocab_size)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if labels is None:
            masked = torch.zeros_like(input_ids, dtype=torch.bool)
        else:
            masked = labels.ne(IGNORE_INDEX)

        hidden = layout.embed(input_ids, token_type_ids, position_ids)
        full = layout.context(hidden, attention_mask, position_ids)
        for i in range(self.start):                             # 1. the first layers see every token
            hidden = layout.layer(i, hidden, full)

        kept = None
        if drop:                                                # 2. the middle layers see the kept tokens
            with torch.no_grad():
                kept = self.select(input_ids, attention_mask, masked, generator)
            short = gather_tokens(hidden, kept.indices)
            first = self.start
            if self.config.first_layer_full_kv:                 # kept queries, every token's keys / values
                both = layout.context(short, attention_mask, position_ids, kept=kept, keys=hidden)
                short = layout.layer_full_kv(first, short, hidden, both)
                first += 1
            among_kept = layout.context(short, attention_mask, position_ids, kept=kept)
            for i in range(first, self.end):
                short = layout.layer(i, short, among_kept)
            hidden = scatter_tokens(hidden, short, kept)        # dropped tokens re-enter unchanged
        else:
            for i in range(self.start, self.end):
                hidden = layout.layer(i, hidden, full)
        drop_end_hidden = layout.finish(hidden)

        for i in range(self.end, len(layout.layers)):           # 3. the last layers see every token again
            hidden = layout.layer(i, hidden, full)
        hidden = layout.finish(hidden)

        loss = logits = per_loss = targets = positions = None
        if labels is not None:                                  # 4. MLM head at the masked positions only
            positions = masked.nonzero()
            targets = labels[masked]
            logits = layout.head(hidden[masked])
            per_loss = F.cross_entropy(logits.float(), targets, reduction="none")
            loss = per_loss.mean() if per_loss.numel() else per_loss.sum()  # no masked position: 0, not NaN
        return TokenDroppingOutput(loss=loss, logits=logits, per_prediction_loss=per_loss, target_ids=targets,
                                   masked_positions=positions, last_hidden_state=hidden,
                                   drop_end_hidden_state=drop_end_hidden, kept=kept)

    def update_importance(self, output: TokenDroppingOutput) -> None:
        """Hou's moving average from one step's per-prediction losses (call once per training step)."""
        if output.target_ids is None:
            raise ValueError("output has no predictions: run forward with labels")
        self.importance.update(output.target_ids, output.per_prediction_loss)


# ----------------------------------------------------------------------------------------------------------
# Analytic cost
# ----------------------------------------------------------------------------------------------------------


def layer_flops(q_len: float, kv_len: float, hidden_size: int, intermediate_size: int) -> float:
    """Forward FLOPs of one encoder layer (a multiply-add = 2 FLOPs; LayerNorm, softmax, biases ignored).

    Q and output projections 2*2*q*h^2, K and V projections 2*2*kv*h^2, scores and weighted sum
    2*2*q*kv*h, feed-forward 2*2*q*h*f. With q = kv = n: 8nh^2 + 4n^2h + 4nhf.
    """
    for name, value in (("q_len", q_len), ("kv_len", kv_len), ("hidden_size", hidden_size),
                        ("intermediate_size", intermediate_size)):
        check_number(name, value, low=0)
    h, f = hidden_size, intermediate_size
    return 4 * q_len * h * h + 4 * kv_len * h * h + 4 * q_len * kv_len * h + 4 * q_len * h * f


def flops_ratio(num_layers: int, start_layer: int, end_layer: int, keep_fraction: float, seq_len: int,
                hidden_size: int, intermediate_size: int | None = None, first_layer_full_kv: bool = True,
                num_predictions: int = 0, vocab_size: int = 0) -> float:
    """Forward FLOPs with token dropping / without, for one sequence of seq_len real tokens.

    k = ceil(keep_fraction * seq_len) tokens go through layers [start_layer, end_layer). The MLM head at
    num_predictions masked positions (transform 2mh^2 + projection 2mhV) costs the same in both and
    enters both sides; embeddings are ignored. intermediate_size defaults to 4 * hidden_size.
    first_layer_full_kv: as :class:`TokenDroppingConfig` (default True, Hou's official code: the first
    dropped layer's keys and values cover all seq_len tokens).
    """
    for name, value, low in (("num_layers", num_layers, 1), ("start_layer", start_layer, 0),
                             ("end_layer", end_layer, 0), ("seq_len", seq_len, 1), ("hidden_size", hidden_size, 1),
                             ("intermediate_size", 1 if intermediate_size is None else intermediate_size, 1),
                             ("num_predictions", num_predictions, 0), ("vocab_size", vocab_size, 0)):
        check_int(name, value, low=low)
    check_bool("first_layer_full_kv", first_layer_full_kv)
    TokenDroppingConfig(keep_fraction=keep_fraction, start_layer=start_layer,
                        end_layer=end_layer).layer_range(num_layers)
    n, h = seq_len, hidden_size
    f = 4 * h if intermediate_size is None else intermediate_size
    k = math.ceil(keep_fraction * n - 1e-9)
    head = 2 * num_predictions * h * h + 2 * num_predictions * h * vocab_size
    full_layer = layer_flops(n, n, h, f)
    dropped = end_layer - start_layer
    full = num_layers * full_layer + head
    if first_layer_full_kv:
        middle = layer_flops(k, n, h, f) + (dropped - 1) * layer_flops(k, k, h, f)
    else:
        middle = dropped * layer_flops(k, k, h, f)
    return ((num_layers - dropped) * full_layer + middle + head) / full
