"""Preference data preflight (pairs, openai_preference, kto rows), the `objective:` config and check_objective.

.venv/bin/python -m pytest -p no:xdist -q tests/test_preference_data.py
"""

from __future__ import annotations

import json

import pytest

from tests.helpers import write_jsonl
from tunelab import config
from tunelab.data import preference
from tunelab.data.preference import Judged, Pair
from tunelab.errors import ConfigError, DataError
from tunelab.training.preflight import check_objective

USER_Q = [{"role": "user", "content": "Capital of France?"}]
PAIR = {"prompt": "Capital of France?", "chosen": "Paris", "rejected": "Lyon"}
OPENAI = {
    "input": {"messages": USER_Q, "tools": [], "parallel_tool_calls": True},
    "preferred_output": [{"role": "assistant", "content": "Paris"}],
    "non_preferred_output": [{"role": "assistant", "content": "Lyon"}],
}
KTO = {"prompt": "Capital of France?", "completion": "Paris", "label": True}


def pair(i: int) -> dict[str, str]:
    return {"prompt": f"Question {i}?", "chosen": f"good answer {i}", "rejected": f"bad answer {i}"}


def cfg_for(tmp_path, rows, objective="dpo", model="unused-model", **data):
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    return config.validate({"model": model, "data": {"train": str(train), **data}, "objective": objective})


def test_pairs_with_strings(tmp_path):
    rows = preference.preflight(cfg_for(tmp_path, [PAIR, pair(1)]))
    assert rows.format == "pairs"
    assert rows.train[0] == Pair(USER_Q, "Paris", "Lyon", f"{tmp_path / 'train.jsonl'}:1")
    assert rows.train[1].prompt == [{"role": "user", "content": "Question 1?"}]
    assert rows.validation == [] and rows.skipped == {}


def test_pairs_with_message_lists_keep_the_system_turn(tmp_path):
    prompt = [{"role": "system", "content": "Answer in one word."}, *USER_Q]
    row = {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": "Paris"}],
        "rejected": [{"role": "assistant", "content": "Marseille"}],
    }
    rows = preference.preflight(cfg_for(tmp_path, [row]))
    assert rows.format == "pairs"
    assert (rows.train[0].prompt, rows.train[0].chosen, rows.train[0].rejected) == (prompt, "Paris", "Marseille")


@pytest.mark.parametrize("objective", ["dpo", "orpo"])
def test_openai_preference_rows_as_openai_documents_them(tmp_path, objective):
    rows = preference.preflight(cfg_for(tmp_path, [OPENAI], objective=objective))
    assert rows.format == "openai_preference"
    assert rows.train == [Pair(USER_Q, "Paris", "Lyon", f"{tmp_path / 'train.jsonl'}:1")]


def test_kto_rows(tmp_path):
    bad = {"prompt": [{"role": "user", "content": "2+2?"}], "completion": "5", "label": False}
    rows = preference.preflight(cfg_for(tmp_path, [KTO, bad], objective="kto"))
    assert rows.format == "kto"
    assert [(r.prompt, r.completion, r.desirable) for r in rows.train] == [
        (USER_Q, "Paris", True),
        ([{"role": "user", "content": "2+2?"}], "5", False),
    ]


@pytest.mark.parametrize(("row", "fmt"), [(PAIR, "pairs"), (OPENAI, "openai_preference")])
def test_kto_reads_each_pair_as_a_desirable_and_an_undesirable_row(tmp_path, row, fmt):
    rows = preference.preflight(cfg_for(tmp_path, [row], objective="kto"))
    where = f"{tmp_path / 'train.jsonl'}:1"
    assert rows.format == fmt
    assert rows.train == [Judged(USER_Q, "Paris", True, where), Judged(USER_Q, "Lyon", False, where)]
    assert rows.to_dict() | {"skipped": None} == {
        "format": fmt, "train_rows": 2, "validation_rows": 0, "rows_read": 1, "skipped": None,
        "desirable": 1, "undesirable": 1,
    }  # fmt: skip


def assistant(text):
    return {"role": "assistant", "content": text}


