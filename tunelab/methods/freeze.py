"""`freeze` (feature extraction): early blocks frozen; the last N blocks (and optionally norm / LM head) train."""

from __future__ import annotations

from typing import Any

from torch import nn

from tunelab.config.methods import FreezeMethod
from tunelab.methods.base import MethodSpec, fp32_master_weights, transformer_blocks


def prepare(model: nn.Module, method_cfg: FreezeMethod, tokenizer: Any = None) -> nn.Module:
    blocks = transformer_blocks(model)
    if method_cfg.trainable_layers > len(blocks):
        raise ValueError(f"method.trainable_layers={method_cfg.trainable_layers} but the model has {len(blocks)}")
    model.requires_grad_(False)
    for block in blocks[len(blocks) - method_cfg.trainable_layers :]:
        block.requires_grad_(True)
    head = classifier_head(model)
    if head is not None:
        head.requires_grad_(True)  # a new, randomly initialized head: it must train (feature extraction)
    if method_cfg.train_norm:
        norm = final_norm(model, required=head is None)  # encoders such as BERT norm inside each block only
        if norm is not None:
            norm.requires_grad_(True)
    if method_cfg.train_lm_head:
        # With tied embeddings this also trains the input embeddings: they are the same tensor.
        model.get_output_embeddings().requires_grad_(True)
    return model


def final_norm(model: nn.Module, required: bool = True) -> nn.Module | None:
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    for name in ("norm", "final_layernorm", "ln_f", "final_layer_norm"):
        if isinstance(getattr(decoder, name, None), nn.Module):
            return getattr(decoder, name)
    if not required:
        return None
    raise ValueError(f"cannot find the final norm of {type(model).__name__}; set method.train_norm=false")


def classifier_head(model: nn.Module) -> nn.Module | None:
    """The classification head of a sequence classifier (BERT-style `classifier`, decoder-style `score`)."""
    if not type(model).__name__.endswith("ForSequenceClassification"):
        return None
    for name in ("classifier", "score"):
        if isinstance(getattr(model, name, None), nn.Module):
            return getattr(model, name)
    raise ValueError(f"cannot find the classification head of {type(model).__name__}")


METHOD = MethodSpec(name="freeze", artifact="model", load_dtype=fp32_master_weights, prepare=prepare, capability=40)
