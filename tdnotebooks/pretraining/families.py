"""Encoder families for token dropping: where a masked LM keeps its parts, and how its layers run on all
tokens or on the kept ones only.

:class:`~tdnotebooks.pretraining.token_dropping.TokenDroppingBert` (Hou et al. 2022; ScTD, Zhong et al. 2023,
runs the same two passes) asks one layout object for everything that depends on the architecture:

- :class:`BertLayout`: BERT, RoBERTa, XLM-RoBERTa, ELECTRA (the generator). Absolute position embeddings are
  added once, at the input, so a kept token carries its position into the dropped layers by itself; every
  layer attends to every (kept) token.
- :class:`ModernBertLayout`: ModernBERT (``ModernBertForMaskedLM``). Rotary positions enter every layer, and
  its local layers (``config.layer_types``: one global layer every ``global_attn_every_n_layers``) attend
  only within ``local_attention // 2`` positions either side. In the dropped layers, the kept tokens keep
  their ORIGINAL rotary positions (cos/sin from the original position ids at the kept indices, not
  0..k-1), and a local layer's window is built from the kept tokens' original positions: a kept token
  attends to the kept tokens whose original positions lie within the window. This is exact, not an
  approximation: it is what the full model's layer computes when the dropped tokens are left out of the
  keys (global layers: all kept tokens). The model is pre-LayerNorm; :meth:`ModernBertLayout.finish`
  applies its ``final_norm`` (the MLM head reads normalised states).

A layout answers: ``embed`` (the first layer's input), ``context`` (masks, and for ModernBERT the rotary
cos/sin, of one pass: all tokens; the kept tokens; or the kept tokens as queries over all tokens as keys),
``layer`` and ``layer_full_kv`` (run layer i), ``finish`` and ``head``. Only the eager and sdpa attention
implementations are supported in ModernBERT's dropped layers (their masks are built here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional as F

if TYPE_CHECKING:
    from tdnotebooks.pretraining.token_dropping import KeptTokens

__all__ = ["EncoderLayout", "BertLayout", "ModernBertContext", "ModernBertLayout", "LAYOUTS", "layout_for",
           "layer_with_full_kv"]


class EncoderLayout:
    """What token dropping needs from one family of masked LMs (see the module docstring).

    ``context(queries, attention_mask, position_ids, kept=None, keys=None)`` describes one pass: kept=None,
    every token (queries (B, T, H)); kept given, the kept tokens (queries (B, K, H)) attending to each other;
    kept and keys (B, T, H) given, the kept tokens attending to every token. What it returns is opaque to the
    caller and only handed back to ``layer`` / ``layer_full_kv``.
    """

    name = ""
    model_types: tuple[str, ...] = ()
    parts = ""                          # where the parts are, for error messages

    def __init__(self, mlm: nn.Module, encoder: nn.Module, head: nn.Module) -> None:
        self.mlm, self.encoder, self.head = mlm, encoder, head

    @classmethod
    def find(cls, mlm: nn.Module) -> EncoderLayout | None:
        """The layout of ``mlm`` if it has this family's parts, else None."""
        raise NotImplementedError

    @property
    def layers(self) -> nn.ModuleList:
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        return int(self.mlm.get_input_embeddings().num_embeddings)

    @property
    def type_vocab_size(self) -> int | None:
        return getattr(self.mlm.config, "type_vocab_size", None)

    def check(self, drop: bool) -> None:
        """Raise a ValueError, before any computation, if this model cannot run a pass (drop: a dropped one)."""

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None,
              position_ids: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def context(self, queries: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor | None,
                kept: KeptTokens | None = None, keys: torch.Tensor | None = None) -> Any:
        raise NotImplementedError

    def layer(self, index: int, hidden: torch.Tensor, context: Any) -> torch.Tensor:
        raise NotImplementedError

    def layer_full_kv(self, index: int, kept: torch.Tensor, full: torch.Tensor, context: Any) -> torch.Tensor:
        raise NotImplementedError

    def finish(self, hidden: torch.Tensor) -> torch.Tensor:
        """The last layer's output as the MLM head reads it (identity for post-LayerNorm models)."""
        return hidden


