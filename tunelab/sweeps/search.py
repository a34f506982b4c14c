"""`tunelab search CONFIG --trials N --budget 30m`: hyperparameter search on Optuna, within a time budget.

    result = search.run(cfg, trials=8, budget="30m")   # runs/NAME/trial-000.., study.db, search.md, best.yaml

Optuna's TPE sampler picks each trial's settings from `search.space` (sweeps/space.py); every trial is a full
`train.run` into its own sub-run directory, scored by the validation metric `search.metric` names. A trainer
callback reports each intermediate evaluation to the trial, and Optuna's median pruner stops trials that fall
behind earlier ones at the same step. The study is a SQLite file in the run directory, so a killed search goes
on with --resume: the interrupted trial runs again with the same settings, from its newest checkpoint. No trial
starts that the planner's time estimate (calibrated by the finished trials' measured times) says would end
after the budget. With `search.max_probe_drop`, trials that forget more are infeasible (Optuna's constraints).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from tunelab import planning
from tunelab.config import RunConfig
from tunelab.config.search import duration_seconds
from tunelab.console import info
from tunelab.errors import ConfigError, TrainingDivergedError
from tunelab.evaluation import during_training
from tunelab.sweeps import runs, search_report
from tunelab.sweeps.space import cheapest, check_space, space_of, suggest

# Errors that end one trial and not the search: its settings made the loss diverge, or did not fit the device.
TRIAL_FAILURES = (TrainingDivergedError, torch.OutOfMemoryError)
STUDY = "study.db"
STUDY_NAME = "tunelab-search"


@dataclass(frozen=True)
class Objective:
    metric: str  # as read_metrics names it: eval_loss, eval_field_accuracy, ...
    direction: str  # maximize | minimize
    max_probe_drop: float | None


def run(
    cfg: RunConfig, trials: int | None = None, budget: str | None = None, *, resume: bool = False, callbacks=()
) -> search_report.SearchResult:
    """Run trials until `trials` have finished in the study or the budget has no room for another."""
    trials = trials or cfg.search.trials
    budget_s = budget_seconds(budget or cfg.search.budget)
    objective, space = objective_of(cfg), space_of(cfg)
    check_space(cfg, space)
    check_budget(cfg, space, budget_s)  # before any model loads
    clock = Clock(budget_s)
    parent = Path(cfg.train.output_dir)
    runs.prepare(parent, manifest(cfg, space), resume=resume, overwrite=cfg.train.overwrite_output_dir)
    study = open_study(parent, cfg, objective, trials)
    retry_interrupted(study)
    clock.resume(study.trials)
    while finished(study) < trials:
        if not run_trial(study, cfg, space, objective, clock, callbacks):
            break
    result = search_report.summarize(study, cfg, objective, parent, space)
    search_report.write(result, cfg)
    search_report.render(result)
    return result


def budget_seconds(budget: str | None) -> float | None:
    try:
        return duration_seconds(budget) if budget else None
    except ValueError as err:
        raise ConfigError(f"--budget: {err}") from None


def objective_of(cfg: RunConfig) -> Objective:
    """The metric to optimize, which a trial's evaluations report (checked against what the config scores)."""
    name = cfg.search.metric or cfg.train.metric_for_best_model
    name = name if name.startswith("eval_") else f"eval_{name}"
    choices = [f"eval_{m.removeprefix('eval_')}" for m in during_training.selectable_metrics(cfg)]
    if name not in choices:
        raise ConfigError(
            f"search.metric={name}: not a validation metric of this config; choose one of {', '.join(choices)} "
            "(generation metrics come from eval.metrics)"
        )
    if cfg.data.validation is None and cfg.data.val_size is None:
        raise ConfigError(
            "tunelab search scores trials on validation data: set data.val_size (e.g. 0.1) or data.validation"
        )
    if cfg.search.max_probe_drop is not None and not cfg.forgetting.enabled:
        raise ConfigError("search.max_probe_drop needs the retention probe: set forgetting.enabled=true")
    direction = cfg.search.direction
    if direction == "auto":
        direction = "minimize" if "loss" in name or "perplexity" in name else "maximize"
    return Objective(name, direction, cfg.search.max_probe_drop)


