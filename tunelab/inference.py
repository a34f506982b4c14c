"""Load what generation needs from a model reference or a finished run directory.

loaded = load_for_inference("runs/demo")          # base model + the run's adapter, merged in memory
loaded = load_for_inference("smollm2-135m-instruct")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from transformers import AutoTokenizer

from tunelab import artifacts, models
from tunelab.config import ModelConfig, validate


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    template: str = "auto"
    system: str | None = None
    source: str = ""


def load_for_inference(ref: str, device: str | None = None, dtype: str | None = None, merge: bool = True) -> Loaded:
    """device/dtype None: the run's own settings (for a run directory), else auto."""
    if artifacts.looks_like_run(ref):
        return load_run(ref, device, dtype, merge)
    cfg = ModelConfig(name=ref, device=device or "auto", dtype=dtype or "auto")
    return Loaded(*load_plain(cfg), source=ref)


def load_plain(cfg: ModelConfig) -> tuple[Any, Any]:
    device = models.pick_device(cfg.device)
    tokenizer = models.load_tokenizer(cfg)
    model = models.load_model(cfg, dtype=models.pick_dtype(cfg.dtype, device), device=device)
    model.eval()
    return model, tokenizer


def load_run(path: str, device: str | None, dtype: str | None, merge: bool) -> Loaded:
    """A finished run: its base model with its adapter (or its whole model), its prompt template and system."""
    run = artifacts.open_run(path)  # raises RunIncompleteError for a run that did not finish
    cfg = validate(yaml.safe_load(run.config_yaml), source=str(Path(path) / "config.yaml"))
    device, dtype = device or cfg.model.device, dtype or cfg.model.dtype
    if run.artifact_kind == "adapter":
        model, _ = load_plain(cfg.model.model_copy(update={"device": device, "dtype": dtype}))
        model = attach_adapter(model, run.artifact_dir, merge)
    else:
        model, _ = load_plain(ModelConfig(name=str(run.artifact_dir), device=device, dtype=dtype))
    tokenizer = AutoTokenizer.from_pretrained(run.artifact_dir)  # saved with the run: the one it trained with
    return Loaded(model, tokenizer, cfg.data.template, cfg.data.system, source=str(path))


def attach_adapter(model: Any, adapter_dir: Path, merge: bool) -> Any:
    from peft import PeftModel

    model = PeftModel.from_pretrained(model, str(adapter_dir))
    # Merged weights generate faster (no extra low-rank matmuls); the files on disk stay an adapter.
    return model.merge_and_unload() if merge else model
