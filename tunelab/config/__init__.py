"""The run config: schema (typed, strict, frozen), loading with overrides, preflight checks."""

from tunelab.config.load import dump, load, validate
from tunelab.config.methods import (
    BottleneckAdapterMethod,
    FreezeMethod,
    FullMethod,
    Ia3Method,
    LoraMethod,
    MethodConfig,
    PrefixTuningMethod,
    PromptTuningMethod,
    QLoraMethod,
)
from tunelab.config.schema import (
    DataConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
)

__all__ = [
    "BottleneckAdapterMethod",
    "DataConfig",
    "Ia3Method",
    "PrefixTuningMethod",
    "PromptTuningMethod",
    "QLoraMethod",
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
