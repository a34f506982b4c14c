"""The reply-rules example (README "Rules instead of labels"): labelled verdicts to train a judge, reference replies
for the test set, and the judge's agreement with a script that checks the same rules.

    python examples/support_tickets/make_judge_data.py            # judge_train.jsonl, replies_test.jsonl
    python examples/support_tickets/make_judge_data.py --out /tmp/x   # the same bytes, elsewhere (the tests do this)
    python examples/support_tickets/make_judge_data.py --agreement runs/feedback/verdicts.jsonl
    python examples/support_tickets/make_judge_data.py --checked-change BEFORE.jsonl AFTER.jsonl   # without the judge

The three rules of reply_rules.txt were chosen so that a script can check them (CHECKS, regular expressions), which
is what lets the judge's verdicts be measured instead of trusted. The judge itself is a model: the built-in
SmolLM2-135M asked as is ranks breaking replies below good ones (AUC 0.27-0.36 per rule on 120 held-out replies, the
README), so the example fine-tunes it with tunelab on verdicts this script labels: the base model's own replies to
the training tickets, each rule asked of each reply, answered "yes" (it breaks the rule) or "no" by CHECKS. The
replies are shipped (base_replies.jsonl: 990 rows), made with the reply system prompt by

    tunelab generate smollm2-135m-instruct --input examples/support_tickets/train.jsonl --max-new-tokens 64 \
        --batch-size 16 --system "$(cat examples/support_tickets/reply_system.txt)" --output r.jsonl \
        [--temperature 0.8 --seed 1 | --temperature 0.8 --seed 2 | greedy]   # three runs, in that order

That stands in for verdicts a person would label; with a larger judge
model at hand (`--judge http://HOST:PORT/v1`), no training is needed.

Rows per rule: every "yes", and twice as many "no" but at least MIN_NO (a seeded sample): with "no" rows in
proportion only, the first judge flagged 29 of 120 held-out replies as breaking rule 1, which 2 of them did.
The same rows for the same replies: the seed is fixed.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import defaultdict
from pathlib import Path

from tunelab.evaluation.rules import (
    DEFAULT_JUDGE_PROMPT,
    Verdict,
    judge_question,
    paired_change,
    read_rules,
    rule_report,
)

HERE = Path(__file__).resolve().parent
RULES = read_rules(HERE / "reply_rules.txt")
SEED = 11
NO_PER_YES = 2
MIN_NO = 200  # a rarely broken rule still sees this many replies that keep it (29 "yes" for rule 1 here)

# One check per rule of reply_rules.txt, in its order. A mention counts as a break (a reply that says "bot" about
# anything): the rules are about what a support reply says, and the replies here never need those words.
CHECKS = [
    re.compile(r"\b(AI|A\.I\.)\b|\b(chat ?bot|bot|language model|artificial intelligence|SmolLM)\b", re.IGNORECASE),
    re.compile(
        r"\b(can ?not|can't|unable to|not able to|not equipped to|(don't|do not) have (the ability|any|access))",
        re.IGNORECASE,
    ),
    re.compile(r"sorry for your loss|condolence|sympath", re.IGNORECASE),
]
assert len(CHECKS) == len(RULES), "one check per rule of reply_rules.txt"


# The test set's references (replies_test.jsonl): a reply in the house style for each ticket's category, so that
# the comparison has a task metric (ROUGE-L against it) beside the rules. None of them breaks a rule.
REFERENCE = {
    "billing": "Thanks for flagging the charge for your {product}. I have asked our billing team to check it and will "
    "email you the result within one business day.",
    "bug": "Sorry the {product} is giving you trouble. Please restart it and update the Larkspur app; if it still "
    "happens, reply here and I will open a repair ticket.",
    "account": "I can help with your account. Please open Settings > Account in the Larkspur app; if that does not "
    "work, reply here and I will reset it for you.",
    "shipping": "Thanks for letting us know about your {product} order. I am checking with the carrier now and will "
    "send you a tracking update today.",
    "feature_request": "Thanks for the idea for the {product}! I have passed it to our product team, and we will let "
    "you know if it makes it into an update.",
    "how_to": "Good question about the {product}. The steps are in the Larkspur app under Help; reply here if "
    "anything is unclear and I will walk you through it.",
}


def reference_rows(tickets: list[dict]) -> list[dict]:
    """{prompt, completion}: each ticket with the house-style reply for its category and product."""
    rows = []
    for ticket in tickets:
        label = json.loads(ticket["completion"])
        rows.append({"prompt": ticket["prompt"], "completion": REFERENCE[label["category"]].format(**label)})
    return rows


def breaks(rule: int, answer: str) -> bool:
    return CHECKS[rule].search(answer) is not None


def judge_rows(replies: list[dict], rng: random.Random) -> list[dict]:
    """Chat rows: the judge's question for (rule, ticket, reply), answered yes/no by CHECKS."""
    by_rule: dict[int, dict[bool, list[dict]]] = defaultdict(lambda: {True: [], False: []})
    unique = {(r["prompt"], r["output"]): r for r in replies}.values()  # a sampled reply can equal the greedy one
    for reply in unique:
        for rule, text in enumerate(RULES):
            question = judge_question(DEFAULT_JUDGE_PROMPT, text, reply["prompt"], reply["output"])
            verdict = breaks(rule, reply["output"])
            answer = {"role": "assistant", "content": "yes" if verdict else "no"}
            by_rule[rule][verdict].append({"messages": [{"role": "user", "content": question}, answer]})
    rows = []
    for rule in sorted(by_rule):
        yes, no = by_rule[rule][True], by_rule[rule][False]
        rows += yes + rng.sample(no, min(len(no), max(NO_PER_YES * len(yes), MIN_NO)))
    rng.shuffle(rows)
    # Replies that differ in whitespace only are one row to tunelab (its duplicate check): keep the first.
    seen: set[str] = set()
    unique_rows = []
    for row in rows:
        key = " ".join(row["messages"][0]["content"].split())
        if key not in seen:
            seen.add(key)
            unique_rows.append(row)
    return unique_rows


