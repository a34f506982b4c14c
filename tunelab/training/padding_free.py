"""Padding-free batches: the rows of a batch laid end to end in one sequence, attention kept inside each row.

    collator = packing.collator()              # rows -> input_ids [1, total], labels, position_ids, row bounds
    with packing.attention(model):             # each row attends to itself only, one fused kernel per row
        trainer.train()

Why: a padded batch is as wide as its longest row, so on data whose lengths vary (10 to 500 tokens) up to
half of every matmul works on padding. Laying the rows end to end computes exactly the real tokens. The
batch is the same rows as before (no rows are merged across batches, unlike bin packing), so the loss and
its normalization are those of the padded batch: tests/test_padding_free.py checks logits, loss and gradients.

Positions restart at 0 in every row (transformers' DataCollatorWithFlattening), which also labels each
row's first token -100 so no row predicts the next one's start. Attention: transformers' SDPA path masks
one attention over the whole sequence (when no KV cache is made: the collator turns it off), which is
right but costs (sum of rows)^2 instead of the sum of squares (~8x the attention of a batch of 8).
`varlen_attention` runs SDPA's causal kernel row by row instead, through the documented AttentionInterface
(the mechanism of transformers' flash-attention varlen path, which needs a GPU and the flash-attn package);
anything else (padded batches, generation) goes to plain SDPA.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface, DataCollatorWithFlattening
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

ATTENTION = "tunelab_varlen"
# The keys a packed batch carries besides input_ids/labels; the sparse-head loss passes them to the decoder.
PACKED_KEYS = ("position_ids", "cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k", "use_cache")


class PackingCollator(DataCollatorWithFlattening):
    """transformers' flattening collator, plus `use_cache=False`: with a KV cache (the model config's default)
    transformers skips its packed-sequence masking, and SDPA would let rows attend to earlier rows."""

    def __call__(self, features, return_tensors=None, separator_id=None):
        return {**super().__call__(features, return_tensors, separator_id), "use_cache": False}


def collator() -> PackingCollator:
    return PackingCollator(return_position_ids=True, separator_id=-100, return_flash_attn_kwargs=True)


def varlen_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    cu_seq_lens_q: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Causal SDPA per row of a packed sequence (rows bounded by cu_seq_lens_q); plain SDPA otherwise."""
    packed = cu_seq_lens_q is not None and query.shape[0] == 1 and query.shape[2] == key.shape[2]
    if not packed:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    bounds = cu_seq_lens_q.tolist()
    rows = [
        sdpa_attention_forward(
            module, query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], None, dropout, scaling, is_causal=True
        )[0]
        for s, e in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    return torch.cat(rows, dim=1), None  # [1, total, heads, head_dim], as sdpa_attention_forward returns


def _register() -> None:
    AttentionInterface.register(ATTENTION, varlen_attention)
    # Padded inputs (evaluation batches, generation) still need SDPA's masks under this name.
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, sdpa_mask)


def supports(model: nn.Module) -> bool:
    """Decoder-only models whose attention runs flash attention (packed natively) or SDPA through
    AttentionInterface (packed by `varlen_attention`)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(inner, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        return False
    implementation = getattr(config, "_attn_implementation", None)
    return native_varlen(implementation) or (
        getattr(inner, "_supports_sdpa", False) and implementation in ("sdpa", ATTENTION)
    )


def native_varlen(implementation: str | None) -> bool:
    """transformers' flash-attention paths read the row bounds themselves (GPU, flash-attn installed)."""
    return implementation is not None and implementation.startswith("flash_attention")


@contextlib.contextmanager
def attention(model: nn.Module) -> Iterator[None]:
    """Run the model with varlen attention inside the block, and its own attention back after it, so nothing
    saved (config.json) or loaded later names an implementation only this process registered. Flash attention
    needs nothing: it is left as it is."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    before = inner.config._attn_implementation
    if native_varlen(before):
        yield
        return
    _register()
    inner.set_attn_implementation(ATTENTION)
    try:
        yield
    finally:
        inner.set_attn_implementation(before)


def decoder_inputs(inputs: dict[str, Any]) -> dict[str, Any]:
    """What the decoder needs from a batch, packed or padded."""
    keys = ("input_ids", "attention_mask", *PACKED_KEYS)
    return {k: inputs[k] for k in keys if inputs.get(k) is not None}
