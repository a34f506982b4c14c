"""The shape every method shares, and helpers they use."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn


@dataclass(frozen=True)
class MethodSpec:
    name: str
    # "adapter": only the adapter is saved and the base stays untouched; "model": a whole model is saved.
    artifact: Literal["adapter", "model"]
    # Given the compute dtype (bf16 on hardware that runs it natively), the dtype the base loads in.
    # Weights that train stay fp32 (master weights); frozen ones may be stored in the compute dtype.
    load_dtype: Callable[[torch.dtype], torch.dtype]
    # Make the loaded model trainable as the method says; returns the model to train.
    prepare: Callable[[nn.Module, Any], nn.Module]


def fp32_master_weights(compute_dtype: torch.dtype) -> torch.dtype:
    """Methods that update base weights keep them in fp32: bf16 updates of small steps round to nothing."""
    return torch.float32


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, each shared tensor counted once."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks: the ModuleList as long as config.num_hidden_layers."""
    n_layers = getattr(model.config, "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers:
            return module
    raise ValueError(f"cannot find the {n_layers} transformer blocks of {type(model).__name__}")
