"""Contamination: the new rows (a test set) whose prompt copies a reference row (the training data).

    overlap = near_duplicates(ref, new)  # drift.Sample each; overlap.line() says it in one sentence

Three checks, each row counted once under the first it meets: an exact copy (after lowercasing and keeping only
the words), a near-duplicate (Jaccard similarity of character 5-grams at least 0.8, found with MinHash LSH and then
measured exactly), or a shared span of 13 words (GPT-3's contamination check, Brown et al. 2020, appendix C). The
first two count as copies; a shared span alone is reported beside them, as templated text shares spans freely.
Character shingles, not word ones: a copy with two words changed keeps ~0.8 of a 40-word ticket's 5-grams but
only ~0.65 of its word 3-grams.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunelab.data.drift import PROMPT_SIDE, WORD, Sample

SHINGLE = 5  # characters
JACCARD = 0.8
SPAN = 13  # words
NUM_PERM = 128  # MinHash permutations: similarity estimated to about ±0.04 (1/sqrt(128) spread on Jaccard 0.8)


@dataclass(frozen=True)
class Match:
    new: str  # file:line in the new file
    reference: str  # file:line of the reference row it copies
    kind: str  # exact, near-duplicate, 13-gram
    similarity: float  # Jaccard of the 5-gram sets (1.0 for an exact copy)
    text: str  # the new row's prompt, shortened


@dataclass(frozen=True)
class Overlap:
    field: str  # the field compared (the prompt side)
    rows: int  # new rows checked
    matches: list[Match] = field(default_factory=list)  # one per overlapping new row, its closest reference row

    def count(self, kind: str) -> int:
        return sum(m.kind == kind for m in self.matches)

    @property
    def copies(self) -> list[Match]:
        """Exact copies and near-duplicates: the rows a model may have seen. A shared 13-word span alone is told
        apart: templated text shares them (a third of the tickets' test rows share one with training rows)."""
        return [m for m in self.matches if m.kind != "13-gram"]

    def line(self) -> str:
        spans = self.count("13-gram")
        tail = f"; {spans} {'more ' if self.copies else ''}share only a {SPAN}-word span with one" if spans else ""
        if not self.copies:
            return (
                f"no contamination: none of {self.rows} new rows copies a reference row's {self.field} (exact, or "
                f"Jaccard ≥ {JACCARD} on character {SHINGLE}-grams){tail}"
            )
        exact, near = self.count("exact"), self.count("near-duplicate")
        parts = [f"{exact} exact cop{'y' if exact == 1 else 'ies'}"] if exact else []
        parts += [f"{near} near-duplicate{'s' if near != 1 else ''} (Jaccard ≥ {JACCARD})"] if near else []
        return (
            f"contamination: {len(self.copies)} of {self.rows} new rows ({len(self.copies) / self.rows:.1%}) copy a "
            f"reference row's {self.field}: {', '.join(parts)}{tail}"
        )

    def to_dict(self) -> dict[str, Any]:
        counts = {kind: self.count(kind) for kind in KINDS}
        share = len(self.copies) / self.rows if self.rows else 0.0
        summary = {"field": self.field, "rows": self.rows, "copied_share": share, "counts": counts}
        return summary | {"line": self.line(), "matches": [m.__dict__ for m in self.matches]}


KINDS = ("exact", "near-duplicate", "13-gram")


def prompt_texts(sample: Sample) -> tuple[str, list[str]]:
    """The field a model reads (alpaca: instruction and input) and its text per row."""
    name = PROMPT_SIDE.get(sample.format, "text")
    texts = sample.texts[name]
    if sample.format == "alpaca" and "input" in sample.texts:
        texts = [f"{a}\n{b}" for a, b in zip(texts, sample.texts["input"], strict=True)]
    return name, texts


def near_duplicates(ref: Sample, new: Sample) -> Overlap:
    name, ref_texts = prompt_texts(ref)
    new_texts = prompt_texts(new)[1]
    ref_words = [WORD.findall(t.lower()) for t in ref_texts]
    new_words = [WORD.findall(t.lower()) for t in new_texts]
    exact = {" ".join(words): i for i, words in reversed(list(enumerate(ref_words)))}
    near = similar_rows(ref_words, new_words)
    spans = shared_spans(ref_words, new_words)
    matches = []
    for i, words in enumerate(new_words):
        text = _short(new_texts[i])
        if " ".join(words) in exact:
            matches.append(Match(new.wheres[i], ref.wheres[exact[" ".join(words)]], "exact", 1.0, text))
        elif i in near:
            j, similarity = near[i]
            matches.append(Match(new.wheres[i], ref.wheres[j], "near-duplicate", similarity, text))
        elif i in spans:
            similarity = jaccard(shingles(words), shingles(ref_words[spans[i]]))
            matches.append(Match(new.wheres[i], ref.wheres[spans[i]], "13-gram", similarity, text))
    return Overlap(name, len(new), matches)


def shingles(words: list[str]) -> set[str]:
    text = " ".join(words)
    return {text[i : i + SHINGLE] for i in range(max(1, len(text) - SHINGLE + 1))}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def similar_rows(ref_words: list[list[str]], new_words: list[list[str]]) -> dict[int, tuple[int, float]]:
    """For each new row with a reference row of Jaccard ≥ JACCARD: (that row, the similarity), the closest one.
    MinHash LSH finds the candidates without comparing every pair; each is then measured exactly."""
    from datasketch import MinHash, MinHashLSH

    ref_sets = [shingles(w) for w in ref_words]
    new_sets = [shingles(w) for w in new_words]
    encoded = [[s.encode() for s in sets] for sets in ref_sets + new_sets]
    hashes = MinHash.bulk(encoded, num_perm=NUM_PERM)
    # A lower LSH threshold than the one kept: candidates whose estimate falls just short are measured too.
    lsh = MinHashLSH(threshold=JACCARD - 0.1, num_perm=NUM_PERM)
    for j, minhash in enumerate(hashes[: len(ref_sets)]):
        lsh.insert(j, minhash)
    found = {}
    for i, minhash in enumerate(hashes[len(ref_sets) :]):
        scored = [(j, jaccard(new_sets[i], ref_sets[j])) for j in lsh.query(minhash)]
        best = max(scored, key=lambda item: (item[1], -item[0]), default=None)
        if best is not None and best[1] >= JACCARD:
            found[i] = best
    return found


def shared_spans(ref_words: list[list[str]], new_words: list[list[str]]) -> dict[int, int]:
    """New rows sharing a SPAN-word span with a reference row: the first such reference row."""
    seen: dict[int, int] = {}
    for j, words in enumerate(ref_words):
        for start in range(len(words) - SPAN + 1):
            seen.setdefault(hash(tuple(words[start : start + SPAN])), j)
    found = {}
    for i, words in enumerate(new_words):
        hits = (seen.get(hash(tuple(words[s : s + SPAN]))) for s in range(len(words) - SPAN + 1))
        first = next((j for j in hits if j is not None), None)
        if first is not None:
            found[i] = first
    return found


def _short(text: str, width: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
