"""`tunelab cv CONFIG --folds K`: K-fold cross-validation of one config, for data too small for one split.

    result = crossval.run(cfg, folds=5)    # runs/NAME/fold-1 .. fold-5 (run dirs), cv.md, cv.json, cv.png

Each fold trains on the other folds' rows and validates on its own, so every row is validated once. Folds come
from tunelab.data.folds (deterministic for train.seed, stratified by label for classification), over groups of
repeated rows, so copies of one row never sit on both sides. A fold's validation metrics are its eval_loss,
the config's generation metrics scored on all of its rows (eval.during_training, on every validation row), the
train loss and, with the retention probe on, the probe drop. The report gives each fold and the mean +- sample
standard deviation (ddof=1) of each metric.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab import artifacts, models
from tunelab.config import RunConfig
from tunelab.config.load import dump
from tunelab.console import console, info
from tunelab.data import folds as kfold
from tunelab.data.formats import classification
from tunelab.data.readers import Record, read
from tunelab.data.rows import repeat_groups
from tunelab.errors import ConfigError
from tunelab.models.tasks import CAUSAL_LM
from tunelab.sweeps import runs
from tunelab.training.preflight import preflight


@dataclass
class FoldPlan:
    format: str
    labels: list[str] | None
    records: list[Record]  # the training file's readable records
    folds: list[kfold.Fold]  # over record indices
    data_sha256: str


@dataclass
class FoldResult:
    fold: int
    train_rows: int
    validation_rows: int
    metrics: dict[str, float]


@dataclass
class CrossValResult:
    run_dir: Path
    folds: list[FoldResult]
    summary: dict[str, dict[str, float]] = field(default_factory=dict)  # metric -> mean, std, min, max

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "folds": [vars(f) for f in self.folds],
            "summary": self.summary,
        }


def run(cfg: RunConfig, folds: int, *, resume: bool = False, callbacks: tuple = ()) -> CrossValResult:
    """Train `folds` sub-runs and report their validation metrics; a resumed cv skips finished folds."""
    plan = plan_folds(cfg, folds)  # every check that needs no weights, the folds made: before any model loads
    parent = Path(cfg.train.output_dir)
    runs.prepare(parent, manifest(cfg, plan), resume=resume, overwrite=cfg.train.overwrite_output_dir)
    artifacts.write_text(parent / "config.yaml", dump(cfg))
    results = []
    for fold in plan.folds:
        fold_cfg = write_fold(cfg, plan, fold, parent)
        info(
            f"[bold]fold {fold.number}/{folds}[/]: training on {len(fold.train)} rows, "
            f"validating on {len(fold.validation)}"
        )
        metrics = runs.run_or_resume(fold_cfg, callbacks)
        results.append(FoldResult(fold.number, len(fold.train), len(fold.validation), metrics))
    result = CrossValResult(parent, results, summarize(results))
    write_report(result)
    render(result)
    return result


def plan_folds(cfg: RunConfig, k: int) -> FoldPlan:
    """Check the config and data as `tunelab train` would, then split the training file's rows into k folds."""
    if cfg.objective.name != "sft":
        raise ConfigError(
            f"tunelab cv cross-validates supervised runs; objective {cfg.objective.name} is scored by its own "
            "held-out measure: use tunelab train with data.val_size"
        )
    if cfg.data.several_tasks:
        raise ConfigError(
            f"tunelab cv splits one training file; data.train lists {len(cfg.data.sources())} sources: "
            "cross-validate each task's file, or merge them into one file"
        )
    if cfg.data.validation is not None or cfg.data.val_size is not None:
        info("cv: each fold validates on its own rows; data.validation / data.val_size are not used")
    checked = runs.with_settings(
        cfg, {"data.validation": None, "data.val_size": None, "train.output_dir": cfg.train.output_dir / "fold-1"}
    )
    rows = preflight(checked, resume=True)  # bad rows, packages, device, training settings: as train would
    records = [r for r in read(Path(cfg.data.train), "train") if r.fields is not None]
    groups = repeat_groups(records, checked.data)
    labels = (
        [classification.label_of(records[g[0]].fields) for g in groups] if rows.format == "classification" else None
    )
    group_folds = kfold.k_folds(len(groups), k, cfg.train.seed, labels)
    record_folds = [kfold.Fold(f.number, _expand(f.train, groups), _expand(f.validation, groups)) for f in group_folds]
    digest = hashlib.sha256(json.dumps([r.fields for r in records], sort_keys=True, default=str).encode())
    return FoldPlan(rows.format, rows.labels, records, record_folds, digest.hexdigest())


def _expand(group_indices: list[int], groups: list[list[int]]) -> list[int]:
    return sorted(i for g in group_indices for i in groups[g])


