"""Resolve a `model.name` (built-in alias, local HF dir, hub id, .gguf) and load its tokenizer and model.

    from tunelab.models import load_model, load_tokenizer, resolve
    resolve("smollm2-135m-instruct").kind      # "builtin": no loading, usable in preflight
    tokenizer = load_tokenizer(cfg.model)      # tokenizer only, to validate data before the weights
    model = load_model(cfg.model)              # converts a GGUF once into $TUNELAB_CACHE/models/, then loads

Modules: registry (BUILTINS, cache paths), source (resolve), hub (offline handling), conversion (GGUF -> HF),
devices (pick_device/pick_dtype/pick_attention), loading (load_*), catalog (`tunelab models`).
"""

from tunelab.models.catalog import list_models, models_table, render
from tunelab.models.conversion import ensure_converted
from tunelab.models.devices import cpu_has_native_bf16, pick_attention, pick_device, pick_dtype
from tunelab.models.loading import (
    classifier_options,
    ensure_pad_token,
    load_config,
    load_model,
    load_tokenizer,
    model_dir,
    resolve_task,
)
from tunelab.models.registry import BUILTINS, BuiltinModel, cache_root, models_cache
from tunelab.models.source import ModelSource, resolve

__all__ = [
    "BUILTINS",
    "BuiltinModel",
    "ModelSource",
    "cache_root",
    "classifier_options",
    "load_config",
    "resolve_task",
    "cpu_has_native_bf16",
    "ensure_converted",
    "ensure_pad_token",
    "list_models",
    "load_model",
    "load_tokenizer",
    "model_dir",
    "models_cache",
    "models_table",
    "pick_attention",
    "pick_device",
    "pick_dtype",
    "render",
    "resolve",
]
