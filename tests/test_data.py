"""Data preflight, no tokenizer: file types, format detection and conversion, bad rows, splits, duplicates."""

from __future__ import annotations

import json

import pytest

from tests.test_data_helpers import make_cfg, qa_rows, write_lines, write_rows
from tunelab import data
from tunelab.data import FormatContext, RowError, to_messages
from tunelab.errors import DataError

QA = [{"prompt": "What is 2+2?", "completion": "4"}, {"prompt": "Capital of France?", "completion": "Paris"}]
QA_MESSAGES = [
    [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}],
    [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris"}],
]


@pytest.mark.parametrize(
    ("name", "first_where"),
    [("t.jsonl", "t.jsonl:1"), ("t.json", "t.json[0]"), ("t.csv", "t.csv:2"), ("t.parquet", "t.parquet[0]"),
     ("saved", "saved[0]")],
)  # fmt: skip
def test_each_file_type_reads_the_same_rows(tmp_path, name, first_where):
    rows = data.preflight(make_cfg(write_rows(tmp_path / name, QA)))
    assert rows.format == "prompt_completion"
    assert [r.messages for r in rows.train] == QA_MESSAGES
    assert rows.train[0].where == str(tmp_path / first_where)
    assert rows.validation == []


def test_datasets_dict_dir_uses_the_split_named_for_the_role(tmp_path):
    import datasets

    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(QA), "test": datasets.Dataset.from_list(QA[:1])})
    dd.save_to_disk(str(tmp_path / "dd"))
    assert len(data.preflight(make_cfg(tmp_path / "dd")).train) == 2


def test_csv_lines_count_the_header_and_multiline_cells(tmp_path):
    path = write_lines(tmp_path / "t.csv", ["prompt,completion", '"two\nlines",a', "x,"])
    with pytest.raises(DataError) as exc:
        data.preflight(make_cfg(path))
    expected = f"{path}:4: field 'completion': is empty; give 'completion' some text, or remove the row"
    assert exc.value.problems == [expected]


def test_csv_with_a_byte_order_mark_reads(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffprompt,completion\r\np,c\r\n".encode())
    assert data.preflight(make_cfg(path)).train[0].messages[1]["content"] == "c"


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("missing.jsonl", None, "no such file"),
        ("empty.jsonl", "\n\n", "the train data is empty"),
        ("rows.txt", "hello", "unknown data file type '.txt'"),
        ("broken.json", '[{"a": 1},\n oops]', "broken.json:2"),
        ("object.json", '{"prompt": "a"}', "must be a list of objects"),
        ("latin1.jsonl", b'{"prompt": "caf\xe9"}', "save the file as UTF-8"),
        ("emptydir", "", "not a saved datasets directory"),
    ],
)
def test_unreadable_files_name_the_file_and_the_fix(tmp_path, name, content, expected):
    path = tmp_path / name
    if name == "emptydir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(DataError) as exc:
        data.preflight(make_cfg(path))
    assert str(path) in str(exc.value) and expected in str(exc.value)


DETECTED = {
    "prompt_completion": ({"prompt": "p", "completion": "c"}, [("user", "p"), ("assistant", "c")]),
    "alpaca": ({"instruction": "i", "input": "x", "output": "o"}, [("user", "i\n\nx"), ("assistant", "o")]),
    "chat": (
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                      {"role": "assistant", "content": "a"}]},
        [("system", "s"), ("user", "u"), ("assistant", "a")],
    ),
    "text": ({"text": "raw words"}, [("assistant", "raw words")]),
}  # fmt: skip


def test_every_registered_format_has_a_case():
    """A new entry in FORMATS fails here until it is described (classification has its own test below: its
    prompt lists the label set)."""
    assert set(DETECTED) | {"classification"} == set(data.FORMATS)


