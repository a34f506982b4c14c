"""A plan as a table for people (rich) and as JSON for programs.

render(result, console)            # table, then the recommendation sentence
json.dumps(to_dict(result))        # what `tunelab plan --json` prints

With N processes (`--nproc N`) the table has each strategy's peak memory per process, and the JSON a
`per_process` entry per method; with one process both are as they always were.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from tunelab.planning import distributed, recommend
from tunelab.planning.planner import MethodPlan, Plan
from tunelab.training.distributed import trains


def to_dict(result: Plan) -> dict[str, Any]:
    out = {
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
    if result.processes is not None:
        out |= processes_dict(result.processes)
        for row, entry in zip(result.rows, out["methods"], strict=True):
            entry["per_process"] = per_process_dict(row, result.processes, result.available)
    return out


def processes_dict(spread: distributed.Processes) -> dict[str, Any]:
    return {
        "nproc": spread.nproc,
        "strategy": spread.strategy,  # the config's distributed.strategy (deepspeed: zero2 or zero3)
        "processes_share_machine": spread.share_machine,
        "gradient_accumulation_steps": spread.gradient_accumulation,
        "steps_per_epoch_per_process": spread.steps_per_epoch,
        "assumptions": distributed.CAPTION,
    }


def per_process_dict(row: MethodPlan, spread: distributed.Processes, available: int) -> dict[str, Any] | None:
    """Each strategy's peak memory per process and whether N of them fit; the time per epoch with N processes."""
    if row.per_process is None:
        return None
    per, method = row.per_process, row.method.get("name")
    return {
        "memory_bytes": {name: memory.as_dict() for name, memory in per.memory.items()},
        "fits": {  # a strategy the preflight refuses for this method: false, whatever the memory
            name: trains(method, name) and recommend.fits(spread.needed(m.total), available)
            for name, m in per.memory.items()
        },
        "seconds_per_epoch": per.seconds_per_epoch,
        "seconds_per_step": per.seconds_per_step,
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
    console.print(process_table(result) if result.processes is not None else method_table(result))
    console.print(f"Data: {data_text(result)}. Matmul rate {result.matmul_flops_per_second / 1e9:.0f} GFLOP/s.")
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}", soft_wrap=True)
    rec = result.recommendation
    console.print(f"[bold]Recommended: {rec.label}[/] — {rec.reason}.", soft_wrap=True)


def method_table(result: Plan) -> Any:
    columns = [
        ("method", "left"),
        ("trainable params", "right"),
        ("peak memory", "right"),
        (f"fits? ({recommend.pct(recommend.HEADROOM)} headroom)", "left"),
        ("time / epoch", "right"),
    ]
    return table(title(result), columns, [row_cells(row, result) for row in result.rows])


def process_table(result: Plan) -> Any:
    """One column of peak memory per process for each strategy; fits? for the configured one."""
    spread = result.processes
    strategies = [f"{name} (configured)" if name == spread.strategy else name for name in distributed.SHARDED]
    columns = [
        ("method", "left"),
        ("trainable params", "right"),
        *((name, "right") for name in strategies),
        (f"fits? ({spread.strategy}, {recommend.pct(recommend.HEADROOM)} headroom)", "left"),
        (f"time / epoch ({spread.nproc} processes)", "right"),
    ]
    rows = [process_row_cells(row, result) for row in result.rows]
    heading = f"{title(result)}; peak memory per process, {spread.nproc} processes"
    return table(heading, columns, rows, caption=distributed.CAPTION)


def table(
    heading: str, columns: list[tuple[str, str]], rows: list[tuple[str, ...]], caption: str | None = None
) -> Any:
    from rich.table import Table

    out = Table(title=heading, caption=caption)
    for column, justify in columns:
        out.add_column(column, justify=justify)
    for cells in rows:
        out.add_row(*cells)
    return out


def title(result: Plan) -> str:
    return (
        f"Plan: {result.model} on {result.device} ({result.compute_dtype}), "
        f"{recommend.gb(result.available)} {result.available_kind} available"
    )


def data_text(result: Plan) -> str:
    tokens, spread = result.tokens, result.processes
    batch = f"batch {tokens.batch_size} x up to {tokens.longest_row} tokens"
    if spread is None:
        rows = f"{tokens.rows} rows, {tokens.steps_per_epoch} steps/epoch" if tokens.rows else "rows unknown"
        return f"{rows}; {batch}"
    rows = f"{tokens.rows} rows, {spread.steps_per_epoch} steps/epoch" if tokens.rows else "rows unknown"
    global_batch = f"global batch {tokens.batch_size} x {spread.nproc} processes x {spread.gradient_accumulation}"
    return f"{rows} ({global_batch} accumulation); {batch} per process"


def row_cells(row: MethodPlan, result: Plan) -> tuple[str, ...]:
    label = row_label(row, result)
    if row.memory is None:
        return label, "-", "-", f"no: {row.unavailable}", "-"
    total = row.memory.total
    verdict = fit_verdict(total, result.available)
    return label, trainable_cell(row), recommend.gb(total), verdict, duration(row.seconds_per_epoch)


def process_row_cells(row: MethodPlan, result: Plan) -> tuple[str, ...]:
    spread, label = result.processes, row_label(row, result)
    dashes = ("-",) * len(distributed.SHARDED)
    if row.per_process is None:
        return label, "-", *dashes, f"no: {row.unavailable}", "-"
    memory, method = row.per_process.memory, row.method.get("name")
    per_strategy = tuple(
        recommend.gb(memory[name].total) if trains(method, name) else "-" for name in distributed.SHARDED
    )
    if not trains(method, spread.strategy):
        verdict = f"no: {distributed.refusal(spread.strategy)}"
    else:
        verdict = fit_verdict(spread.needed(memory[spread.strategy].total), result.available)
    return label, trainable_cell(row), *per_strategy, verdict, duration(row.per_process.seconds_per_epoch)


def row_label(row: MethodPlan, result: Plan) -> str:
    return f"{row.label} (configured)" if row.label == result.configured else row.label


def trainable_cell(row: MethodPlan) -> str:
    share = f"{100 * row.trainable / row.total:.2f}%" if row.total else "-"
    return f"{row.trainable:,} ({share})"


def fit_verdict(needed: int, available: int) -> str:
    if recommend.fits(needed, available):
        return f"yes: {recommend.headroom_text(needed, available)}"
    return f"[red]no[/] (needs {recommend.gb(needed)} > {recommend.gb(recommend.budget(available))})"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "? (rows unknown)"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
