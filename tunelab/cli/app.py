"""The `tunelab` Typer app and the options its commands share; each stage's commands live in their own module."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tunelab.config.schema import ModelConfig

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="Fine-tune a pretrained language model on your own data, and prove it worked.\n\n"
    "Example:  [bold]tunelab train configs/lora.yaml train.num_train_epochs=2[/]",
)

ConfigArg = Annotated[Path, typer.Argument(help="Run config (YAML). See configs/ for one per method.")]
OverridesArg = Annotated[list[str] | None, typer.Argument(help="Overrides as section.key=value.")]
# The choices come from the config's own fields, so the CLI and the YAML accept the same values.
Device = ModelConfig.model_fields["device"].annotation
Dtype = ModelConfig.model_fields["dtype"].annotation
DeviceOpt = Annotated[Device | None, typer.Option(help="Default: the run's, else auto.")]
DtypeOpt = Annotated[Dtype | None, typer.Option(help="Default: the run's, else auto.")]
TrustOpt = Annotated[
    bool,
    typer.Option(
        "--trust-remote-code",
        help="Let the model's own Python code run. Never taken from a run's saved config: a run directory can come "
        "from anyone, so only this flag, on this command, allows it.",
    ),
]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing output (written atomically).")]


MODEL_HELP = (
    "A run directory, built-in alias, local model dir, hub id or .gguf; or several adapter runs of one base, "
    "comma-separated (runs/a,runs/b), loaded together."
)
AdapterOpt = Annotated[
    str | None,
    typer.Option("--adapter", help="With several runs: the adapter to use (its name; default: the first run's)."),
]
MaxNewTokensOpt = Annotated[int, typer.Option(min=1, help="Most tokens generated per answer.")]
TemperatureOpt = Annotated[float, typer.Option(min=0.0, help="0 = greedy (the default).")]
TopKOpt = Annotated[int | None, typer.Option(min=1)]
TopPOpt = Annotated[float | None, typer.Option(min=0.0, max=1.0)]


MetricsOpt = Annotated[
    str | None,
    typer.Option("--metrics", help="Comma-separated: exact_match, json_fields, rougeL, bleu, chrf, f1, ..."),
]


PromptConfigOpt = Annotated[
    Path | None, typer.Option(help="Prompt format/system for a plain model (runs bring theirs).")
]
RulesOpt = Annotated[
    Path | None,
    typer.Option("--rules", help="Plain-text rules, one per line: a judge says which answers break them."),
]
JudgeOpt = Annotated[
    str | None,
    typer.Option(
        "--judge", help="The judge for --rules: a model or run tunelab loads, or an OpenAI-compatible URL (.../v1)."
    ),
]
JudgeModelOpt = Annotated[
    str | None,
    typer.Option("--judge-model", help="The model to ask at a --judge URL (default: the first it lists)."),
]
JudgePromptOpt = Annotated[
    Path | None,
    typer.Option("--judge-prompt", help="Your judge prompt: a text file naming {rule}, {prompt} and {answer}."),
]


def _split(metrics: str | None) -> list[str] | None:
    return [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
