"""Generate the Larkspur docs example (retrieval vs fine-tuning) from a seed.

    python examples/larkspur_docs/make_data.py                # rewrite the shipped files next to this script
    python examples/larkspur_docs/make_data.py --out /tmp/ld  # same bytes, elsewhere (the tests do this)

Larkspur Home is fictional, so no pretrained model knows these facts; they are stated only in the documents:

    docs/products/<slug>.md   36 manual pages, 8 facts each (model number, battery life or power draw, weight, ...);
                              the products of one family state the same kinds of fact, so retrieval has to tell
                              them apart by name (each page is about one 256-token chunk)
    docs/policies/<slug>.md   6 longer policy pages (returns, shipping, ...), 4 facts each, several chunks each
    train.jsonl               {"prompt", "completion": '{"answer": "..."}'}: two phrasings of each seen fact
    test_seen.jsonl           the third phrasing of 60 seen facts, never in training
    test_unseen.jsonl         one phrasing of 60 unseen facts
    retrieval.jsonl           {"question", "source"} for every test question (source relative to docs/)
    system.txt                the system prompt (configs/larkspur.yaml carries the same text)

The split is by fact, not by question: half the facts of each document are seen (two of their three phrasings
train; the third tests recall of a trained fact asked in new words) and the rest are unseen (no phrasing trains).
A fine-tune alone can answer only seen facts; retrieval can answer both, since every answer is in the documents.
Half the training rows put the fact's passage among same-family distractors before the question (the layout of
tunelab.rag.augment.context_prompt, which `compare` and `serve --index` use too), so the fine-tune learns to read
passages; the other half are bare questions, so it also learns to answer from memory. Every answer is its value
string exactly as the document writes it ("14 hours", "LK-4821"), so a substring check scores an output.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from catalog import (
    CUES,
    FAMILIES,
    INTROS,
    LIGHT_HEADINGS,
    LIGHT_NOTES,
    POLICIES,
    PRODUCT_POOLS,
    QUESTIONS,
    RESET_HEADINGS,
    RESET_NOTES,
    SENTENCES,
    SPEC_HEADINGS,
    Family,
)

from tunelab.rag.augment import Passage, context_prompt

HERE = Path(__file__).resolve().parent
SEED = 1729
TEST_ROWS = 60  # per test split
SYSTEM = (
    'Answer questions about Larkspur Home products and policies. Reply with only one line of JSON: {"answer": "..."}'
)
UNIQUE_KINDS = {"model"}  # no two products share these; other values may repeat across families
MAX_TRIES = 1000  # draws per value before a pool counts as used up


@dataclass(frozen=True)
class Fact:
    source: str  # the document that states it, relative to docs/
    subject: str  # the product's name without "Larkspur", or the policy's title
    kind: str  # "weight", "reset", ... for products; "<policy>/<section>" for policies
    value: str  # the answer, exactly as the document writes it
    questions: tuple[str, ...]  # three phrasings
    passage: str  # the text that states it: the whole product page, or one policy section with its heading
    group: str  # distractor passages come from the same group: the product family, or "policies"


class ValueDrawer:
    """Draws fact values so that a substring check can tell answers apart: no value is part of another (an output
    "15 seconds" must not pass for the answer "5 seconds"), and two kinds of fact never share a value."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.kind_of: dict[str, str] = {}

    def draw(self, kind: str, value_format: str, pool: Sequence[object], taken: set[str]) -> str:
        for _ in range(MAX_TRIES):
            value = value_format.format(self.rng.choice(pool))
            if value not in taken and self._fits(value, kind):
                self.kind_of[value] = kind
                return value
        raise ValueError(f"no value left for {kind!r} ({value_format!r}): widen its pool in catalog.py")

    def _fits(self, value: str, kind: str) -> bool:
        for other, other_kind in self.kind_of.items():
            if value == other and (kind != other_kind or kind in UNIQUE_KINDS):
                return False
            if value != other and (value in other or other in value):
                return False
        return True


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def product_values(drawer: ValueDrawer, family: Family, taken: dict[str, set[str]]) -> dict[str, str]:
    """One product's values, none shared with another product of its family (so a distractor page never holds
    the right answer by chance)."""
    pools = {
        **PRODUCT_POOLS,
        family.energy: (family.energy_format, family.energy_pool),
        "weight": ("{} grams", family.weight_pool),
    }
    values = {}
    for kind in ("model", "connection", family.energy, "weight", "water", "warranty", "reset", "indicator"):
        value_format, pool = pools[kind]
        values[kind] = drawer.draw(kind, value_format, pool, taken.setdefault(kind, set()))
        taken[kind].add(values[kind])
    return values


