"""peft's LoRA linear layer with a leaner training forward, registered through peft's custom-module hook.

peft computes `base(x) + lora_B(lora_A(x)) * scaling`: the scaling multiplies the [tokens x out] output,
and the sum is one more [tokens x out] pass, each with its own pass again in backward. This layer scales the
[tokens x r] activation instead (r = 16 against out = 576-1,536 on SmolLM2) and lets the base matmul
accumulate onto B's product (`torch.addmm`), so neither full-size elementwise pass exists. It is the same sum in
a different order of rounding; the adapter weights, their names on disk, merging and everything else are
peft's own (this class only overrides `forward`, and falls back to peft's for anything but the plain case).

Mixed precision (a bf16 base under autocast, with the fp32 adapter weights peft keeps for stable updates)
takes the same path: autocast casts the weights per op and the input stays as it comes. peft's forward there
casts the input up to the adapter's fp32 and autocast casts it back down for the matmul: two passes over
[tokens x in] per layer, and a private bf16 copy of the input saved for A's gradient where this layer saves
the tensor the base matmul already has (q, k and v share one; gate and up one).
"""

from __future__ import annotations

from typing import Any

import torch
from peft.tuners.lora import Linear as PeftLoraLinear
from torch import nn
from torch.nn import functional as F


class AddmmLoraLinear(PeftLoraLinear):
    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        adapter = self._plain_adapter(x, args, kwargs)
        if adapter is None:
            return super().forward(x, *args, **kwargs)
        rows = x.reshape(-1, x.shape[-1])
        base = self.base_layer
        down = F.linear(rows, self.lora_A[adapter].weight) * self.scaling[adapter]
        lora = F.linear(down, self.lora_B[adapter].weight)
        if base.bias is not None:
            lora = lora + base.bias
        # Out of place, with the big matmul last: the layer's output is that op's own, which selective
        # checkpointing keeps (tunelab.training.activation_checkpointing); an in-place add onto a kept tensor
        # would change it behind the checkpoint's back. Against an in-place addmm_ onto the base output, forward +
        # backward of one batch, median of 7 alternating in one process: wide rows 15.50 vs 15.19 s, demo rows
        # 4.53 vs 4.59 s.
        result = torch.addmm(lora, rows, base.weight.t())
        return result.view(*x.shape[:-1], result.shape[-1])

    def _plain_adapter(self, x: torch.Tensor, args: tuple, kwargs: dict) -> str | None:
        """The one active adapter when it is plain LoRA on an unquantized nn.Linear and the three matmuls run in
        one dtype (x's and the weights', or autocast's), else None."""
        if args or any(value is not None for value in kwargs.values()):
            return None
        adapter = self.lean_adapter()
        if adapter is None:
            return None
        weights = (self.base_layer.weight, self.lora_A[adapter].weight, self.lora_B[adapter].weight)
        one_dtype = torch.is_autocast_enabled(x.device.type) or all(w.dtype == x.dtype for w in weights)
        return adapter if one_dtype else None

    def lean_adapter(self) -> str | None:
        """The adapter this layer's forward handles whatever the input (the planner asks too), else None."""
        if self.disable_adapters or self.merged or self.fan_in_fan_out or len(self.active_adapters) != 1:
            return None
        adapter = self.active_adapters[0]
        if adapter not in self.lora_A or adapter in self.lora_variant:
            return None
        if not isinstance(self.lora_dropout[adapter], nn.Identity) or self.lora_B[adapter].bias is not None:
            return None
        base = self.base_layer
        # accelerate's offloading hook (`_hf_hook`) moves the weight in around base.forward, which is not called here
        plain_base = type(base) is nn.Linear and not hasattr(base, "_hf_hook")
        return adapter if plain_base else None
