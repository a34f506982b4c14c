"""Every shipped config validates, its data passes the preflight, and config errors say where and how to fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from tunelab import config, data
from tunelab.data.replay import replay_count
from tunelab.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
SFT_CONFIGS = [p for p in CONFIGS if config.load(p).objective.name == "sft"]
PREFERENCE_CONFIGS = [p for p in CONFIGS if p not in SFT_CONFIGS]


def test_there_is_a_config_per_method():
    from tunelab.methods import METHODS

    used = {config.load(p).method.name for p in CONFIGS}
    assert set(METHODS) <= used


@pytest.mark.parametrize("path", SFT_CONFIGS, ids=lambda p: p.name)
def test_shipped_config_validates_and_its_data_passes_preflight(path, monkeypatch):
    monkeypatch.chdir(ROOT)  # data paths in configs are relative to the repository root
    cfg = config.load(path)
    rows = data.preflight(cfg)
    if cfg.data.several_tasks:  # each task's rows all read, its validation share held out of it
        for source, mix in zip(cfg.data.sources(), rows.tasks, strict=True):
            lines = [line for line in source.path.read_text().splitlines() if line.strip()]
            assert mix.name == source.task and mix.rows + mix.validation_rows == len(lines)
            assert mix.validation_rows == round(cfg.data.val_size * len(lines))
        return
    records = [json.loads(line) for line in Path(cfg.data.train).read_text().splitlines() if line.strip()]
    assert rows.format == cfg.data.format and rows.rows_read == len(records) and not rows.skipped
    # Every line became exactly one row, on one side of the val_size split (the shipped data repeats no row); the
    # general rows replay adds (data.replay_fraction) come after them.
    assert sorted(row.line for row in rows.own_train + rows.validation) == list(range(1, len(records) + 1))
    assert rows.replayed == replay_count(cfg.data.replay_fraction, len(rows.own_train))
    share = cfg.data.val_size or 0  # a share of the rows, or (>= 1) a count; none: cv makes its own folds
    assert rows.repeats == 0 and len(rows.validation) == (int(share) if share >= 1 else round(share * len(records)))
    for row in rows.own_train + rows.validation:
        record = records[row.line - 1]
        if "messages" in record:  # chat rows (the judge's verdicts) are read as they are
            assert row.messages == record["messages"], row.where
            continue
        prompt, answer = record.get("prompt", record.get("text")), record.get("completion", record.get("label"))
        assert [m["role"] for m in row.messages] == ["user", "assistant"], row.where
        user = row.messages[0]["content"]
        # A classification prompt is an instruction listing the labels, then the text.
        assert (user == prompt) if rows.labels is None else user.endswith(f"\n\nText: {prompt}"), row.where
        assert row.messages[1]["content"] == answer, row.where


@pytest.mark.parametrize("path", PREFERENCE_CONFIGS, ids=lambda p: p.name)
def test_shipped_preference_config_reads_every_row_of_its_data(path, monkeypatch):
    from tunelab.data import preference

    monkeypatch.chdir(ROOT)
    cfg = config.load(path)
    rows = preference.preflight(cfg)
    for got, file in ((rows.train, cfg.data.train), (rows.validation, cfg.data.validation)):
        if file is None:
            assert not got
            continue
        records = [json.loads(line) for line in Path(file).read_text().splitlines()]
        if cfg.objective.name == "grpo":  # prompt_completion rows: the completion is the rewards' reference
            expected = [(x["prompt"], x["completion"]) for x in records]
            assert [(r.prompt[0]["content"], r.columns["reference"]) for r in got] == expected
        else:  # a prompt is a string, or messages (the pairs `tunelab feedback` writes)
            expected = [(x["prompt"], x["chosen"], x["rejected"]) for x in records]
            pairs = zip(got, records, strict=True)
            prompts = [r.prompt if isinstance(x["prompt"], list) else r.prompt[0]["content"] for r, x in pairs]
            assert [(p, r.chosen, r.rejected) for p, r in zip(prompts, got, strict=True)] == expected
    assert rows.format == cfg.data.format and not rows.skipped


@pytest.mark.parametrize("name", ["demo.yaml", "dpo.yaml", "grpo.yaml"])
def test_demo_system_prompt_is_the_shipped_one(name):
    cfg = config.load(ROOT / "configs" / name)
    assert cfg.data.system == (ROOT / "examples/support_tickets/system.txt").read_text().strip()


def test_rules_example_system_prompt_is_the_one_its_judge_was_trained_on():
    cfg = config.load(ROOT / "configs" / "rules_dpo.yaml")
    assert cfg.data.system == (ROOT / "examples/support_tickets/reply_system.txt").read_text().strip()


def test_all_problems_reported_at_once_with_lines_and_fixes(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "data:\n  train: x.jsonl\n  val_sise: 0.1\nmethod:\n  name: full\n  r: 8\ntrain:\n  learning_rat: 1\n"
    )
    with pytest.raises(ConfigError) as exc:
        config.load(path)
    text = str(exc.value)
    assert f"{path}:3: unknown key `data.val_sise`; did you mean `data.val_size`?" in text
    assert f"{path}:6: unknown key `method.r`; `r` is an option of method `lora`, not `full`" in text
    assert f"{path}:8: unknown key `train.learning_rat`; did you mean `train.learning_rate`?" in text


def test_an_override_that_is_not_yaml_is_a_clean_error():
    with pytest.raises(ConfigError, match="not valid YAML") as exc:
        config.load(None, ["data.train=a.jsonl", "method={name:"])
    assert "quote it as one shell argument" in str(exc.value)


def test_a_bare_no_strategy_means_no():
    cfg = config.load(None, ["data.train=a.jsonl", "train.eval_strategy=no", "train.save_strategy=no"])
    assert cfg.train.eval_strategy == "no" and cfg.train.save_strategy == "no"


def test_overrides_parse_values_and_nest():
    cfg = config.load(None, ["data.train=a.jsonl", "method.r=4", "train.learning_rate=1e-4", "model=foo"])
    assert cfg.method.name == "lora" and cfg.method.r == 4
    assert cfg.train.learning_rate == 1e-4 and cfg.model.name == "foo"


def test_missing_required_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="`data` is required"):
        config.load(None, ["train.seed=1"])
    broken = tmp_path / "broken.yaml"
    broken.write_text("data:\n  train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(broken)


def test_config_is_frozen():
    cfg = config.load(None, ["data.train=a.jsonl"])
    with pytest.raises(ValidationError):
        cfg.train.seed = 3  # type: ignore[misc]
