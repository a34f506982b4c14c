"""Preference pairs for the support-ticket task (pairs_train.jsonl, pairs_test.jsonl), from a seed.

    python examples/support_tickets/make_pairs.py                 # write them next to this script
    python examples/support_tickets/make_pairs.py --out /tmp/st   # same bytes, elsewhere (the tests do this)

Each ticket of train.jsonl / test.jsonl gives one {"prompt", "chosen", "rejected"} row: chosen is its correct
JSON; rejected is, in a seeded shuffle of six kinds: the JSON with the priority one step off (three of the six:
priority is the field the SFT model misses most, 75% on the test set, and its misses are neighbours: medium for
high, low for medium), with a wrong category, with a wrong product, or an answer that is not the one line of JSON
the system prompt asks for (prose, or the JSON inside a sentence). Wrong values are other valid labels, so only
the ticket tells the answers apart.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from phrases import CATEGORIES, PRIORITIES, PRODUCTS

HERE = Path(__file__).resolve().parent
SEED = 7


def wrong_field(rng: random.Random, answer: dict, key: str, values: list[str]) -> str:
    """The answer with `key` set to another valid value."""
    other = rng.choice([v for v in values if v != answer[key]])
    return json.dumps({**answer, key: other})


def not_json(rng: random.Random, answer: dict) -> str:
    prose = [
        f"This looks like a {answer['category'].replace('_', ' ')} ticket about the {answer['product']}, "
        f"{answer['priority']} priority.",
        f"Sure! Here is the triage: {json.dumps(answer)}",
        f"Category: {answer['category']}\nPriority: {answer['priority']}\nProduct: {answer['product']}",
    ]
    return rng.choice(prose)


def neighbour_priority(rng: random.Random, answer: dict) -> str:
    at = PRIORITIES.index(answer["priority"])
    steps = [at + d for d in (-1, 1) if 0 <= at + d < len(PRIORITIES)]
    return json.dumps({**answer, "priority": PRIORITIES[rng.choice(steps)]})


KINDS = ("priority", "priority", "priority", "category", "product", "not_json")


def rejected(rng: random.Random, answer: dict) -> str:
    kind = rng.choice(KINDS)
    if kind == "priority":
        return neighbour_priority(rng, answer)
    if kind == "not_json":
        return not_json(rng, answer)
    return wrong_field(rng, answer, kind, CATEGORIES if kind == "category" else PRODUCTS)


def pairs(rows: list[dict], rng: random.Random) -> list[dict]:
    out = []
    for row in rows:
        answer = json.loads(row["completion"])
        out.append({"prompt": row["prompt"], "chosen": row["completion"], "rejected": rejected(rng, answer)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE, help="Folder for pairs_train.jsonl and pairs_test.jsonl.")
    args = parser.parse_args()
    rng = random.Random(SEED)
    args.out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        rows = [json.loads(line) for line in (HERE / f"{split}.jsonl").read_text().splitlines()]
        lines = [json.dumps(pair) for pair in pairs(rows, rng)]
        (args.out / f"pairs_{split}.jsonl").write_text("\n".join(lines) + "\n")
        print(f"wrote {len(lines)} pairs to {args.out / f'pairs_{split}.jsonl'}")


if __name__ == "__main__":
    main()