@pytest.mark.parametrize("fmt", list(DETECTED))
def test_each_format_is_detected_and_converted(tmp_path, fmt):
    row, expected = DETECTED[fmt]
    rows = data.preflight(make_cfg(write_rows(tmp_path / "t.jsonl", [row, row | {"extra": 1}])))
    assert rows.format == fmt
    assert [(m["role"], m["content"]) for m in rows.train[0].messages] == expected


def test_alpaca_without_input_is_the_instruction_alone():
    assert to_messages({"instruction": "i", "output": "o"}, "alpaca")[0] == {"role": "user", "content": "i"}


def test_classification_is_detected_lists_the_labels_and_answers_with_the_label(tmp_path):
    rows = [{"text": "great film", "label": "pos"}, {"text": "dull", "label": "neg"}, {"text": "ok", "label": 1}]
    got = data.preflight(make_cfg(write_rows(tmp_path / "t.jsonl", rows)))
    assert got.format == "classification"
    assert got.labels == ["1", "neg", "pos"]  # sorted; class ids become strings
    user, assistant = got.train[0].messages
    assert "1, neg, pos" in user["content"] and "great film" in user["content"]
    assert assistant == {"role": "assistant", "content": "pos"}


def test_majority_of_rows_decides_the_format_and_misfits_are_bad_rows(tmp_path):
    path = write_rows(tmp_path / "t.jsonl", [{"prompt": "p"}, *qa_rows(3)])
    with pytest.raises(DataError) as exc:
        data.preflight(make_cfg(path))
    assert exc.value.problems[0].startswith(f"{path}:1: field 'completion': is missing")


def test_fields_that_fit_no_format_say_which_formats_exist(tmp_path):
    with pytest.raises(DataError) as exc:
        data.preflight(make_cfg(write_rows(tmp_path / "t.jsonl", [{"question": "q", "answer": "a"}])))
    assert "{answer, question} fit no format" in str(exc.value) and "prompt_completion {prompt, completion}" in str(
        exc.value
    )


CHAT_OK = {"role": "user", "content": "hi"}
BAD_ROWS = [  # (format, jsonl line 2, field, reason, extra data config)
    ("prompt_completion", "{not json", None, "not valid JSON", {}),
    ("prompt_completion", "[1, 2]", None, "a JSON list, not an object", {}),
    ("prompt_completion", {"prompt": "a"}, "completion", "is missing", {}),
    ("prompt_completion", {"prompt": "a", "completion": " \n"}, "completion", "is empty", {}),
    ("prompt_completion", {"prompt": 3, "completion": "b"}, "prompt", "is a number, not a string", {}),
    ("alpaca", {"instruction": "i", "input": ["x"], "output": "o"}, "input", "is a list, not a string", {}),
    ("chat", {"messages": "hi"}, "messages", "is a str, not a list", {}),
    ("chat", {"messages": [CHAT_OK, {"role": "tool", "content": "x"}]}, "messages[1].role", "unknown role 'tool'", {}),
    ("chat", {"messages": [CHAT_OK, {"content": "x"}]}, "messages[1].role", "is missing", {}),
    ("chat", {"messages": [CHAT_OK, {"role": "assistant", "content": "x", "weight": 2}]}, "messages[1].weight",
     "is 2", {}),
    ("chat", {"messages": [CHAT_OK, {"role": "assistant", "content": "x", "weight": 0}]}, "messages",
     "no assistant message with weight 1", {}),
    ("classification", {"text": "t", "label": "maybe"}, "label", "'maybe' is not in the label set (no, yes)",
     {"labels": ["no", "yes"]}),
    ("classification", {"text": "t", "label": 0.5}, "label", "is a number, not a string", {}),
]  # fmt: skip
GOOD = {
    "prompt_completion": {"prompt": "p", "completion": "c"},
    "alpaca": {"instruction": "i", "output": "o"},
    "chat": {"messages": [CHAT_OK, {"role": "assistant", "content": "a"}]},
    "classification": {"text": "t", "label": "yes"},
}


