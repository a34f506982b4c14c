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
import re
import shutil
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from tunelab import launch
from tunelab.errors import ConfigError, RunIncompleteError

COMPLETE = "COMPLETE"
CHECKPOINT_COMPLETE = "CHECKPOINT_COMPLETE"
# Everything tunelab writes at the top of a run directory, by name (`tunelab eval` and the demo add eval/, compare/
# and demo_report.*). Replacing a run removes these and nothing else, and a folder holding anything else is not
# taken as a run directory: a whole-folder delete once took a project's sources with it (`output_dir: .`).
RUN_ENTRIES = frozenset(
    {
        "config.yaml",
        "versions.json",
        "logs",
        "checkpoints",
        "adapter",
        "model",
        "trainer_state.json",
        "metrics.json",
        COMPLETE,
        "eval",
        "compare",
        "drift",
        "demo_report.json",
        "demo_report.md",
        "preference_data",
    }
)
# Entries an overwrite keeps: caches keyed by their content (preference_data: the rows, and TRL's reference
# log-probs keyed by the rows, tokenizer and starting weights), so a re-run on the same data reuses them.
CACHES = frozenset({"preference_data"})
# What write_text / save_artifact / replace_dir leave behind when a process dies mid-write.
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(tmp|old)-\d+")
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
    """Write a file atomically: temp file in the same directory, fsync, rename. A failed write leaves no temp file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def pyplot() -> Any:
    """matplotlib's pyplot, drawing to files only (no display); imported where a plot is drawn (~0.3 s)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_figure(fig: Any, path: Path, dpi: int = 110) -> None:
    """Save a matplotlib figure as PNG atomically (temp file, rename) and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fig.savefig(tmp, format="png", dpi=dpi)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        pyplot().close(fig)


def replace_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Move a fully written directory into place; an older one at `final_dir` is removed first."""
    if final_dir.exists():
        old = final_dir.with_name(f".{final_dir.name}.old-{os.getpid()}")
        os.replace(final_dir, old)
        os.replace(tmp_dir, final_dir)
        shutil.rmtree(old)
    else:
        os.replace(tmp_dir, final_dir)


def foreign_entries(folder: Path, known: frozenset[str] = RUN_ENTRIES) -> list[str]:
    """Names in `folder` that tunelab did not write there (temp files of known entries count as known)."""
    if not folder.is_dir():
        return []
    foreign = []
    for entry in sorted(os.listdir(folder)):
        temporary = _TEMPORARY.fullmatch(entry)
        if entry not in known and not (temporary and temporary["name"] in known):
            foreign.append(entry + ("/" if (folder / entry).is_dir() else ""))
    return foreign


def clear_run(run_dir: RunDir) -> None:
    """Remove what tunelab wrote in a run directory, by name, and nothing else; the marker goes first, so a run
    cleared half-way is never taken as complete."""
    foreign = foreign_entries(run_dir.path)
    if foreign:  # the preflight refused these already; files may have appeared since, and are never deleted
        raise ConfigError(
            f"{run_dir.path} now holds files tunelab did not write ({', '.join(foreign)}); nothing removed"
        )
    run_dir.marker.unlink(missing_ok=True)
    for entry in sorted(set(os.listdir(run_dir.path)) - CACHES):
        path = run_dir.path / entry
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def run_dir_problems(path: Path, *, replace: bool, option: str, fix: str) -> list[str]:
    """Why `path` cannot be a new run directory (empty when it can): a file, a folder with files tunelab did not
    write, or a finished or unfinished run when `replace` is off. `option` names the setting in messages."""
    if path.exists() and not path.is_dir():
        return [f"{option}={path} is a file, not a folder; choose a folder for the run, e.g. runs/NAME"]
    foreign = foreign_entries(path)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        return [
            f"{option}={path} holds files tunelab did not write ({shown}); a run needs a folder of its own: "
            "choose a new or empty one, e.g. runs/NAME (tunelab never deletes files it did not write)"
        ]
    run_dir = RunDir(path)
    if run_dir.has_run() and not replace:
        state = "a finished run" if run_dir.is_complete() else "an unfinished run"
        return [f"{option}={path} already holds {state}: {fix}"]
    return []


def output_problems(paths: list[Path], overwrite: bool, option: str) -> list[str]:
    """The one rule for files a command writes: an existing one is replaced only with --overwrite (then
    atomically); a folder where a file should go is an error either way."""
    problems = [f"{option}: {p} is a folder; give a file path" for p in paths if p.is_dir()]
    existing = [p for p in paths if p.is_file()]
    if existing and not overwrite and not problems:
        what = (
            str(existing[0])
            if len(existing) == 1
            else f"{existing[0].parent}/ ({', '.join(p.name for p in existing)})"
        )
        problems.append(f"{option}: {what} already exists; pass --overwrite to replace it, or choose another {option}")
    blocked = [p for p in paths if any(parent.is_file() for parent in p.parents)]
    problems += [f"{option}: {p}: a parent folder is a file" for p in blocked[:1]]
    return problems


def check_outputs(paths: list[Path], overwrite: bool, option: str) -> None:
    """Raise ConfigError for output_problems, before any model loads."""
    problems = output_problems(paths, overwrite, option)
    if problems:
        raise ConfigError(problems[0], problems[1:])


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "malloc": launch.in_use()}
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
