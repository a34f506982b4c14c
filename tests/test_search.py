"""`tunelab search`: Optuna trials as sub-runs, pruning from intermediate evaluations, resume, budget, best config."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.helpers import InterruptTraining, memorizable_rows, run_cli, write_config, write_jsonl
from tunelab import config, planning
from tunelab.errors import ConfigError
from tunelab.planning import budget
from tunelab.sweeps import search

TRAIN = {"max_steps": 4, "eval_strategy": "steps", "eval_steps": 2, "save_steps": 2, "lr_scheduler_type": "constant"}
GOOD, BAD = 0.02, 1e-7  # learning rates: one learns the rows in 4 steps, the other leaves the loss where it was


def search_config(tmp_path, tiny_model_dir, space=None, **search_section):
    rows = [{**r, "completion": f"{r['completion']} {i}"} for i, r in enumerate(memorizable_rows(10) * 2)]
    data = {"train": str(write_jsonl(tmp_path / "train.jsonl", rows)), "val_size": 4}
    path = write_config(tmp_path, tiny_model_dir, method={"name": "lora", "r": 4}, train=TRAIN, data=data)
    raw = yaml.safe_load(path.read_text())
    raw["search"] = {"space": space or {"train.learning_rate": [GOOD, BAD], "method.r": [2, 4]}, **search_section}
    raw["forgetting"] = {"enabled": False}
    raw["eval"] = {"metrics": []}
    path.write_text(yaml.safe_dump(raw))
    return path


def test_search_runs_trials_and_writes_a_best_config_train_takes(tmp_path, tiny_model_dir):
    path = search_config(tmp_path, tiny_model_dir)
    result = run_cli(["search", str(path), "--trials", "4"])
    assert result.exit_code == 0, result.output
    parent = tmp_path / "run"
    report = json.loads((parent / "search.json").read_text())
    assert len(report["trials"]) == 4 and (parent / "study.db").is_file()
    finished = [t for t in report["trials"] if t["state"] == "COMPLETE"]
    assert report["best"]["value"] == min(t["value"] for t in finished)  # eval_loss: lower is better
    for t in finished:  # each trial's value is its own sub-run's final eval_loss
        metrics = json.loads((parent / f"trial-{t['number']:03d}" / "metrics.json").read_text())
        assert t["value"] == pytest.approx(metrics["eval"]["eval_loss"])
    best = config.load(parent / "best.yaml")
    assert best.train.learning_rate == report["best"]["params"]["train.learning_rate"]
    assert best.method.r == report["best"]["params"]["method.r"]
    assert str(best.train.output_dir) == f"{parent}-best"
    assert run_cli(["train", str(parent / "best.yaml")]).exit_code == 0
    assert "| trial | state |" in (parent / "search.md").read_text()


def test_a_trial_behind_the_median_is_pruned(tmp_path, tiny_model_dir):
    import optuna

    cfg = config.load(search_config(tmp_path, tiny_model_dir))
    parent = tmp_path / "run"
    parent.mkdir()
    study = search.open_study(parent, cfg, search.objective_of(cfg), trials=3)
    for lr in (GOOD, GOOD, BAD):  # two good trials first (the pruner's start-up), then a bad one
        study.enqueue_trial({"train.learning_rate": lr, "method.r": 4})
    result = search.run(cfg, trials=3, resume=True)
    states = [t["state"] for t in result.trials]
    assert states == ["COMPLETE", "COMPLETE", "PRUNED"]
    pruned = optuna.load_study(study_name=search.STUDY_NAME, storage=f"sqlite:///{parent / 'study.db'}").trials[2]
    assert max(pruned.intermediate_values) < TRAIN["max_steps"]  # stopped before its last step


def test_a_killed_search_resumes_the_interrupted_trial_with_its_settings(tmp_path, tiny_model_dir):
    cfg = config.load(search_config(tmp_path, tiny_model_dir, pruning=False))
    with pytest.raises(KeyboardInterrupt):
        search.run(cfg, trials=3, callbacks=(InterruptTraining(2),))
    parent = tmp_path / "run"
    assert (parent / "trial-000" / "COMPLETE").is_file() and not (parent / "trial-001" / "COMPLETE").exists()
    with pytest.raises(ConfigError, match="--resume"):
        search.run(cfg, trials=3)
    counter = InterruptTraining(None)
    result = search.run(cfg, trials=3, resume=True, callbacks=(counter,))
    assert counter.begun == 2  # the interrupted trial (from its checkpoint) and one new one
    states = [(t["number"], t["state"]) for t in result.trials]
    assert states == [(0, "COMPLETE"), (1, "FAIL"), (2, "COMPLETE"), (3, "COMPLETE")]
    assert result.trials[2]["params"] == result.trials[1]["params"]
    assert result.trials[2]["run_dir"] == str(parent / "trial-001")
    assert "interrupted" in result.trials[1]["note"]


def test_infeasible_trials_are_never_best(tmp_path, tiny_model_dir):
    import optuna
    from optuna.distributions import FloatDistribution

    cfg = config.load(search_config(tmp_path, tiny_model_dir, max_probe_drop=2.0), ["forgetting.enabled=true"])
    objective = search.objective_of(cfg)
    study = optuna.create_study(direction=objective.direction)
    for lr, loss, drop in ((0.1, 0.5, 6.0), (0.01, 0.9, 1.0), (0.001, 1.2, 0.5)):
        study.add_trial(
            optuna.trial.create_trial(
                params={"train.learning_rate": lr},
                distributions={"train.learning_rate": FloatDistribution(1e-4, 1.0)},
                value=loss,
                user_attrs={"metrics": {"eval_loss": loss, "probe_drop_points": drop}},
            )
        )
    result = search.search_report.summarize(study, cfg, objective, tmp_path, {})
    assert result.best["number"] == 1  # trial 0 has the lowest loss but forgot 6 points
    assert [t["feasible"] for t in result.trials] == [False, True, True]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--budget", "1s"], "too small for one trial"),
        (["--budget", "soon"], "is not a duration"),
        (["search.space={}"], "the search space is empty"),
        (["search.space={train.lerning_rate: [0.1]}"], "did you mean `train.learning_rate`"),
        (["search.metric=eval_rougeL"], "not a validation metric"),
    ],
)
def test_bad_searches_fail_in_one_line_before_any_model_loads(tmp_path, tiny_model_dir, args, message, monkeypatch):
    # The cheapest trial: 10 minutes by this (stubbed) planner, so a 1 s budget cannot hold it.
    monkeypatch.setattr(planning, "training_time", lambda cfg: budget.TrainingTime(60.0, 10, 5))
    result = run_cli(["search", str(search_config(tmp_path, tiny_model_dir)), *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_time_budget_counts_steps_of_the_global_batch_of_all_processes(tmp_path, tiny_model_dir):
    cfg = config.load(search_config(tmp_path, tiny_model_dir), ["train.max_steps=-1", "data.val_size=null"])
    one, two = budget.training_time(cfg), budget.training_time(cfg, nproc=2)
    assert one.steps_per_epoch >= 4, "too few steps to tell"
    assert two.steps_per_epoch == -(-one.steps_per_epoch // 2) and two.steps == two.steps_per_epoch


def test_time_budget_sets_the_steps_that_fit(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setattr(budget, "training_time", lambda cfg, nproc=1: budget.TrainingTime(2.0, 100, 50))
    cfg = config.load(search_config(tmp_path, tiny_model_dir), ["train.max_steps=-1", "train.time_budget=1m"])
    assert budget.fit_time_budget(cfg).train.max_steps == 30  # 60 s / 2 s per step
    roomy = config.load(search_config(tmp_path, tiny_model_dir), ["train.max_steps=-1", "train.time_budget=1h"])
    assert budget.fit_time_budget(roomy).train.max_steps == -1  # all 100 steps fit: the config as it was
    tight = config.load(search_config(tmp_path, tiny_model_dir), ["train.time_budget=1s"])
    with pytest.raises(ConfigError, match="one step takes about 2.0 s"):
        budget.fit_time_budget(tight)


def test_time_budget_on_a_real_run_trains_the_planned_steps(tmp_path, tiny_model_dir):
    path = search_config(tmp_path, tiny_model_dir)
    estimate = planning.training_time(config.load(path, ["train.max_steps=-1", "train.num_train_epochs=50"]))
    budget_s = estimate.seconds_per_step * 3.5  # room for 3 steps by the planner's own estimate
    result = run_cli(
        [
            "train",
            str(path),
            "train.max_steps=-1",
            "train.num_train_epochs=50",
            f"train.time_budget={budget_s:.6f}s",
            "train.eval_strategy=no",
        ]
    )
    assert result.exit_code == 0, result.output
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    assert state["global_step"] == 3


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("5m", 300), ("1.5h", 5400), ("1h30m", 5400), (12, 12)])
def test_durations(text, seconds):
    from tunelab.config.search import duration_seconds

    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "5 minutes", "m", "-5m", "0s"])
def test_bad_durations_name_the_forms(text):
    from tunelab.config.search import duration_seconds

    with pytest.raises(ValueError, match="duration"):
        duration_seconds(text)


def test_the_budget_counts_earlier_trials_and_calibrates_on_complete_ones():
    from types import SimpleNamespace

    def trial(state, seconds, planned):
        return SimpleNamespace(
            state=SimpleNamespace(name=state), user_attrs={"seconds": seconds, "planned_seconds": planned}
        )

    clock = search.Clock(budget_s=600)
    clock.resume([trial("COMPLETE", 150, 100), trial("PRUNED", 40, 100), trial("COMPLETE", 130, 100)])
    assert clock.spent == 320
    assert clock.predict(100) == pytest.approx(140)  # the median of 1.5 and 1.3; the pruned trial's 0.4 left out
    assert clock.fits(280) and not clock.fits(281)