@pytest.mark.parametrize(("fmt", "bad", "field", "reason", "extra"), BAD_ROWS)
def test_each_bad_row_class_is_reported_with_file_line_field_and_reason(tmp_path, fmt, bad, field, reason, extra):
    lines = [json.dumps(GOOD[fmt]), bad if isinstance(bad, str) else json.dumps(bad), json.dumps(GOOD[fmt])]
    path = write_lines(tmp_path / "t.jsonl", lines)
    with pytest.raises(DataError) as exc:
        data.preflight(make_cfg(path, format=fmt, **extra))
    [problem] = exc.value.problems
    prefix = f"{path}:2: field '{field}': " if field else f"{path}:2: "
    assert problem.startswith(prefix) and reason in problem, problem
    assert "; " in problem.removeprefix(prefix)  # the reason is followed by a fix


def test_json_and_parquet_rows_are_located_by_index(tmp_path):
    for name in ("t.json", "t.parquet"):
        path = write_rows(tmp_path / name, [GOOD["prompt_completion"], {"prompt": "p", "completion": None}])
        with pytest.raises(DataError) as exc:
            data.preflight(make_cfg(path))
        assert exc.value.problems[0].startswith(f"{path}[1]: field 'completion': is missing")


def test_error_lists_every_problem_capped_at_twenty(tmp_path):
    # 25 different problems (rows that share one are listed once: tests/test_hostile_data.py), one good row
    rows = [{"text": "t", "label": "yes"}] + [{"text": "t", "label": f"l{i}"} for i in range(25)]
    path = write_rows(tmp_path / "t.jsonl", rows)
    with pytest.raises(DataError) as exc:
        data.preflight(make_cfg(path, labels=["no", "yes"]))
    assert "25 bad row(s)" in str(exc.value)
    assert len(exc.value.problems) == 21 and exc.value.problems[-1] == "and 5 more"
    assert exc.value.problems[19].startswith(f"{path}:21: field 'label': 'l19' is not in the label set")


def test_skip_drops_bad_rows_and_counts_them_per_reason(tmp_path):
    lines = [json.dumps(r) for r in qa_rows(17)] + ["{x", '{"prompt": "p"}', '{"prompt": 1, "completion": "c"}']
    path = write_lines(tmp_path / "t.jsonl", lines)
    rows = data.preflight(make_cfg(path, on_bad_rows="skip", max_skip_fraction=0.2))
    assert len(rows.train) == 17 and rows.rows_read == 20
    assert rows.skipped == {"unparseable": 1, "missing_field": 1, "wrong_type": 1}


def test_skipping_more_than_max_skip_fraction_is_an_error(tmp_path):
    lines = [json.dumps(r) for r in qa_rows(17)] + ["{x", '{"prompt": "p"}', '{"prompt": 1, "completion": "c"}']
    cfg = make_cfg(write_lines(tmp_path / "t.jsonl", lines), on_bad_rows="skip", max_skip_fraction=0.1)
    with pytest.raises(DataError, match=r"3 of 20 rows are bad \(15.0%\), more than data.max_skip_fraction=0.1"):
        data.preflight(cfg)


def test_val_size_split_is_deterministic_disjoint_and_complete(tmp_path):
    path = write_rows(tmp_path / "t.jsonl", qa_rows(20))

    def split(seed, val_size):
        rows = data.preflight(make_cfg(path, seed=seed, val_size=val_size))
        return [r.line for r in rows.train], [r.line for r in rows.validation]

    train, val = split(42, 0.25)
    assert len(val) == 5 and len(train) == 15
    assert not set(train) & set(val) and sorted(train + val) == list(range(1, 21))
    assert split(42, 0.25) == (train, val)
    assert split(7, 0.25)[1] != val
    assert len(split(42, 3)[1]) == 3


def test_val_size_that_leaves_no_training_rows_is_an_error(tmp_path):
    with pytest.raises(DataError, match="leaves no training rows"):
        data.preflight(make_cfg(write_rows(tmp_path / "t.jsonl", qa_rows(3)), val_size=3))


