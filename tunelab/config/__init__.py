"""The run config: schema (typed, strict, frozen), loading with overrides, preflight checks."""

from tunelab.config.load import dump, load, validate
from tunelab.config.schema import (
    DataConfig,
    FreezeMethod,
    FullMethod,
    LoraMethod,
    MethodConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
)

__all__ = [
    "DataConfig",
    "FreezeMethod",
    "FullMethod",
    "LoraMethod",
    "MethodConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "dump",
    "load",
    "validate",
]
