"""GRPO's rewards and its data: the built-in rewards score what they say, the user's reward loads from the file the
config names and nowhere else, and what cannot work is refused before the model loads, in one line."""

from __future__ import annotations

import json

import pytest

from tests.helpers import write_jsonl
from tunelab.config import validate
from tunelab.data import preference
from tunelab.errors import ConfigError, DataError
from tunelab.evaluation.rewards import reward_functions, total_rewards
from tunelab.training.preflight import check_objective

REF = json.dumps({"category": "bug", "priority": "low"})


def rewards(*specs):
    cfg = validate({"data": {"train": "x.jsonl"}, "objective": {"name": "grpo", "rewards": list(specs)}})
    return reward_functions(cfg.objective.rewards)


@pytest.mark.parametrize(
    ("spec", "completion", "expected"),
    [
        ({"name": "valid_json"}, '{"a": 1}', 1.0),
        ({"name": "valid_json"}, '```json\n{"a": 1}\n```', 1.0),  # a fence is a formatting slip, forgiven
        ({"name": "valid_json"}, "[1, 2]", 0.0),  # JSON, but not an object
        ({"name": "valid_json"}, "category: bug", 0.0),
        ({"name": "regex", "pattern": r"^\{.*\}$"}, '{"x": 2}', 1.0),
        ({"name": "regex", "pattern": r"^\{.*\}$"}, 'Sure: {"x": 2}', 0.0),
        ({"name": "length", "min_chars": 2, "max_chars": 5}, "abcd", 1.0),
        ({"name": "length", "min_chars": 2, "max_chars": 5}, "abcdef", 0.0),
        ({"name": "exact_match"}, f"  {REF}\n", 1.0),
        ({"name": "exact_match"}, REF.replace("low", "high"), 0.0),
        ({"name": "field_match"}, REF.replace("low", "high"), 0.5),
        ({"name": "field_match"}, REF, 1.0),
        ({"name": "field_match"}, "not json", 0.0),
        ({"name": "field_match", "fields": ["priority"]}, REF.replace("bug", "billing"), 1.0),
    ],
)
def test_built_in_rewards(spec, completion, expected):
    (function,), _ = rewards(spec)
    assert function(prompts=["p"], completions=[completion], reference=[REF]) == [expected]


def test_weighted_totals_and_per_reward_means():
    functions, weights = rewards({"name": "valid_json", "weight": 2}, {"name": "field_match"})
    totals, means = total_rewards(functions, weights, ["p", "q"], [REF, "no"], {"reference": [REF, REF]})
    assert totals == [3.0, 0.0] and means == {"valid_json": 0.5, "field_match": 0.5}


def test_a_users_reward_loads_from_the_named_file_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.py").write_text(
        "def score(prompts, completions, **columns):\n    return [len(c) for c in completions]\n"
    )
    (function,), _ = rewards({"name": "python", "function": "mine.py:score"})
    assert function(prompts=["p"], completions=["abc"]) == [3]
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    cases = {
        "missing.py:score": "no file missing.py",
        "mine.py:nope": "mine.py has no function 'nope'",
        "broken.py:score": "importing broken.py failed: RuntimeError: boom",
    }
    for function_ref, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            rewards({"name": "python", "function": function_ref})
    with pytest.raises(Exception, match="path/to/file.py:function_name"):
        rewards({"name": "python", "function": "mine:score"})  # a module name, not a file: refused


def grpo_config(tmp_path, rows, rewards_, **train):
    data = {"train": str(write_jsonl(tmp_path / "prompts.jsonl", rows))}
    objective = {"name": "grpo", "rewards": rewards_}
    return validate({"data": data, "objective": objective, "train": train, "model": "smollm2-135m-instruct"})


def test_prompts_rows_and_references(tmp_path):
    rows = [{"prompt": "a", "reference": REF}, {"prompt": "b", "completion": REF, "extra": 3}]
    got = preference.preflight(grpo_config(tmp_path, rows, [{"name": "field_match"}]))
    assert got.format == "prompts" and [r.columns for r in got.train] == [
        {"reference": REF},
        {"reference": REF, "extra": 3},
    ]
    assert got.train[0].prompt == [{"role": "user", "content": "a"}]


def test_rows_a_reward_cannot_score_are_bad_rows(tmp_path):
    rows = [{"prompt": "a", "reference": REF}, {"prompt": "b"}, {"prompt": "c", "reference": "plain text"}]
    with pytest.raises(DataError) as error:
        preference.preflight(grpo_config(tmp_path, rows, [{"name": "field_match"}]))
    text = str(error.value)
    assert "prompts.jsonl:2: field 'reference': is missing" in text
    assert "prompts.jsonl:3: field 'reference': is not a JSON object" in text
    # Rewards that need no reference take the same rows.
    assert len(preference.preflight(grpo_config(tmp_path, rows, [{"name": "valid_json"}])).train) == 3


def test_grpo_preflight_checks_groups_and_user_rewards(tmp_path):
    rows = [{"prompt": "a"}]
    odd = grpo_config(tmp_path, rows, [{"name": "valid_json"}], per_device_train_batch_size=6)
    assert any("num_generations=4 must divide the batch" in p for p in check_objective(odd))
    missing = grpo_config(tmp_path, rows, [{"name": "python", "function": f"{tmp_path}/none.py:f"}])
    assert any("no file" in p for p in check_objective(missing))
    fine = grpo_config(tmp_path, rows, [{"name": "valid_json"}], per_device_train_batch_size=8)
    assert check_objective(fine) == []
