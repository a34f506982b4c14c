"""Time to the first generated word of `tunelab generate`, measured from the command's start, as a user sees it.

    .venv/bin/python bench/first_token.py                       # the built-in model, 3 runs
    .venv/bin/python bench/first_token.py --model runs/demo --runs 5

Runs the installed `tunelab generate MODEL PROMPT` as a child process (a fresh interpreter each time: imports,
model load from the conversion cache, prompt, first decoded word) and notes when its first non-blank byte
reaches stdout, and when it exits. The first run also fills the conversion cache if it is empty; its time is
printed but the figures are taken from the runs after it.
"""

from __future__ import annotations

import argparse
import os
import selectors
import statistics
import subprocess
import sys
import time
from pathlib import Path

TUNELAB = Path(sys.executable).parent / "tunelab"


def one_run(model: str, prompt: str, max_new_tokens: int) -> tuple[float, float, str]:
    """(seconds to the first non-blank stdout byte, seconds to exit, the output)."""
    start = time.perf_counter()
    command = [str(TUNELAB), "generate", model, prompt, "--max-new-tokens", str(max_new_tokens)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    first, output = None, b""
    with selectors.DefaultSelector() as selector:
        selector.register(child.stdout, selectors.EVENT_READ)
        while True:
            selector.select()
            chunk = os.read(child.stdout.fileno(), 4096)
            if not chunk:
                break
            if first is None and chunk.strip():
                first = time.perf_counter() - start
            output += chunk
    if child.wait() != 0:
        raise SystemExit(f"{' '.join(command)} failed with exit code {child.returncode}")
    return first or float("nan"), time.perf_counter() - start, output.decode(errors="replace").strip()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--prompt", default="Name three things a support team should log for every ticket.")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    warm_first, warm_total, _ = one_run(args.model, args.prompt, args.max_new_tokens)
    print(f"warm-up run (fills the conversion cache if empty): first word {warm_first:.2f} s, exit {warm_total:.2f} s")
    firsts, totals = [], []
    for _ in range(args.runs):
        first, total, output = one_run(args.model, args.prompt, args.max_new_tokens)
        firsts.append(first)
        totals.append(total)
    print(f"`tunelab generate {args.model} ...`, {args.runs} runs after the warm-up:")
    spread = f"min {min(firsts):.2f}, max {max(firsts):.2f}"
    print(f"first word on stdout: median {statistics.median(firsts):.2f} s ({spread})")
    print(f"command exits:        median {statistics.median(totals):.2f} s ({args.max_new_tokens} new tokens at most)")
    print(f"output: {output[:200]!r}")


if __name__ == "__main__":
    main()
