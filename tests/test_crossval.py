"""`tunelab cv`: K sub-runs in one parent run dir, every row validated once, a mean +- std report, resume."""

from __future__ import annotations

import json

import pytest

from tests.helpers import InterruptTraining, memorizable_rows, run_cli, write_config, write_jsonl
from tunelab import config
from tunelab.errors import ConfigError
from tunelab.sweeps import crossval

TRAIN = {"max_steps": 3, "learning_rate": 1e-2, "save_steps": 1, "save_total_limit": 5}


def cv_config(tmp_path, tiny_model_dir, n_rows=9, **extra):
    rows = (memorizable_rows(10) * 2)[:n_rows]
    rows = [{**r, "completion": f"{r['completion']} {i}"} for i, r in enumerate(rows)]  # no repeats
    data = {"train": str(write_jsonl(tmp_path / "train.jsonl", rows)), **extra}
    return write_config(tmp_path, tiny_model_dir, method={"name": "lora", "r": 4}, train=TRAIN, data=data)


def test_cv_trains_each_fold_and_validates_every_row_once(tmp_path, tiny_model_dir):
    path = cv_config(tmp_path, tiny_model_dir)
    result = run_cli(["cv", str(path), "--folds", "3", "forgetting.enabled=false", "eval.max_new_tokens=4"])
    assert result.exit_code == 0, result.output
    parent = tmp_path / "run"
    report = json.loads((parent / "cv.json").read_text())
    assert [f["fold"] for f in report["folds"]] == [1, 2, 3]
    assert sum(f["validation_rows"] for f in report["folds"]) == 9
    validated = []
    for n in (1, 2, 3):
        assert (parent / f"fold-{n}" / "COMPLETE").is_file()
        lines = (parent / "data" / f"fold-{n}" / "validation.jsonl").read_text().splitlines()
        validated += [json.loads(line)["completion"] for line in lines]
        train_lines = (parent / "data" / f"fold-{n}" / "train.jsonl").read_text().splitlines()
        assert len(train_lines) + len(lines) == 9
    assert sorted(validated) == sorted(f"{r['completion']} {i}" for i, r in enumerate(memorizable_rows(9)))
    # Each fold's loss and the configured generation metric, with mean and sample std over the folds.
    losses = [f["metrics"]["eval_loss"] for f in report["folds"]]
    summary = report["summary"]["eval_loss"]
    assert summary["mean"] == pytest.approx(sum(losses) / 3)
    assert summary["std"] > 0 and summary["min"] == min(losses)
    assert "eval_exact_match" in report["summary"]
    assert "mean +- std" in (parent / "cv.md").read_text()
    assert (parent / "cv.png").read_bytes()[:4] == b"\x89PNG"
    # Every fold row of the report is the sub-run's own metrics.json.
    fold2 = json.loads((parent / "fold-2" / "metrics.json").read_text())
    assert report["folds"][1]["metrics"]["eval_loss"] == pytest.approx(fold2["eval"]["eval_loss"])


def test_a_killed_cv_resumes_at_the_first_incomplete_fold(tmp_path, tiny_model_dir):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    overrides = ["forgetting.enabled=false", "eval.metrics=[]"]
    straight = crossval.run(config.load(cv_config(tmp_path / "a", tiny_model_dir), overrides), 3)

    cfg = config.load(cv_config(tmp_path / "b", tiny_model_dir), overrides)
    with pytest.raises(KeyboardInterrupt):
        crossval.run(cfg, 3, callbacks=(InterruptTraining(2),))
    parent = tmp_path / "b" / "run"
    assert (parent / "fold-1" / "COMPLETE").is_file() and not (parent / "fold-2" / "COMPLETE").exists()
    assert not (parent / "fold-3").exists()
    finished_at = (parent / "fold-1" / "COMPLETE").stat().st_mtime_ns

    with pytest.raises(ConfigError, match="--resume"):  # no silent restart over the unfinished cv
        crossval.run(cfg, 3)
    counter = InterruptTraining(None)
    resumed = crossval.run(cfg, 3, resume=True, callbacks=(counter,))
    assert counter.begun == 2  # folds 2 (from its checkpoint) and 3; fold 1 read back
    assert (parent / "fold-1" / "COMPLETE").stat().st_mtime_ns == finished_at
    for a, b in zip(straight.folds, resumed.folds, strict=True):
        assert a.metrics["eval_loss"] == pytest.approx(b.metrics["eval_loss"], abs=1e-6)


def test_resume_refuses_other_settings(tmp_path, tiny_model_dir):
    cfg = config.load(cv_config(tmp_path, tiny_model_dir), ["forgetting.enabled=false", "eval.metrics=[]"])
    with pytest.raises(KeyboardInterrupt):
        crossval.run(cfg, 2, callbacks=(InterruptTraining(1),))
    with pytest.raises(ConfigError, match=r"folds: 2 -> 3"):
        crossval.run(cfg, 3, resume=True)
    changed = config.load(cv_config(tmp_path, tiny_model_dir), ["train.learning_rate=0.5", "forgetting.enabled=false"])
    with pytest.raises(ConfigError, match="learning_rate"):
        crossval.run(changed, 2, resume=True)


def test_stratified_folds_for_classification(tmp_path, tiny_model_dir):
    rows = [{"text": f"item number {i}", "label": "rare" if i % 4 == 0 else "common"} for i in range(12)]
    data = {"train": str(write_jsonl(tmp_path / "train.jsonl", rows))}
    cfg = config.load(write_config(tmp_path, tiny_model_dir, train=TRAIN, data=data))
    plan = crossval.plan_folds(cfg, 3)
    for fold in plan.folds:
        labels = [plan.records[i].fields["label"] for i in fold.validation]
        assert labels.count("rare") == 1 and labels.count("common") == 3
    assert plan.labels == ["common", "rare"]


@pytest.mark.parametrize(
    ("folds", "message"),
    [("12", "more folds than rows (9)"), ("1", "use 2 or more")],
)
def test_impossible_fold_counts_fail_in_one_line_before_loading(tmp_path, tiny_model_dir, folds, message):
    result = run_cli(["cv", str(cv_config(tmp_path, tiny_model_dir)), "--folds", folds])
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_repeated_rows_stay_in_one_fold(tmp_path, tiny_model_dir):
    rows = memorizable_rows(6) + memorizable_rows(2)  # rows 0 and 1 twice
    data = {"train": str(write_jsonl(tmp_path / "train.jsonl", rows))}
    cfg = config.load(write_config(tmp_path, tiny_model_dir, train=TRAIN, data=data))
    plan = crossval.plan_folds(cfg, 3)
    for fold in plan.folds:
        held = {plan.records[i].fields["prompt"] for i in fold.validation}
        trained = {plan.records[i].fields["prompt"] for i in fold.train}
        assert not held & trained


def test_inspect_data_suggests_cv_for_small_data_with_the_threshold(tmp_path, tiny_model_dir):
    result = run_cli(["inspect-data", str(cv_config(tmp_path, tiny_model_dir, val_size=3))])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "small data (9 rows, under 1000)" in text and "tunelab cv" in text
    assert "3 validation rows measure a score to about +-57 points" in text


def test_no_cv_advice_at_1000_rows():
    from tunelab.data.inspection import small_data_advice

    assert small_data_advice(900, 100) == []
    assert "no validation data" in small_data_advice(999, 0)[0]
