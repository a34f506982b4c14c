"""The run directory: what a run writes, atomically, and how it is read back.

    runs/demo/
      config.yaml        the resolved config, every default written out
      versions.json      python, tunelab, torch, transformers, peft, ... versions
      logs/              TensorBoard event files
      checkpoints/       trainer checkpoints; each complete one holds a CHECKPOINT_COMPLETE marker
      adapter/ | model/  the final adapter (lora) or whole model, with tokenizer and chat template
      trainer_state.json the final trainer state (loss history, best checkpoint)
      metrics.json       training and evaluation figures
      COMPLETE           written last: a run without it is incomplete and is never loaded as whole

Every file is written to a temporary name and renamed into place (`os.replace` is atomic on one
filesystem), so a crash at any moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from tunelab import allocator
from tunelab.errors import RunIncompleteError

COMPLETE = "COMPLETE"
CHECKPOINT_COMPLETE = "CHECKPOINT_COMPLETE"
TRACKED_PACKAGES = ("tunelab", "torch", "transformers", "peft", "trl", "accelerate", "datasets", "safetensors")


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def marker(self) -> Path:
        return self.path / COMPLETE

    def artifact(self, kind: str) -> Path:
        return self.path / kind

    def is_complete(self) -> bool:
        return self.marker.is_file()

    def has_run(self) -> bool:
        return self.config_file.is_file() or self.is_complete()


def write_text(path: Path, text: str) -> None:
    """Write a file atomically: temp file in the same directory, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def replace_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Move a fully written directory into place; an older one at `final_dir` is removed first."""
    if final_dir.exists():
        old = final_dir.with_name(f".{final_dir.name}.old-{os.getpid()}")
        os.replace(final_dir, old)
        os.replace(tmp_dir, final_dir)
        shutil.rmtree(old)
    else:
        os.replace(tmp_dir, final_dir)


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "malloc": allocator.in_use()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def start(run_dir: RunDir, config_yaml: str) -> None:
    run_dir.path.mkdir(parents=True, exist_ok=True)
    write_text(run_dir.config_file, config_yaml)
    write_json(run_dir.path / "versions.json", library_versions())


def save_artifact(run_dir: RunDir, kind: str, model: Any, tokenizer: Any, save: Any = None) -> Path:
    """Save the final adapter or model (with `save(model, dir)`, default save_pretrained) and its tokenizer
    (and chat template), atomically."""
    final = run_dir.artifact(kind)
    tmp = run_dir.path / f".{kind}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    if save is None:
        model.save_pretrained(tmp, safe_serialization=True)
    else:
        save(model, tmp)
    tokenizer.save_pretrained(tmp)
    replace_dir(tmp, final)
    return final


def finish(run_dir: RunDir, metrics: dict[str, Any], trainer_state: dict[str, Any], artifact: str) -> None:
    write_json(run_dir.path / "metrics.json", metrics)
    write_json(run_dir.path / "trainer_state.json", trainer_state)
    # The marker goes last: its presence promises that everything above is whole.
    write_json(run_dir.marker, {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "artifact": artifact})


def mark_checkpoint_complete(checkpoint_dir: Path) -> None:
    write_text(checkpoint_dir / CHECKPOINT_COMPLETE, "")


def complete_checkpoints(run_dir: RunDir) -> list[Path]:
    """Complete checkpoints, oldest first (by step)."""
    if not run_dir.checkpoints.is_dir():
        return []
    found = [p for p in run_dir.checkpoints.glob("checkpoint-*") if (p / CHECKPOINT_COMPLETE).is_file()]
    return sorted(found, key=lambda p: int(p.name.rsplit("-", 1)[1]))


def remove_incomplete_checkpoints(run_dir: RunDir) -> list[Path]:
    """Checkpoints a crash left half-written: removed so neither resume nor rotation trusts them."""
    if not run_dir.checkpoints.is_dir():
        return []
    partial = [p for p in run_dir.checkpoints.glob("checkpoint-*") if not (p / CHECKPOINT_COMPLETE).is_file()]
    for p in partial:
        shutil.rmtree(p)
    return partial


@dataclass(frozen=True)
class CompletedRun:
    path: Path
    artifact_kind: str
    artifact_dir: Path
    config_yaml: str


def open_run(path: str | Path) -> CompletedRun:
    """Read back a finished run; an unfinished one raises RunIncompleteError saying how to resume it."""
    run_dir = RunDir(Path(path))
    if not run_dir.is_complete():
        raise RunIncompleteError(
            f"{run_dir.path} is an incomplete run: it has no {COMPLETE} marker, so training did not finish "
            f"(it was stopped or crashed). Resume it with `tunelab train {run_dir.config_file} --resume`, "
            "or train again."
        )
    kind = json.loads(run_dir.marker.read_text())["artifact"]
    return CompletedRun(run_dir.path, kind, run_dir.artifact(kind), run_dir.config_file.read_text())


def looks_like_run(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and ((p / "config.yaml").is_file() or (p / COMPLETE).is_file())
