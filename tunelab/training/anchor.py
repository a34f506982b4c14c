"""The fine-tune's distance from the base model, and moving it back: two mitigations of forgetting.

    anchor = BaseAnchor.of(model)  # after the method is applied, before the first step
    loss = loss + weight * anchor.squared_distance(model)  # forgetting.l2_to_base: L2-SP
    anchor.move_back(model, 0.3)  # forgetting.merge_back: weights = base + 0.7 x (fine-tuned - base)

L2-SP (Li et al., 2018) is weight decay toward the starting weights instead of toward zero; merging part of
the way back is WiSE-FT's interpolation (Wortsman et al., 2022). Neither is in transformers, peft or TRL, so
they are written here, on the two forms a change to the base takes in tunelab:

- LoRA: each adapted layer adds delta = scaling x B @ A. Its squared Frobenius norm is computed from r x r
  products, sum((B^T B) * (A A^T)) x scaling^2, never the [out x in] delta itself (r = 16 against 576 x 1,536 on
  SmolLM2). Moving back scales B, which scales the delta exactly.
- full and freeze: the trainable weights themselves; the anchor keeps a copy of their starting values.

Other methods (DoRA's magnitudes, IA3's scales, soft prompts, bottleneck adapters) have no such simple base to
go back to, and are refused before the model loads (ANCHORED_METHODS).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

ANCHORED_METHODS = ("lora", "qlora", "full", "freeze")


def check(method_name: str, use_dora: bool) -> str | None:
    """Why forgetting.l2_to_base / merge_back cannot run with this method, or None."""
    if method_name not in ANCHORED_METHODS or use_dora:
        what = "lora with use_dora" if use_dora else method_name
        return f"method {what} has no plain change to the base; use one of {', '.join(ANCHORED_METHODS)} (DoRA off)"
    return None


@dataclass
class LoraPair:
    a: nn.Parameter  # r x in
    b: nn.Parameter  # out x r
    scaling: float


@dataclass
class BaseAnchor:
    lora: bool = False  # the change is the model's LoRA pairs, found afresh each time (a resume reloads them)
    start: dict[str, torch.Tensor] = field(default_factory=dict)  # full/freeze: trainable weights at the start

    @classmethod
    def of(cls, model: nn.Module) -> BaseAnchor:
        """The anchor of a model as training starts: its LoRA pairs, or else a copy of its trainable weights."""
        if any(True for _ in lora_pairs(model)):
            return cls(lora=True)
        return cls(start={n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})

    def squared_distance(self, model: nn.Module) -> torch.Tensor:
        """sum over trained weights of ||W - W_base||^2, differentiable."""
        if self.lora:
            return sum(lora_delta_norm2(pair) for pair in lora_pairs(model))
        params = dict(model.named_parameters())
        return sum(((params[n].float() - w.float()) ** 2).sum() for n, w in self.start.items())

    @torch.no_grad()
    def move_back(self, model: nn.Module, share: float) -> None:
        """Move the weights `share` of the way back to the base (0: unchanged, 1: the base itself)."""
        if self.lora:
            for pair in lora_pairs(model):
                pair.b.mul_(1.0 - share)
            return
        params = dict(model.named_parameters())
        for name, start in self.start.items():
            params[name].lerp_(start.to(params[name].dtype), share)


def lora_pairs(model: nn.Module):
    """Each active LoRA adapter's (A, B, scaling) in a peft model."""
    for module in model.modules():
        if not (hasattr(module, "lora_A") and hasattr(module, "lora_B") and hasattr(module, "scaling")):
            continue
        for adapter in module.active_adapters:
            if adapter in module.lora_A:
                a, b = module.lora_A[adapter].weight, module.lora_B[adapter].weight
                yield LoraPair(a, b, float(module.scaling[adapter]))


def lora_delta_norm2(pair: LoraPair) -> torch.Tensor:
    """||scaling x B @ A||_F^2 = scaling^2 x sum((B^T B) * (A A^T)): trace identity, r x r work only."""
    a, b = pair.a.float(), pair.b.float()
    return (b.t() @ b * (a @ a.t())).sum() * pair.scaling**2
