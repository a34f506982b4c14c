"""`tunelab plan`'s estimates against real runs: peak memory and seconds per step, method by method.

    .venv/bin/python bench/plan_vs_measured.py                      # full, freeze, lora, qlora (~10 min, 2 cores)
    .venv/bin/python bench/plan_vs_measured.py --methods lora --steps 6
    .venv/bin/python bench/plan_vs_measured.py --results runs/bench/plan.json   # reprint saved measurements

Each method trains the built-in model on examples/support_tickets/train.jsonl in its own subprocess (so
one run's memory never counts in another's), through `tunelab.train.run` exactly as `tunelab train`
does, with configs/<method>.yaml (qlora: configs/lora.yaml with method.name=qlora) and these
overrides: a few steps, no checkpoints, no retention probe (its inference pass is not what the plan
estimates). The child reports its peak RSS (getrusage ru_maxrss: the whole process, load and save
included) and the wall time of each optimizer step; the first step (allocation, warm-up) is left out of
s/step. An `overhead` child measures the fixed runtime overhead: RSS once every training import is done
and the data is built, before any weights load (the figure behind planning.estimate.RUNTIME_OVERHEAD).

The time figures are noisy when other work shares the CPU: the script prints the load average, reports
the fastest step after the first (wall and CPU time over threads), and the efficiency each run implies
(planning.estimate.EFFICIENCY, one figure per compute dtype, is calibrated from it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
METHODS = ("full", "freeze", "lora", "qlora")
BASE_CONFIGS = {"full": "configs/full.yaml", "freeze": "configs/freeze.yaml", "lora": "configs/lora.yaml"}


def overrides(method: str, steps: int, batch: int, output_dir: str, padding_free: str = "auto") -> list[str]:
    extra = ["method.name=qlora"] if method == "qlora" else []
    return [
        *extra,
        f"train.max_steps={steps}",
        f"train.per_device_train_batch_size={batch}",
        f"train.padding_free={padding_free}",
        f"train.output_dir={output_dir}",
        "train.save_strategy='no'",
        "train.eval_strategy='no'",
        "train.logging_steps=1",
        "forgetting.enabled=false",
    ]


def config_path(method: str) -> Path:
    return REPO / BASE_CONFIGS.get(method, "configs/lora.yaml")


# ---------------------------------------------------------------- child: one measured run


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def child_overhead() -> dict:
    """RSS with every training import done and the data built: what a run holds besides the model."""
    import psutil

    from tunelab import config, data, models, train  # noqa: F401  (train imports transformers' Trainer, peft)

    cfg = config.load(config_path("lora"))
    data.build(cfg, models.load_tokenizer(cfg.model))
    return {"rss_bytes": psutil.Process().memory_info().rss, "peak_rss_bytes": peak_rss_bytes()}


def child_train(method: str, steps: int, batch: int, padding_free: str) -> dict:
    import torch
    from transformers import TrainerCallback

    from tunelab import config, train

    class StepClock(TrainerCallback):
        """Wall time per step, and CPU time per step over torch's threads: what the step would take with
        the cores to itself (the machine may be shared)."""

        def __init__(self) -> None:
            self.wall: list[float] = []
            self.cpu: list[float] = []
            self.started = (0.0, 0.0)

        def on_step_begin(self, args, state, control, **kwargs):
            self.started = (time.perf_counter(), time.process_time())

        def on_step_end(self, args, state, control, **kwargs):
            self.wall.append(time.perf_counter() - self.started[0])
            self.cpu.append((time.process_time() - self.started[1]) / torch.get_num_threads())

    clock = StepClock()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config.load(config_path(method), overrides(method, steps, batch, f"{tmp}/run", padding_free))
        train.run(cfg, callbacks=(clock,))
    return {"peak_rss_bytes": peak_rss_bytes(), "step_seconds": clock.wall, "step_cpu_seconds": clock.cpu}


def run_child(what: str, steps: int, batch: int, padding_free: str) -> dict:
    """One measurement in a fresh process; its JSON result is the last line of its stdout."""
    cmd = [sys.executable, __file__, "--child", what, "--steps", str(steps), "--batch", str(batch)]
    cmd += ["--padding-free", padding_free]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--padding-free", choices=("auto", "false"), default="auto", help="train.padding_free")
    parser.add_argument("--results", type=Path, help="Read measurements from this JSON instead of running.")
    parser.add_argument("--save", type=Path, help="Write the measurements to this JSON.")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = (
            child_overhead()
            if args.child == "overhead"
            else child_train(args.child, args.steps, args.batch, args.padding_free)
        )
        print(json.dumps(result))
        return
    measured = json.loads(args.results.read_text()) if args.results else measure(args)
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps(measured, indent=2) + "\n")
    print(table(measured))


def estimated(method: str, steps: int, batch: int, padding_free: str) -> dict:
    """The plan's row for the method as configured for the measured run."""
    from tunelab import config
    from tunelab.planning import estimate, planner

    result = planner.plan(config.load(config_path(method), overrides(method, steps, batch, "unused", padding_free)))
    row = next(r for r in result.rows if r.label == result.configured)
    compute_bytes = 2 if result.compute_dtype in ("bfloat16", "float16") else 4
    return {
        "memory": row.memory.total,
        "seconds_per_step": row.seconds_per_step,
        "efficiency": estimate.efficiency(compute_bytes),
        "dtype": result.compute_dtype,
    }


