"""The training loss computed only where it is trained: the LM head runs on trained positions alone.

Why: in instruction tuning most tokens are prompt (the demo: ~200 of ~220 per row), yet a causal LM
computes logits for every position, rows x 49,152 floats for SmolLM2, and backpropagates through
them. The LM head is ~21% of a LoRA step's FLOPs on the built-in model and its fp32 logits dominate
activation memory. Running the decoder, then the head on the hidden states of trained positions
only, gives the same loss and gradients (tests/test_loss.py) for less work.

Only for architectures whose logits are a plain linear map of the last hidden state; models with
logit scaling or soft-capping keep the model's own loss (`supports_sparse_head`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tunelab import packing

# Causal LMs whose forward is `lm_head(decoder(...).last_hidden_state)` with nothing after the head.
PLAIN_HEAD_MODEL_TYPES = {"llama", "mistral", "qwen2", "qwen3", "smollm3", "phi3", "olmo2"}
IGNORE = -100


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model under a peft wrapper (peft injects its layers in place, so they still run)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def supports_sparse_head(model: nn.Module) -> bool:
    inner = unwrap(model)
    config = getattr(inner, "config", None)
    return (
        getattr(config, "model_type", None) in PLAIN_HEAD_MODEL_TYPES
        and hasattr(inner, "get_decoder")
        and isinstance(inner.get_output_embeddings(), nn.Linear)
    )


def trained_positions_loss(model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
    """Next-token cross-entropy over trained tokens, summed and divided like transformers' ForCausalLMLoss:
    by `num_items_in_batch` (all trained tokens of the accumulated batch) when given, else by this batch's."""
    inner = unwrap(model)
    labels = inputs["labels"]
    hidden = inner.get_decoder()(**packing.decoder_inputs(inputs)).last_hidden_state  # padded or packed
    # Position t predicts token t+1: shift the labels left and keep the positions whose target is trained.
    targets = F.pad(labels, (0, 1), value=IGNORE)[:, 1:]
    keep = targets != IGNORE
    logits = inner.get_output_embeddings()(hidden[keep]).float()  # fp32 softmax, as ForCausalLMLoss upcasts
    loss = F.cross_entropy(logits, targets[keep], reduction="sum")
    divisor = num_items_in_batch if num_items_in_batch is not None else keep.sum()
    if torch.is_tensor(divisor):
        divisor = divisor.to(loss.device)
    return loss / divisor
