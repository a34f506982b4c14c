"""What training would see, without training: `tunelab data inspect` calls `inspect(cfg, tokenizer)`.

    report = inspect(cfg, tokenizer)
    report.render(rich.console.Console())   # table + one example, prompt tokens dim, trained ones highlighted

Bad rows do not raise here: they are counted per reason, so one look shows how much data a run would
keep. Unreadable files and template problems still raise DataError.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from tunelab.config import RunConfig
from tunelab.data.build import encode_checked
from tunelab.data.encode import Encoded, template_name
from tunelab.data.problems import count_by_reason

PERCENTILES = (50, 90, 99)


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
        if self.example:
            console.print(
                f"Example ({self.example_where}): [dim]dim = prompt, not trained[/dim]; "
                "[bold green]green = trained[/bold green]"
            )
            console.print(Text.assemble(*((t, "bold green" if trained else "dim") for t, trained in self.example)))

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
        return lines


def inspect(cfg: RunConfig, tokenizer: Any) -> InspectReport:
    """Row counts, token-length percentiles, rows that would be truncated/rejected, and one rendered example."""
    checked = encode_checked(cfg, tokenizer)
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
    )


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
