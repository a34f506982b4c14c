"""What training would see, without training: `tunelab data inspect` calls `inspect(cfg, tokenizer)`.

    report = inspect(cfg, tokenizer)
    report.render(rich.console.Console())   # table + one example, prompt tokens dim, trained ones highlighted

Bad rows do not raise here: they are counted per reason, so one look shows how much data a run would
keep. Unreadable files and template problems still raise DataError.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from tunelab.config import RunConfig
from tunelab.data import vocabulary
from tunelab.data.build import encode_checked
from tunelab.data.encode import Encoded, template_name
from tunelab.data.problems import count_by_reason
from tunelab.data.rows import RowSet, collect
from tunelab.data.vocabulary import VocabularyReport

PERCENTILES = (50, 90, 99)
# Below this many good rows, suggest cross-validation. Why 1000: a metric measured on n rows (a share near 50%)
# has a 95% interval of about +-98/sqrt(n) points, so a 10% split of 1000 rows (100 rows) is already +-10 points:
# too noisy to tell two configs apart. `tunelab cv` validates on every row once, +-98/sqrt(all rows).
SMALL_DATA_ROWS = 1000


@dataclass
class InspectReport:
    format: str
    template: str
    labels: list[str] | None
    max_seq_length: int
    rows_read: int  # train (+ validation) records, good and bad
    rows: dict[str, int]  # good rows per split: what a run with on_bad_rows=skip would train on
    token_lengths: dict[str, int]  # p50/p90/p99/max tokens per training row (before any cut)
    truncated: int  # rows whose completion would not fit max_seq_length
    rejected: dict[str, int]  # bad rows per reason (truncated included)
    repeats: int = 0  # train rows repeating an earlier one, kept on its side of the data.val_size split
    example_where: str = ""
    example: list[tuple[str, bool]] = field(default_factory=list)  # (text, trained) pieces of one row
    advice: list[str] = field(default_factory=list)  # what to do about what the report found (small data: cv)
    vocabulary: VocabularyReport | None = None  # tokens per word here and in general text; the most split terms

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["example"] = [{"text": text, "trained": trained} for text, trained in self.example]
        return out

    def render(self, console: Any) -> None:
        from rich.table import Table
        from rich.text import Text

        table = Table(title="Data", show_header=False)
        for key, value in self._summary():
            table.add_row(key, value)
        console.print(table)
        if self.vocabulary is not None and self.vocabulary.fragmented:
            console.print(
                f"Most split frequent terms ({self.vocabulary.candidates} seen {vocabulary.AUTO_MIN_COUNT}+ times in "
                f"{vocabulary.AUTO_MIN_PIECES}+ pieces, not in general English; `data.new_tokens: auto` adds up to "
                f"{vocabulary.AUTO_MAX_TERMS}):",
                markup=False,
                soft_wrap=True,
            )
            for term in self.vocabulary.fragmented:
                console.print(f"  {term.term}  x{term.count}: {'|'.join(term.pieces)}", markup=False, soft_wrap=True)
        if self.example:
            console.print(
                f"Example ({self.example_where}): [dim]dim = prompt, not trained[/dim]; "
                "[bold green]green = trained[/bold green]"
            )
            console.print(Text.assemble(*((t, "bold green" if trained else "dim") for t, trained in self.example)))
        for line in self.advice:
            console.print(f"[yellow]advice[/]: {line}", markup=True, soft_wrap=True)

    def _summary(self) -> list[tuple[str, str]]:
        lengths = ", ".join(f"{k} {v}" for k, v in self.token_lengths.items())
        rejected = ", ".join(f"{k} {v}" for k, v in self.rejected.items()) or "none"
        lines = [
            ("format", self.format),
            ("template", self.template),
            ("rows read", str(self.rows_read)),
            ("train rows", str(self.rows["train"])),
            ("validation rows", str(self.rows["validation"])),
            ("tokens per row", f"{lengths} (max_seq_length {self.max_seq_length})"),
            ("would be truncated", str(self.truncated)),
            ("bad rows", rejected),
        ]
        if self.labels is not None:
            lines.insert(2, ("labels", ", ".join(self.labels)))
        if self.repeats:
            lines.append(("repeated rows", f"{self.repeats} (each kept with its copies on one side of the split)"))
        return lines + vocabulary_lines(self.vocabulary)


def vocabulary_lines(report: VocabularyReport | None) -> list[tuple[str, str]]:
    if report is None or not report.tokens_per_word:
        return []
    lines = [
        (
            "tokens per word",
            f"{report.tokens_per_word:.2f} in your rows, {report.general_tokens_per_word:.2f} in general English text "
            f"({report.ratio:.1f}x)",
        )
    ]
    if report.new_tokens:
        lines.append(
            (
                "data.new_tokens",
                f"{len(report.new_tokens)} terms added: {report.tokens_per_word:.2f} -> "
                f"{report.tokens_per_word_after:.2f} tokens per word (token counts above include them)",
            )
        )
    return lines


def inspect(cfg: RunConfig, tokenizer: Any) -> InspectReport:
    """Row counts, token-length percentiles, rows that would be truncated/rejected, and one rendered example."""
    tokenizer = copy.deepcopy(tokenizer) if cfg.data.new_tokens else tokenizer  # the caller's stays as it was
    rows = read_rows(cfg)
    vocab = vocabulary.measure(cfg, tokenizer, rows)  # adds data.new_tokens to the tokenizer: lengths count them
    checked = encode_checked(cfg, tokenizer, rows)
    rows, encoded = checked.rows, checked.kept
    # Every well-formed training row, too long ones included: those are what the percentiles are for.
    lengths = [len(e.input_ids) for e in checked.encoded["train"]]
    rejected = count_by_reason(checked.problems)
    first = encoded["train"][0] if encoded["train"] else None
    return InspectReport(
        format=rows.format,
        template=template_name(tokenizer, cfg.data.template, rows.format),
        labels=rows.labels,
        max_seq_length=cfg.train.max_seq_length,
        rows_read=rows.rows_read,
        rows={"train": len(encoded["train"]), "validation": len(encoded["validation"])},
        token_lengths=percentiles(lengths),
        truncated=rejected.get("truncated", 0),
        rejected=rejected,
        repeats=rows.repeats,
        example_where=first.row.where if first else "",
        example=pieces(first, tokenizer) if first else [],
        advice=small_data_advice(len(encoded["train"]), len(encoded["validation"])) + vocabulary_advice(cfg, vocab),
        vocabulary=vocab,
    )


def read_rows(cfg: RunConfig) -> RowSet:
    """The rows and the problems of the bad ones, nothing raised for them: the report counts them."""
    rows, problems = collect(cfg)
    rows.problems = problems
    return rows


# Suggest data.new_tokens when the rows take this many times the tokens per word of general text. Measured with
# SmolLM2's tokenizer: the support tickets (English, JSON answers) and the Larkspur manuals 1.3x, where a few brand
# words are split; the invented part numbers of examples/vocabulary 1.8x, where new tokens helped (README).
FRAGMENTED_RATIO = 1.5


def vocabulary_advice(cfg: RunConfig, report: VocabularyReport) -> list[str]:
    if cfg.data.new_tokens or not report.candidates or report.ratio < FRAGMENTED_RATIO:
        return []
    return [
        f"your rows take {report.ratio:.1f}x the tokens per word of general English, and {report.candidates} frequent "
        "terms are split into many pieces (listed above): `data.new_tokens: auto` adds them as whole tokens; "
        "measure with `tunelab eval` whether it helps"
    ]


def small_data_advice(n_train: int, n_validation: int) -> list[str]:
    """Suggest `tunelab cv` below SMALL_DATA_ROWS good rows, with the uncertainty one split would leave."""
    total = n_train + n_validation
    if total >= SMALL_DATA_ROWS or total < 2:
        return []
    measured = (
        f"{n_validation} validation rows measure a score to about +-{98 / math.sqrt(n_validation):.0f} "
        "points (95% interval)"
        if n_validation
        else "there is no validation data to measure a score on"
    )
    return [
        f"small data ({total} rows, under {SMALL_DATA_ROWS}): {measured}. `tunelab cv CONFIG --folds 5` trains 5 "
        f"times and validates on every row once (+-{98 / math.sqrt(total):.0f} points), with a mean +- std per metric"
    ]


def percentiles(values: list[int]) -> dict[str, int]:
    """Nearest-rank percentiles (each one is a real row length) and the max."""
    if not values:
        return {}
    ordered = sorted(values)
    out = {f"p{p}": ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] for p in PERCENTILES}
    out["max"] = ordered[-1]
    return out


def pieces(enc: Encoded, tokenizer: Any) -> list[tuple[str, bool]]:
    """The row's tokens as text, consecutive tokens with the same trained flag merged."""
    out: list[tuple[str, bool]] = []
    for token, (a, b), trained in zip(enc.input_ids, enc.offsets, enc.trained, strict=True):
        text = enc.text[a:b] if b > a else tokenizer.decode([token])  # added tokens (a BOS) have no span
        if out and out[-1][1] == trained:
            out[-1] = (out[-1][0] + text, trained)
        else:
            out.append((text, trained))
    return out
