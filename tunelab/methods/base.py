"""The shape every method shares, and helpers they use."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn


def no_load_options(method_cfg: Any, compute_dtype: torch.dtype) -> dict[str, Any]:
    return {}


def save_pretrained(model: nn.Module, directory: Path) -> None:
    """A peft adapter (adapter_model.safetensors + adapter_config.json) or a whole transformers model."""
    from tunelab.methods.new_tokens import trains_token_rows

    # An adapter that trains new token rows (data.new_tokens) holds them itself; peft would also save the whole
    # grown embedding matrix because the vocabulary changed (SmolLM2: 28M more values), none of it trained.
    extra = {"save_embedding_layers": False} if trains_token_rows(model) else {}
    model.save_pretrained(directory, safe_serialization=True, **extra)


def attach_peft(model: nn.Module, adapter_dir: Path, name: str) -> nn.Module:
    """Load a saved peft adapter onto `model` under `name`; a PeftModel gets it as one more adapter."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model.load_adapter(str(adapter_dir), adapter_name=name)
        return model
    return PeftModel.from_pretrained(model, str(adapter_dir), adapter_name=name)


def activate_peft(model: nn.Module, name: str) -> None:
    model.set_adapter(name)


def disable_peft(model: nn.Module) -> AbstractContextManager[None]:
    return model.disable_adapter()


def no_virtual_tokens(method_cfg: Any) -> int:
    return 0


def never(method_cfg: Any) -> bool:
    return False


@dataclass(frozen=True)
class Variant:
    """A setting `tunelab plan` estimates a method under, as a row of its own (qlora: each base precision)."""

    label: str
    options: dict[str, Any] = field(hash=False)  # fixed on top of the method's options (a dict: kept out of hashes)
    # How far below the method's capability this setting ranks: it costs quality (a 4-bit base against 8-bit).
    capability_cost: int = 0


