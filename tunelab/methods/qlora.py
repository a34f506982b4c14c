"""`qlora`: LoRA on a base quantized by bitsandbytes as it loads (4-bit NF4/FP4 or 8-bit).

The base's linear weights are stored quantized (SmolLM2-135M: ~166 MB in 4-bit against ~540 MB in fp32)
and dequantized block by block inside each matmul; the LoRA weights stay in fp32. bitsandbytes runs
on CPU as well as CUDA, so this works on the machine at hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunelab.config.methods import QLoraMethod
from tunelab.errors import ConfigError
from tunelab.methods import lora
from tunelab.methods.base import MethodSpec, Variant, attach_peft, frozen_base_dtype, peft_task_type


def quantization_config(method_cfg: QLoraMethod, compute_dtype: torch.dtype) -> Any:
    try:
        import bitsandbytes  # noqa: F401  (a clear error here beats one deep inside from_pretrained)
        from transformers import BitsAndBytesConfig
    except ImportError as err:
        raise ConfigError(
            "method qlora needs the bitsandbytes package", ["pip install bitsandbytes (CPU and CUDA wheels exist)"]
        ) from err
    if method_cfg.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    chosen = compute_dtype if method_cfg.compute_dtype == "auto" else getattr(torch, method_cfg.compute_dtype)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=method_cfg.quant_type,
        bnb_4bit_use_double_quant=method_cfg.double_quant,
        bnb_4bit_compute_dtype=chosen,
    )


def load_options(method_cfg: QLoraMethod, compute_dtype: torch.dtype) -> dict[str, Any]:
    return {"quantization_config": quantization_config(method_cfg, compute_dtype)}


def keep_one_layout(model: nn.Module) -> nn.Module:
    """Keep 4-bit weights in one memory layout. bitsandbytes 0.50 re-lays them out on CPU for its AVX512-bf16
    inference kernel at the first eval-mode forward, and every state_dict() (each checkpoint save, each
    adapter save) lays them back, lossily: afterwards the same model gives other outputs (measured on the
    tiny test model: max logit change 0.73 after one eval/save cycle; tests/test_methods_contract.py).
    Training alternates evaluation and saving, so the re-layout is switched off per module; the training
    path never used it."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    return model


def attach(model: nn.Module, adapter_dir: Path, name: str) -> nn.Module:
    return attach_peft(keep_one_layout(model), adapter_dir, name)


def prepare(model: nn.Module, method_cfg: QLoraMethod, tokenizer: Any = None) -> nn.Module:
    # Imported here, not at the top: peft (and bitsandbytes behind it) takes ~4 s to import, which
    # `tunelab generate` on a plain model or a merged run must not pay.
    from peft import get_peft_model, prepare_model_for_kbit_training

    keep_one_layout(model)
    # Casts the small non-quantized weights (norms) to fp32 for stable training. Gradient checkpointing
    # (peft's default here) costs a third of a step; it is for when memory is short, not by default.
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return get_peft_model(model, lora.peft_config(method_cfg, peft_task_type(model)))


METHOD = MethodSpec(
    name="qlora",
    artifact="adapter",
    load_dtype=frozen_base_dtype,
    prepare=prepare,
    capability=lora.METHOD.capability + 10,  # lora's updates on a quantized base: a little quality lost
    load_options=load_options,
    attach=attach,
    mergeable=True,
    combinable=True,
    mixed_batches=lora.without_dora,
    quantized_linears=True,
    trains_new_tokens=True,
    requires=("bitsandbytes",),
    plan_variants=(
        Variant("qlora (4-bit)", {"bits": 4}, capability_cost=1),
        Variant("qlora (8-bit)", {"bits": 8}),
    ),
)