def check_budget(cfg: RunConfig, space: dict[str, Any], budget_s: float | None) -> None:
    """A budget below the planner's training time at the cheapest point of the space holds no trial."""
    if budget_s is None:
        return
    seconds = planned_seconds(runs.with_settings(cfg, cheapest(space)))
    if seconds > budget_s:
        raise ConfigError(
            f"--budget {budget_s / 60:.1f} min is too small for one trial: the cheapest point of the search space "
            f"trains about {seconds / 60:.1f} min here (planner estimate); give a longer budget or a smaller space"
        )


def planned_seconds(cfg: RunConfig) -> float:
    estimate = planning.training_time(cfg)
    if estimate is None:
        raise ConfigError("tunelab search: the planner cannot estimate a trial's time (no training rows)")
    return estimate.seconds


class Clock:
    """The budget: what the trials so far took, and whether the next one is predicted to fit."""

    def __init__(self, budget_s: float | None):
        self.budget_s, self.spent = budget_s, 0.0
        self.ratios: list[float] = []  # measured / planned seconds of the finished trials

    def predict(self, planned: float) -> float:
        # The planner counts optimizer steps only; loading, evaluation and the probe come on top. Until a trial
        # has been measured, its training time alone is the prediction (a first trial may overrun by that).
        return planned * (statistics.median(self.ratios) if self.ratios else 1.0)

    def resume(self, trials: list) -> None:
        """The time earlier trials of this study spent, and the measured/planned ratios of the complete ones (a
        pruned trial stops early: its ratio would understate a whole trial)."""
        self.spent = sum(t.user_attrs.get("seconds", 0.0) for t in trials)
        self.ratios = [
            t.user_attrs["seconds"] / t.user_attrs["planned_seconds"]
            for t in trials
            if t.state.name == "COMPLETE" and "planned_seconds" in t.user_attrs
        ]

    def fits(self, predicted: float) -> bool:
        return self.budget_s is None or self.spent + predicted <= self.budget_s


def manifest(cfg: RunConfig, space: dict[str, Any]) -> dict[str, Any]:
    """What a resume must find unchanged; trials and budget may grow (extending a search is the point)."""
    config = runs.settings_of(cfg)
    config["search"] = {k: v for k, v in config["search"].items() if k not in ("trials", "budget")}
    return {"kind": "search", "config": config}


def open_study(parent: Path, cfg: RunConfig, objective: Objective, trials: int):
    """The study in parent/study.db (created or loaded): TPE after a few random trials, median pruning."""
    import optuna  # ~0.5 s; only where a search runs

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # tunelab says one line per trial itself
    sampler = optuna.samplers.TPESampler(
        seed=cfg.train.seed,
        # TPE's default of 10 random start-up trials would leave an 8-trial search random: a third of them, >= 2.
        n_startup_trials=max(2, trials // 3),
        multivariate=True,
        constraints_func=(lambda t: t.user_attrs.get("constraint", [0.0])) if objective.max_probe_drop else None,
    )
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2) if cfg.search.pruning else optuna.pruners.NopPruner()
    return optuna.create_study(
        storage=f"sqlite:///{(parent / STUDY).resolve()}",
        study_name=STUDY_NAME,
        direction=objective.direction,
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )


