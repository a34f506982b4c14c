"""`ia3`: learned vectors that rescale keys, values and the feed-forward input (peft). Tiny: on SmolLM2-135M
about 0.07% of the parameters; mergeable into the base weights."""

from __future__ import annotations

from typing import Any

from torch import nn

from tunelab.config.methods import Ia3Method
from tunelab.methods.base import MethodSpec, frozen_base_dtype, peft_task_type


def prepare(model: nn.Module, method_cfg: Ia3Method, tokenizer: Any = None) -> nn.Module:
    # Imported here, not at the top: peft (and bitsandbytes behind it) takes ~4 s to import, which
    # `tunelab generate` on a plain model or a merged run must not pay.
    from peft import IA3Config, get_peft_model

    config = IA3Config(
        target_modules=method_cfg.target_modules,
        feedforward_modules=method_cfg.feedforward_modules,
        task_type=peft_task_type(model),
    )
    return get_peft_model(model, config)


METHOD = MethodSpec(
    name="ia3", artifact="adapter", load_dtype=frozen_base_dtype, prepare=prepare, capability=50, mergeable=True
)
