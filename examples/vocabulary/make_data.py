"""Generate the specialized-vocabulary example (train.jsonl, test.jsonl) from a seed: a warehouse parts desk.

    python examples/vocabulary/make_data.py                 # rewrite the shipped files next to this script
    python examples/vocabulary/make_data.py --out /tmp/voc  # the same bytes, elsewhere

Invented part numbers (XK-4471) that the built-in tokenizer splits into 7 pieces each (letters, the dash, and
every digit on its own), each stocked in one warehouse bay. A row asks where a part is, in one of 8 phrasings;
the answer names the part and its bay: {"prompt": "DW-9820: what is its bay?", "completion": "DW-9820 is in bay 11."}.
Each part is asked 6 ways in train.jsonl and the other 2 ways in test.jsonl, so the test asks about parts the
model has seen, in words it has not seen them with: it measures whether the model learnt each part's bay.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SEED = 21
PARTS = 30
BAYS = 12
TRAIN_ASKS = 6  # of the ASKS, per part; the rest go to the test set
LETTERS = "BCDFGHJKLMNPQRSTVWXZ"  # no vowels: no code reads as an English word
ASKS = (
    "Which bay stocks {code}?",
    "Where do I find part {code} in the warehouse?",
    "A customer ordered {code}. Which bay should I pick it from?",
    "Locate {code} for me, please.",
    "{code}: what is its bay?",
    "I need {code} for a repair ticket. Where is it kept?",
    "Pick list has {code}. Bay?",
    "Stock check: where is {code} stored?",
)


def part_codes(rng: random.Random) -> list[str]:
    codes: list[str] = []
    while len(codes) < PARTS:
        code = f"{rng.choice(LETTERS)}{rng.choice(LETTERS)}-{rng.randrange(10000):04d}"
        if code[:2] not in {c[:2] for c in codes}:  # distinct prefixes: no part is told from another by digits alone
            codes.append(code)
    return codes


def rows(seed: int = SEED) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    rng = random.Random(seed)
    train, test = [], []
    for code in part_codes(rng):
        bay = rng.randrange(1, BAYS + 1)
        asks = rng.sample(ASKS, len(ASKS))
        for k, ask in enumerate(asks):
            row = {"prompt": ask.format(code=code), "completion": f"{code} is in bay {bay}."}
            (train if k < TRAIN_ASKS else test).append(row)
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


def write_jsonl(path: Path, records: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    train, test = rows()
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "test.jsonl", test)
    print(f"wrote {len(train)} training and {len(test)} test rows to {out}")


if __name__ == "__main__":
    main()