# (id, good row of the format, bad row as written on line 3, field named, reason)
BAD_ROWS = [
    # A missing answer is "is missing" (missing_field), as a missing field is everywhere else.
    ("chosen missing", PAIR, {"prompt": "q", "rejected": "r"}, "chosen", "is missing"),
    ("rejected a number", PAIR, {"prompt": "q", "chosen": "c", "rejected": 7}, "rejected", "is a number"),
    ("same answers", PAIR, {"prompt": "q", "chosen": " Paris\n", "rejected": "Paris"}, "chosen/rejected", "same"),
    (
        "prompt ends with the assistant",
        PAIR,
        {"prompt": [*USER_Q, assistant("Paris")], "chosen": "c", "rejected": "r"},
        "prompt[1].role",
        "is not user",
    ),
    (
        "chosen two messages",
        PAIR,
        {"prompt": "q", "chosen": [assistant("a"), assistant("b")], "rejected": "r"},
        "chosen",
        "is 2 messages",
    ),
    (
        "chosen role user",
        PAIR,
        {"prompt": "q", "chosen": [{"role": "user", "content": "c"}], "rejected": "r"},
        "chosen[0].role",
        "is 'user'",
    ),
    ("kto label a string", KTO, {"prompt": "q", "completion": "c", "label": "yes"}, "label", "is 'yes'"),
    (
        "openai without input.messages",
        OPENAI,
        {"input": {"tools": []}, "preferred_output": [assistant("a")], "non_preferred_output": [assistant("b")]},
        "input.messages",
        "is missing",
    ),
    ("unparseable line", PAIR, '{"prompt": "q", "chosen":', None, "not valid JSON"),
    (
        "unknown role in the prompt",
        PAIR,
        {"prompt": [{"role": "robot", "content": "beep"}, *USER_Q], "chosen": "c", "rejected": "r"},
        "prompt[0].role",
        "unknown role 'robot'",
    ),
]


@pytest.mark.parametrize(("good", "bad", "field", "reason"), [c[1:] for c in BAD_ROWS], ids=[c[0] for c in BAD_ROWS])
def test_a_bad_row_is_named_by_file_line_field_and_reason(tmp_path, good, bad, field, reason):
    objective = "kto" if good is KTO else "dpo"
    path = tmp_path / "train.jsonl"
    goods = [json.dumps(good), json.dumps({**good, "variant": 2})]
    path.write_text("\n".join([*goods, bad if isinstance(bad, str) else json.dumps(bad)]) + "\n")
    cfg = config.validate({"model": "m", "data": {"train": str(path)}, "objective": objective})
    with pytest.raises(DataError) as exc:
        preference.preflight(cfg)
    [problem] = exc.value.problems
    assert problem.startswith(f"{path}:3: ")
    assert reason in problem
    if field is not None:
        assert f"field '{field}': " in problem
    assert problem in str(exc.value)


def test_on_bad_rows_skip_drops_and_counts_the_bad_rows(tmp_path):
    bad = [{"prompt": "q", "chosen": "c", "rejected": " c"}, {"prompt": "q", "chosen": "c", "rejected": 2}]
    rows = [pair(0), bad[0], *(pair(i) for i in range(1, 8)), bad[1]]
    got = preference.preflight(cfg_for(tmp_path, rows, on_bad_rows="skip", max_skip_fraction=0.2))
    assert [r.chosen for r in got.train] == [f"good answer {i}" for i in range(8)]
    assert got.skipped == {"wrong_type": 1, "nothing_to_train": 1}
    assert [p.where for p in got.problems] == [f"{tmp_path / 'train.jsonl'}:{n}" for n in (2, 10)]
    assert got.to_dict()["rows_read"] == 10


def test_a_format_the_objective_does_not_train_on_is_refused(tmp_path):
    with pytest.raises(DataError) as exc:
        preference.preflight(cfg_for(tmp_path, [KTO], objective="dpo", format="kto"))
    assert "data.format=kto" in str(exc.value)
    assert "objective dpo trains on pairs or openai_preference rows" in str(exc.value)


def test_sft_rows_for_dpo_list_the_fields_of_the_accepted_formats(tmp_path):
    with pytest.raises(DataError) as exc:
        preference.preflight(cfg_for(tmp_path, [{"prompt": "q", "completion": "c"}]))
    text = str(exc.value)
    assert "objective dpo trains on pairs or openai_preference rows" in text
    assert f"{tmp_path / 'train.jsonl'}:1: fields {{completion, prompt}}" in text
    assert "pairs: {chosen, prompt, rejected}" in text
    assert "openai_preference: {input, non_preferred_output, preferred_output}" in text


def test_val_size_splits_the_same_way_for_the_same_seed(tmp_path):
    rows = [pair(i) for i in range(20)]

    def split(seed):
        cfg = cfg_for(tmp_path, rows, val_size=0.25)
        got = preference.preflight(cfg.model_copy(update={"train": cfg.train.model_copy(update={"seed": seed})}))
        return [r.chosen for r in got.train], [r.chosen for r in got.validation]

    train, validation = split(0)
    assert len(validation) == 5 and len(train) == 15
    assert sorted(train + validation) == sorted(r["chosen"] for r in rows)
    assert split(0) == (train, validation)
    assert split(1) != (train, validation)


def test_val_size_keeps_copies_of_a_row_on_one_side(tmp_path):
    # Copies that differ only in whitespace are the same row to the duplicate check (its key normalizes them), so
    # the split must keep them together, as the SFT split does; else val_size alone makes a "duplicate" error.
    rows = [r for i in range(10) for r in (pair(i), {**pair(i), "prompt": f"Question  {i}? "})]
    got = preference.preflight(cfg_for(tmp_path, rows, val_size=0.5))
    assert len(got.train) + len(got.validation) == 20


