"""Generate the support-ticket demo dataset (train.jsonl, test.jsonl) from a seed.

    python examples/support_tickets/make_data.py                 # rewrite the shipped files next to this script
    python examples/support_tickets/make_data.py --out /tmp/st   # same bytes, elsewhere (the tests do this)

Each row is {"prompt": <ticket text>, "completion": <one line of JSON>}, the completion being
{"category": ..., "priority": ..., "product": ...} in that key order. The phrase tables and the rules
that tie cues to labels are in phrases.py; this file only composes tickets and balances the labels.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from phrases import (
    ACCOUNTS,
    ALLOWED,
    BILLING,
    BILLING_PLUS,
    BUGS,
    CATEGORIES,
    CONTEXT,
    FEATURES,
    FIRST_NAMES,
    FRAMES,
    GREETINGS,
    HOW_TOS,
    MEDIUM_WITHOUT_CUE,
    NAMES,
    PRIORITY_CUES,
    PURCHASES,
    SHIPPING,
    SHORT_CUES,
    SIGN_OFFS,
    TYPOS,
)

HERE = Path(__file__).resolve().parent
PER_PRODUCT = {"bug": BUGS, "account": ACCOUNTS, "feature_request": FEATURES, "how_to": HOW_TOS}


def label_plan(rng: random.Random, n: int) -> list[tuple[str, str, str]]:
    """n (category, product, priority) triples: categories in turn, each cycling its shuffled valid combos."""
    combos = {}
    for category in CATEGORIES:
        products, priorities = ALLOWED[category]
        combos[category] = [(category, p, q) for p in products for q in priorities]
        rng.shuffle(combos[category])
    plan = []
    for i in range(n):
        cycle = combos[CATEGORIES[i % len(CATEGORIES)]]
        plan.append(cycle[(i // len(CATEGORIES)) % len(cycle)])
    rng.shuffle(plan)
    return plan


def problem(rng: random.Random, category: str, product: str) -> str:
    """The sentence that carries the category and the product."""
    slots = {
        "name": rng.choice(NAMES[product]),
        "purchase": rng.choice(PURCHASES.get(product, [""])),
        "order": f"#LK-{rng.randint(10000, 99999)}",
        "amount": f"${rng.randint(5, 300)}.{rng.choice(['00', '99', '49'])}",
        "amount2": f"${rng.randint(5, 300)}.00",
    }
    if category == "billing":
        pool = BILLING + (BILLING_PLUS if product == "larkspur plus" else [])
    elif category == "shipping":
        pool = SHIPPING
    else:
        pool = PER_PRODUCT[category][product]
    text = rng.choice(FRAMES[category]).format(x=rng.choice(pool).format(**slots))
    return capitalize(text)


def capitalize(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def cue(rng: random.Random, priority: str) -> str | None:
    if priority == "medium" and rng.random() < MEDIUM_WITHOUT_CUE:
        return None
    return rng.choice(PRIORITY_CUES[priority])


def one_liner(rng: random.Random, category: str, product: str, priority: str) -> str:
    sentence = problem(rng, category, product)
    if sentence.endswith("?"):  # a question keeps its mark; the cue follows as its own sentence
        tail = cue(rng, priority)
        return f"{sentence} {tail}" if tail else sentence
    return sentence[:-1] + rng.choice(SHORT_CUES[priority])


def letter(rng: random.Random, category: str, product: str, priority: str, n_context: int) -> str:
    """Greeting, problem, some neutral context, the priority cue (before or after), sign-off."""
    body = [problem(rng, category, product)]
    for line in rng.sample(CONTEXT[category], n_context):
        body.append(line.format(order=f"#LK-{rng.randint(10000, 99999)}", email=email(rng)))
    signal = cue(rng, priority)
    if signal:
        body.insert(0 if rng.random() < 0.3 else len(body), signal)
    greeting = rng.choice(GREETINGS) + rng.choice([" ", "\n", "\n"]) if rng.random() < 0.8 else ""
    sign_off = f"\n{rng.choice(SIGN_OFFS)} {rng.choice(FIRST_NAMES)}" if rng.random() < 0.7 else ""
    return greeting + " ".join(body) + sign_off


def email(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES).lower()}{rng.randint(1, 99)}@example.com"


def roughen(rng: random.Random, text: str) -> str:
    """Occasional real-world sloppiness: one common misspelling, or a ticket typed all in lower case."""
    if rng.random() < 0.15:
        present = [word for word in TYPOS if word in text]
        if present:
            word = rng.choice(present)
            text = text.replace(word, TYPOS[word], 1)
    if rng.random() < 0.06:
        text = text.lower()
    return text


def ticket(rng: random.Random, category: str, product: str, priority: str) -> str:
    shape = rng.random()
    if shape < 0.2:
        text = one_liner(rng, category, product, priority)
    else:
        text = letter(rng, category, product, priority, n_context=0 if shape < 0.55 else rng.choice([1, 2]))
    return roughen(rng, text)


def completion(category: str, priority: str, product: str) -> str:
    # json.dumps keeps insertion order and uses ", " / ": ", so this exact string is the trained format.
    return json.dumps({"category": category, "priority": priority, "product": product})


def make_split(rng: random.Random, n: int, seen: set[str]) -> list[dict[str, str]]:
    """n rows with balanced labels and prompts unseen so far (in this or an earlier split)."""
    rows = []
    for category, product, priority in label_plan(rng, n):
        for _ in range(100):
            prompt = ticket(rng, category, product, priority)
            if prompt not in seen:
                break
        else:
            raise RuntimeError(f"could not find a new {category}/{product}/{priority} ticket; add phrases")
        seen.add(prompt)
        rows.append({"prompt": prompt, "completion": completion(category, priority, product)})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE, help="output directory (default: next to this script)")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--train", type=int, default=330, help="train rows")
    parser.add_argument("--test", type=int, default=120, help="test rows")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    seen: set[str] = set()  # membership only: iteration order of a str set varies between runs
    train = make_split(rng, args.train, seen)
    test = make_split(rng, args.test, seen)
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "train.jsonl", train)
    write_jsonl(args.out / "test.jsonl", test)
    # The same tickets as a classification task (category only), for encoder classifiers.
    write_jsonl(args.out / "categories_train.jsonl", categories(train))
    write_jsonl(args.out / "categories_test.jsonl", categories(test))
    print(f"wrote {len(train)} train and {len(test)} test rows (and their categories) to {args.out}")


def categories(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{"text": row["prompt"], "label": json.loads(row["completion"])["category"]} for row in rows]


if __name__ == "__main__":
    main()
