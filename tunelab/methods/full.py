"""`full`: every weight trains. The most capable and the most memory-hungry (weights + grads + 2 Adam states)."""

from __future__ import annotations

from typing import Any

from torch import nn

from tunelab.methods.base import MethodSpec, fp32_master_weights


def prepare(model: nn.Module, method_cfg: Any, tokenizer: Any = None) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(True)
    return model


METHOD = MethodSpec(
    name="full",
    artifact="model",
    load_dtype=fp32_master_weights,
    prepare=prepare,
    capability=0,
    trains_new_tokens=True,
)
