"""Load a tokenizer (alone, to validate data before any weights) or a model, from any `model.name`.

tokenizer = load_tokenizer(cfg.model)           # no weights; a not-yet-converted GGUF is read directly
model = load_model(cfg.model)                   # dtype/device from the config (auto by default)
model = load_model(cfg.model, dtype=torch.float32, device=torch.device("cpu"))
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from tunelab.config.schema import ModelConfig
from tunelab.errors import ConfigError, TunelabError
from tunelab.models import hub
from tunelab.models.conversion import ensure_converted, require_gguf
from tunelab.models.devices import pick_attention, pick_device, pick_dtype
from tunelab.models.source import ModelSource, resolve
from tunelab.models.tasks import CAUSAL_LM, auto_class, task_of

T = TypeVar("T")


def model_dir(cfg: ModelConfig) -> Path | str:
    """What to pass to `from_pretrained`: a local or converted directory (converting a GGUF first), or a hub id."""
    return _pretrained_args(cfg, resolve(cfg.name))[0]


def load_tokenizer(cfg: ModelConfig) -> Any:
    """The tokenizer only, with a pad token (eos when it has none). Padding side is left to callers."""
    from transformers import AutoTokenizer

    source = resolve(cfg.name)
    if source.kind in ("builtin", "gguf") and not source.converted:
        # Reading the tokenizer from the GGUF (~5 s) beats converting the whole model (~20 s) just to check data.
        gguf = require_gguf(source)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    else:
        where, kwargs = _pretrained_args(cfg, source)
        tokenizer = _guarded(cfg, source, lambda: AutoTokenizer.from_pretrained(where, **kwargs))
    return ensure_pad_token(tokenizer)


def ensure_pad_token(tokenizer: Any) -> Any:
    """Batching needs a pad token; the attention mask hides it, so reusing eos is safe."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise TunelabError(
                f"the tokenizer of {tokenizer.name_or_path!r} has neither a pad nor an eos token; "
                "use a model whose tokenizer defines an eos token"
            )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    cfg: ModelConfig,
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
    task: str = "causal_lm",
    **load_options: Any,
) -> Any:
    """The model for `task` (tunelab.models.tasks) in `dtype` on `device` (None: from cfg). `load_options` go to
    `from_pretrained` (a method's `quantization_config`, a classifier's labels); with a `device_map` among them,
    placement is left to it."""
    device = device if device is not None else pick_device(cfg.device)
    dtype = dtype if dtype is not None else pick_dtype(cfg.dtype, device)
    attention = pick_attention(cfg.attention, device, dtype)
    if attention is not None:
        load_options = {"attn_implementation": attention, **load_options}
    source = resolve(cfg.name)
    where, kwargs = _pretrained_args(cfg, source)
    model_class = auto_class(task)
    model = _guarded(cfg, source, lambda: model_class.from_pretrained(where, dtype=dtype, **kwargs, **load_options))
    return model if "device_map" in load_options else model.to(device)


def load_config(cfg: ModelConfig) -> Any:
    """The model's config (config.json) only: cheap, no weights."""
    from transformers import AutoConfig

    source = resolve(cfg.name)
    where, kwargs = _pretrained_args(cfg, source)
    return _guarded(cfg, source, lambda: AutoConfig.from_pretrained(where, **kwargs))


def resolve_task(cfg: ModelConfig) -> str:
    """model.task, or for `auto` the task its config implies (GGUF files hold decoder LMs)."""
    if cfg.task != "auto":
        return cfg.task
    if resolve(cfg.name).kind in ("builtin", "gguf"):
        return CAUSAL_LM
    return task_of(load_config(cfg))


def classifier_options(labels: list[str] | None) -> dict[str, Any]:
    """from_pretrained options that size a classification head for `labels` and name its outputs."""
    if not labels:
        raise ConfigError("a sequence classifier needs its label set", ["use classification rows {text, label}"])
    return {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {label: i for i, label in enumerate(labels)},
    }


def _pretrained_args(cfg: ModelConfig, source: ModelSource) -> tuple[Path | str, dict[str, Any]]:
    if source.kind in ("builtin", "gguf"):
        return ensure_converted(source), {"trust_remote_code": False}  # False, not None: never an input() prompt
    if source.kind == "local":
        assert source.path is not None  # resolve() sets it for local sources
        return source.path, {"trust_remote_code": cfg.trust_remote_code}
    return cfg.name, hub.pretrained_kwargs(cfg)


def _guarded(cfg: ModelConfig, source: ModelSource, load: Callable[[], T]) -> T:
    """Run `load`, turning transformers' errors a user can fix into clean ones: a hub id that cannot be had
    (not found, gated, no network: OSError), and model code that needs trust_remote_code."""
    try:
        return load()
    except OSError as err:
        if source.kind != "hub":
            raise
        raise hub.not_available(cfg, str(err).strip().splitlines()[0]) from err
    except ValueError as err:
        if "trust_remote_code" not in str(err):
            raise
        raise ConfigError(
            f"model.name: {cfg.name!r} needs its own Python code (from the model repository) to load; if you trust "
            "its authors, set model.trust_remote_code=true in the config you train with, or pass --trust-remote-code "
            "to the command that loads it (a run's saved setting is never enough)"
        ) from err
