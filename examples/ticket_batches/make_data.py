"""Generate the wide-length instruction set (train.jsonl, test.jsonl): rows of 10 to ~500 tokens.

    python examples/ticket_batches/make_data.py                 # rewrite the shipped files next to this script
    python examples/ticket_batches/make_data.py --out /tmp/tb   # same bytes, elsewhere

Why: the support-ticket rows are all ~200 tokens, so padding costs little there; real instruction data
spans short questions and long documents. Each row here asks for the category of 1 to 10 support tickets
(the count drawn so that lengths spread evenly over the range) and answers one category per line, e.g.

    {"prompt": "Categories, one per line:\n1. <ticket>\n2. <ticket>", "completion": "1. billing\n2. bug"}

Tickets come from examples/support_tickets (train rows for train.jsonl, test rows for test.jsonl), so the
task is learnable and the held-out rows are unseen. Used by bench/speed.py.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
TICKETS = HERE.parent / "support_tickets"
ROWS = {"train": 240, "test": 60}
MAX_TICKETS = 10


def tickets(split: str) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in (TICKETS / f"{split}.jsonl").read_text().splitlines() if line.strip()]
    return [(r["prompt"], json.loads(r["completion"])["category"]) for r in rows]


def make_row(pool: list[tuple[str, str]], count: int, rng: random.Random) -> dict[str, str]:
    chosen = rng.sample(pool, count)
    if count == 1 and rng.random() < 0.5:  # half the single-ticket rows keep a few words: the shortest rows
        text, category = chosen[0]
        chosen = [(" ".join(text.split()[: rng.randint(3, 8)]), category)]
    body = "\n".join(f"{i}. {' '.join(text.split())}" for i, (text, _) in enumerate(chosen, 1))
    answer = "\n".join(f"{i}. {category}" for i, (_, category) in enumerate(chosen, 1))
    # One ticket gets a short instruction, so the shortest rows are a few words long.
    instruction = "Category?" if count == 1 else "Categories, one per line:"
    return {"prompt": f"{instruction}\n{body}", "completion": answer}


def write(out: Path, seed: int = 7) -> None:
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    for split, n in ROWS.items():
        pool = tickets(split)
        # count uniform over 1..MAX_TICKETS: row lengths (~30 tokens a ticket) spread evenly up to ~500
        rows = [make_row(pool, rng.randint(1, MAX_TICKETS), rng) for _ in range(n)]
        with (out / f"{split}.jsonl").open("w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE)
    write(parser.parse_args().out)
