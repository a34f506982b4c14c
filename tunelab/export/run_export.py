"""`tunelab export RUN --format gguf --dtype f16|q8_0`: a run (or a model directory) as one GGUF file.

    export_run("runs/demo", Path("demo.gguf"), "q8_0")

An adapter run is merged first (tunelab.export.merge, checked) into a temporary directory, then written
as GGUF and checked by loading it back with transformers and comparing logits with the merged model.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tunelab import artifacts
from tunelab.console import info
from tunelab.errors import ConfigError
from tunelab.export.gguf import DTYPES, export_gguf
from tunelab.export.gguf_check import check_gguf
from tunelab.export.merge import merge_run

FORMATS = ("gguf",)


def export_run(ref: str, output: Path, dtype: str = "f16", fmt: str = "gguf", check: bool = True) -> dict:
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: not supported", [f"formats: {', '.join(FORMATS)}"])
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype}: not supported", [f"choose one of {', '.join(DTYPES)}"])
    with tempfile.TemporaryDirectory(prefix="tunelab-export-") as tmp:
        model_dir = standalone_model(ref, Path(tmp) / "merged")
        export_gguf(model_dir, output, dtype)
        report = {"source": ref, "gguf": str(output), "dtype": dtype, "bytes": output.stat().st_size}
        if check:
            report["max_abs_logit_diff"] = check_gguf(model_dir, output)
            diff = report["max_abs_logit_diff"]
            info(f"GGUF check: loaded back with transformers, max |logit diff| vs the source {diff:.3g}")
    info(f"wrote {output} ({report['bytes'] / 1e6:.1f} MB, {dtype})")
    return report


def standalone_model(ref: str, scratch: Path) -> Path:
    """A Hugging Face model directory for `ref`: a full-model run's model, a merged adapter run, or `ref`."""
    if not artifacts.looks_like_run(ref):
        return Path(ref)
    run = artifacts.open_run(ref)
    if run.artifact_kind == "model":
        return run.artifact_dir
    merge_run(ref, scratch)
    return scratch
