"""The shipped demo dataset (examples/support_tickets): shape, labels, no leakage, reproducible from its seed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parent.parent / "examples" / "support_tickets"
KEYS = ["category", "priority", "product"]
MIN_ROWS = {"train": 320, "test": 110}


def read_rows(split: str) -> list[dict[str, str]]:
    lines = (DEMO / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def system_label_sets() -> dict[str, set[str]]:
    """The allowed values as system.txt lists them: `key: a | b (note) | c`."""
    sets = {}
    for line in (DEMO / "system.txt").read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"(category|priority|product): (.+)", line)
        if match:
            values = re.sub(r"\s*\([^)]*\)", "", match[2])  # drop the "(security camera)" hints
            sets[match[1]] = {v.strip() for v in values.split("|")}
    return sets


@pytest.fixture(scope="module")
def splits() -> dict[str, list[dict[str, str]]]:
    return {split: read_rows(split) for split in MIN_ROWS}


def test_system_prompt_lists_every_field_and_stays_short():
    sets = system_label_sets()
    assert set(sets) == set(KEYS)
    assert sets["category"] == {"billing", "bug", "account", "shipping", "feature_request", "how_to"}
    assert sets["priority"] == {"low", "medium", "high", "urgent"}
    assert 4 <= len(sets["product"]) <= 6
    assert len((DEMO / "system.txt").read_text(encoding="utf-8").split()) < 120


@pytest.mark.parametrize("split", list(MIN_ROWS))
def test_rows_are_prompt_completion_with_labelled_compact_json(splits, split):
    rows = splits[split]
    allowed = system_label_sets()
    assert len(rows) >= MIN_ROWS[split]
    for i, row in enumerate(rows):
        assert list(row) == ["prompt", "completion"], f"{split} row {i}"
        assert row["prompt"].strip() == row["prompt"] and row["prompt"], f"{split} row {i}"
        labels = json.loads(row["completion"])
        assert list(labels) == KEYS, f"{split} row {i}: keys must be exactly {KEYS}, in order"
        assert row["completion"] == json.dumps(labels), f"{split} row {i}: not the one-line ', '/': ' form"
        for key in KEYS:
            assert labels[key] in allowed[key], f"{split} row {i}: {key}={labels[key]!r} not in system.txt"


def test_no_duplicates_and_no_test_prompt_in_train(splits):
    train = [r["prompt"] for r in splits["train"]]
    test = [r["prompt"] for r in splits["test"]]
    assert len(set(train)) == len(train)
    assert len(set(test)) == len(test)
    assert not set(train) & set(test)


def test_every_label_value_appears_in_both_splits(splits):
    for key, values in system_label_sets().items():
        for split, rows in splits.items():
            seen = {json.loads(r["completion"])[key] for r in rows}
            assert seen == values, f"{split}: {key} values missing: {values - seen}"


def test_labels_are_roughly_balanced(splits):
    for split, rows in splits.items():
        for key in KEYS:
            counts: dict[str, int] = {}
            for row in rows:
                value = json.loads(row["completion"])[key]
                counts[value] = counts.get(value, 0) + 1
            assert min(counts.values()) >= 0.3 * max(counts.values()), f"{split} {key}: {counts}"


def test_generator_reproduces_shipped_files(tmp_path):
    subprocess.run(
        [sys.executable, str(DEMO / "make_data.py"), "--out", str(tmp_path)], check=True, capture_output=True
    )
    for name in ("train.jsonl", "test.jsonl"):
        assert (tmp_path / name).read_bytes() == (DEMO / name).read_bytes(), (
            f"{name} differs from the generator output"
        )


def test_pair_generator_reproduces_shipped_pairs_and_each_pair_differs_as_it_says(tmp_path):
    subprocess.run(
        [sys.executable, str(DEMO / "make_pairs.py"), "--out", str(tmp_path)], check=True, capture_output=True
    )
    for split in ("train", "test"):
        name = f"pairs_{split}.jsonl"
        assert (tmp_path / name).read_bytes() == (DEMO / name).read_bytes(), (
            f"{name} differs from the generator output"
        )
        tickets = [json.loads(line) for line in (DEMO / f"{split}.jsonl").read_text().splitlines()]
        pairs = [json.loads(line) for line in (DEMO / name).read_text().splitlines()]
        assert [p["prompt"] for p in pairs] == [t["prompt"] for t in tickets]
        for pair, ticket in zip(pairs, tickets, strict=True):
            assert pair["chosen"] == ticket["completion"] and pair["rejected"] != pair["chosen"]
            try:
                rejected = json.loads(pair["rejected"])
            except ValueError:
                continue  # the not-JSON kind
            chosen = json.loads(pair["chosen"])
            assert rejected.keys() == chosen.keys() and sum(rejected[k] != chosen[k] for k in chosen) == 1


def test_judge_data_reproduces_shipped_files_and_labels_follow_the_rules_checks(tmp_path):
    """judge_train.jsonl and replies_test.jsonl come from the script and the shipped replies, byte for byte; each
    verdict row asks one rule of one reply and is answered as the rule's check says; no reference reply breaks one."""
    subprocess.run(
        [sys.executable, str(DEMO / "make_judge_data.py"), "--out", str(tmp_path)], check=True, capture_output=True
    )
    for name in ("judge_train.jsonl", "replies_test.jsonl"):
        assert (tmp_path / name).read_bytes() == (DEMO / name).read_bytes(), f"{name} differs from the script's"
    sys.path.insert(0, str(DEMO))
    try:
        import make_judge_data as judge_data
    finally:
        sys.path.remove(str(DEMO))
    rows = [json.loads(line) for line in (DEMO / "judge_train.jsonl").read_text().splitlines()]
    per_rule = {}
    for row in rows:
        question, verdict = row["messages"][0]["content"], row["messages"][1]["content"]
        rule = judge_data.RULES.index(question.split("Rule: ", 1)[1].split("\n", 1)[0])
        answer = question.split("The assistant answered:\n", 1)[1].rsplit("\n\nDoes the answer break", 1)[0]
        assert verdict == ("yes" if judge_data.breaks(rule, answer) else "no")
        per_rule.setdefault(rule, []).append(verdict)
    for verdicts in per_rule.values():  # every break, and enough replies that keep the rule
        assert verdicts.count("no") >= min(judge_data.MIN_NO, 2 * verdicts.count("yes"))
    references = [json.loads(line)["completion"] for line in (DEMO / "replies_test.jsonl").read_text().splitlines()]
    assert not any(judge_data.breaks(i, text) for i in range(len(judge_data.RULES)) for text in references)