@pytest.mark.parametrize("objective", ["dpo", "kto"])
def test_a_validation_row_also_in_train_is_dropped_as_a_duplicate(tmp_path, objective):
    val = write_jsonl(tmp_path / "val.jsonl", [pair(3), {**pair(0), "prompt": " Question 0? "}])
    rows = [pair(i) for i in range(30)]
    # 2 of 32 rows read are bad (6.25%).
    data = {"validation": str(val), "on_bad_rows": "skip", "max_skip_fraction": 0.1}
    # kto: a pair is two judged rows, but a dropped pair is one bad row (else 4 of 32, over max_skip_fraction).
    got = preference.preflight(cfg_for(tmp_path, rows, objective, **data))
    assert got.validation == [] and len(got.train) == 30 * (2 if objective == "kto" else 1)
    assert {p.kind for p in got.problems} == {"duplicate"}
    assert sorted({p.where for p in got.problems}) == [f"{val}:1", f"{val}:2"]
    assert f"{tmp_path / 'train.jsonl'}:4" in got.problems[0].reason
    assert f"{tmp_path / 'train.jsonl'}:1" in got.problems[-1].reason
    assert got.skipped == {"duplicate": 2}


def test_a_duplicate_validation_row_is_an_error_by_default(tmp_path):
    val = write_jsonl(tmp_path / "val.jsonl", [pair(1), pair(99)])
    with pytest.raises(DataError) as exc:
        preference.preflight(cfg_for(tmp_path, [pair(i) for i in range(4)], validation=str(val)))
    [problem] = exc.value.problems
    assert problem.startswith(f"{val}:1: the same row is in the training data at {tmp_path / 'train.jsonl'}:2")


def test_to_dict_reports_sizes_and_for_kto_the_labels(tmp_path):
    rows = [pair(i) for i in range(4)]
    assert preference.preflight(cfg_for(tmp_path, rows, val_size=1)).to_dict() == {
        "format": "pairs", "train_rows": 3, "validation_rows": 1, "rows_read": 4, "skipped": {},
    }  # fmt: skip
    judged = [{**KTO, "completion": f"c{i}", "label": i < 3} for i in range(5)]
    report = preference.preflight(cfg_for(tmp_path, judged, "kto")).to_dict()
    assert (report["format"], report["train_rows"], report["desirable"], report["undesirable"]) == ("kto", 5, 3, 2)


def test_objective_shorthand(tmp_path):
    cfg = cfg_for(tmp_path, [PAIR], objective="dpo")
    assert (cfg.objective.name, cfg.objective.beta) == ("dpo", 0.1)
    assert config.validate({"data": {"train": "t.jsonl"}}).objective.name == "sft"


@pytest.mark.parametrize(
    ("objective", "expected"),
    [
        ("{name: orpo, desirable_weight: 2}", "`objective.desirable_weight`; `desirable_weight` is an option of "
         "objective `kto`, not `orpo`"),
        ("{name: dpo, loss_type: ipo, undesirable_weight: 1}", "`undesirable_weight` is an option of objective `kto`"),
        ("ppo", "`objective.name`: unknown objective; choose one of sft, dpo, orpo, kto"),
    ],
)  # fmt: skip
def test_objective_config_errors_name_the_fix(tmp_path, objective, expected):
    path = tmp_path / "config.yaml"
    path.write_text(f"data:\n  train: t.jsonl\nobjective: {objective}\n")
    with pytest.raises(ConfigError) as exc:
        config.load(path)
    [problem] = exc.value.problems
    assert problem.startswith(f"{path}:3: ")
    assert expected in problem


@pytest.mark.parametrize("method", ["lora", "full", "qlora", "freeze"])
@pytest.mark.parametrize("objective", ["dpo", "orpo", "kto"])
def test_check_objective_takes_the_methods_preference_training_is_built_for(tiny_model_dir, method, objective):
    raw = {"model": str(tiny_model_dir), "data": {"train": "t.jsonl"}, "method": method, "objective": objective}
    assert check_objective(config.validate(raw)) == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"method": "prompt_tuning"}, "objective dpo with method prompt_tuning: not supported; use method.name "
         "lora, qlora, full, freeze"),
        ({"data": {"train": "t.jsonl", "replay_fraction": 0.1}}, "data.replay_fraction mixes in supervised rows"),
        ({"model": {"task": "sequence_classification"}}, "objective dpo trains a text generator (causal_lm)"),
    ],
)  # fmt: skip
def test_check_objective_refuses_what_preference_training_cannot_run(tiny_model_dir, changes, expected):
    raw = {"data": {"train": "t.jsonl"}, "objective": "dpo", **changes}
    raw["model"] = {"name": str(tiny_model_dir), **raw.get("model", {})}
    [problem] = check_objective(config.validate(raw))
    assert expected in problem
    sft = check_objective(config.validate({**raw, "objective": "sft"}))
    assert sft == []
