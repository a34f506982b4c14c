"""Export commands: combine, merge, export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from tunelab.cli.app import OverwriteOpt, TrustOpt, app
from tunelab.errors import ConfigError


@app.command(epilog="Example:  tunelab combine runs/tickets runs/tone --weights 1.0,0.5 --output runs/tickets+tone")
def combine(
    runs: Annotated[list[str], typer.Argument(help="Two or more LoRA runs of the same base.")],
    weights: Annotated[str, typer.Option(help="One weight per run, comma-separated.")],
    output: Annotated[Path, typer.Option(help="The new run directory.")],
    overwrite: OverwriteOpt = False,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Combine LoRA adapters into a new adapter run: the weighted sum of their updates (through peft)."""
    from tunelab.export import combine as combinemod

    try:
        parsed = [float(w) for w in weights.split(",")]
    except ValueError:
        raise ConfigError(f"--weights {weights!r}: numbers, comma-separated; e.g. --weights 1.0,0.5") from None
    combinemod.combine(runs, parsed, output, overwrite=overwrite, trust_remote_code=trust_remote_code)


@app.command(epilog="Example:  tunelab merge runs/demo --output merged/demo")
def merge(
    run: Annotated[str, typer.Argument(help="A finished adapter run (lora, qlora, ia3).")],
    output: Annotated[Path, typer.Option(help="The new model directory.")],
    dtype: Annotated[
        Literal["float32", "bfloat16", "float16"], typer.Option(help="The saved weights' dtype.")
    ] = "float32",
    tolerance: Annotated[
        float | None, typer.Option(min=0.0, help="Allowed max logit diff, relative to the logits.")
    ] = None,
    overwrite: OverwriteOpt = False,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Fold a run's adapter into its base: a standalone model, checked against base + adapter."""
    from tunelab.export import merge as mergemod

    mergemod.merge_run(run, output, dtype, tolerance, overwrite=overwrite, trust_remote_code=trust_remote_code)


@app.command(epilog="Example:  tunelab export runs/demo --format gguf --dtype q8_0 --output demo.gguf")
def export(
    run: Annotated[str, typer.Argument(help="A finished run (adapter runs are merged first) or a model directory.")],
    output: Annotated[Path, typer.Option(help="The file to write.")],
    format: Annotated[
        Literal["gguf"], typer.Option("--format", help="gguf (llama.cpp / Ollama; Llama-family models).")
    ] = "gguf",
    dtype: Annotated[Literal["f32", "f16", "bf16", "q8_0"], typer.Option(help="The GGUF's tensor type.")] = "f16",
    overwrite: OverwriteOpt = False,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Export for other runtimes, checked by loading the file back and comparing logits."""
    from tunelab.export.run_export import export_run

    export_run(run, output, dtype, format, overwrite=overwrite, trust_remote_code=trust_remote_code)
