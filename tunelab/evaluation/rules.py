"""Rules instead of labels: the user's plain-text rules, the judge's prompt, and the share of answers breaking them.

    rules = read_rules(Path("rules.txt"))            # ["Reply with one line of JSON.", ...], or DataError file:line
    template = read_judge_prompt(None)               # the default; a user's file must name {rule} {prompt} {answer}
    report = rule_report(verdicts)                   # share breaking any rule, per rule, with bootstrap intervals

A rules file holds one rule per line. Blank lines and lines starting with `#` are skipped; a leading "- ", "* " or
"3." is dropped, so a Markdown list reads as it is. Each rule is judged on its own: one question per (answer, rule)
is what a small judge can answer, and a verdict per rule says which rule an answer broke.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import ConfigError, DataError
from tunelab.evaluation.bootstrap import mean_interval

# More rules than this is a policy document, not a rule list: every answer is judged once per rule.
MAX_RULES = 32
MAX_RULE_CHARS = 500
_BULLET = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")

# One yes/no question per rule. "Does it break" (not "does it follow") so that "yes" marks the rare case a person
# audits, and a judge that cannot tell stays near its prior instead of passing everything by default.
DEFAULT_JUDGE_PROMPT = """You check an assistant's answer against one rule.

Rule: {rule}

The user wrote:
{prompt}

The assistant answered:
{answer}

Does the answer break the rule? Answer with one word: yes or no."""

PLACEHOLDERS = ("rule", "prompt", "answer")


def read_rules(path: Path) -> list[str]:
    """The rules in `path`, one per line; a DataError naming file:line for a bad one, or for a file with none."""
    if not path.is_file():
        raise ConfigError(f"--rules {path}: no such file", ["write one rule per line in a text file"])
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start}); save the rules as UTF-8") from None
    rules, problems = [], []
    for number, line in enumerate(lines, start=1):
        rule = _BULLET.sub("", line).strip()
        if not rule or line.lstrip().startswith("#"):
            continue
        if len(rule) > MAX_RULE_CHARS:
            problems.append(f"{path}:{number}: rule is {len(rule)} characters; keep each under {MAX_RULE_CHARS}")
        rules.append(rule)
    if not rules:
        problems.append(f"{path}: no rules; write one rule per line (lines starting with # are comments)")
    elif len(rules) > MAX_RULES:
        problems.append(f"{path}: {len(rules)} rules; at most {MAX_RULES} (each answer is judged once per rule)")
    if problems:
        raise DataError(problems[0], problems[1:])
    return rules


def read_judge_prompt(path: Path | None) -> str:
    """The judge's prompt template: the user's file, or DEFAULT_JUDGE_PROMPT. It must name {rule}, {prompt} and
    {answer}, and no other field."""
    if path is None:
        return DEFAULT_JUDGE_PROMPT
    if not path.is_file():
        raise ConfigError(f"--judge-prompt {path}: no such file")
    template = path.read_text(encoding="utf-8")
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ConfigError(f"--judge-prompt {path}: {exc}; write a literal brace as {{{{ or }}}}") from None
    missing = [f"{{{name}}}" for name in PLACEHOLDERS if name not in fields]
    unknown = sorted(fields - set(PLACEHOLDERS))
    if missing or unknown:
        named = f"missing {', '.join(missing)}" if missing else f"unknown field(s) {', '.join(unknown)}"
        raise ConfigError(f"--judge-prompt {path}: {named}; the prompt names {{rule}}, {{prompt}} and {{answer}}")
    return template


def judge_question(template: str, rule: str, prompt: str, answer: str) -> str:
    return template.format(rule=rule, prompt=prompt, answer=answer)


@dataclass(frozen=True)
class Verdict:
    """The judge on one answer and one rule. `breaks` None: the judge's reply said neither yes nor no.
    `p_break`: the judge's probability of "yes" against "no", where the judge gives one (a local model)."""

    rule: int
    breaks: bool | None
    raw: str
    p_break: float | None = None

    def to_dict(self) -> dict:
        return {"rule": self.rule, "breaks": self.breaks, "p_break": self.p_break, "raw": self.raw}


def breaks_any(verdicts: list[Verdict]) -> bool:
    return any(v.breaks for v in verdicts)


def broken_count(verdicts: list[Verdict]) -> float:
    """How many rules an answer broke; an unclear verdict counts half, so it ranks between a pass and a break."""
    return sum(1.0 if v.breaks else 0.5 if v.breaks is None else 0.0 for v in verdicts)


@dataclass
class RuleReport:
    """The share of answers that break any rule (and each rule), with 95% bootstrap intervals over answers."""

    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    unclear: int  # verdicts that were neither yes nor no (counted as not broken in the shares)


def rule_report(per_answer: list[list[Verdict]], resamples: int = 1000) -> RuleReport:
    """`per_answer[i]`: answer i's verdicts, one per rule in rule order. Keys: rules_broken (any rule), then
    rule_1_broken, ... (lower is better)."""
    columns = {"rules_broken": [float(breaks_any(v)) for v in per_answer]}
    for index in range(len(per_answer[0]) if per_answer else 0):
        columns[f"rule_{index + 1}_broken"] = [float(bool(v[index].breaks)) for v in per_answer]
    metrics = {key: sum(values) / max(len(values), 1) for key, values in columns.items()}
    intervals = {key: mean_interval(values, resamples) for key, values in columns.items()} if resamples else {}
    unclear = sum(v.breaks is None for verdicts in per_answer for v in verdicts)
    return RuleReport(metrics, intervals, unclear)


def paired_change(before: list[list[Verdict]], after: list[list[Verdict]], resamples: int = 1000):
    """After minus before in the share breaking any rule, on the same test rows, with a paired bootstrap interval
    (rows resampled together, so the row-to-row spread that both arms share cancels)."""
    diffs = [float(breaks_any(a)) - float(breaks_any(b)) for b, a in zip(before, after, strict=True)]
    return sum(diffs) / max(len(diffs), 1), mean_interval(diffs, resamples)
