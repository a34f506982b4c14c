"""What cross-validation and search share: the parent directory, sub-run configs, and a sub-run's metrics.

The parent directory is refused when it holds another sweep (unless --resume continues it, or
train.overwrite_output_dir replaces it) or files tunelab did not write; sweep.json, written atomically at the
start, is what a resume compares the new command with, so a changed config never mixes into old sub-runs.
"""

from __future__ import annotations

import gc
import json
import re
import shutil
from pathlib import Path
from typing import Any

from tunelab import artifacts
from tunelab import train as training_run
from tunelab.artifacts import RunDir
from tunelab.config import RunConfig
from tunelab.config.load import validate
from tunelab.console import info
from tunelab.errors import ConfigError

MANIFEST = "sweep.json"
# What a sweep writes at the top of its parent directory; sub-run directories match SUB_RUN.
SWEEP_ENTRIES = frozenset({MANIFEST, "config.yaml", "data", "study.db", "best.yaml", "COMPLETE"})
SUB_RUN = re.compile(r"(fold|trial)-\d+")
REPORT = re.compile(r"(cv|search)\.(md|json|png)|importance\.png")
# Trainer bookkeeping in metrics.json's eval section: not a measure of the model.
NOT_METRICS = {"eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "epoch", "step"}


def prepare(parent: Path, manifest: dict[str, Any], *, resume: bool, overwrite: bool) -> None:
    """Make `parent` ready for the sweep `manifest` describes, or raise ConfigError saying why it is not."""
    foreign = [name for name in _entries(parent) if not _known(name)]
    if foreign:
        raise ConfigError(
            f"train.output_dir={parent} holds files tunelab did not write ({', '.join(foreign[:5])}); a sweep needs "
            "a folder of its own, e.g. train.output_dir=runs/NAME"
        )
    written = _read_manifest(parent)
    if written is not None and resume:
        differences = _differences(written, manifest)
        if differences:
            raise ConfigError(
                f"--resume: {parent} holds a {written['kind']} with other settings ({'; '.join(differences[:3])})",
                ["run the same command as before, or choose another train.output_dir for the new settings"],
            )
        return
    if _entries(parent) and not resume:
        if not overwrite:
            what = f"a {written['kind']}" if written else "files of an earlier sweep"
            raise ConfigError(
                f"train.output_dir={parent} already holds {what}: pass --resume to continue it, choose another "
                "output_dir, or set train.overwrite_output_dir=true to replace it"
            )
        clear(parent)
    if resume:
        info(f"--resume: no sweep in {parent} yet, starting from the beginning")
    parent.mkdir(parents=True, exist_ok=True)
    artifacts.write_json(parent / MANIFEST, manifest)


def clear(parent: Path) -> None:
    """Remove the sweep's own entries (sub-runs through artifacts.clear_run, which removes only tunelab's files)."""
    (parent / MANIFEST).unlink(missing_ok=True)  # first: a half-cleared folder is no sweep to resume
    for name in _entries(parent):
        path = parent / name
        if SUB_RUN.fullmatch(name) and path.is_dir():
            artifacts.clear_run(RunDir(path))
            path.rmdir()
        elif path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def settings_of(cfg: RunConfig) -> dict[str, Any]:
    """The config as a sweep's manifest records it: what decides the results (not whether to overwrite)."""
    config = cfg.model_dump(mode="json")
    config["train"].pop("overwrite_output_dir")
    return config


def with_settings(cfg: RunConfig, settings: dict[str, Any]) -> RunConfig:
    """`cfg` with dotted keys set ({"train.learning_rate": 1e-4, "method.r": 8}), validated like a config file."""
    raw = cfg.model_dump(mode="json")
    for dotted, value in settings.items():
        *sections, key = dotted.split(".")
        node = raw
        for section in sections:
            node = node[section]
        node[key] = str(value) if isinstance(value, Path) else value
    if "method.name" in settings:  # another method: the old one's options are not its options
        raw["method"] = {k: v for k, v in raw["method"].items() if f"method.{k}" in settings}
    return validate(raw, source="the sweep's settings")


def run_or_resume(cfg: RunConfig, callbacks: tuple = ()) -> dict[str, float]:
    """Train one sub-run: a finished one is read back, an unfinished one resumes; its metrics either way."""
    run_dir = RunDir(cfg.train.output_dir)
    if run_dir.is_complete():
        info(f"{run_dir.path.name}: finished earlier, read back")
    else:
        training_run.run(cfg, resume=run_dir.has_run(), callbacks=callbacks)
        # The trainer, its model and optimizer hold reference cycles: freed now, not at some later collection,
        # so one sub-run's memory is given back before the next one loads its model.
        gc.collect()
    return read_metrics(run_dir.path)


def read_metrics(path: Path) -> dict[str, float]:
    """A finished sub-run's measures, flat: eval_* (loss and generation metrics), train_loss, probe_drop_points."""
    metrics = json.loads((path / "metrics.json").read_text())
    flat = {k: float(v) for k, v in metrics.get("eval", {}).items() if k not in NOT_METRICS and _number(v)}
    if _number(metrics.get("train", {}).get("train_loss")):
        flat["train_loss"] = float(metrics["train"]["train_loss"])
    forgetting = metrics.get("forgetting")
    if forgetting:
        flat["probe_drop_points"] = -float(forgetting["delta"]["accuracy_points"])
    return flat


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _entries(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir()) if parent.is_dir() else []


def _known(name: str) -> bool:
    return name in SWEEP_ENTRIES or bool(SUB_RUN.fullmatch(name) or REPORT.fullmatch(name)) or name.startswith(".")


def _read_manifest(parent: Path) -> dict[str, Any] | None:
    path = parent / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def _differences(written: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """What differs between two manifests, as `key: old -> new` (config keys dotted). Keys only one side has are
    options a newer tunelab added (their defaults keep the old behaviour) or dropped: not a change of settings."""
    old, new = _flatten(written), _flatten(wanted)
    return [f"{k}: {old[k]!r} -> {new[k]!r}" for k in sorted(set(old) & set(new)) if old[k] != new[k]]


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat
