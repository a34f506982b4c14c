"""`tunelab eval`, `tunelab compare`, generation metrics during training, forgetting and replay, on the tiny model."""

from __future__ import annotations

import io
import json

import pytest
import yaml
from rich.console import Console
from rouge_score import rouge_scorer

from tests.helpers import memorizable_rows, run_cli, write_config, write_jsonl
from tunelab import config, data, energy
from tunelab.config.schema import ForgettingConfig
from tunelab.evaluation import forgetting
from tunelab.evaluation.compare import Arm, markdown, table, tuned_arm, write
from tunelab.evaluation.evaluate import EvalResult


@pytest.fixture(scope="module")
def memorized(tmp_path_factory, tiny_model_dir):
    """A full fine-tune that memorized the word list, and the config that made it."""
    tmp = tmp_path_factory.mktemp("eval_run")
    train = {"max_steps": 60, "learning_rate": 1e-2, "lr_scheduler_type": "constant", "logging_steps": 30}
    cfg = write_config(tmp, tiny_model_dir, method={"name": "full"}, train=train)
    result = run_cli(["train", str(cfg)])
    assert result.exit_code == 0, result.output
    return tmp


def test_eval_writes_metrics_predictions_and_report_that_match_rouge_score(memorized):
    run = memorized / "run"
    test = write_jsonl(memorized / "test.jsonl", memorizable_rows())
    result = run_cli(["eval", str(run), "--data", str(test), "--metrics", "rougeL,exact_match,bleu"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    rows = [json.loads(line) for line in (run / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and {"input", "reference", "output", "scores"} <= set(rows[0])
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    independent = sum(scorer.score(r["reference"], r["output"])["rougeL"].fmeasure for r in rows) / len(rows)
    assert metrics["metrics"]["rougeL"] == pytest.approx(independent)
    assert metrics["metrics"]["exact_match"] >= 0.75  # it memorized the list
    lo, hi = metrics["intervals"]["rougeL"]
    assert lo <= metrics["metrics"]["rougeL"] <= hi
    report = (run / "eval" / "report.md").read_text()
    assert "Best 5 by rougeL" in report and "Worst 5 by rougeL" in report and "± " in report


def test_compare_puts_zero_shot_few_shot_and_fine_tuned_side_by_side(memorized, tmp_path):
    cfg_path = memorized / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["eval"] = {"metrics": ["exact_match"], "few_shot_k": 2, "max_new_tokens": 8, "bootstrap_resamples": 200}
    cfg_path2 = tmp_path / "compare.yaml"
    cfg_path2.write_text(yaml.safe_dump(cfg))
    test = write_jsonl(tmp_path / "test.jsonl", memorizable_rows())
    out = tmp_path / "cmp"
    args = ["compare", str(cfg_path2), "--run", str(memorized / "run"), "--data", str(test), "--output-dir", str(out)]
    result = run_cli(args)
    assert result.exit_code == 0, result.output
    table = json.loads((out / "compare.json").read_text())
    arms = [k for k in table if k != "verdict"]
    assert arms[0] == "zero-shot" and arms[1] == "2-shot" and arms[2].startswith("fine-tuned")
    zero, few, tuned = (table[a] for a in arms)
    assert few["prompt_tokens_per_example"] > zero["prompt_tokens_per_example"]  # shots cost prompt tokens
    assert tuned["metrics"]["exact_match"] > zero["metrics"]["exact_match"]
    assert table["verdict"].startswith(f"{arms[2]} wins on exact_match")
    assert "training_cost" in tuned and "training_cost" not in zero and "training_cost" not in few
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    saved = [json.loads(line) for line in (out / "predictions-2-shot.jsonl").read_text().splitlines()]
    exact = sum(r["output"].strip() == r["reference"].strip() for r in saved) / len(saved)
    assert exact == pytest.approx(few["metrics"]["exact_match"])


def test_compare_shows_each_fine_tuned_arms_training_cost(tmp_path):
    """The cost a run recorded (metrics.json "compute") in the terminal table, compare.md and compare.json; nothing
    for the base model's arm; "not recorded" for a run from before costs were measured."""
    report = {"device": "cpu: AMD EPYC", "hours": 0.5, "measuring": True, "country": "USA", "grid": "United States"}
    report |= {"energy_kwh": {"cpu": 0.1, "gpu": 0.0, "ram": 0.05, "total": 0.15}, "co2_kg": 0.06}
    report |= {"methods": {"cpu": "RAPL", "gpu": "none", "ram": "estimate"}, "measured_hours": 0.5}
    compute = energy.combine([report])
    new, old = tmp_path / "new", tmp_path / "old"
    for run, recorded in ((new, {"compute": compute}), (old, {})):
        run.mkdir()
        (run / "metrics.json").write_text(json.dumps({"train": {"train_loss": 1.0}} | recorded))
    score = {"exact_match": 0.5}, {"exact_match": (0.4, 0.6)}, "exact_match"
    result = EvalResult("x", "test.jsonl", *score, rows=[], seconds_per_example=0.1, prompt_tokens_per_example=9)
    arms = [Arm("zero-shot", result), tuned_arm("fine-tuned (new)", result, str(new))]
    arms.append(tuned_arm("fine-tuned (old)", result, str(old)))
    cost = energy.describe(compute)
    assert cost.startswith("0.50 device-hours (cpu: AMD EPYC), 150 Wh, 60 g CO2")

    screen = Console(file=io.StringIO(), width=400)
    screen.print(table(arms))
    row = next(line for line in screen.file.getvalue().splitlines() if "training cost" in line)
    assert [cell.strip() for cell in row.strip("│ ").split("│")] == ["training cost", "", cost, "not recorded"]
    md_rows = [line for line in markdown(arms).splitlines() if line.startswith("| ")]
    assert md_rows[0].endswith("| training cost |") and md_rows[1].endswith("| 9 |  |")
    assert md_rows[2].endswith(f"| {cost} |") and md_rows[3].endswith("| not recorded |")
    write(arms, tmp_path / "cmp")
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert "training_cost" not in saved["zero-shot"]
    new_arm, old_arm = saved["fine-tuned (new)"], saved["fine-tuned (old)"]
    assert new_arm["training_cost"] == cost and new_arm["compute"] == compute
    assert old_arm["training_cost"] == "not recorded" and old_arm["compute"] is None


def test_generation_metric_selects_the_best_checkpoint(tmp_path, tiny_model_dir):
    """Most training answers are "apple", so the model learns to say it to new prompts too: exact match on
    the validation rows (all "apple") moves as training goes, and the best checkpoint must follow it."""
    rows = [{**r, "completion": "apple" if i < 6 else r["completion"]} for i, r in enumerate(memorizable_rows())]
    val = [{"prompt": f"The secret word for {k}?", "completion": "apple"} for k in ("sky", "lamp", "road", "ink")]
    data_cfg = {
        "train": str(write_jsonl(tmp_path / "train.jsonl", rows)),
        "validation": str(write_jsonl(tmp_path / "val.jsonl", val)),
    }
    train = {
        "max_steps": 40,
        "learning_rate": 1e-2,
        "eval_strategy": "steps",
        "eval_steps": 10,
        "save_steps": 10,
        "load_best_model_at_end": True,
        "metric_for_best_model": "exact_match",
    }
    cfg = write_config(tmp_path, tiny_model_dir, method={"name": "full"}, train=train, data=data_cfg)
    result = run_cli(["train", str(cfg), "eval.max_new_tokens=6"])
    assert result.exit_code == 0, result.output
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    evals = [h for h in state["log_history"] if "eval_exact_match" in h][:4]  # a 5th: the final evaluation
    assert [h["step"] for h in evals] == [10, 20, 30, 40]
    assert len({h["eval_exact_match"] for h in evals}) > 1, "the metric must move for the test to mean anything"
    best = max(evals, key=lambda h: (h["eval_exact_match"], -h["step"]))
    assert state["best_global_step"] == best["step"]
    assert state["best_metric"] == pytest.approx(best["eval_exact_match"])


def test_unknown_best_metric_is_a_config_error(tmp_path, tiny_model_dir):
    cfg = write_config(tmp_path, tiny_model_dir, train={"metric_for_best_model": "rougeL"})
    result = run_cli(["train", str(cfg)])
    assert result.exit_code != 0 and "add a metric to eval.metrics" in result.output


def test_forgetting_delta_is_after_minus_base():
    base = forgetting.ProbeScore(accuracy=0.62, perplexity=20.0, questions=100, passages=40)
    after = forgetting.ProbeScore(accuracy=0.55, perplexity=25.0, questions=100, passages=40)
    report = forgetting.compare(base, after, ForgettingConfig(max_drop=5, max_perplexity_ratio=1.5))
    assert report["delta"]["accuracy_points"] == pytest.approx(100 * (0.55 - 0.62))
    assert report["delta"]["perplexity_ratio"] == pytest.approx(25.0 / 20.0)
    assert len(report["exceeded"]) == 1 and "7.0 points" in report["exceeded"][0]
    with pytest.raises(forgetting.ForgettingError):
        forgetting.enforce(report, ForgettingConfig(max_drop=5, fail=True))


def test_the_drop_has_a_paired_interval_over_the_same_questions():
    # 40 questions: 10 lost, 2 gained. Paired, the spread the two scores share cancels: the interval is the
    # bootstrap's of the per-question change, and it excludes 0 here though both accuracies' own intervals overlap.
    base_right = "1" * 30 + "0" * 10
    after_right = "0" * 10 + "1" * 20 + "11" + "0" * 8
    base = forgetting.ProbeScore(0.75, 20.0, 40, 4, base_right)
    after = forgetting.ProbeScore(after_right.count("1") / 40, 20.0, 40, 4, after_right)
    delta = forgetting.compare(base, after, ForgettingConfig())["delta"]
    low, high = delta["accuracy_points_ci95"]
    assert delta["accuracy_points"] == pytest.approx(-20.0)
    assert -40 < low < -20 < high < 0
    assert "95% CI" in forgetting.summary(forgetting.compare(base, after, ForgettingConfig()))
    # Scores without the answers (older runs) still compare, without an interval.
    assert (
        "accuracy_points_ci95"
        not in forgetting.compare(forgetting.ProbeScore(0.75, 20.0, 40, 4), after, ForgettingConfig())["delta"]
    )


def test_every_run_records_the_probe_before_and_after(tmp_path, tiny_model_dir):
    cfg = write_config(tmp_path, tiny_model_dir, method={"name": "full"}, train={"max_steps": 3})
    result = run_cli(["train", str(cfg), "forgetting.max_items=10"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())["forgetting"]
    assert report["base"]["questions"] == 10 and report["after"]["passages"] == 10
    assert len(report["base"]["right"]) == 10 and report["base"]["right"].count("1") == round(
        10 * report["base"]["accuracy"]
    )
    low, high = report["delta"]["accuracy_points_ci95"]
    assert low <= report["delta"]["accuracy_points"] <= high
    assert report["delta"]["accuracy_points"] == pytest.approx(
        100 * (report["after"]["accuracy"] - report["base"]["accuracy"])
    )
    assert "forgetting: probe accuracy" in result.output


def with_validation(tmp_path):
    return {"train": str(write_jsonl(tmp_path / "train.jsonl", memorizable_rows())), "val_size": 2}


def test_probe_at_each_evaluation_is_logged_and_ends_at_the_after_score(tmp_path, tiny_model_dir):
    train = {"max_steps": 4, "eval_strategy": "steps", "eval_steps": 2, "save_steps": 2, "learning_rate": 1e-2}
    cfg = write_config(tmp_path, tiny_model_dir, method={"name": "full"}, train=train, data=with_validation(tmp_path))
    args = [
        "forgetting.max_items=6",
        "forgetting.at_each_evaluation=true",
        "train.metric_for_best_model=probe_accuracy",
    ]
    result = run_cli(["train", str(cfg), *args])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    evals = [h for h in state["log_history"] if "eval_probe_accuracy" in h]
    assert [h["step"] for h in evals][:2] == [2, 4]
    assert all(h["eval_probe_perplexity"] > 1 for h in evals)
    # The last evaluation scored the final weights: the same numbers as the after-training probe.
    assert evals[-1]["eval_probe_perplexity"] == pytest.approx(metrics["forgetting"]["after"]["perplexity"], rel=1e-5)
    assert evals[-1]["eval_probe_accuracy"] == pytest.approx(metrics["forgetting"]["after"]["accuracy"])


def test_probe_metric_needs_the_probe_at_each_evaluation(tmp_path, tiny_model_dir):
    cfg = write_config(tmp_path, tiny_model_dir, data=with_validation(tmp_path))
    result = run_cli(["train", str(cfg), "train.metric_for_best_model=probe_accuracy"])
    assert result.exit_code != 0 and "probe_accuracy" in result.output and "Traceback" not in result.output


def test_fatal_forgetting_leaves_the_run_incomplete(tmp_path, tiny_model_dir, monkeypatch):
    # A stub scorer: the base scores 60%, the result 40%, so a 5-point limit is exceeded by 20 points.
    scores = iter([0.6, 0.4])
    monkeypatch.setattr(
        forgetting, "score", lambda *args, **kw: forgetting.ProbeScore(next(scores), 10.0, questions=5, passages=5)
    )
    cfg = write_config(tmp_path, tiny_model_dir, method={"name": "full"}, train={"max_steps": 2})
    result = run_cli(["train", str(cfg), "forgetting.max_drop=5", "forgetting.fail=true"])
    assert result.exit_code != 0 and "forgot more than allowed" in result.output and "20.0 points" in result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["forgetting"]["delta"]["accuracy_points"] == pytest.approx(-20.0)
    assert not (tmp_path / "run" / "COMPLETE").exists()


@pytest.mark.parametrize("fraction", [0.2, 0.5])
def test_replay_mixes_general_rows_in_as_configured(tmp_path, tiny_model_dir, fraction):
    cfg_path = write_config(tmp_path, tiny_model_dir)
    cfg = config.load(cfg_path, [f"data.replay_fraction={fraction}"])
    rows = data.preflight(cfg)
    task = len(memorizable_rows())
    assert rows.replayed == round(fraction / (1 - fraction) * task)
    assert len(rows.train) == task + rows.replayed
    assert rows.replayed / len(rows.train) == pytest.approx(fraction, abs=0.05)
    replayed = [r for r in rows.train if r.where.startswith("replay")]
    assert len(replayed) == rows.replayed and all(r.messages[0]["role"] == "system" for r in replayed)
    assert data.preflight(cfg).train == rows.train  # deterministic


def test_bad_eval_file_gets_the_same_clear_errors_as_training_data(memorized, tmp_path):
    bad = tmp_path / "test.jsonl"
    bad.write_text('{"prompt": "ok", "completion": "fine"}\n{broken\n{"prompt": "", "completion": "x"}\n')
    result = run_cli(["eval", str(memorized / "run"), "--data", str(bad)])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert f"{bad}:2" in result.output and f"{bad}:3" in result.output and "prompt" in result.output
    missing = run_cli(["eval", str(memorized / "run"), "--data", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code != 0 and "nope.jsonl" in missing.output and "Traceback" not in missing.output