def manifest(cfg: RunConfig, plan: FoldPlan) -> dict[str, Any]:
    """What a resume must find unchanged: the folds, the data they split, and the config."""
    return {
        "kind": "cross-validation",
        "folds": len(plan.folds),
        "seed": cfg.train.seed,
        "data_sha256": plan.data_sha256,
        "config": runs.settings_of(cfg),
    }


def write_fold(cfg: RunConfig, plan: FoldPlan, fold: kfold.Fold, parent: Path) -> RunConfig:
    """The fold's rows as JSONL files under data/fold-N/, and the sub-run's config that trains on them."""
    folder = parent / "data" / f"fold-{fold.number}"
    files = {}
    for split, indices in (("train", fold.train), ("validation", fold.validation)):
        files[split] = folder / f"{split}.jsonl"
        lines = (json.dumps(plan.records[i].fields, ensure_ascii=False, default=str) for i in indices)
        artifacts.write_text(files[split], "\n".join(lines) + "\n")
    generates = models.resolve_task(cfg.model) == CAUSAL_LM  # an encoder classifier scores accuracy itself
    return runs.with_settings(
        cfg,
        {
            "data.train": files["train"],
            "data.validation": files["validation"],
            "data.val_size": None,
            "data.format": plan.format,
            "data.labels": plan.labels,  # the whole set's labels: every fold has the same label set
            "train.output_dir": parent / f"fold-{fold.number}",
            "train.overwrite_output_dir": False,
            "eval.during_training": cfg.eval.during_training or (generates and bool(cfg.eval.metrics)),
            "eval.during_training_rows": max(cfg.eval.during_training_rows, len(fold.validation)),
        },
    )


def summarize(results: list[FoldResult]) -> dict[str, dict[str, float]]:
    """Per metric over the folds that have it: mean, sample standard deviation (0 for one fold), min, max."""
    names = sorted({name for r in results for name in r.metrics}, key=_metric_order)
    summary = {}
    for name in names:
        values = [r.metrics[name] for r in results if name in r.metrics]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        summary[name] = {"mean": statistics.fmean(values), "std": spread, "min": min(values), "max": max(values)}
    return summary


def _metric_order(name: str) -> tuple[int, str]:
    """eval_loss first, then the generation metrics, then the train loss and the probe."""
    rank = {"eval_loss": 0, "train_loss": 2, "probe_drop_points": 3}.get(name, 1)
    return rank, name


def write_report(result: CrossValResult) -> None:
    parent = result.run_dir
    artifacts.write_json(parent / "cv.json", result.to_dict())
    artifacts.write_text(parent / "cv.md", markdown(result))
    plot(result, parent / "cv.png")


def markdown(result: CrossValResult) -> str:
    names = list(result.summary)
    lines = [
        f"# Cross-validation: {len(result.folds)} folds ({result.run_dir})",
        "",
        "| fold | train rows | validation rows | " + " | ".join(names) + " |",
        "|---:|---:|---:|" + "---:|" * len(names),
    ]
    for r in result.folds:
        cells = [_fmt(r.metrics.get(n)) for n in names]
        lines.append(f"| {r.fold} | {r.train_rows} | {r.validation_rows} | " + " | ".join(cells) + " |")
    cells = [f"{_fmt(s['mean'])} +- {_fmt(s['std'])}" for s in result.summary.values()]
    lines.append("| **mean +- std** | | | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def render(result: CrossValResult) -> None:
    from rich.table import Table

    table = Table(title=f"cross-validation, {len(result.folds)} folds: {result.run_dir}")
    table.add_column("metric")
    for r in result.folds:
        table.add_column(f"fold {r.fold}", justify="right")
    table.add_column("mean +- std", justify="right")
    for name, s in result.summary.items():
        table.add_row(
            name, *(_fmt(r.metrics.get(name)) for r in result.folds), f"{_fmt(s['mean'])} +- {_fmt(s['std'])}"
        )
    console.print(table)
    info(f"report: {result.run_dir / 'cv.md'}, plot: {result.run_dir / 'cv.png'}")


def plot(result: CrossValResult, path: Path) -> None:
    """One panel per metric: each fold's value, the mean as a line, mean +- std shaded."""
    plt = artifacts.pyplot()

    # The headline measures; per-field breakdowns (field_accuracy.category) and counts stay in the table.
    names = [n for n in result.summary if "." not in n and not n.endswith("_count")]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.0), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        points = [(r.fold, r.metrics[name]) for r in result.folds if name in r.metrics]
        s = result.summary[name]
        ax.axhspan(s["mean"] - s["std"], s["mean"] + s["std"], color="tab:blue", alpha=0.15)
        ax.axhline(s["mean"], color="tab:blue")
        ax.plot([p[0] for p in points], [p[1] for p in points], "o", color="black")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("fold")
        ax.set_xticks([r.fold for r in result.folds])
    fig.tight_layout()
    artifacts.write_figure(fig, path)
