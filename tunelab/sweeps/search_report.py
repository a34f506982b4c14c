"""A search's results: the trials table, the best feasible trial and its config file, parameter importances.

best.yaml is the search's config with the best trial's settings, its output_dir beside the search's
(runs/NAME-best): `tunelab train runs/NAME/best.yaml` trains it as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab import artifacts
from tunelab.config import RunConfig
from tunelab.config.load import dump
from tunelab.console import console, info
from tunelab.sweeps import runs


@dataclass
class SearchResult:
    run_dir: Path
    metric: str
    direction: str
    trials: list[dict[str, Any]]  # number, state, params, value, probe_drop_points, feasible, minutes, note
    best: dict[str, Any] | None
    importances: dict[str, float] = field(default_factory=dict)
    best_config: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        out = dict(vars(self))
        out["run_dir"] = str(self.run_dir)
        out["best_config"] = str(self.best_config) if self.best_config else None
        return out


def summarize(study, cfg: RunConfig, objective, parent: Path, space: dict[str, Any]) -> SearchResult:
    rows = [trial_row(t, objective) for t in study.trials]
    done = [r for r in rows if r["state"] == "COMPLETE" and r["feasible"]]
    sign = 1 if objective.direction == "maximize" else -1
    best = max(done, key=lambda r: sign * r["value"]) if done else None
    return SearchResult(parent, objective.metric, objective.direction, rows, best, importances(study, done))


def trial_row(trial, objective) -> dict[str, Any]:
    attrs = trial.user_attrs
    metrics = attrs.get("metrics", {})
    drop = metrics.get("probe_drop_points")
    feasible = objective.max_probe_drop is None or drop is None or drop <= objective.max_probe_drop
    note = attrs.get("not_run") or attrs.get("error") or ""
    if trial.state.name == "FAIL" and not note:
        note = "interrupted, run again"
    elif "retry_of" in attrs:
        note = f"trial {attrs['retry_of']} again, from its checkpoint"
    elif trial.state.name == "PRUNED":
        note = "pruned: the value is its last evaluation's"
    return {
        "number": trial.number,
        "state": "NOT RUN" if "not_run" in attrs else trial.state.name,
        "params": dict(trial.params),
        "value": trial.value,
        "probe_drop_points": drop,
        "feasible": feasible,
        "minutes": attrs["seconds"] / 60 if "seconds" in attrs else None,
        "run_dir": attrs.get("run_dir"),
        "note": note,
    }


def importances(study, done: list[dict[str, Any]]) -> dict[str, float]:
    """Optuna's parameter importances (fANOVA) over the finished trials; empty below 3 of them or when the
    settings never varied (nothing to attribute)."""
    if len(done) < 3:
        return {}
    import optuna

    try:
        return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError):  # e.g. every finished trial had the same settings
        return {}


def write(result: SearchResult, cfg: RunConfig) -> None:
    parent = result.run_dir
    if result.best is not None:
        settings = {"train.output_dir": Path(f"{parent}-best"), "train.overwrite_output_dir": False}
        best_cfg = runs.with_settings(cfg, {**result.best["params"], **settings})
        result.best_config = parent / "best.yaml"
        header = f"# The best trial ({result.best['number']}) of the search in {parent}: {result.metric} = "
        artifacts.write_text(result.best_config, f"{header}{result.best['value']:.4f}\n" + dump(best_cfg))
    artifacts.write_json(parent / "search.json", result.to_dict())
    artifacts.write_text(parent / "search.md", markdown(result))
    if result.importances:
        plot_importances(result.importances, parent / "importance.png")


def short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def markdown(result: SearchResult) -> str:
    keys = sorted({k for r in result.trials for k in r["params"]})
    lines = [
        f"# Search: {result.metric} ({result.direction}), {len(result.trials)} trials ({result.run_dir})",
        "",
        "| trial | state | " + " | ".join(keys) + f" | {result.metric} | probe drop | min | note |",
        "|---:|---|" + "---:|" * len(keys) + "---:|---:|---:|---|",
    ]
    for r in result.trials:
        cells = [short(r["params"].get(k, "")) for k in keys]
        value = "" if r["value"] is None else f"{r['value']:.4f}"
        drop = "" if r["probe_drop_points"] is None else f"{r['probe_drop_points'] + 0.0:.1f}"
        minutes = "" if r["minutes"] is None else f"{r['minutes']:.1f}"
        mark = " **best**" if result.best and r["number"] == result.best["number"] else ""
        note = r["note"] + ("" if r["feasible"] else " infeasible (probe drop over the limit)")
        lines.append(
            f"| {r['number']}{mark} | {r['state']} | "
            + " | ".join(cells)
            + f" | {value} | {drop} | {minutes} | {note} |"
        )
    if result.importances:
        shares = ", ".join(f"{k} {v:.2f}" for k, v in result.importances.items())
        lines += ["", f"Parameter importance (fANOVA, share of the metric's variance): {shares}"]
    if result.best_config:
        lines += ["", f"Best config: `{result.best_config}` (`tunelab train {result.best_config}`)"]
    return "\n".join(lines) + "\n"


def render(result: SearchResult) -> None:
    from rich.table import Table

    keys = sorted({k for r in result.trials for k in r["params"]})
    table = Table(title=f"search: {result.metric} ({result.direction})")
    shown = [k.split(".")[-1] if [x.split(".")[-1] for x in keys].count(k.split(".")[-1]) == 1 else k for k in keys]
    for name in ("trial", "state", *shown, result.metric.removeprefix("eval_"), "probe drop", "min"):
        table.add_column(name, justify="left" if name == "state" else "right")
    for r in result.trials:
        value = "" if r["value"] is None else f"{r['value']:.4f}"
        drop = "" if r["probe_drop_points"] is None else f"{r['probe_drop_points'] + 0.0:.1f}"
        minutes = "" if r["minutes"] is None else f"{r['minutes']:.1f}"
        best = result.best is not None and r["number"] == result.best["number"]
        cells = [short(r["params"].get(k, "")) for k in keys]
        table.add_row(f"{r['number']}{' *' if best else ''}", r["state"], *cells, value, drop, minutes)
    console.print(table)
    if result.best_config:
        info(
            f"best: trial {result.best['number']}, {result.metric} = {result.best['value']:.4f}: {result.best_config}"
        )
    else:
        info("no trial finished with a feasible result: no best config written")


def plot_importances(importances: dict[str, float], path: Path) -> None:
    plt = artifacts.pyplot()

    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(5.5, 0.5 + 0.45 * len(names)))
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set_xlabel("importance (fANOVA share)")
    ax.set_xlim(0, max(1.0, math.ceil(max(importances.values()) * 10) / 10))
    fig.tight_layout()
    artifacts.write_figure(fig, path)