def product_page(rng: random.Random, name: str, blurb: str, values: dict[str, str], cue: str) -> str:
    """A manual page of about 120 words: overview, specifications, reset, status light, each sentence in one of
    a few wordings."""

    def say(kind: str) -> str:
        template = rng.choice(SENTENCES[kind])
        return template.format(v=values[kind], short=name, cue=cue, Cue=cue[0].upper() + cue[1:])

    intro = rng.choice(INTROS).format(full=f"Larkspur {name}", blurb=blurb)
    overview = " ".join([intro, say("model"), say("connection")])
    specs = [say(kind) for kind in values if kind not in ("model", "connection", "reset", "indicator")]
    rng.shuffle(specs)
    sections = [
        (rng.choice(SPEC_HEADINGS), " ".join(specs)),
        (rng.choice(RESET_HEADINGS), f"{say('reset')} {rng.choice(RESET_NOTES)}"),
        (rng.choice(LIGHT_HEADINGS), f"{say('indicator')} {rng.choice(LIGHT_NOTES)}"),
    ]
    body = "\n\n".join(f"## {heading}\n\n{text}" for heading, text in sections)
    return f"# Larkspur {name}\n\n{overview}\n\n{body}\n"


def product_docs(rng: random.Random, drawer: ValueDrawer) -> tuple[dict[str, str], list[Fact]]:
    """Every product's page, and its facts with their three questions each."""
    pages, facts = {}, []
    for group in sorted(FAMILIES):
        family = FAMILIES[group]
        taken: dict[str, set[str]] = {}
        cues = rng.sample(CUES, len(family.products))
        for (name, blurb), cue in zip(family.products, cues, strict=True):
            values = product_values(drawer, family, taken)
            source = f"products/{slug(name)}.md"
            pages[source] = product_page(rng, name, blurb, values, cue)
            for kind, value in values.items():
                names = {"full": f"Larkspur {name}", "short": name, "cue": cue}
                questions = tuple(q.format(**names) for q in QUESTIONS[kind])
                facts.append(Fact(source, name, kind, value, questions, pages[source], group))
    return pages, facts


def policy_docs(drawer: ValueDrawer) -> tuple[dict[str, str], list[Fact]]:
    """Policy pages: a title, an intro, one section per fact (that fact's passage), and a closing section."""
    pages, facts = {}, []
    for policy in POLICIES:
        source = f"policies/{policy.slug}.md"
        sections = []
        for section in policy.sections:
            kind = f"{policy.slug}/{slug(section.heading)}"
            value = drawer.draw(kind, section.value_format, section.pool, set())
            sections.append(f"## {section.heading}\n\n{section.paragraph.format(v=value)}")
            facts.append(Fact(source, policy.title, kind, value, section.questions, sections[-1], "policies"))
        closing = "## {}\n\n{}".format(*policy.closing)
        pages[source] = "\n\n".join([f"# {policy.title}", policy.intro, *sections, closing]) + "\n"
    return pages, facts


