"""`adapter`: bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020) on a frozen base.

    h  ->  h + up(act(down(h)))        down: hidden -> hidden / reduction_factor, up: back (zero-initialized)

applied to the output of every feed-forward block (pfeiffer) or of every attention and feed-forward
block (houlsby), before the block's residual add. `up` starts at zero, so training starts from the base
model exactly.

Ours, not a library's: the AdapterHub `adapters` package pins transformers 4.x (we run 5.x) and peft has
no bottleneck adapters. The adapters plug in through forward hooks (a documented torch extension point)
and sit as submodules named `tunelab_adapters.<name>` of the blocks they follow, so base weights, their
names and their values are untouched. Several named adapters may live on one base; one is active.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tunelab.config.methods import BottleneckAdapterMethod
from tunelab.methods.base import MethodSpec, frozen_base_dtype, transformer_blocks

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
SLOT = "tunelab_adapters"  # the ModuleDict on each adapted block: {adapter name: Bottleneck}
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


class Bottleneck(nn.Module):
    def __init__(self, hidden: int, reduction_factor: int, activation: str):
        super().__init__()
        width = max(1, hidden // reduction_factor)
        self.down = nn.Linear(hidden, width)
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(width, hidden)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        delta = self.up(self.act(self.down(h.to(self.down.weight.dtype))))
        return h + delta.to(h.dtype)


class AdapterState:
    """The adapters a model carries (name -> options) and which one runs (None: the base model's own
    outputs). One per model, as its `_tunelab_adapters` attribute."""

    def __init__(self) -> None:
        self.active: str | None = None
        self.options: dict[str, dict[str, Any]] = {}


def state_of(model: nn.Module) -> AdapterState:
    state = getattr(model, "_tunelab_adapters", None)
    if state is None:
        state = AdapterState()
        model._tunelab_adapters = state
    return state


def adapted_blocks(model: nn.Module, style: str) -> list[nn.Module]:
    """The sub-blocks whose outputs get an adapter: each layer's MLP, plus its attention for houlsby."""
    blocks = []
    for layer in transformer_blocks(model):
        attention, mlp = _find(layer, ("self_attn", "attention", "attn")), _find(layer, ("mlp", "feed_forward"))
        blocks += [attention, mlp] if style == "houlsby" else [mlp]
    return blocks


def _find(layer: nn.Module, names: tuple[str, ...]) -> nn.Module:
    for name in names:
        if isinstance(getattr(layer, name, None), nn.Module):
            return getattr(layer, name)
    raise ValueError(f"method adapter: no {' / '.join(names)} block in {type(layer).__name__}")


def _hook(state: AdapterState):
    def apply(module: nn.Module, args: Any, output: Any) -> Any:
        adapters = getattr(module, SLOT)
        if state.active is None or state.active not in adapters:
            return output
        if isinstance(output, tuple):  # attention returns (hidden, weights)
            return (adapters[state.active](output[0]), *output[1:])
        return adapters[state.active](output)

    return apply


def add_adapter(model: nn.Module, method_cfg: BottleneckAdapterMethod, name: str) -> nn.Module:
    """Add a named adapter after the configured blocks (hooks installed once per model) and make it active."""
    state = state_of(model)
    hidden = model.config.hidden_size
    param = next(model.parameters())
    for block in adapted_blocks(model, method_cfg.style):
        if not hasattr(block, SLOT):
            block.add_module(SLOT, nn.ModuleDict())
            block.register_forward_hook(_hook(state))
        getattr(block, SLOT)[name] = Bottleneck(hidden, method_cfg.reduction_factor, method_cfg.activation).to(
            param.device
        )
    state.active = name
    state.options[name] = method_cfg.model_dump(exclude={"adapter_name"})
    return model


def prepare(model: nn.Module, method_cfg: BottleneckAdapterMethod, tokenizer: Any = None) -> nn.Module:
    model.requires_grad_(False)
    add_adapter(model, method_cfg, "default")
    for block in adapted_blocks(model, method_cfg.style):
        getattr(block, SLOT).requires_grad_(True)
    return model


def activate(model: nn.Module, name: str | None) -> None:
    state_of(model).active = name


@contextlib.contextmanager
def disabled(model: nn.Module) -> Iterator[None]:
    """The base model's own outputs inside the block."""
    state = state_of(model)
    active, state.active = state.active, None
    try:
        yield
    finally:
        state.active = active


def adapter_weights(model: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """The active adapter's tensors, keyed without its name so a saved adapter loads under any name."""
    marker = f".{SLOT}.{name}."
    return {k.replace(marker, f".{SLOT}.*."): v.contiguous() for k, v in model.state_dict().items() if marker in k}


def save(model: nn.Module, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    state = state_of(model)
    save_file(adapter_weights(model, state.active), str(directory / WEIGHTS))
    (directory / CONFIG).write_text(json.dumps(state.options[state.active], indent=2) + "\n")


def attach(model: nn.Module, adapter_dir: Path, name: str) -> nn.Module:
    """Load a saved adapter onto a base (or onto a base that already carries others) under `name`."""
    method_cfg = BottleneckAdapterMethod(**json.loads((adapter_dir / CONFIG).read_text()))
    add_adapter(model, method_cfg, name)
    saved = load_file(str(adapter_dir / WEIGHTS))
    target = {k.replace(f".{SLOT}.*.", f".{SLOT}.{name}."): v for k, v in saved.items()}
    expected = set(adapter_weights(model, name))
    if {k.replace(f".{SLOT}.{name}.", f".{SLOT}.*.") for k in target} != expected:
        raise ValueError(f"{adapter_dir}: the saved adapter does not fit this model's blocks")
    model.load_state_dict(target, strict=False)
    return model


METHOD = MethodSpec(
    name="adapter",
    artifact="adapter",
    load_dtype=frozen_base_dtype,
    prepare=prepare,
    capability=30,
    save=save,
    attach=attach,
    activate=activate,
    disable=disabled,
)
