"""`tunelab eval-retrieval`: recall@k and MRR from the ranks of the right passage, sources named as documents,
file stems or passage text, and bad rows named with file:line before the encoder loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import run_cli, write_jsonl
from tests.test_rag import FACTS, settings, write_docs
from tunelab import rag
from tunelab.errors import DataError
from tunelab.evaluation import retrieval


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, tiny_encoder_dir) -> Path:
    tmp = tmp_path_factory.mktemp("retrieval")
    rag.build([write_docs(tmp / "docs")], tmp / "index", settings(tiny_encoder_dir))
    return tmp / "index"


QUESTIONS = [
    {"question": "Which model number is LK-4821?", "source": "aero.md"},
    {"question": "accepted within 45 days of delivery", "source": "returns"},  # a file stem
    {"question": "infrared night camera", "source": "The Lumen camera records at night with infrared."},  # passage
    {"question": "zebra xylophone", "source": "volt.txt"},  # no shared word: a lexical miss
]


def test_ranks_become_recall_and_mrr(index_dir):
    questions = retrieval.read_questions_rows(QUESTIONS, rag.sources(index_dir))
    assert questions[1].documents == {"policies/returns.md"} and questions[2].documents == frozenset()
    [lexical] = retrieval.evaluate_modes(rag.open_index(index_dir), questions, ("lexical",))
    assert lexical.ranks[:3] == [1, 1, 1] and lexical.ranks[3] is None
    metrics = lexical.metrics()
    assert metrics["recall@1"][0] == metrics["recall@10"][0] == 0.75
    assert metrics["mrr@10"][0] == 0.75
    low, high = metrics["recall@1"][1]
    assert 0 <= low <= 0.75 <= high <= 1
    assert metrics["latency_ms"]["mean"] > 0


def test_a_passage_source_is_a_hit_in_the_chunk_that_holds_most_of_it():
    question = retrieval.Question("q", "The Lumen camera records at night with infrared light.")
    near = rag.Passage("lumen.md", "# Lumen Cam\n\nThe Lumen camera records at night with infrared.")
    other = rag.Passage("aero.md", FACTS["aero.md"])
    assert retrieval.is_hit(question, near) and not retrieval.is_hit(question, other)


def test_a_source_naming_no_document_is_refused_with_the_nearest_name(index_dir, tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": "q", "source": "aero.mdx"}, {"question": "q"}])
    with pytest.raises(DataError) as error:
        retrieval.read_questions(path, rag.sources(index_dir))
    assert "qa.jsonl:1: source 'aero.mdx' names no document in the index; did you mean 'aero.md'?" in str(error.value)
    assert 'qa.jsonl:2: needs text fields "question" and "source"' in str(error.value)


def test_the_command_writes_each_mode_s_table_and_every_question_s_ranks(index_dir, tmp_path):
    data = write_jsonl(tmp_path / "qa.jsonl", QUESTIONS)
    out = tmp_path / "out"
    result = run_cli(["eval-retrieval", str(index_dir), "--data", str(data), "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    for mode in rag.MODES:
        assert f"| {mode} |" in result.output
    summary = json.loads((out / "retrieval.json").read_text())
    assert set(summary["modes"]) == set(rag.MODES) and summary["questions"] == 4
    hits = [json.loads(line) for line in (out / "hits.jsonl").read_text().splitlines()]
    assert hits[0]["rank_lexical"] == 1 and hits[3]["rank_lexical"] is None
    again = run_cli(["eval-retrieval", str(index_dir), "--data", str(data), "--output-dir", str(out)])
    assert again.exit_code != 0 and "--overwrite" in again.output
