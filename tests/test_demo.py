"""The demo's orchestration end to end on the tiny model: zero-shot, train, fine-tuned, report."""

from __future__ import annotations

import json

from tests.helpers import run_cli, write_config, write_jsonl

KEYS = ["cat", "dog", "sun", "car", "tree", "book", "fish", "moon"]
LABELS = ["billing", "bug", "account", "shipping"]


def ticket_rows() -> list[dict[str, str]]:
    return [
        {"prompt": f"Ticket about the {k}.", "completion": json.dumps({"category": LABELS[i % 4]})}
        for i, k in enumerate(KEYS)
    ]


def test_demo_trains_then_compares_zero_shot_few_shot_and_fine_tuned(tmp_path, tiny_model_dir):
    rows = ticket_rows()
    data = {"train": str(write_jsonl(tmp_path / "train.jsonl", rows)), "system": "Answer in JSON."}
    train = {"max_steps": 80, "learning_rate": 1e-2, "lr_scheduler_type": "constant", "logging_steps": 40}
    cfg = write_config(tmp_path, tiny_model_dir, method={"name": "full"}, train=train, data=data)
    test_file = write_jsonl(tmp_path / "test.jsonl", rows)  # the memorized rows: after must beat before
    out = tmp_path / "demo"
    result = run_cli(["demo", "--output-dir", str(out), "--config", str(cfg), "--test-file", str(test_file)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "demo_report.json").read_text())
    zero, few, tuned = report["arms"].values()
    assert list(report["arms"])[:2] == ["zero-shot", "3-shot"]
    assert tuned["metrics"]["exact_match"] > zero["metrics"]["exact_match"]
    assert tuned["metrics"]["exact_match"] >= 0.75
    assert few["prompt_tokens_per_example"] > zero["prompt_tokens_per_example"]
    assert report["verdict"].startswith("fine-tuned") and report["verdict"] in result.output
    assert len(report["examples"]) == len(rows) and (out / "compare" / "compare.png").is_file()
    assert "zero-shot" in result.output and "3-shot" in result.output and "ticket:" in result.output
    markdown = (out / "demo_report.md").read_text()
    assert "| zero-shot |" in markdown and "forgetting: probe accuracy" in markdown and "forgetting" in result.output


def test_demo_from_the_wrong_directory_says_where_to_run_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli(["demo"])
    assert result.exit_code != 0 and "run the demo from the repository root" in result.output
