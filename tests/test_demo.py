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


def test_demo_scores_before_and_after_and_writes_a_report(tmp_path, tiny_model_dir):
    rows = ticket_rows()
    data = {"train": str(write_jsonl(tmp_path / "train.jsonl", rows)), "system": "Answer in JSON."}
    train = {"max_steps": 80, "learning_rate": 1e-2, "lr_scheduler_type": "constant", "logging_steps": 40}
    cfg = write_config(tmp_path, tiny_model_dir, method={"name": "full"}, train=train, data=data)
    test_file = write_jsonl(tmp_path / "test.jsonl", rows)  # the memorized rows: after must beat before
    out = tmp_path / "demo"
    result = run_cli(["demo", "--output-dir", str(out), "--config", str(cfg), "--test-file", str(test_file)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "demo_report.json").read_text())
    assert report["after"]["exact_match"] > report["before"]["exact_match"]
    assert report["after"]["exact_match"] >= 0.75
    assert len(report["examples"]) == len(rows) and (out / "demo_report.md").is_file()
    assert "zero-shot base" in result.output and "fine-tuned" in result.output and "ticket:" in result.output
    assert "forgetting: probe accuracy" in (out / "demo_report.md").read_text()


def test_demo_from_the_wrong_directory_says_where_to_run_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli(["demo"])
    assert result.exit_code != 0 and "run the demo from the repository root" in result.output
