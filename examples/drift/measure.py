"""Measure `tunelab drift` on the shipped examples: the numbers of the README's drift section.

    .venv/bin/python examples/drift/measure.py                # 165 s on 2 busy EPYC Zen 4 cores; prints JSON
    .venv/bin/python examples/drift/measure.py --splits 100 --out /tmp/drift-numbers.json

1. Worked examples, each as `tunelab drift` runs it (lexical tests, the built-in encoder's embedding test, the
   contamination check): the support tickets' train vs test, random halves and file-order halves of the tickets'
   train file, the tickets against another source (the Larkspur product questions, and the batched tickets).
2. A contaminated test set: the tickets' test file with copies of 6 training rows, edited a little.
3. The false-positive rate: `--splits` random half-splits of the tickets (train and test pooled, 450 rows), each
   judged at α = 0.01, 0.05 and 0.1; the share of splits called drifted should stay at or below α.
Embeddings are cached by text, so each text is embedded once however many splits contain it.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from tunelab.data.contamination import jaccard, near_duplicates, shingles
from tunelab.data.drift import WORD, decide, lexical_signals, read_pair
from tunelab.evaluation import drift
from tunelab.rag.encoder import DEFAULT_ENCODER, load_encoder

ROOT = Path(__file__).resolve().parents[2]
TICKETS = ROOT / "examples/support_tickets"
ALPHAS = (0.01, 0.05, 0.1)


class CachedEncoder:
    """The encoder, embedding each distinct text once."""

    def __init__(self, encoder):
        self.encoder, self.vectors = encoder, {}

    def encode(self, texts):
        import numpy as np

        missing = list(dict.fromkeys(t for t in texts if t not in self.vectors))
        if missing:
            self.vectors |= dict(zip(missing, self.encoder.encode(missing), strict=True))
        return np.stack([self.vectors[t] for t in texts])


def lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]


def write(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n")
    return path


def signals_of(ref: Path, new: Path, encoder, seed: int = 0):
    job = drift.prepare(str(ref), new, Path(tempfile.mkdtemp()), encoder=DEFAULT_ENCODER, seed=seed)
    return job, lexical_signals(job.ref, job.new, job.permutations, seed) + drift.embedding_signals(job, encoder)


def worked_examples(tmp: Path, encoder) -> dict:
    train = lines(TICKETS / "train.jsonl")
    shuffled = random.Random(0).sample(train, len(train))
    pairs = {
        "tickets train vs test": (TICKETS / "train.jsonl", TICKETS / "test.jsonl"),
        "tickets train, random halves": (
            write(tmp / "ra.jsonl", shuffled[:165]),
            write(tmp / "rb.jsonl", shuffled[165:]),
        ),
        "tickets train, first vs second half": (
            write(tmp / "fa.jsonl", train[:165]),
            write(tmp / "fb.jsonl", train[165:]),
        ),
        "tickets train vs Larkspur questions": (TICKETS / "train.jsonl", ROOT / "examples/larkspur_docs/train.jsonl"),
        "tickets train vs batched tickets": (TICKETS / "train.jsonl", ROOT / "examples/ticket_batches/train.jsonl"),
    }
    out = {}
    for name, (ref, new) in pairs.items():
        started = time.perf_counter()
        job, signals = signals_of(ref, new, encoder)
        verdict = decide(signals, job.alpha)
        out[name] = {
            "verdict": verdict.line,
            "contamination": near_duplicates(job.ref, job.new).line(),
            "signals": {s.name: {"summary": s.summary, "p": s.p_value} for s in signals},
            "seconds_with_cached_embeddings": round(time.perf_counter() - started, 2),
        }
    return out


def edited(row: str, rng: random.Random) -> str:
    """The row with its prompt edited a little: one word dropped and the greeting changed."""
    fields = json.loads(row)
    words = fields["prompt"].split()
    del words[rng.randrange(1, len(words))]
    fields["prompt"] = "Hello there, " + " ".join(words)
    return json.dumps(fields)


def contaminated(tmp: Path) -> dict:
    """The tickets' test file with 5 training rows edited a little and 1 copied as it is: which are found."""
    train, test = lines(TICKETS / "train.jsonl"), lines(TICKETS / "test.jsonl")
    rng = random.Random(0)
    sources = rng.sample(range(len(train)), 5) + [7]
    copies = [edited(train[i], rng) for i in sources[:5]] + [train[7]]
    ref, new = read_pair(TICKETS / "train.jsonl", write(tmp / "test_with_copies.jsonl", test + copies))
    started = time.perf_counter()
    overlap = near_duplicates(ref, new)
    seconds = time.perf_counter() - started
    found = {m.new: m.kind for m in overlap.copies}
    planted = []
    for k, source in enumerate(sources):
        words = [WORD.findall(json.loads(row)["prompt"].lower()) for row in (train[source], copies[k])]
        where = f"{new.wheres[0].rsplit(':', 1)[0]}:{len(test) + k + 1}"
        similarity = jaccard(shingles(words[0]), shingles(words[1]))
        planted.append(
            {"row": where, "source_line": source + 1, "jaccard": round(similarity, 3), "found": found.get(where)}
        )
    return {"line": overlap.line(), "planted": planted, "seconds": round(seconds, 2)}


def false_positive_rate(tmp: Path, encoder, splits: int) -> dict:
    pooled = lines(TICKETS / "train.jsonl") + lines(TICKETS / "test.jsonl")
    flagged = dict.fromkeys(ALPHAS, 0)
    per_test: dict[str, list[float]] = {}
    for k in range(splits):
        rows = random.Random(1000 + k).sample(pooled, len(pooled))
        half = len(rows) // 2
        job, signals = signals_of(write(tmp / "a.jsonl", rows[:half]), write(tmp / "b.jsonl", rows[half:]), encoder, k)
        for alpha in ALPHAS:
            flagged[alpha] += decide(signals, alpha).drifted
        for s in signals:
            per_test.setdefault(s.name, []).append(s.p_value)
    return {
        "splits": splits,
        "rows": len(pooled),
        "tests_per_split": len(per_test),
        "drift_called": {str(a): flagged[a] for a in ALPHAS},
        "per_test_share_p_below_0.05": {n: sum(p < 0.05 for p in ps) / len(ps) for n, ps in per_test.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None, help="Also write the numbers here as JSON.")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    started = time.perf_counter()
    encoder = CachedEncoder(load_encoder(DEFAULT_ENCODER))
    numbers = {
        "worked_examples": worked_examples(tmp, encoder),
        "contaminated_test_set": contaminated(tmp),
        "false_positive_rate": false_positive_rate(tmp, encoder, args.splits),
    }
    numbers["seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(numbers, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
