"""`tunelab merge RUN --output DIR`: a standalone Hugging Face model with the run's adapter folded in.

    report = merge_run("runs/demo", Path("merged/demo"))     # safetensors + tokenizer + chat template
    report["max_abs_logit_diff"]                               # merged vs base+adapter, checked

The merge happens in float32. A quantized base (qlora) is dequantized first, then merged: the adapter
learned against the dequantized values, so that is what it must be added to. Every merge checks itself:
the merged model's logits against base + adapter (unmerged, as trained) on a few prompts; above the
tolerance it fails and nothing is written (users report silent quality drops after QLoRA merges).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from tunelab import artifacts, methods
from tunelab.console import info
from tunelab.errors import ConfigError, TunelabError
from tunelab.inference.loading import adapter_name, load_base_for, run_config, run_tokenizer

CHECK_PROMPTS = (
    "The capital of France is",
    "Write a short note to a customer whose order is late.",
    "def fibonacci(n):",
)
# Relative to the largest reference logit: fp32 merges differ by rounding only (~1e-6); a save in 16 bits
# rounds every weight, so its check is looser.
TOLERANCE = {"float32": 1e-3, "bfloat16": 5e-2, "float16": 2e-2}


class MergeCheckError(TunelabError):
    """The merged model's outputs differ from base + adapter by more than the tolerance."""


REPORT = "merge_report.json"


def merge_run(
    path: str,
    output: Path,
    dtype: str = "float32",
    tolerance: float | None = None,
    *,
    overwrite: bool = False,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    check_output(output, overwrite)
    run, cfg = run_config(path, trust_remote_code)
    method = methods.get(cfg.method.name)
    if run.artifact_kind != "adapter":
        raise ConfigError(f"{path} holds a whole model already ({run.artifact_dir})", ["use that directory as is"])
    if not method.mergeable:
        raise ConfigError(
            f"{path}: method {cfg.method.name} cannot be merged into the weights",
            [
                f"{cfg.method.name} adds inputs or blocks, not weight updates: serve it as base + adapter "
                f"(tunelab generate {path})"
            ],
        )
    reference = method.attach(load_base_for(cfg, "cpu", "float32", path), run.artifact_dir, adapter_name(cfg, path))
    merged = method.attach(dequantized_base(cfg, path), run.artifact_dir, adapter_name(cfg, path)).merge_and_unload()
    merged = merged.to(getattr(torch, dtype))
    tokenizer = run_tokenizer(run, cfg)  # saved with the run, chat template included
    report = check(reference, merged, tokenizer, TOLERANCE[dtype] if tolerance is None else tolerance)
    report |= {"source": str(path), "method": cfg.method.name, "dtype": dtype}
    save(merged, tokenizer, output, report)
    return report


def check_output(output: Path, overwrite: bool) -> None:
    """The one rule for what a command writes: an existing --output is replaced only with --overwrite, and then
    only when it is a merge's own output holding nothing but the files that merge wrote (its report lists them)."""
    if not output.exists() or (output.is_dir() and not any(output.iterdir())):
        return
    if not overwrite:
        raise ConfigError(f"--output {output} already exists; pass --overwrite to replace it, or choose a new folder")
    written = json.loads((output / REPORT).read_text()).get("files") if (output / REPORT).is_file() else None
    if written is None:
        raise ConfigError(f"--output {output} is not a folder `tunelab merge` wrote; nothing there is replaced")
    foreign = artifacts.foreign_entries(output, frozenset([*written, REPORT]))
    if foreign:
        raise ConfigError(
            f"--output {output} holds files merge did not write ({', '.join(foreign)}); nothing replaced"
        )


def dequantized_base(cfg: Any, path: str) -> Any:
    """The base in float32: quantized bases are loaded as trained, then dequantized (transformers)."""
    base = load_base_for(cfg, "cpu", "float32", path)
    return base.dequantize(dtype=torch.float32) if getattr(base, "is_quantized", False) else base


def check(reference: Any, merged: Any, tokenizer: Any, tolerance: float) -> dict[str, Any]:
    """Max |logit difference| between merged and base + adapter over CHECK_PROMPTS, and top-1 agreement."""
    worst, scale, agree, total = 0.0, 0.0, 0, 0
    for prompt in CHECK_PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            want = reference.eval()(input_ids=ids).logits.float()
            got = merged.eval()(input_ids=ids).logits.float()
        worst = max(worst, (want - got).abs().max().item())
        scale = max(scale, want.abs().max().item())
        agree += (want.argmax(-1) == got.argmax(-1)).sum().item()
        total += ids.shape[1]
    report = {"max_abs_logit_diff": worst, "max_abs_logit": scale, "top1_agreement": agree / total}
    info(f"merge check: max |logit diff| {worst:.2e} (logits up to {scale:.1f}), top-1 agreement {agree}/{total}")
    if worst > tolerance * scale:
        raise MergeCheckError(
            f"the merged model differs from base + adapter by {worst:.3g} in the logits "
            f"(allowed {tolerance:g} x {scale:.1f}); nothing was written"
        )
    return report


def save(model: Any, tokenizer: Any, output: Path, report: dict[str, Any]) -> None:
    """safetensors + config + tokenizer (with its chat template) + merge_report.json (listing every file written),
    moved into place whole; an earlier merge there (checked by check_output) is replaced in the same move."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    artifacts.write_json(tmp / REPORT, report | {"files": sorted(os.listdir(tmp))})
    artifacts.replace_dir(tmp, output)
    info(f"merged model written to {output}")