def table(measured: dict) -> str:
    """Markdown: estimate vs measurement per method, and the efficiency each run implies."""

    gb = 2**30
    lines = [
        f"{measured['steps']} steps of batch {measured['batch']} per method, {measured['cpus']} cores; load "
        f"average {measured['load_average_before'][0]:.1f} before, {measured['load_average_after'][0]:.1f} after. "
        f"Fixed overhead measured: {measured['runs']['overhead']['rss_bytes'] / gb:.2f} GB. s/step: the fastest "
        "step after the first; `cpu` = CPU time / threads (the step alone on the cores).",
        "",
        "| method | est. memory | peak RSS | RSS / est. | est. s/step | s/step wall | s/step cpu | cpu / est. "
        "| implied efficiency |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method, run in measured["runs"].items():
        if method == "overhead":
            continue
        if "error" in run:
            lines.append(f"| {method} | not measured: {run['error']} ||||||||")
            continue
        # runs saved before train.padding_free existed trained padded batches
        est = estimated(method, measured["steps"], measured["batch"], measured.get("padding_free", "false"))
        wall, cpu = (
            fastest_after_first(run["step_seconds"]),
            fastest_after_first(run.get("step_cpu_seconds", run["step_seconds"])),
        )
        mem_ratio, time_ratio = run["peak_rss_bytes"] / est["memory"], cpu / est["seconds_per_step"]
        lines.append(
            f"| {method} | {est['memory'] / gb:.2f} GB | {run['peak_rss_bytes'] / gb:.2f} GB | {mem_ratio:.2f} | "
            f"{est['seconds_per_step']:.1f} | {wall:.1f} | {cpu:.1f} | {time_ratio:.2f} | "
            f"{est['efficiency'] / time_ratio:.2f} |"
        )
    return "\n".join(lines)


def fastest_after_first(values: list[float]) -> float:
    """The first step allocates and warms up; of the others the fastest is the one least disturbed by other
    work on the machine (on a shared machine OpenMP threads spin while a sibling is descheduled, which
    inflates CPU time as well as wall time)."""
    return min(values[1:] or values)


def measure(args: argparse.Namespace) -> dict:
    load_before = os.getloadavg()
    runs = {"overhead": run_child("overhead", args.steps, args.batch, args.padding_free)}
    for method in args.methods.split(","):
        print(f"measuring {method} ...", file=sys.stderr, flush=True)
        runs[method] = run_child(method, args.steps, args.batch, args.padding_free)
    return {
        "steps": args.steps,
        "batch": args.batch,
        "padding_free": args.padding_free,
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "runs": runs,
    }


if __name__ == "__main__":
    main()
