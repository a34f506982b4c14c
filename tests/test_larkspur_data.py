"""The Larkspur docs example (examples/larkspur_docs): reproducible from its seed, every answer stated in its document,
no test question and no unseen fact in training, and about half the training rows reading passages."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tunelab.rag.augment import INSTRUCTION

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "larkspur_docs"
QA_FILES = ("train", "test_seen", "test_unseen")
TEST_ROWS = 60


def read_jsonl(name: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in (EXAMPLE / name).read_text(encoding="utf-8").splitlines()]


def answer(row: dict[str, str]) -> str:
    return json.loads(row["completion"])["answer"]


def split_prompt(prompt: str) -> tuple[str, str]:
    """(passages, question) of a training prompt; the passages are "" for a bare question."""
    if not prompt.startswith(INSTRUCTION):
        return "", prompt
    passages, question = prompt.rsplit("\n\nQuestion: ", 1)
    return passages, question


def product_name(source: str) -> str | None:
    """The product a manual page is about ("Aero Fan 3"), from its title; None for a policy page."""
    if not source.startswith("products/"):
        return None
    title = (EXAMPLE / "docs" / source).read_text(encoding="utf-8").splitlines()[0]
    return title.removeprefix("# Larkspur ")


@pytest.fixture(scope="module")
def rows() -> dict[str, list[dict[str, str]]]:
    return {name: read_jsonl(f"{name}.jsonl") for name in QA_FILES}


@pytest.fixture(scope="module")
def sources() -> dict[str, str]:
    """Each test question's document, relative to docs/."""
    return {row["question"]: row["source"] for row in read_jsonl("retrieval.jsonl")}


def test_script_reproduces_the_shipped_files(tmp_path):
    subprocess.run(
        [sys.executable, str(EXAMPLE / "make_data.py"), "--out", str(tmp_path)], check=True, capture_output=True
    )
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    shipped_docs = sorted(p.relative_to(EXAMPLE).as_posix() for p in (EXAMPLE / "docs").rglob("*") if p.is_file())
    assert [name for name in written if name.startswith("docs/")] == shipped_docs, "a stale or missing page"
    assert {"train.jsonl", "test_seen.jsonl", "test_unseen.jsonl", "retrieval.jsonl", "system.txt"} <= set(written)
    for name in written:
        assert (tmp_path / name).read_bytes() == (EXAMPLE / name).read_bytes(), f"{name} differs from the script's"


def test_pages_are_sized_for_chunks():
    """A product page is about one 256-token chunk; a policy page is longer, so it splits into several."""
    for folder, (low, high), count in (("products", (80, 160), 36), ("policies", (200, 400), 6)):
        pages = sorted((EXAMPLE / "docs" / folder).glob("*.md"))
        assert len(pages) == count
        for page in pages:
            assert low <= len(page.read_text(encoding="utf-8").split()) <= high, page.name


@pytest.mark.parametrize("name", QA_FILES)
def test_rows_are_prompt_completion_with_one_compact_answer(rows, name):
    for i, row in enumerate(rows[name]):
        assert list(row) == ["prompt", "completion"] and row["prompt"].strip() == row["prompt"], f"{name} row {i}"
        parsed = json.loads(row["completion"])
        assert list(parsed) == ["answer"] and parsed["answer"], f"{name} row {i}"
        assert row["completion"] == json.dumps(parsed) and "\n" not in row["completion"], f"{name} row {i}"


def test_retrieval_rows_name_every_test_question_and_its_document(rows, sources):
    retrieval = read_jsonl("retrieval.jsonl")
    assert len(rows["test_seen"]) == len(rows["test_unseen"]) == TEST_ROWS
    assert [r["question"] for r in retrieval] == [r["prompt"] for r in rows["test_seen"] + rows["test_unseen"]]
    assert all(list(r) == ["question", "source"] for r in retrieval)
    for question, source in sources.items():
        assert (EXAMPLE / "docs" / source).is_file(), source
        name = product_name(source)
        assert name is None or name in question, f"{question!r} is not about {source}"


def test_every_answer_is_stated_in_its_document(rows, sources):
    for row in rows["test_seen"] + rows["test_unseen"]:
        source = sources[row["prompt"]]
        assert answer(row) in (EXAMPLE / "docs" / source).read_text(encoding="utf-8"), (row["prompt"], source)
    corpus = "\n".join(p.read_text(encoding="utf-8") for p in sorted((EXAMPLE / "docs").rglob("*.md")))
    for row in rows["train"]:
        passages, _ = split_prompt(row["prompt"])
        assert answer(row) in (passages or corpus), row["prompt"][-120:]


def test_no_test_question_and_no_unseen_fact_in_training(rows, sources):
    trained = [(split_prompt(row["prompt"])[1], answer(row)) for row in rows["train"]]
    train_questions = {question for question, _ in trained} | {row["prompt"] for row in rows["train"]}
    for name in ("test_seen", "test_unseen"):
        assert not {row["prompt"] for row in rows[name]} & train_questions, name
    for name in ("test_seen", "test_unseen"):
        for row in rows[name]:
            subject = product_name(sources[row["prompt"]])  # policy values are unique, so the answer alone will do
            in_train = any(value == answer(row) and (subject is None or subject in q) for q, value in trained)
            assert in_train == (name == "test_seen"), f"{name}: {row['prompt']!r}"


def test_about_half_the_training_rows_read_passages(rows):
    with_passages = [row for row in rows["train"] if row["prompt"].startswith(INSTRUCTION)]
    assert 0.45 <= len(with_passages) / len(rows["train"]) <= 0.55
    for row in with_passages:
        cited = re.findall(r"^\[\d\] (\S+)$", split_prompt(row["prompt"])[0], flags=re.MULTILINE)
        assert 2 <= len(cited) <= 3 and all((EXAMPLE / "docs" / source).is_file() for source in cited), cited


def test_config_trains_on_the_example_with_its_system_prompt():
    cfg = yaml.safe_load((ROOT / "configs" / "larkspur.yaml").read_text(encoding="utf-8"))
    assert cfg["data"]["train"] == "examples/larkspur_docs/train.jsonl"
    assert cfg["eval"]["test"] == "examples/larkspur_docs/test_unseen.jsonl"
    assert cfg["data"]["system"] + "\n" == (EXAMPLE / "system.txt").read_text(encoding="utf-8")
