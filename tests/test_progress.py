"""The live progress: evaluation lines go to stderr with the bar, so stdout carries only results (JSON)."""

from __future__ import annotations

from types import SimpleNamespace

from tunelab.training.progress import LiveProgress


def test_evaluation_lines_go_to_stderr_not_stdout(capsys):
    LiveProgress().on_log(None, SimpleNamespace(global_step=4), None, logs={"eval_loss": 0.5, "eval_runtime": 1.0})
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "step 4: eval_loss=0.5000" in captured.err and "runtime" not in captured.err