@dataclass(frozen=True)
class MethodSpec:
    name: str
    # "adapter": only the adapter is saved and the base stays untouched; "model": a whole model is saved.
    artifact: Literal["adapter", "model"]
    # Given the compute dtype (bf16 on hardware that runs it natively), the dtype the base loads in.
    # Weights that train stay fp32 (master weights); frozen ones may be stored in the compute dtype.
    load_dtype: Callable[[torch.dtype], torch.dtype]
    # Make the loaded model trainable as the method says: (model, method config, tokenizer) -> model to train.
    prepare: Callable[[nn.Module, Any, Any], nn.Module]
    # Its rank when `tunelab plan` recommends a method (the most capable that fits; tunelab.planning.recommend):
    # lowest first, roughly how much of the model's behaviour it can change, from the PEFT literature. No default,
    # so no method is left out of the recommendation; steps of 10 leave room for methods in between.
    capability: int
    # Extra `from_pretrained` options for the base (a quantization_config for qlora).
    load_options: Callable[[Any, torch.dtype], dict[str, Any]] = no_load_options
    # Write the trained artifact (adapter or model) into a directory.
    save: Callable[[nn.Module, Path], None] = save_pretrained
    # Put a saved adapter onto a loaded base under a name (adapter methods only).
    attach: Callable[[nn.Module, Path, str], nn.Module] = attach_peft
    # Make one of the adapters attached to a base the active one, by name (`tunelab generate RUN1,RUN2 --adapter`);
    # peft's set_adapter, or the method's own where the adapters are not peft's.
    activate: Callable[[nn.Module, str], None] = activate_peft
    # `with spec.disable(model):` the base model's own outputs, the adapter still attached (adapter methods only).
    disable: Callable[[nn.Module], AbstractContextManager[None]] = disable_peft
    # The adapter can be folded into the base weights (`tunelab merge`, faster generation).
    mergeable: bool = False
    # Adapters of several runs can be summed into one new adapter (`tunelab combine`, through peft's
    # add_weighted_adapter with "cat": the ranks add up, so the method's config has a rank `r`).
    combinable: bool = False
    # The training loss may run the LM head on trained positions only (tunelab.training.loss); soft-prompt methods
    # shift positions by their virtual tokens, so they keep peft's own loss.
    sparse_head: bool = True
    # Batches may lay their rows end to end without padding (tunelab.training.padding_free); soft-prompt
    # methods prepend virtual tokens to each row of a padded batch, so they cannot.
    padding_free: bool = True
    # Virtual tokens put in front of every row (prompt tuning's soft prompt): the sequence every block runs on is
    # that much longer, which the planner counts. Prefix tuning's prefix lives in the attention cache, not the rows.
    virtual_tokens: Callable[[Any], int] = no_virtual_tokens
    # bitsandbytes quantizes the base's linear layers (all but the LM head) as real weights load; the planner's
    # weightless meta model cannot show it, so the planner sizes those layers from the method's `bits` itself.
    quantized_linears: bool = False
    # Adapters of this method (with these options) can serve different rows of one batch, each row its own adapter
    # (peft's `adapter_names`): `tunelab serve` then decodes requests for different fine-tunes together.
    mixed_batches: Callable[[Any], bool] = never
    # New vocabulary rows (data.new_tokens) train under this method: lora/qlora through peft's trainable tokens,
    # full with the rest of the matrix (tunelab.methods.new_tokens). Others leave the embeddings frozen.
    trains_new_tokens: bool = False
    # Packages the method needs beyond tunelab's own dependencies (import names, which pip also takes): `tunelab plan`
    # shows the method as unavailable without them.
    requires: tuple[str, ...] = ()
    # `tunelab plan` estimates the method once per variant (none: once, with its defaults, under its name).
    plan_variants: tuple[Variant, ...] = ()

    def missing_packages(self) -> list[str]:
        """The packages of `requires` not installed here (`tunelab plan` and the training preflight ask)."""
        return [name for name in self.requires if importlib.util.find_spec(name) is None]

    def plan_rows(self) -> tuple[tuple[str, dict[str, Any], int], ...]:
        """(label, options fixed, capability) of each row `tunelab plan` estimates this method in."""
        if not self.plan_variants:
            return ((self.name, {}, self.capability),)
        return tuple((v.label, v.options, self.capability + v.capability_cost) for v in self.plan_variants)

    def plan_label(self, method_cfg: Any) -> str:
        """The plan row a config of this method is: the variant whose options it has, else the method's name."""
        for v in self.plan_variants:
            if all(getattr(method_cfg, key) == value for key, value in v.options.items()):
                return v.label
        return self.name


def peft_task_type(model: nn.Module) -> str:
    """peft's task type for a loaded model; for a classifier peft then also trains and saves its new head."""
    from tunelab.models.tasks import CLASSIFIER, SEQ2SEQ, model_task

    return {CLASSIFIER: "SEQ_CLS", SEQ2SEQ: "SEQ_2_SEQ_LM"}.get(model_task(model), "CAUSAL_LM")


def fp32_master_weights(compute_dtype: torch.dtype) -> torch.dtype:
    """Methods that update base weights keep them in fp32: bf16 updates of small steps round to nothing."""
    return torch.float32


def frozen_base_dtype(compute_dtype: torch.dtype) -> torch.dtype:
    """A base that is never updated needs no fp32 copy: bf16 where native halves the bytes each matmul reads."""
    return compute_dtype


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, each shared tensor counted once; a 4-bit packed weight counts
    the parameters it stands for, not its bytes."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        n = p.numel() * (2 if p.dtype == torch.uint8 and hasattr(p, "quant_state") else 1)
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks: the ModuleList as long as config.num_hidden_layers."""
    n_layers = getattr(model.config, "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers:
            return module
    raise ValueError(f"cannot find the {n_layers} transformer blocks of {type(model).__name__}")
