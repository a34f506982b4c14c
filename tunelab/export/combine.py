"""`tunelab combine`: several LoRA runs of one base → one new adapter run, their updates summed with weights.

    combine(["runs/tickets", "runs/tone"], [1.0, 0.5], Path("runs/tickets+tone"))

Through peft's `add_weighted_adapter` with combination "cat": the new adapter's update is exactly
Σ wᵢ·ΔWᵢ (its rank is the sum of the ranks). The result is a complete run directory, used like any
other (`tunelab generate runs/tickets+tone ...`, `tunelab merge`, `tunelab eval`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tunelab import artifacts, methods
from tunelab.artifacts import RunDir
from tunelab.config import dump
from tunelab.console import info
from tunelab.errors import ConfigError
from tunelab.inference.loading import load_runs, run_config

COMBINED = "combined"


def combine(
    paths: list[str],
    weights: list[float],
    output_dir: Path,
    *,
    overwrite: bool = False,
    trust_remote_code: bool = False,
) -> Path:
    if len(paths) < 2 or len(weights) != len(paths):
        raise ConfigError(
            "combine needs two or more runs and one weight per run",
            [f"got {len(paths)} run(s) and {len(weights)} weight(s): --weights 1.0,0.5 for two runs"],
        )
    configs = [run_config(p, trust_remote_code)[1] for p in paths]
    method = methods.get(configs[0].method.name)
    if not method.combinable:
        combinable = ", ".join(name for name, spec in methods.METHODS.items() if spec.combinable)
        raise ConfigError(f"{paths[0]}: method {method.name} cannot be combined", [f"combine runs of {combinable}"])
    fix = "pass --overwrite to replace it (only tunelab's own files are removed), or choose a new --output"
    problems = artifacts.run_dir_problems(output_dir, replace=overwrite, option="--output", fix=fix)
    if problems:
        raise ConfigError(problems[0])
    loaded = load_runs(paths, trust_remote_code=trust_remote_code)  # checks they share a base and method
    if RunDir(output_dir).has_run():
        artifacts.clear_run(RunDir(output_dir))
    names = list(loaded.adapters)
    loaded.model.add_weighted_adapter(names, weights, COMBINED, combination_type="cat")
    method.activate(loaded.model, COMBINED)

    run_dir = RunDir(output_dir)
    method_cfg = configs[0].method.model_copy(
        update={"r": sum(c.method.r for c in configs), "adapter_name": output_dir.resolve().name}
    )
    artifacts.start(run_dir, dump(configs[0].model_copy(update={"method": method_cfg})))
    artifacts.save_artifact(run_dir, "adapter", loaded.model, loaded.tokenizer, save=save_combined)
    record = {"combined_from": [str(p) for p in paths], "adapters": names, "weights": weights, "combination": "cat"}
    artifacts.write_json(run_dir.path / "metrics.json", record)
    artifacts.write_json(run_dir.marker, {"artifact": "adapter", "combined_from": record["combined_from"]})
    info(f"combined {', '.join(f'{w:g} x {n}' for n, w in zip(names, weights, strict=True))} into {output_dir}")
    return output_dir


def save_combined(model, directory: Path) -> None:
    """peft writes a non-default adapter into a sub-folder named after it; the run wants it at the top."""
    model.save_pretrained(directory, selected_adapters=[COMBINED], safe_serialization=True)
    for item in (directory / COMBINED).iterdir():
        os.replace(item, directory / item.name)
    shutil.rmtree(directory / COMBINED)
