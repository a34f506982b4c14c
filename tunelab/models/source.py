"""What a `model.name` refers to, worked out without loading anything.

resolve("smollm2-135m-instruct")    -> ModelSource(kind="builtin", ...)
resolve("./my-model")               -> kind="local"  (a Hugging Face model directory)
resolve("~/models/x.Q4_K_M.gguf")   -> kind="gguf"
resolve("HuggingFaceTB/SmolLM2-135M-Instruct") -> kind="hub"
"""

from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tunelab.errors import ConfigError, ModelNotAvailableError
from tunelab.models.registry import BUILTINS, is_converted, models_cache

Kind = Literal["builtin", "local", "gguf", "hub"]

# A hub id is `name` or `owner/name` with no path syntax; huggingface_hub applies the same character rules.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


@dataclass(frozen=True)
class ModelSource:
    kind: Kind
    name: str  # as given in the config
    display_name: str
    path: Path | None = None  # local dir, or the .gguf file (None: hub id, or built-in whose package is missing)
    cache_dir: Path | None = None  # builtin/gguf: the converted Hugging Face directory (may not exist yet)

    @property
    def converted(self) -> bool:
        return self.cache_dir is not None and is_converted(self.cache_dir)


def resolve(name: str) -> ModelSource:
    """Classify `name`; raise for a local path that does not exist or is not a model."""
    if name in BUILTINS:
        builtin = BUILTINS[name]
        if builtin.hf_dir:
            shipped = builtin.hf_path()
            if shipped is None:
                raise ModelNotAvailableError(f"model.name: {name!r} is not installed: {builtin.install_hint()}")
            return ModelSource("local", name, builtin.display_name, shipped)
        return ModelSource("builtin", name, builtin.display_name, builtin.gguf_path(), models_cache() / name)
    path = Path(name).expanduser()
    if name.lower().endswith(".gguf"):
        return _gguf_source(name, path)
    if path.is_dir():
        return _local_source(name, path)
    if path.exists():
        raise ConfigError(
            f"model.name: {name!r} is a file, not a model; give a Hugging Face model directory, a .gguf file, "
            f"a hub id, or a built-in ({', '.join(BUILTINS)})"
        )
    if _HUB_ID.match(name) and ".." not in name:
        return ModelSource("hub", name, name)
    raise ModelNotAvailableError(_missing_path_message(name, path))


def _gguf_source(name: str, path: Path) -> ModelSource:
    if not path.is_file():
        raise ModelNotAvailableError(
            f"model.name: GGUF file {str(path)!r} does not exist (resolved to {path.resolve()}); "
            "check the path, or use a built-in model (see `tunelab models`)"
        )
    return ModelSource("gguf", name, path.name, path.resolve(), models_cache() / gguf_cache_key(path))


def gguf_cache_key(path: Path) -> str:
    """`<stem>-<hash>`: the hash covers the absolute path, size and mtime, so an edited file converts afresh
    without hashing gigabytes of content."""
    path = path.resolve()
    stat = path.stat()
    digest = hashlib.sha256(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    stem = re.sub(r"[^\w.-]+", "_", path.stem)[:80]
    return f"{stem}-{digest}"


def _local_source(name: str, path: Path) -> ModelSource:
    if not (path / "config.json").is_file():
        raise ConfigError(f"model.name: {str(path)!r} is not a Hugging Face model directory", [_dir_hint(path)])
    return ModelSource("local", name, path.resolve().name, path.resolve())


def _dir_hint(path: Path) -> str:
    """The likely fix for a directory without config.json, from what it does contain."""
    ggufs = sorted(path.glob("*.gguf"))
    if ggufs:
        return f"it holds a GGUF file: set model.name to {str(ggufs[0])!r}"
    if (path / "adapter_config.json").is_file():
        return "it holds a LoRA adapter, not a full model: set model.name to the base model the adapter was trained on"
    return "expected config.json plus weights (*.safetensors); point model.name at the directory that has them"


def suggest_builtin(name: str) -> str | None:
    close = difflib.get_close_matches(name.lower(), list(BUILTINS), n=1, cutoff=0.6)
    return f"did you mean the built-in {close[0]!r}? (see `tunelab models`)" if close else None


def _missing_path_message(name: str, path: Path) -> str:
    hint = suggest_builtin(name) or "check the path (see `tunelab models` for built-ins)"
    return f"model.name: no model directory at {str(path)!r} (resolved to {path.resolve()}); {hint}"
