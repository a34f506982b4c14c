"""The built-in forgetting-probe data (sizes, shape, balance, duplicates) and the retention-set loaders' errors."""

from __future__ import annotations

import json
from collections import Counter
from importlib import resources

import pytest

from tests.test_data_helpers import write_lines
from tunelab.data.replay import builtin_instructions
from tunelab.errors import DataError
from tunelab.evaluation.probes import (
    MCItem,
    builtin_mc,
    builtin_texts,
    load_mc,
    load_texts,
)

GOOD = {"id": "q1", "subject": "math", "question": "What is 2 + 2?", "choices": ["3", "4", "5", "6"], "answer": 1}


@pytest.fixture(scope="module")
def mc() -> list[MCItem]:
    return builtin_mc()


def test_builtin_sets_are_big_enough(mc):
    assert len(mc) >= 120
    assert len(builtin_texts()) >= 40
    assert len(builtin_instructions()) >= 150


def test_builtin_files_stay_small():
    # Shipped inside the wheel: keep the package light.
    folders = [resources.files("tunelab.evaluation") / "probe_data", resources.files("tunelab.data") / "replay_data"]
    sizes = {p.name: len(p.read_bytes()) for folder in folders for p in folder.iterdir() if p.name.endswith(".jsonl")}
    assert set(sizes) == {"general_mc.jsonl", "general_text.jsonl", "general_instructions.jsonl"}
    assert sum(sizes.values()) < 300_000


def test_every_mc_item_has_four_distinct_choices_and_a_valid_answer(mc):
    for item in mc:
        assert item.question.strip() and item.id and item.subject, item
        assert len(item.choices) == 4, item.id
        assert all(c.strip() for c in item.choices), item.id
        assert len({c.strip().lower() for c in item.choices}) == 4, item.id
        assert 0 <= item.answer < 4, item.id


def test_answer_positions_are_balanced(mc):
    # A model that prefers one letter must not score above chance by that bias alone.
    counts = Counter(item.answer for item in mc)
    for position in range(4):
        assert 0.18 <= counts[position] / len(mc) <= 0.32, counts


def test_mc_covers_the_subjects_evenly(mc):
    counts = Counter(item.subject for item in mc)
    assert len(counts) >= 8, counts
    assert min(counts.values()) >= 10, counts


def test_mc_ids_and_questions_are_unique(mc):
    assert len({item.id for item in mc}) == len(mc)
    assert len({item.question.strip().lower() for item in mc}) == len(mc)


def test_texts_are_80_to_200_words_and_unique():
    texts = builtin_texts()
    lengths = [len(t.split()) for t in texts]
    assert all(80 <= n <= 200 for n in lengths), lengths
    assert len(set(texts)) == len(texts)


def test_instructions_are_non_empty_with_unique_prompts():
    rows = builtin_instructions()
    assert all(set(r) == {"prompt", "completion"} for r in rows)
    assert all(r["prompt"].strip() and r["completion"].strip() for r in rows)
    prompts = [r["prompt"].strip().lower() for r in rows]
    assert len(set(prompts)) == len(prompts)


def test_load_mc_reads_a_user_file(tmp_path):
    minimal = {"question": "Sky color?", "choices": ["blue", "green"], "answer": 0}
    path = write_lines(tmp_path / "probe.jsonl", [json.dumps(GOOD), "", json.dumps(minimal)])
    assert load_mc(path) == [
        MCItem("What is 2 + 2?", ["3", "4", "5", "6"], 1, id="q1", subject="math"),
        MCItem("Sky color?", ["blue", "green"], 0),
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"question": "What is 2 + 2?", "choices": ["3", "4"], ', "not valid JSON"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "question"}), "field 'question': is missing"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "choices"}), "field 'choices': is missing"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "answer"}), "field 'answer': is missing"),
        (json.dumps({**GOOD, "answer": 4}), "field 'answer': 4 is out of range for 4 choices"),
        (json.dumps({**GOOD, "answer": -1}), "field 'answer': -1 is out of range"),
        (json.dumps({**GOOD, "answer": "B"}), "field 'answer': is 'B', not an integer"),
        (json.dumps({**GOOD, "answer": True}), "field 'answer': is True, not an integer"),
        (json.dumps({**GOOD, "choices": "3, 4, 5"}), "field 'choices': is not a list"),
        (json.dumps({**GOOD, "choices": ["4", "4", "5"]}), "field 'choices': has duplicate choices"),
        (json.dumps({**GOOD, "choices": ["4"], "answer": 0}), "field 'choices': has 1 choice(s)"),
        (json.dumps({**GOOD, "id": 7}), "field 'id': is 7, not a string"),
        ("[1, 2, 3]", "not an object"),
    ],
)
def test_load_mc_names_file_line_and_field(tmp_path, line, expected):
    path = write_lines(tmp_path / "probe.jsonl", [json.dumps(GOOD), line])
    with pytest.raises(DataError) as err:
        load_mc(path)
    assert len(err.value.problems) == 1, err.value.problems
    assert err.value.problems[0].startswith(f"{path}:2: ")
    assert expected in err.value.problems[0]


def test_load_mc_reports_every_bad_row_at_once(tmp_path):
    lines = [json.dumps({**GOOD, "answer": 9}), "{oops", json.dumps(GOOD), json.dumps({"choices": ["a", "b"]})]
    path = write_lines(tmp_path / "probe.jsonl", lines)
    with pytest.raises(DataError) as err:
        load_mc(path)
    # Line 4 has two problems: question and answer are both missing.
    assert [p.split(": ")[0] for p in err.value.problems] == [f"{path}:{n}" for n in (1, 2, 4, 4)]


def test_load_texts_reads_and_rejects(tmp_path):
    good = write_lines(tmp_path / "good.jsonl", [json.dumps({"id": "a", "text": "Some prose."})])
    assert load_texts(good) == ["Some prose."]
    bad = write_lines(tmp_path / "bad.jsonl", [json.dumps({"text": "ok"}), json.dumps({"body": "no text field"})])
    with pytest.raises(DataError, match="bad.jsonl") as err:
        load_texts(bad)
    assert err.value.problems == [f"{bad}:2: field 'text': is missing; add \"text\""]


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="retention data not found"):
        load_mc(tmp_path / "nope.jsonl")
