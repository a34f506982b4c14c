"""Fine-tuning methods: one small module each, registered in `METHODS` under the name used in the YAML.

Every method has the same shape (`MethodSpec`): which dtype the base weights load in (and any
quantization), how the loaded model is made trainable, how its artifact is saved and put back on a
base, how one of several adapters is made active or all switched off, and whether adapters can be
merged into the base weights or combined. Callers ask the spec (`methods.get(name).combinable`), never a
list of names: a new method is its module, one line below, and its config class in tunelab/config/methods.py.
"""

from __future__ import annotations

from tunelab.methods import adapter, freeze, full, ia3, lora, prompt_tuning, qlora
from tunelab.methods.base import MethodSpec, count_parameters

METHODS: dict[str, MethodSpec] = {
    m.name: m
    for m in (
        full.METHOD,
        freeze.METHOD,
        lora.METHOD,
        qlora.METHOD,
        ia3.METHOD,
        prompt_tuning.PROMPT_TUNING,
        prompt_tuning.PREFIX_TUNING,
        adapter.METHOD,
    )
}


def get(name: str) -> MethodSpec:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


__all__ = ["METHODS", "MethodSpec", "count_parameters", "get"]
