"""Training commands: train, inspect-data, models, plan, demo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tunelab.cli.app import ConfigArg, OverridesArg, app
from tunelab.console import console


@app.command(epilog="Example:  tunelab train configs/lora.yaml train.max_steps=50 --resume --nproc 2")
def train(
    config: ConfigArg,
    overrides: OverridesArg = None,
    resume: Annotated[bool, typer.Option(help="Continue from the newest complete checkpoint.")] = False,
    nproc: Annotated[
        int,
        typer.Option(min=1, help="Processes to train in on this machine (one per GPU), started through accelerate."),
    ] = 1,
) -> None:
    """Fine-tune a model as the config says; writes a self-describing run directory."""
    from tunelab import config as cfgmod

    cfg = cfgmod.load(config, overrides)
    if nproc > 1:
        from tunelab.training import processes  # checks and launches: it imports no trainer

        code = processes.run(cfg, nproc, [str(config), *(overrides or [])], resume)
        if code == 130:  # Ctrl-C: the main training process has said "interrupted" already
            raise SystemExit(130)
        raise typer.Exit(code)
    from tunelab import train as trainmod
    from tunelab.console import is_main_process
    from tunelab.training import distributed

    result = trainmod.run(cfg, resume=resume)
    distributed.stop()
    if is_main_process():
        print(json.dumps({"run_dir": str(result.run_dir), "artifact": str(result.artifact_dir)}))


@app.command("inspect-data", epilog="Example:  tunelab inspect-data configs/lora.yaml")
def inspect_data(config: ConfigArg, overrides: OverridesArg = None) -> None:
    """Row counts, token lengths, truncation, and one example with masked vs trained tokens."""
    from tunelab import config as cfgmod
    from tunelab import data, models

    cfg = cfgmod.load(config, overrides)
    report = data.inspect(cfg, models.load_tokenizer(cfg.model))
    report.render(console)


@app.command(epilog="Example:  tunelab models --json | jq -r '.[].name'")
def models(
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON on stdout (for scripts).")] = False,
) -> None:
    """List the built-in models and what is converted in the cache, with sizes."""
    from tunelab import models as modelsmod

    if as_json:
        print(json.dumps(modelsmod.list_models(), indent=2))
    else:
        modelsmod.render()


@app.command(epilog="Example:  tunelab plan configs/lora.yaml train.per_device_train_batch_size=16")
def plan(
    config: ConfigArg,
    overrides: OverridesArg = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON on stdout.")] = False,
    nproc: Annotated[
        int,
        typer.Option(
            "--nproc", min=1, help="Processes to plan for: each one's peak memory under ddp, fsdp and DeepSpeed ZeRO."
        ),
    ] = 1,
) -> None:
    """Before any weights load: each method's peak memory and time per epoch here, and which to use."""
    from tunelab import config as cfgmod
    from tunelab import planning

    result = planning.plan(cfgmod.load(config, overrides), nproc=nproc)
    if as_json:
        print(json.dumps(planning.to_dict(result), indent=2))
    else:
        planning.render(result, console)


@app.command(epilog="Example:  tunelab demo")
def demo(
    output_dir: Annotated[Path, typer.Option(help="Where the demo run goes.")] = Path("runs/demo"),
    config: Annotated[Path, typer.Option(help="The run config.")] = Path("configs/demo.yaml"),
    test_file: Annotated[Path, typer.Option(help="Held-out rows scored before and after.")] = Path(
        "examples/support_tickets/test.jsonl"
    ),
) -> None:
    """The main job: fine-tune the built-in model on the support-ticket task, show before/after."""
    from tunelab import demo as demomod

    demomod.run(output_dir, config, test_file)
