"""`lora`: low-rank updates through peft on a frozen base; rsLoRA and DoRA are switches.

The frozen base loads in the compute dtype (bf16 where native): it is never updated, so it needs no
fp32 copy, and the matmuls read half the bytes. peft keeps the adapter weights in fp32.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from tunelab.config.methods import LoraOptions
from tunelab.methods.base import MethodSpec, frozen_base_dtype, peft_task_type

if TYPE_CHECKING:
    from peft import LoraConfig


def peft_config(method_cfg: LoraOptions, task_type: str = "CAUSAL_LM") -> LoraConfig:
    # Imported here, not at the top: peft (and bitsandbytes behind it) takes ~4 s to import, which
    # `tunelab generate` on a plain model or a merged run must not pay.
    from peft import LoraConfig

    return LoraConfig(
        r=method_cfg.r,
        lora_alpha=method_cfg.alpha,
        lora_dropout=method_cfg.dropout,
        target_modules=method_cfg.target_modules,
        use_rslora=method_cfg.use_rslora,
        use_dora=method_cfg.use_dora,
        task_type=task_type,
    )


def prepare(model: nn.Module, method_cfg: LoraOptions, tokenizer: Any = None) -> nn.Module:
    from peft import get_peft_model

    from tunelab.methods.lora_linear import AddmmLoraLinear

    config = peft_config(method_cfg, peft_task_type(model))
    # peft's documented (experimental) hook for custom LoRA layers. It matches subclasses too, and quantized
    # layers (bitsandbytes', GPTQ's) subclass nn.Linear and must keep peft's own layers for them: so only on
    # a model whose linear layers are all plain (never for qlora, which does not come here).
    if not any(isinstance(m, nn.Linear) and type(m) is not nn.Linear for m in model.modules()):
        config._register_custom_module({nn.Linear: AddmmLoraLinear})
    return get_peft_model(model, config)


def without_dora(method_cfg: LoraOptions) -> bool:
    # peft decodes a batch with one adapter per row for LoRA, not for DoRA ("Cannot pass `adapter_names`
    # when DoRA is enabled", peft 0.21).
    return not method_cfg.use_dora


METHOD = MethodSpec(
    name="lora",
    artifact="adapter",
    load_dtype=frozen_base_dtype,
    prepare=prepare,
    capability=10,
    mergeable=True,
    combinable=True,
    mixed_batches=without_dora,
    trains_new_tokens=True,
)