# ----------------------------------------------------------------------------------------------------------
# BERT, RoBERTa, XLM-RoBERTa, ELECTRA
# ----------------------------------------------------------------------------------------------------------


def layer_with_full_kv(layer: nn.Module, kept: torch.Tensor, full: torch.Tensor, mask: Any) -> torch.Tensor:
    """A ``BertLayer`` computed for the ``kept`` rows only, attending to all ``full`` rows.

    Same weights and the same operations as ``BertLayer.forward`` (self-attention, residual + LayerNorm,
    feed-forward), with the queries taken from ``kept`` and the keys/values from ``full``.
    """
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.bert.modeling_bert import eager_attention_forward
    from transformers.pytorch_utils import apply_chunking_to_forward

    attn = layer.attention.self
    heads = lambda x: x.view(*x.shape[:-1], -1, attn.attention_head_size).transpose(1, 2)  # noqa: E731
    query, key, value = heads(attn.query(kept)), heads(attn.key(full)), heads(attn.value(full))
    implementation = attn.config._attn_implementation
    interface = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
    context, _ = interface(attn, query, key, value, mask, dropout=attn.dropout.p if attn.training else 0.0,
                           scaling=attn.scaling)
    attention_output = layer.attention.output(context.reshape(*kept.shape[:-1], -1).contiguous(), kept)
    return apply_chunking_to_forward(layer.feed_forward_chunk, layer.chunk_size_feed_forward,
                                     layer.seq_len_dim, attention_output)


class BertLayout(EncoderLayout):
    """BERT-style models: ``<prefix>.embeddings``, ``<prefix>.encoder.layer``, post-LayerNorm layers.

    Heads: BERT's ``cls``, RoBERTa's ``lm_head``, ELECTRA's generator ``generator_predictions`` then
    ``generator_lm_head`` (chained here, not registered: the state dict keeps the model's own names).
    The context of a pass is the attention mask as ``BertModel`` builds it (eager: additive float, sdpa: bool
    or None); a kept pass masks the filler slots (``kept.valid``).
    """

    name = "BERT-style"
    model_types = ("bert", "roberta", "xlm-roberta", "electra")
    parts = (".bert.embeddings, .bert.encoder.layer, an MLM head .cls; RoBERTa: .roberta, .lm_head; ELECTRA: "
             ".electra, .generator_lm_head")

    @classmethod
    def find(cls, mlm: nn.Module) -> BertLayout | None:
        base = getattr(mlm, str(getattr(mlm, "base_model_prefix", "")), None)
        if not (hasattr(base, "embeddings") and hasattr(getattr(base, "encoder", None), "layer")):
            return None
        head = getattr(mlm, "cls", None)
        head = getattr(mlm, "lm_head", None) if head is None else head
        if head is None and isinstance(getattr(mlm, "generator_predictions", None), nn.Module):
            head = nn.Sequential(mlm.generator_predictions, mlm.generator_lm_head)
        if not isinstance(head, nn.Module) or not hasattr(mlm, "config"):
            return None
        return cls(mlm, base, head)

    @property
    def layers(self) -> nn.ModuleList:
        return self.encoder.encoder.layer

    @property
    def vocab_size(self) -> int:
        return int(self.encoder.embeddings.word_embeddings.num_embeddings)

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None,
              position_ids: torch.Tensor | None) -> torch.Tensor:
        """The embedding output as the first layer sees it (ELECTRA projects it to the hidden size)."""
        hidden = self.encoder.embeddings(input_ids=input_ids, token_type_ids=token_type_ids,
                                         position_ids=position_ids)
        project = getattr(self.encoder, "embeddings_project", None)
        return hidden if project is None else project(hidden)

    def context(self, queries: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor | None,
                kept: KeptTokens | None = None, keys: torch.Tensor | None = None) -> Any:
        from transformers.masking_utils import create_bidirectional_mask

        if kept is not None and keys is None:
            attention_mask = kept.valid                 # the kept tokens attend to each other, not to fillers
        return create_bidirectional_mask(config=self.mlm.config, inputs_embeds=queries,
                                         attention_mask=attention_mask, encoder_hidden_states=keys)

    def layer(self, index: int, hidden: torch.Tensor, context: Any) -> torch.Tensor:
        return self.layers[index](hidden, context)

    def layer_full_kv(self, index: int, kept: torch.Tensor, full: torch.Tensor, context: Any) -> torch.Tensor:
        return layer_with_full_kv(self.layers[index], kept, full, context)


