"""Encoder classification (BERT-style): a classification head on an encoder, trained with full, freeze (frozen
encoder, trained head) and lora; scored with accuracy and macro-F1 by `tunelab eval`. On a tiny random BERT
with the real all-MiniLM-L6-v2 tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import build_tiny_bert, run_cli, write_jsonl

GOOD = ["great", "lovely", "excellent", "wonderful", "superb", "fantastic"]
BAD = ["awful", "terrible", "horrible", "dreadful", "broken", "useless"]
THINGS = ["phone", "camera", "plug", "app", "order", "service", "screen", "battery"]


def rows():
    out = []
    for i, thing in enumerate(THINGS):
        for j, (good, bad) in enumerate(zip(GOOD, BAD, strict=True)):
            if (i + j) % 2:
                out.append({"text": f"The {thing} is {good}.", "label": "positive"})
            else:
                out.append({"text": f"The {thing} is {bad}.", "label": "negative"})
    return out


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), max_positions=128)


def config_file(tmp_path, model_dir, method, steps=40):
    data = rows()
    cfg = {
        "model": {"name": str(model_dir), "dtype": "float32", "device": "cpu"},
        "data": {"train": str(write_jsonl(tmp_path / "train.jsonl", data[::2] + data[1::4])), "val_size": 4},
        "method": method,
        "train": {
            "output_dir": str(tmp_path / "run"),
            "max_steps": steps,
            "learning_rate": 5e-3,
            "per_device_train_batch_size": 8,
            "logging_steps": steps,
            "eval_strategy": "steps",
            "eval_steps": steps,
            "save_steps": steps,
            "metric_for_best_model": "accuracy",
        },
        "eval": {"metrics": ["accuracy", "f1"]},
    }
    import yaml

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, write_jsonl(tmp_path / "test.jsonl", data[3::4])


@pytest.mark.parametrize(
    "method",
    [
        {"name": "full"},
        {"name": "freeze", "trainable_layers": 0},
        {"name": "lora", "r": 4, "target_modules": ["query", "value"]},
    ],
    ids=["full", "freeze", "lora"],
)
def test_encoder_classifier_trains_and_evaluates(method, tmp_path, tiny_bert_dir):
    cfg, test = config_file(tmp_path, tiny_bert_dir, method)
    result = run_cli(["train", str(cfg)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data"]["labels"] == ["negative", "positive"]
    assert "eval_accuracy" in metrics["eval"] and "eval_f1" in metrics["eval"]
    assert "forgetting" not in metrics  # the retention probe is for language models
    if method["name"] == "freeze":
        assert metrics["trainable_params"] == 32 * 2 + 2  # the head alone: Linear(32 -> 2)
    evaluated = run_cli(["eval", str(tmp_path / "run"), "--data", str(test), "--metrics", "accuracy,f1"])
    assert evaluated.exit_code == 0, evaluated.output
    scored = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    predictions = [
        json.loads(line) for line in (tmp_path / "run" / "eval" / "predictions.jsonl").read_text().splitlines()
    ]
    assert all(p["output"] in ("negative", "positive") for p in predictions)
    hits = sum(p["output"] == p["reference"] for p in predictions)
    assert scored["metrics"]["accuracy"] == pytest.approx(hits / len(predictions))
    if method["name"] == "full":
        # A tiny random encoder memorizes rather than generalizes; that it fits its training rows through
        # the whole path (labels -> head -> saved model -> eval) is what this checks. all-MiniLM-L6-v2's
        # held-out figures are in docs/methods.md.
        fitted = run_cli(
            [
                "eval",
                str(tmp_path / "run"),
                "--data",
                str(tmp_path / "train.jsonl"),
                "--metrics",
                "accuracy",
                "--overwrite",
            ]
        )
        assert fitted.exit_code == 0, fitted.output
        assert json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())["metrics"]["accuracy"] >= 0.9


def test_classifier_needs_classification_rows(tmp_path, tiny_bert_dir):
    cfg, _ = config_file(tmp_path, tiny_bert_dir, {"name": "full"})
    write_jsonl(tmp_path / "train.jsonl", [{"prompt": f"hi {i}", "completion": "there"} for i in range(8)])
    result = run_cli(["train", str(cfg), "eval.metrics=[exact_match]", "train.metric_for_best_model=eval_loss"])
    assert result.exit_code != 0 and "classification rows" in result.output and "Traceback" not in result.output


def test_builtin_encoder_resolves_to_the_shipped_directory():
    from tunelab.config.schema import ModelConfig
    from tunelab.models import resolve, resolve_task

    source = resolve("all-minilm-l6-v2")
    assert source.kind == "local" and (source.path / "config.json").is_file()
    assert resolve_task(ModelConfig(name="all-minilm-l6-v2")) == "sequence_classification"
