"""Fine-tuning methods: one small module each, registered in `METHODS` under the name used in the YAML.

Every method has the same shape (`MethodSpec`): which dtype the base weights load in, how the loaded
model is made trainable, and whether the run's artifact is an adapter or a whole model.
"""

from __future__ import annotations

from tunelab.methods import freeze, full, lora
from tunelab.methods.base import MethodSpec, count_parameters

METHODS: dict[str, MethodSpec] = {m.name: m for m in (full.METHOD, freeze.METHOD, lora.METHOD)}


def get(name: str) -> MethodSpec:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


__all__ = ["METHODS", "MethodSpec", "count_parameters", "get"]
