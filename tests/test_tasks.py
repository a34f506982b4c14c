"""Several tasks in one run: `data.train` as a list of sources with weights; per-task metrics in eval/compare."""

from __future__ import annotations

import json
import random

import pytest
import yaml

from tests.helpers import memorizable_rows, run_cli, write_config, write_jsonl
from tunelab import config, data
from tunelab.data.tasks import mix_counts, take
from tunelab.errors import ConfigError, DataError

COLOURS = ["red", "blue"]


def two_task_files(tmp_path, n=20):
    words = [{**r, "completion": f"{r['completion']} {i}"} for i, r in enumerate(memorizable_rows(10) * (n // 10))]
    colours = [{"text": f"thing number {i}", "label": COLOURS[i % 2]} for i in range(n // 2)]
    return write_jsonl(tmp_path / "words.jsonl", words), write_jsonl(tmp_path / "colours.jsonl", colours)


def two_task_config(tmp_path, tiny_model_dir, weights=(3, 1), **extra):
    words, colours = two_task_files(tmp_path)
    sources = [
        {"path": str(words), "name": "words", "system": "Answer with the word."},
        {"path": str(colours), "name": "colours", "format": "classification"},
    ]
    if weights:
        for source, weight in zip(sources, weights, strict=True):
            source["weight"] = weight
    return write_config(tmp_path, tiny_model_dir, data={"train": sources, **extra}, train={"max_steps": 2})


def test_mix_counts_keep_the_total_and_follow_the_weights():
    assert mix_counts({"a": 100, "b": 100}, {"a": 3, "b": 1}) == {"a": 150, "b": 50}
    assert mix_counts({"a": 10, "b": 90}, None) == {"a": 10, "b": 90}  # no weights: every row once
    counts = mix_counts({"a": 7, "b": 5, "c": 1}, {"a": 1, "b": 1, "c": 1})
    assert sum(counts.values()) == 13 and sorted(counts.values()) == [4, 4, 5]


def test_take_repeats_whole_copies_before_sampling_and_is_seeded():
    rows = list(range(4))
    picked = take(rows, 10, random.Random(0))
    assert sorted(picked).count(0) >= 2 and all(sorted(picked).count(r) in (2, 3) for r in rows)
    assert picked == take(rows, 10, random.Random(0))
    assert len(set(take(rows, 3, random.Random(1)))) == 3  # fewer than the rows: no repeats


def test_rows_of_each_task_are_mixed_at_their_share_with_their_system_prompt(tmp_path, tiny_model_dir):
    cfg = config.load(two_task_config(tmp_path, tiny_model_dir, val_size=0.2))
    rows = data.preflight(cfg)
    by_task = {name: [r for r in rows.train if r.task == name] for name in ("words", "colours")}
    available = {"words": 16, "colours": 8}  # 20 and 10 rows, a fifth of each held out for validation
    assert {m.name: m.rows for m in rows.tasks} == available
    assert {name: len(r) for name, r in by_task.items()} == mix_counts(available, {"words": 3, "colours": 1})
    assert all(r.messages[0] == {"role": "system", "content": "Answer with the word."} for r in by_task["words"])
    assert all(r.messages[0]["role"] == "user" for r in by_task["colours"])  # no system of its own
    assert "Classify the text into one of these labels: blue, red" in by_task["colours"][0].messages[0]["content"]
    assert sorted({r.task for r in rows.validation}) == ["colours", "words"]
    assert rows.labels == ["blue", "red"]


def test_a_run_reports_its_mix_and_eval_scores_each_task(tmp_path, tiny_model_dir):
    path = two_task_config(tmp_path, tiny_model_dir)
    assert run_cli(["train", str(path), "forgetting.enabled=false"]).exit_code == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    mix = {t["name"]: t for t in metrics["data"]["tasks"]}
    # 30 rows at 3:1 is 22.5 + 7.5: the half row goes to one task, the total stays 30.
    assert mix["words"]["used"] + mix["colours"]["used"] == 30 and mix["words"]["used"] == 23
    assert mix["words"]["share"] == pytest.approx(23 / 30) and mix["colours"]["weight"] == 1

    words, colours = two_task_files(tmp_path / "run")  # the same rows as test data
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    cfg["eval"] = {
        "test": [{"path": str(words), "name": "words"}, {"path": str(colours), "name": "colours"}],
        "metrics": ["exact_match"],
        "few_shot_k": 0,
        "max_new_tokens": 4,
        "bootstrap_resamples": 50,
    }
    (tmp_path / "compare.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "cmp"
    result = run_cli(
        [
            "compare",
            str(tmp_path / "compare.yaml"),
            "--run",
            str(tmp_path / "run"),
            "--output-dir",
            str(out),
        ]
    )
    assert result.exit_code == 0, result.output
    table = json.loads((out / "compare.json").read_text())
    tuned = next(v for k, v in table.items() if k.startswith("fine-tuned"))
    assert {t: p["rows"] for t, p in tuned["by_task"].items()} == {"words": 20, "colours": 10}
    rows = [json.loads(line) for line in next(out.glob("predictions-fine-tuned*.jsonl")).read_text().splitlines()]
    for task in ("words", "colours"):  # each task's metric is its own rows' mean
        scores = [r["scores"]["exact_match"] for r in rows if r["task"] == task]
        assert tuned["by_task"][task]["metrics"]["exact_match"] == pytest.approx(sum(scores) / len(scores))
    assert "| task | arm | rows |" in (out / "compare.md").read_text()
    assert "exact_match (words)" in result.output and "exact_match (colours)" in result.output  # the console's


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"weights": (3, None)}, "give every source a `weight`"),
        ({"validation": "x.jsonl"}, "use data.val_size"),
    ],
)
def test_bad_task_lists_are_one_line_config_errors(tmp_path, tiny_model_dir, change, message):
    words, colours = two_task_files(tmp_path)
    sources = [{"path": str(words)}, {"path": str(colours), "format": "classification"}]
    if "weights" in change:
        sources[0]["weight"] = 3
    raw = {"data": {"train": sources, **({"validation": change["validation"]} if "validation" in change else {})}}
    with pytest.raises(ConfigError, match=message):
        config.validate(raw)


def test_raw_text_does_not_mix_with_other_tasks(tmp_path, tiny_model_dir):
    words, _ = two_task_files(tmp_path)
    text = write_jsonl(tmp_path / "text.jsonl", [{"text": "some prose"}] * 3)
    cfg = config.validate({"data": {"train": [{"path": str(words)}, {"path": str(text)}]}})
    with pytest.raises(DataError, match="cannot be mixed"):
        data.preflight(cfg)


def test_cv_and_preference_objectives_say_they_take_one_file(tmp_path, tiny_model_dir):
    path = two_task_config(tmp_path, tiny_model_dir)
    result = run_cli(["cv", str(path), "--folds", "2"])
    assert result.exit_code == 2 and "cv splits one training file" in result.output
    result = run_cli(["train", str(path), "objective=dpo"])
    assert result.exit_code == 2 and "trains on one data file" in result.output


def test_a_test_file_naming_each_rows_task_gets_that_tasks_system_prompt(tmp_path, tiny_model_dir):
    cfg = config.load(two_task_config(tmp_path, tiny_model_dir))
    rows = [
        {"prompt": "The secret word for cat?", "completion": "apple", "task": "words"},
        {"prompt": "Unnamed?", "completion": "x"},
    ]
    examples = data.read_eval_examples(write_jsonl(tmp_path / "test.jsonl", rows), cfg)
    assert examples[0].task == "words" and examples[0].messages[0]["content"] == "Answer with the word."
    assert examples[1].task is None and examples[1].messages[0]["role"] == "user"


def test_few_shot_examples_come_from_the_examples_own_task(tmp_path, tiny_model_dir):
    from tunelab.evaluation.arms import task_shots

    cfg = config.load(two_task_config(tmp_path, tiny_model_dir))
    shots = task_shots(data.preflight(cfg).train, 2, seed=0)
    assert set(shots) == {"words", "colours"}
    assert all("Classify" in shot[0]["content"] for shot in shots["colours"])
    assert all(shot[0]["role"] == "system" and "secret word" in shot[1]["content"] for shot in shots["words"])


def test_few_shot_examples_never_come_from_replayed_general_rows(tmp_path, tiny_model_dir):
    from tunelab.evaluation.arms import few_shot_examples
    from tunelab.inference.loading import load_for_inference

    rows = memorizable_rows(6)
    train_file = write_jsonl(tmp_path / "train.jsonl", rows)
    path = write_config(tmp_path, tiny_model_dir, data={"train": str(train_file), "replay_fraction": 0.5})
    cfg = config.load(path)
    assert data.preflight(cfg).replayed == 6  # half of the rows general: enough to be drawn if they could be
    examples = data.read_eval_examples(train_file, cfg)
    shots, mean_used = few_shot_examples(cfg, load_for_inference(str(tiny_model_dir)), examples[:1], k=12)
    own = {text for r in rows for text in (r["prompt"], r["completion"])}
    turns = [m["content"] for m in shots[0].messages[:-1] if m["role"] != "system"]
    assert mean_used == 6 and len(turns) == 12 and set(turns) <= own
