"""Every method on the built-in model, measured: trainable parameters, peak memory, seconds per step, loss.

    .venv/bin/python bench/methods.py                 # all configs/<method>.yaml, 6 steps each
    .venv/bin/python bench/methods.py --steps 20 lora qlora

Each method trains in its own process (`tunelab train configs/<name>.yaml train.max_steps=N`) so its peak
resident memory (ru_maxrss of the child) is its own. Prints a markdown table for docs/methods.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METHODS = ["full", "freeze", "lora", "dora", "qlora", "ia3", "prompt_tuning", "prefix_tuning", "adapter"]


def measure(name: str, steps: int, out: Path) -> dict:
    """Train configs/<name>.yaml for `steps` steps in a child process; its figures."""
    overrides = [
        f"train.max_steps={steps}",
        f"train.output_dir={out / name}",
        f"train.logging_steps={steps}",
        "train.eval_strategy=no",
        "train.save_strategy=no",
        "forgetting.enabled=false",
    ]
    started = time.perf_counter()
    tunelab = Path(sys.executable).parent / "tunelab"
    log = out / f"{name}.log"
    with open(log, "w") as sink:
        child = subprocess.Popen(
            [str(tunelab), "train", str(ROOT / "configs" / f"{name}.yaml"), *overrides],
            cwd=ROOT,
            stdout=sink,
            stderr=sink,
        )
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS, not the running max of all
    if os.waitstatus_to_exitcode(status) != 0:
        return {"method": name, "error": log.read_text()[-600:]}
    peak_mb = usage.ru_maxrss / 1024
    metrics = json.loads((out / name / "metrics.json").read_text())
    train = metrics["train"]
    return {
        "method": name,
        "trainable": metrics["trainable_params"],
        "total": metrics["total_params"],
        "peak_rss_mb": peak_mb,
        "s_per_step": train["train_runtime"] / steps,
        "loss": train["train_loss"],
        "wall_s": time.perf_counter() - started,
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| method | trainable params | share | peak RSS | s/step (batch 8) | train loss |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | failed: {r['error'][-120:]!r} | | | | |")
            continue
        lines.append(
            f"| {r['method']} | {r['trainable']:,} | {100 * r['trainable'] / r['total']:.3f}% | "
            f"{r['peak_rss_mb'] / 1024:.2f} GB | {r['s_per_step']:.2f} | {r['loss']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("methods", nargs="*", default=METHODS)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.methods:
            rows.append(measure(name, args.steps, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
