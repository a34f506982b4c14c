"""Sweep commands: many training runs of one config, then one report (cv; search)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from tunelab.cli.app import ConfigArg, OverridesArg, app

RESUME_HELP = "Continue a killed sweep: finished sub-runs are read back, the first unfinished one resumes."


@app.command(epilog="Example:  tunelab cv configs/cv.yaml --folds 5")
def cv(
    config: ConfigArg,
    overrides: OverridesArg = None,
    folds: Annotated[int, typer.Option(help="How many folds (2 or more; each row is validated once).")] = 5,
    resume: Annotated[bool, typer.Option(help=RESUME_HELP)] = False,
) -> None:
    """K-fold cross-validation: K runs in one parent run dir, each fold's validation metrics, mean +- std."""
    from tunelab import config as cfgmod
    from tunelab.sweeps import crossval

    result = crossval.run(cfgmod.load(config, overrides), folds, resume=resume)
    print(json.dumps({"run_dir": str(result.run_dir), "report": str(result.run_dir / "cv.md")}))


@app.command(epilog="Example:  tunelab search configs/search.yaml --trials 8 --budget 45m")
def search(
    config: ConfigArg,
    overrides: OverridesArg = None,
    trials: Annotated[int | None, typer.Option(help="Trials in all (default: search.trials).", min=1)] = None,
    budget: Annotated[
        str | None, typer.Option(help="Wall-clock budget, e.g. 30m or 1h30m (default: search.budget).")
    ] = None,
    resume: Annotated[bool, typer.Option(help=RESUME_HELP)] = False,
) -> None:
    """Hyperparameter search (Optuna TPE, pruning) within a time budget; writes the best config as a file."""
    from tunelab import config as cfgmod
    from tunelab.sweeps import search as searchmod

    result = searchmod.run(cfgmod.load(config, overrides), trials, budget, resume=resume)
    best = str(result.best_config) if result.best_config else None
    print(json.dumps({"run_dir": str(result.run_dir), "best_config": best}))
