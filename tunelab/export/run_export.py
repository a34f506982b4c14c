"""`tunelab export RUN --format gguf --dtype f16|q8_0`: a run (or a model directory) as one GGUF file.

    export_run("runs/demo", Path("demo.gguf"), "q8_0")

An adapter run is merged first (tunelab.export.merge, checked) into a temporary directory, then written
as GGUF and checked by loading it back with transformers and comparing logits with the merged model.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tunelab import artifacts
from tunelab.console import info
from tunelab.errors import ConfigError, TunelabError
from tunelab.export.gguf import DTYPES, export_gguf
from tunelab.export.gguf_check import compare_gguf
from tunelab.export.merge import merge_run

FORMATS = ("gguf",)


def export_run(
    ref: str,
    output: Path,
    dtype: str = "f16",
    fmt: str = "gguf",
    check: bool = True,
    tolerance: float | None = None,
    *,
    overwrite: bool = False,
    trust_remote_code: bool = False,
) -> dict:
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: not supported; formats: {', '.join(FORMATS)}")
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype}: not supported; choose one of {', '.join(DTYPES)}")
    artifacts.check_outputs([output], overwrite, "--output")
    # Written and checked under a temporary name, then moved over `output`: an existing file is replaced only by
    # one that passed the check.
    unchecked = output.with_name(f".{output.stem}.unchecked-{os.getpid()}.gguf")
    try:
        with tempfile.TemporaryDirectory(prefix="tunelab-export-") as tmp:
            model_dir = standalone_model(ref, Path(tmp) / "merged", trust_remote_code)
            export_gguf(model_dir, unchecked, dtype)
            report = {"source": ref, "gguf": str(output), "dtype": dtype, "bytes": unchecked.stat().st_size}
            if check:
                report["max_abs_logit_diff"], scale = compare_gguf(model_dir, unchecked)
                diff = report["max_abs_logit_diff"]
                info(f"GGUF check: loaded back with transformers, max |logit diff| vs the source {diff:.3g}")
                enforce(diff, scale, dtype, output, tolerance)
        os.replace(unchecked, output)
    finally:
        unchecked.unlink(missing_ok=True)
    info(f"wrote {output} ({report['bytes'] / 1e6:.1f} MB, {dtype})")
    return report


# Allowed max |logit difference| as a share of the source's largest |logit|, per GGUF type: about 3-5x what
# healthy exports measure (built-in model: f16 0.09%, q8_0 2.7%; tiny test model: q8_0 1.7%). A broken export
# (a transposed tensor, a wrong rope layout) is off by the logits' own size.
RELATIVE_TOLERANCE = {"f32": 1e-5, "f16": 0.005, "bf16": 0.02, "q8_0": 0.08}


class ExportCheckError(TunelabError):
    """The exported file's logits differ from the source's by more than the dtype's tolerance."""


def enforce(diff: float, scale: float, dtype: str, output: Path, tolerance: float | None) -> None:
    """Fail when the export drifted: a bad GGUF is never moved into place (export_run removes it)."""
    limit = tolerance if tolerance is not None else RELATIVE_TOLERANCE[dtype] * max(scale, 1.0)
    if diff > limit:
        raise ExportCheckError(
            f"{output}: the export's logits differ from the source's by {diff:.3g} (limit {limit:.3g} for {dtype}); "
            "nothing was written",
            ["try --dtype f16 or f32; if those fail too, please report the model's architecture"],
        )


def standalone_model(ref: str, scratch: Path, trust_remote_code: bool = False) -> Path:
    """A Hugging Face model directory for `ref`: a full-model run's model, a merged adapter run, or `ref`."""
    if not artifacts.looks_like_run(ref):
        return Path(ref)
    run = artifacts.open_run(ref)
    if run.artifact_kind == "model":
        return run.artifact_dir
    merge_run(ref, scratch, trust_remote_code=trust_remote_code)
    return scratch