def agreement(verdict_files: list[Path]) -> dict:
    """How often the judge's verdicts (verdicts.jsonl of `tunelab feedback`, or predictions*.jsonl of `tunelab
    eval/compare --rules`) agree with CHECKS, per rule, and its recall of the breaks."""
    stats = [{"n": 0, "agree": 0, "breaks": 0, "caught": 0, "false_alarms": 0} for _ in RULES]
    for path in verdict_files:
        for line in path.read_text().splitlines():
            row = json.loads(line)
            answer = row.get("answer", row.get("output"))
            for v in row["verdicts"]:
                truth, said = breaks(v["rule"], answer), bool(v["breaks"])
                s = stats[v["rule"]]
                s["n"] += 1
                s["agree"] += truth == said
                s["breaks"] += truth
                s["caught"] += truth and said
                s["false_alarms"] += said and not truth
    return {
        f"rule {i + 1}": {
            "agreement": round(s["agree"] / max(s["n"], 1), 3),
            "breaks": s["breaks"],
            "recall": round(s["caught"] / max(s["breaks"], 1), 3),
            "false_alarms": s["false_alarms"],
            "answers": s["n"],
        }
        for i, s in enumerate(stats)
    }


def checked_change(before: Path, after: Path) -> dict:
    """The share of answers breaking a rule as CHECKS see it (not the judge), in two prediction files of the same
    test rows (`tunelab compare --rules` writes one per arm), and after minus before with a paired interval."""
    per_file = []
    for path in (before, after):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        per_file.append([[Verdict(i, breaks(i, r["output"]), "") for i in range(len(RULES))] for r in rows])
    change, (low, high) = paired_change(*per_file)
    shares = [rule_report(verdicts, resamples=1000) for verdicts in per_file]
    return {
        "before": {k: round(v, 4) for k, v in shares[0].metrics.items()},
        "before_ci95": {k: [round(x, 4) for x in v] for k, v in shares[0].intervals.items()},
        "after": {k: round(v, 4) for k, v in shares[1].metrics.items()},
        "after_ci95": {k: [round(x, 4) for x in v] for k, v in shares[1].intervals.items()},
        "change": round(change, 4),
        "change_ci95": [round(low, 4), round(high, 4)],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--replies", nargs="*", type=Path, default=[HERE / "base_replies.jsonl"], help="`tunelab generate` outputs"
    )
    parser.add_argument("--out", type=Path, default=HERE, help="where judge_train.jsonl goes")
    parser.add_argument("--agreement", nargs="*", type=Path, default=[], help="verdict files to check")
    parser.add_argument("--checked-change", nargs=2, type=Path, metavar=("BEFORE", "AFTER"), help="predictions")
    args = parser.parse_args(argv)
    if args.checked_change:
        json.dump(checked_change(*args.checked_change), sys.stdout, indent=2)
        print()
        return
    if args.agreement:
        json.dump(agreement(args.agreement), sys.stdout, indent=2)
        print()
        return
    tickets = [json.loads(line) for line in (HERE / "test.jsonl").read_text().splitlines()]
    _write(args.out / "replies_test.jsonl", reference_rows(tickets))
    if args.replies:
        replies = [json.loads(line) for path in args.replies for line in path.read_text().splitlines()]
        rows = judge_rows(replies, random.Random(SEED))
        _write(args.out / "judge_train.jsonl", rows)
        print(f"{len(rows)} judge rows from {len(replies)} replies: {args.out / 'judge_train.jsonl'}")


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
