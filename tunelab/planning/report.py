"""A plan as a table for people (rich) and as JSON for programs.

render(result, console)            # table, then the recommendation sentence
json.dumps(to_dict(result))        # what `tunelab plan --json` prints
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from tunelab.planning import recommend
from tunelab.planning.planner import MethodPlan, Plan


def to_dict(result: Plan) -> dict[str, Any]:
    return {
        "model": result.model,
        "device": result.device,
        "compute_dtype": result.compute_dtype,
        "available_bytes": result.available,
        "available_kind": result.available_kind,
        "headroom": recommend.HEADROOM,
        "matmul_flops_per_second": result.matmul_flops_per_second,
        "tokens": asdict(result.tokens),
        "configured": result.configured,
        "methods": [row_dict(row, result.available) for row in result.rows],
        "recommendation": asdict(result.recommendation),
        "notes": result.notes,
    }


def row_dict(row: MethodPlan, available: int) -> dict[str, Any]:
    memory = row.memory.as_dict() if row.memory is not None else None
    return {
        "label": row.label,
        "method": row.method,
        "trainable_params": row.trainable,
        "total_params": row.total,
        "memory_bytes": memory,
        "fits": recommend.fits(memory["total"], available) if memory else False,
        "headroom_bytes": available - memory["total"] if memory else None,
        "seconds_per_epoch": row.seconds_per_epoch,
        "seconds_per_step": row.seconds_per_step,
        "unavailable": row.unavailable,
    }


def render(result: Plan, console: Any) -> None:
    from rich.table import Table

    tokens = result.tokens
    title = (
        f"Plan: {result.model} on {result.device} ({result.compute_dtype}), "
        f"{recommend.gb(result.available)} {result.available_kind} available"
    )
    table = Table(title=title)
    for column, justify in (
        ("method", "left"),
        ("trainable params", "right"),
        ("peak memory", "right"),
        (f"fits? ({recommend.pct(recommend.HEADROOM)} headroom)", "left"),
        ("time / epoch", "right"),
    ):
        table.add_column(column, justify=justify)
    for row in result.rows:
        table.add_row(*row_cells(row, result))
    console.print(table)
    batch = f"batch {tokens.batch_size} x up to {tokens.longest_row} tokens"
    rows = f"{tokens.rows} rows, {tokens.steps_per_epoch} steps/epoch" if tokens.rows else "rows unknown"
    console.print(f"Data: {rows}; {batch}. Matmul rate {result.matmul_flops_per_second / 1e9:.0f} GFLOP/s.")
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}", soft_wrap=True)
    rec = result.recommendation
    console.print(f"[bold]Recommended: {rec.label}[/] — {rec.reason}.", soft_wrap=True)


def row_cells(row: MethodPlan, result: Plan) -> tuple[str, ...]:
    label = f"{row.label} (configured)" if row.label == result.configured else row.label
    if row.memory is None:
        return label, "-", "-", f"no: {row.unavailable}", "-"
    m, available = row.memory, result.available
    share = f"{100 * row.trainable / row.total:.2f}%" if row.total else "-"
    if recommend.fits(m.total, available):
        verdict = f"yes: {recommend.headroom_text(m.total, available)}"
    else:
        verdict = f"[red]no[/] (needs {recommend.gb(m.total)} > {recommend.gb(recommend.budget(available))})"
    return label, f"{row.trainable:,} ({share})", recommend.gb(m.total), verdict, duration(row.seconds_per_epoch)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "? (rows unknown)"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