def split_facts(rng: random.Random, facts: list[Fact]) -> tuple[list[Fact], list[Fact]]:
    """Half the facts of each document are seen, the rest unseen; each product has both, so the fine-tune has met
    every product's name and the unseen questions test the facts themselves."""
    seen, unseen = [], []
    for source in sorted({fact.source for fact in facts}):
        group = [fact for fact in facts if fact.source == source]
        rng.shuffle(group)
        seen += group[: len(group) // 2]
        unseen += group[len(group) // 2 :]
    return seen, unseen


def qa_row(prompt: str, fact: Fact) -> dict[str, str]:
    return {"prompt": prompt, "completion": json.dumps({"answer": fact.value})}


def with_distractors(rng: random.Random, fact: Fact, library: dict[str, list[Passage]]) -> list[Passage]:
    """The fact's passage and one or two others of its group, in random order (as a retriever would rank them)."""
    others = [p for p in library[fact.group] if p.text != fact.passage]
    passages = [Passage(source=fact.source, text=fact.passage), *rng.sample(others, rng.randint(1, 2))]
    rng.shuffle(passages)
    return passages


def passage_library(facts: list[Fact]) -> dict[str, list[Passage]]:
    library: dict[str, list[Passage]] = {}
    for fact in facts:
        passages = library.setdefault(fact.group, [])
        if all(p.text != fact.passage for p in passages):
            passages.append(Passage(source=fact.source, text=fact.passage))
    return library


def qa_splits(rng: random.Random, facts: list[Fact]) -> dict[str, list[tuple[str, Fact]]]:
    """(question, fact) pairs per file: two phrasings of each seen fact train, the third may test it; one phrasing
    of an unseen fact may test it."""
    seen, unseen = split_facts(rng, facts)
    train, seen_tests = [], []
    for fact in seen:
        phrasings = rng.sample(fact.questions, 3)
        train += [(phrasings[0], fact), (phrasings[1], fact)]
        seen_tests.append((phrasings[2], fact))
    unseen_tests = [(rng.choice(fact.questions), fact) for fact in unseen]
    rng.shuffle(train)
    return {
        "train": train,
        "test_seen": rng.sample(seen_tests, TEST_ROWS),
        "test_unseen": rng.sample(unseen_tests, TEST_ROWS),
    }


def train_rows(rng: random.Random, pairs: list[tuple[str, Fact]], facts: list[Fact]) -> list[dict[str, str]]:
    """Half the rows (chosen at random) carry passages before the question, the other half are the bare question."""
    library = passage_library(facts)
    with_context = set(rng.sample(range(len(pairs)), len(pairs) // 2))
    rows = []
    for i, (question, fact) in enumerate(pairs):
        prompt = context_prompt(question, with_distractors(rng, fact, library)) if i in with_context else question
        rows.append(qa_row(prompt, fact))
    return rows


def check(facts: list[Fact]) -> None:
    """What the tests and a substring score rely on; a failure means the tables in catalog.py need a change."""
    questions = [q for fact in facts for q in fact.questions]
    if len(set(questions)) != len(questions):
        raise ValueError("two facts share a question: make the question templates name their subject")
    for fact in facts:
        if fact.passage.count(fact.value) != 1:
            raise ValueError(f"{fact.source}: {fact.value!r} should appear once in its passage")
        clash = next((q for q in questions if fact.value in q), None)
        if clash:
            raise ValueError(f"{fact.value!r} ({fact.source}) is part of the question {clash!r}")
    names = sorted({fact.subject for fact in facts})
    for name in names:
        if any(name != other and name in other for other in names):
            raise ValueError(f"the name {name!r} is part of another: questions about them would be ambiguous")


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def write_docs(out: Path, pages: dict[str, str]) -> None:
    """The pages under out/docs, and any stale page of an earlier catalogue removed."""
    for folder in ("products", "policies"):
        for old in sorted((out / "docs" / folder).glob("*.md")):
            if f"{folder}/{old.name}" not in pages:
                old.unlink()
    for source in sorted(pages):
        path = out / "docs" / source
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(pages[source], encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write into (default: next to this script)")
    out = parser.parse_args().out
    rng = random.Random(SEED)
    drawer = ValueDrawer(rng)
    product_pages, product_facts = product_docs(rng, drawer)
    policy_pages, policy_facts = policy_docs(drawer)
    facts = product_facts + policy_facts
    check(facts)
    splits = qa_splits(rng, facts)
    out.mkdir(parents=True, exist_ok=True)
    write_docs(out, {**product_pages, **policy_pages})
    write_jsonl(out / "train.jsonl", train_rows(rng, splits["train"], facts))
    for name in ("test_seen", "test_unseen"):
        write_jsonl(out / f"{name}.jsonl", [qa_row(question, fact) for question, fact in splits[name]])
    tests = splits["test_seen"] + splits["test_unseen"]
    write_jsonl(out / "retrieval.jsonl", [{"question": q, "source": fact.source} for q, fact in tests])
    (out / "system.txt").write_text(SYSTEM + "\n", encoding="utf-8")
    print(
        f"{len(product_pages)} product pages, {len(policy_pages)} policy pages, {len(facts)} facts; "
        f"{len(splits['train'])} train rows, {TEST_ROWS} + {TEST_ROWS} test rows -> {out}"
    )


if __name__ == "__main__":
    main()