# ----------------------------------------------------------------------------------------------------------
# ModernBERT
# ----------------------------------------------------------------------------------------------------------


@dataclass
class ModernBertContext:
    """One pass of ModernBERT: per attention type (``"full_attention"``, ``"sliding_attention"``) the mask
    and the (cos, sin) of the queries; ``key_rotary``: the keys' (cos, sin) when they differ (full-kv pass)."""

    masks: dict[str, Any]
    rotary: dict[str, tuple[torch.Tensor, torch.Tensor]]
    key_rotary: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None


MODERNBERT_ATTENTION = ("eager", "sdpa")


class ModernBertLayout(EncoderLayout):
    """ModernBERT: ``model.embeddings``, ``model.layers``, ``model.final_norm``, ``model.rotary_emb``; head
    ``head`` then ``decoder``. Pre-LayerNorm layers with rotary positions, global and local attention.

    Full passes build their masks and rotary cos/sin exactly as ``ModernBertModel.forward`` does. Kept
    passes: cos/sin from the ORIGINAL position ids gathered at the kept indices; masks built here from the
    kept tokens' original sequence positions (a local layer: |i - j| <= ``config.sliding_window`` =
    ``local_attention // 2``, as Hugging Face's bidirectional sliding-window mask), so the result is exactly
    the full model's layer with the dropped tokens removed from the keys. Filler slots attend to themselves
    only (no fully masked row); their output is never written back. Eager and sdpa attention only.
    ``token_type_ids`` are refused (ModernBERT has no token types).
    """

    name = "ModernBERT"
    model_types = ("modernbert",)
    parts = ".model.embeddings, .model.layers, .model.final_norm, .model.rotary_emb, .head, .decoder"

    @classmethod
    def find(cls, mlm: nn.Module) -> ModernBertLayout | None:
        base = getattr(mlm, "model", None)
        if not all(isinstance(getattr(base, name, None), nn.Module)
                   for name in ("embeddings", "layers", "final_norm", "rotary_emb")):
            return None
        if not (isinstance(getattr(mlm, "head", None), nn.Module)
                and isinstance(getattr(mlm, "decoder", None), nn.Module) and hasattr(mlm, "config")):
            return None
        return cls(mlm, base, nn.Sequential(mlm.head, mlm.decoder))

    @property
    def layers(self) -> nn.ModuleList:
        return self.encoder.layers

    def check(self, drop: bool) -> None:
        implementation = self.mlm.config._attn_implementation
        if drop and implementation not in MODERNBERT_ATTENTION:
            raise ValueError(f"token dropping with ModernBERT supports attn_implementation "
                             f"{' or '.join(map(repr, MODERNBERT_ATTENTION))} in the dropped layers, got "
                             f"{implementation!r} (load the model with attn_implementation='sdpa')")

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None,
              position_ids: torch.Tensor | None) -> torch.Tensor:
        if token_type_ids is not None:
            raise ValueError("ModernBERT has no token type embeddings: pass token_type_ids=None")
        return self.encoder.embeddings(input_ids=input_ids)

    def finish(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.encoder.final_norm(hidden)

    def _rotary(self, x: torch.Tensor, position_ids: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {kind: self.encoder.rotary_emb(x, position_ids, kind) for kind in set(self.mlm.config.layer_types)}

    def context(self, queries: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor | None,
                kept: KeptTokens | None = None, keys: torch.Tensor | None = None) -> ModernBertContext:
        config = self.mlm.config
        length = attention_mask.shape[1]
        if position_ids is None:                        # as ModernBertModel: 0..T-1 for every row
            position_ids = torch.arange(length, device=queries.device)[None]
        if kept is None:
            from transformers.masking_utils import (
                create_bidirectional_mask,
                create_bidirectional_sliding_window_mask,
            )

            kwargs = {"config": config, "inputs_embeds": queries, "attention_mask": attention_mask}
            masks = {"full_attention": create_bidirectional_mask(**kwargs),
                     "sliding_attention": create_bidirectional_sliding_window_mask(**kwargs)}
            return ModernBertContext(masks, self._rotary(queries, position_ids))

        self.check(drop=True)
        implementation = config._attn_implementation
        batch = queries.shape[0]
        query_index = kept.indices                                          # original positions (B, K)
        kept_positions = position_ids.expand(batch, -1).gather(1, query_index)
        if keys is None:
            key_index, key_real = kept.indices, kept.valid
        else:
            key_index = torch.arange(length, device=queries.device)[None].expand(batch, -1)
            key_real = attention_mask.bool()
        itself = query_index[:, :, None] == key_index[:, None, :]
        near = (query_index[:, :, None] - key_index[:, None, :]).abs() <= config.sliding_window
        allowed = {"full_attention": key_real[:, None, :] | itself,
                   "sliding_attention": (key_real[:, None, :] & near) | itself}
        masks = {kind: _attention_mask(a, implementation, queries.dtype) for kind, a in allowed.items()}
        key_rotary = None if keys is None else self._rotary(keys, position_ids)
        return ModernBertContext(masks, self._rotary(queries, kept_positions), key_rotary)

    def layer(self, index: int, hidden: torch.Tensor, context: ModernBertContext) -> torch.Tensor:
        layer = self.layers[index]
        kind = layer.attention_type
        return layer(hidden, attention_mask=context.masks[kind], position_embeddings=context.rotary[kind])

    def layer_full_kv(self, index: int, kept: torch.Tensor, full: torch.Tensor,
                      context: ModernBertContext) -> torch.Tensor:
        """``ModernBertEncoderLayer`` for the ``kept`` rows only (queries at their original rotary positions),
        attending to all ``full`` rows (keys at theirs); same weights and operations as its ``forward``."""
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
        from transformers.models.modernbert.modeling_modernbert import (
            apply_rotary_pos_emb,
            eager_attention_forward,
        )

        layer = self.layers[index]
        attn, kind = layer.attn, layer.attention_type
        width = attn.Wo.in_features                     # heads x head_dim; Wqkv stacks q, k, v in this order
        weight, bias = attn.Wqkv.weight, attn.Wqkv.bias

        def project(x: torch.Tensor, part: int) -> torch.Tensor:
            rows = slice(part * width, (part + 1) * width)
            out = F.linear(x, weight[rows], None if bias is None else bias[rows])
            return out.view(*x.shape[:-1], -1, attn.head_dim).transpose(1, 2)

        q_in, kv_in = layer.attn_norm(kept), layer.attn_norm(full)
        query, key, value = project(q_in, 0), project(kv_in, 1), project(kv_in, 2)
        query = apply_rotary_pos_emb(query, query, *context.rotary[kind], unsqueeze_dim=1)[0]
        key = apply_rotary_pos_emb(key, key, *context.key_rotary[kind], unsqueeze_dim=1)[0]
        interface = ALL_ATTENTION_FUNCTIONS.get_interface(self.mlm.config._attn_implementation,
                                                          eager_attention_forward)
        out, _ = interface(attn, query, key, value, context.masks[kind],
                           dropout=attn.attention_dropout if attn.training else 0.0, scaling=attn.head_dim ** -0.5)
        hidden = kept + attn.out_drop(attn.Wo(out.reshape(*kept.shape[:-1], -1).contiguous()))
        return hidden + layer.mlp(layer.mlp_norm(hidden))


def _attention_mask(allowed: torch.Tensor, implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """(B, Q, K) bool, True = attend -> the 4D mask of ``implementation`` (sdpa: bool; eager: additive float)."""
    allowed = allowed[:, None]
    if implementation == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed,
                                                                                        torch.finfo(dtype).min)


# ----------------------------------------------------------------------------------------------------------
# Which layout
# ----------------------------------------------------------------------------------------------------------


LAYOUTS: tuple[type[EncoderLayout], ...] = (BertLayout, ModernBertLayout)


def layout_for(mlm: nn.Module) -> EncoderLayout | None:
    """The layout of ``mlm`` (the first of :data:`LAYOUTS` whose parts it has), None if none fits."""
    for layout in LAYOUTS:
        found = layout.find(mlm)
        if found is not None:
            return found
    return None
