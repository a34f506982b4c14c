"""`tunelab eval-retrieval INDEX --data qa.jsonl`: how often the right passage is retrieved, measured.

Each row is {"question": ..., "source": ...}; the source names a document (its name in the index: the path
relative to the indexed folder, a file name or stem when that is unique, or a .jsonl row's id), or is the
passage text itself. A retrieved chunk is a hit when it comes from that document, or, for a passage, when it
holds at least half of the passage's words (a passage can straddle two chunks). Per retrieval mode (lexical,
dense, hybrid): recall@k (a hit within the first k) and MRR@10 with 95% bootstrap intervals over the
questions, and the latency of one query as a server sees it (each question searched alone).
"""

from __future__ import annotations

import difflib
import json
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab import artifacts
from tunelab.errors import DataError
from tunelab.evaluation.bootstrap import mean_interval
from tunelab.rag import MODES, Index, Passage, read_manifest

KS = (1, 3, 5, 10)
PASSAGE_WORD_SHARE = 0.5
OUTPUT_FILES = ("retrieval.json", "retrieval.md", "hits.jsonl")
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Question:
    text: str
    source: str
    documents: frozenset[str] = frozenset()  # the index's documents the source names; empty: a passage


@dataclass
class ModeResult:
    mode: str
    ranks: list[int | None]  # per question: the first hit's rank (1-based) within 10, None for a miss
    latencies: list[float] = field(default_factory=list)

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k in KS:
            hits = [float(r is not None and r <= k) for r in self.ranks]
            out[f"recall@{k}"] = (statistics.fmean(hits), mean_interval(hits))
        reciprocal = [1.0 / r if r else 0.0 for r in self.ranks]
        out["mrr@10"] = (statistics.fmean(reciprocal), mean_interval(reciprocal))
        ms = sorted(1000 * s for s in self.latencies)
        out["latency_ms"] = {"mean": statistics.fmean(ms), "p95": ms[int(0.95 * (len(ms) - 1))]}
        return out


def read_questions(path: Path, sources: set[str]) -> list[Question]:
    """The rows of `path`, each source resolved against the index's documents; file:line for every problem."""
    if not path.is_file():
        raise DataError(f"--data {path}: no such file", ["give a .jsonl of {question, source} rows"])
    rows, problems = [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"--data {path}: not UTF-8 text (byte {e.start})", ["save it as UTF-8"]) from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append((f"{path}:{number}", json.loads(line)))
        except json.JSONDecodeError as e:
            problems.append(f"{path}:{number}: not valid JSON ({e.msg})")
    return _questions(rows, sources, problems, str(path))


def read_questions_rows(rows: list[dict], sources: set[str]) -> list[Question]:
    """`read_questions` for rows already in memory (named by their 1-based number)."""
    return _questions([(f"row {i}", row) for i, row in enumerate(rows, 1)], sources, [], "rows")


def _questions(rows: list[tuple[str, Any]], sources: set[str], problems: list[str], name: str) -> list[Question]:
    questions = []
    for where, row in rows:
        if not isinstance(row, dict) or not all(
            isinstance(row.get(k), str) and row[k].strip() for k in ("question", "source")
        ):
            problems.append(f'{where}: needs text fields "question" and "source"')
            continue
        question, problem = _resolve(row["question"], row["source"], sources)
        problems += [f"{where}: {problem}"] if problem else []
        questions.append(question)
    if not questions and not problems:
        problems.append(f"{name}: no rows")
    if problems:
        raise DataError(problems[0], problems[1:])
    return questions


def _resolve(text: str, source: str, sources: set[str]) -> tuple[Question, str | None]:
    if source in sources:
        return Question(text, source, frozenset({source})), None
    by_name = {s for s in sources if s.rsplit("/", 1)[-1] in (source, source + ".md", source + ".txt")}
    by_name |= {s for s in sources if Path(s).stem == source}
    if len(by_name) > 1:
        return Question(text, source), f"source {source!r} fits {', '.join(sorted(by_name))}; give the full name"
    if by_name:
        return Question(text, source, frozenset(by_name)), None
    if len(_WORD.findall(source)) < 5:  # too short to be a passage: a document name that is not in the index
        near = difflib.get_close_matches(source, sorted(sources), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        return Question(text, source), f"source {source!r} names no document in the index{hint}"
    return Question(text, source), None


def is_hit(question: Question, passage: Passage) -> bool:
    if question.documents:
        return passage.source in question.documents
    wanted = _content_words(question.source)
    return len(wanted & _content_words(passage.text)) >= PASSAGE_WORD_SHARE * len(wanted)


def _content_words(text: str) -> set[str]:
    """The words of `text` less English stopwords ("the", "with", ...), which any chunk shares with any passage."""
    from bm25s.stopwords import STOPWORDS_EN  # the list the lexical retriever drops too

    return set(_WORD.findall(text.lower())) - set(STOPWORDS_EN)


def first_hit(question: Question, passages: list[Passage]) -> int | None:
    return next((rank for rank, p in enumerate(passages, 1) if is_hit(question, p)), None)


def evaluate_modes(index: Index, questions: list[Question], modes: tuple[str, ...] = MODES) -> list[ModeResult]:
    """Each mode's ranks and per-query latency (each question searched alone, as a server would)."""
    results = []
    index.search(questions[0].text, max(KS), modes[0])  # warm-up: the first query pays one-off set-up costs
    for mode in modes:
        result = ModeResult(mode, [])
        for question in questions:
            started = time.perf_counter()
            passages = index.search(question.text, max(KS), mode)
            result.latencies.append(time.perf_counter() - started)
            result.ranks.append(first_hit(question, passages))
        results.append(result)
    return results


def check_outputs(output_dir: Path, overwrite: bool) -> None:
    artifacts.check_outputs([output_dir / n for n in OUTPUT_FILES], overwrite, "--output-dir")


def markdown(index_path: Path, questions: list[Question], results: list[ModeResult]) -> str:
    manifest = read_manifest(index_path)
    header = ["mode", *(f"recall@{k}" for k in KS), "MRR@10", "latency (mean / p95)"]
    lines = [
        f"{len(questions)} questions, index {index_path} ({manifest['chunks']} chunks, encoder {manifest['encoder']}, "
        f"{manifest['chunking']['size']}-token chunks); 95% bootstrap intervals.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for result in results:
        m = result.metrics()
        cells = [_share(*m[f"recall@{k}"]) for k in KS] + [_share(*m["mrr@10"], percent=False)]
        lat = m["latency_ms"]
        lines.append(f"| {result.mode} | " + " | ".join(cells) + f" | {lat['mean']:.1f} / {lat['p95']:.1f} ms |")
    return "\n".join(lines) + "\n"


def _share(value: float, interval: tuple[float, float], percent: bool = True) -> str:
    if percent:
        return f"{100 * value:.1f}% [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"
    return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def write(output_dir: Path, index_path: Path, questions: list[Question], results: list[ModeResult]) -> None:
    summary = {"index": str(index_path), "questions": len(questions), "modes": {r.mode: r.metrics() for r in results}}
    artifacts.write_json(output_dir / "retrieval.json", summary)
    artifacts.write_text(output_dir / "retrieval.md", markdown(index_path, questions, results))
    rows = [
        {"question": q.text, "source": q.source, **{f"rank_{r.mode}": r.ranks[i] for r in results}}
        for i, q in enumerate(questions)
    ]
    artifacts.write_text(output_dir / "hits.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