def retry_interrupted(study) -> None:
    """Trials left running by a killed search: marked failed, and their settings queued to run again in the same
    sub-run directory, which resumes from its newest checkpoint."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
        run_dir = trial.user_attrs.get("run_dir")
        info(f"--resume: trial {trial.number} was interrupted; it runs again with the same settings")
        study.enqueue_trial(trial.params, user_attrs={"run_dir": run_dir, "retry_of": trial.number})


def finished(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def run_trial(study, cfg: RunConfig, space: dict[str, Any], objective: Objective, clock: Clock, callbacks) -> bool:
    """Ask for a trial, train it unless it would overrun the budget, tell the study; False: the search stops."""
    from optuna.trial import TrialState

    trial = study.ask()
    settings = suggest(trial, space)
    run_dir = Path(trial.user_attrs.get("run_dir") or Path(cfg.train.output_dir) / f"trial-{trial.number:03d}")
    trial.set_user_attr("run_dir", str(run_dir))
    trial_cfg = trial_config(cfg, settings, run_dir, objective)
    planned = planned_seconds(trial_cfg)
    predicted = clock.predict(planned)
    if not clock.fits(predicted):
        left = (clock.budget_s or 0) - clock.spent
        trial.set_user_attr("not_run", f"predicted {predicted / 60:.1f} min, {left / 60:.1f} min of the budget left")
        study.tell(trial, state=TrialState.FAIL)
        info(f"budget: trial {trial.number} would take about {predicted / 60:.1f} min, {left / 60:.1f} min left: stop")
        return False
    shown = ", ".join(f"{k}={search_report.short(v)}" for k, v in settings.items())
    info(f"[bold]trial {trial.number}[/]: {shown} (about {predicted / 60:.1f} min)")
    reporter = ReportToTrial(trial, objective.metric, cfg.search.pruning)
    started = time.monotonic()
    try:
        metrics = runs.run_or_resume(trial_cfg, (*callbacks, reporter))
    except TRIAL_FAILURES as err:
        trial.set_user_attr("error", str(err).splitlines()[0])
        study.tell(trial, state=TrialState.FAIL)
        info(f"trial {trial.number} failed: {str(err).splitlines()[0]}")
        return True
    seconds = time.monotonic() - started
    clock.spent += seconds
    if reporter.pruned_at is None:
        clock.ratios.append(seconds / planned)
    tell(study, trial, metrics, objective, reporter.pruned_at, {"seconds": seconds, "planned_seconds": planned})
    return True


def trial_config(cfg: RunConfig, settings: dict[str, Any], run_dir: Path, objective: Objective) -> RunConfig:
    extra: dict[str, Any] = {"train.output_dir": run_dir, "train.overwrite_output_dir": False}
    if objective.metric.removeprefix("eval_") in during_training.generation_metrics(cfg):
        extra["eval.during_training"] = True  # the metric is scored at every evaluation, for pruning
    return runs.with_settings(cfg, {**settings, **extra})


def tell(study, trial, metrics: dict[str, float], objective: Objective, pruned_at: int | None, times: dict) -> None:
    from optuna.trial import TrialState

    for key, value in {**times, "metrics": metrics}.items():
        trial.set_user_attr(key, value)
    if objective.max_probe_drop is not None:  # <= 0: feasible (Optuna's convention for constraints)
        trial.set_user_attr("constraint", [metrics.get("probe_drop_points", 0.0) - objective.max_probe_drop])
    value = metrics.get(objective.metric)
    if pruned_at is not None:
        study.tell(trial, state=TrialState.PRUNED)
        info(f"trial {trial.number} pruned at step {pruned_at} (below the median of earlier trials)")
    elif value is None:
        trial.set_user_attr("error", f"no {objective.metric} in the run's metrics")
        study.tell(trial, state=TrialState.FAIL)
    else:
        study.tell(trial, value)
        info(f"trial {trial.number}: {objective.metric} = {value:.4f} ({times['seconds'] / 60:.1f} min)")


class ReportToTrial(TrainerCallback):
    """Reports each evaluation's metric to the Optuna trial; stops training when the pruner says so."""

    def __init__(self, trial, metric: str, prune: bool):
        self.trial, self.metric, self.prune = trial, metric, prune
        self.pruned_at: int | None = None

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = (metrics or {}).get(self.metric)
        if value is None or self.pruned_at is not None:
            return
        self.trial.report(float(value), state.global_step)
        if self.prune and self.trial.should_prune():
            self.pruned_at = state.global_step
            control.should_training_stop = True