def test_rows_in_both_train_and_validation_are_reported(tmp_path):
    train = write_rows(tmp_path / "train.jsonl", qa_rows(3))
    dup = {"prompt": "  Question   number 1?\n", "completion": "Answer 1."}  # same after whitespace normalization
    val = write_rows(tmp_path / "val.jsonl", [{"prompt": "new", "completion": "x"}, dup])
    with pytest.raises(DataError) as exc:
        data.preflight(make_cfg(train, validation=str(val)))
    [problem] = exc.value.problems
    assert problem.startswith(f"{val}:2: the same row is in the training data at {train}:2")
    rows = data.preflight(make_cfg(train, validation=str(val), on_bad_rows="skip", max_skip_fraction=0.5))
    assert [r.line for r in rows.validation] == [1] and rows.skipped == {"duplicate": 1}


def test_validation_label_outside_the_training_labels_is_a_bad_row(tmp_path):
    train = write_rows(tmp_path / "train.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    val = write_rows(tmp_path / "val.csv", [{"text": "c", "label": "y"}, {"text": "d", "label": "z"}])
    with pytest.raises(DataError) as exc:
        data.preflight(make_cfg(train, validation=str(val)))
    assert exc.value.problems == [
        f"{val}:3: field 'label': 'z' is not in the label set (x, y); fix the label, or add it to data.labels"
    ]


def test_to_messages_raises_row_errors_and_needs_labels_for_classification():
    with pytest.raises(RowError) as exc:
        to_messages({"prompt": "p", "completion": 5}, "prompt_completion")
    assert (exc.value.kind, exc.value.field) == ("wrong_type", "completion")
    with pytest.raises(ValueError, match="label set"):
        to_messages({"text": "t", "label": "a"}, "classification")
    messages = to_messages({"text": "t", "label": "a"}, "classification", FormatContext(labels=("a",)))
    assert messages[1] == {"role": "assistant", "content": "a"}
    with pytest.raises(ValueError, match="choose one of chat, prompt_completion"):
        to_messages({}, "qa")


def test_eval_examples_are_prompt_and_reference(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1", "weight": 0},
                          {"role": "user", "content": "u2"}, {"role": "assistant", "content": "a2"}]},
            {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"},
                          {"role": "user", "content": "no answer"}]}]  # fmt: skip
    path = write_rows(tmp_path / "test.jsonl", rows)
    cfg = make_cfg(path, on_bad_rows="skip", max_skip_fraction=0.5)
    [ex] = data.read_eval_examples(path, cfg)
    assert ex.reference == "a2" and ex.line == 1 and ex.where == f"{path}:1"
    assert [m["content"] for m in ex.messages] == ["u1", "a1", "u2"] and "weight" not in ex.messages[1]
    with pytest.raises(DataError, match=f"{path}:2: field 'messages': needs prompt turns followed by a final"):
        data.read_eval_examples(path, make_cfg(path))


def test_eval_classification_uses_the_training_label_set(tmp_path):
    train = write_rows(tmp_path / "train.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    test = write_rows(tmp_path / "test.json", [{"text": "c", "label": "y"}, {"text": "d", "label": "w"}])
    with pytest.raises(DataError) as exc:
        data.read_eval_examples(test, make_cfg(train))
    assert exc.value.problems[0].startswith(f"{test}[1]: field 'label': 'w' is not in the label set (x, y)")
    [ex] = data.read_eval_examples(test, make_cfg(train, on_bad_rows="skip", max_skip_fraction=0.5))
    assert ex.reference == "y" and "x, y" in ex.messages[0]["content"]


def test_eval_of_raw_text_is_an_error(tmp_path):
    path = write_rows(tmp_path / "t.jsonl", [{"text": "words"}])
    with pytest.raises(DataError, match="no prompt and reference"):
        data.read_eval_examples(path, make_cfg(path))
