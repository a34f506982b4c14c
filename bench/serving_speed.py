"""Throughput and time to first token of `tunelab serve`, one request at a time and at concurrency 1, 4 and 16.

    .venv/bin/python bench/serving_speed.py                          # the built-in model, 32 requests, 64 tokens
    .venv/bin/python bench/serving_speed.py --run runs/demo --save serving.json
    .venv/bin/python bench/serving_speed.py --requests 4 --max-tokens 4 --concurrency 1,4   # a quick check

Starts `tunelab serve` in a child process on a free loopback port and sends the same requests (greedy, a fixed
max_tokens, distinct prompts from examples/support_tickets/test.jsonl) one at a time, then at each concurrency.
Each pass is sent twice: plain requests give the total time and completion tokens/s; streamed requests give the
time to first token (streamed and plain requests batch alike). Speed-up is tokens/s over the one-at-a-time pass;
"same answers" counts the answers equal to that pass's (greedy: equal in fp32; in bf16 a batch's padding and
shape change the rounding, so a near-tie can flip a token, which this column shows).

For an adapter run, a last pair of passes sends every other request to the base model instead (`--mixed`, on by
default): LoRA adapters decode different fine-tunes (and the base) in one batch, one adapter per row.

Takes about 5-10 minutes on a laptop CPU with the defaults (the built-in 135M model; its first load also converts
it, ~20 s), a minute or so on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
TUNELAB = Path(sys.executable).parent / "tunelab"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model: str, port: int, timeout: float, dtype: str | None) -> subprocess.Popen:
    command = [str(TUNELAB), "serve", model, "--port", str(port), *(["--dtype", dtype] if dtype else [])]
    env = {k: v for k, v in os.environ.items() if k != "TUNELAB_API_KEY"}
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            sys.exit(f"tunelab serve exited: {child.communicate()[1][-2000:]}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok:
                return child
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    child.terminate()
    sys.exit(f"tunelab serve did not answer within {timeout:.0f} s")


def prompts(n: int) -> list[str]:
    rows = [json.loads(line) for line in (ROOT / "examples/support_tickets/test.jsonl").read_text().splitlines()]
    texts = [row["prompt"] for row in rows if "prompt" in row]
    return [texts[i % len(texts)] + (f" (#{i // len(texts)})" if i >= len(texts) else "") for i in range(n)]


def ask(url: str, model: str, prompt: str, max_tokens: int) -> tuple[int, str]:
    """One plain request; its completion tokens and text."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0}
    response = requests.post(f"{url}/v1/chat/completions", json=body | {"max_tokens": max_tokens}, timeout=600)
    response.raise_for_status()
    answer = response.json()
    return answer["usage"]["completion_tokens"], answer["choices"][0]["message"]["content"]


def first_token(url: str, model: str, prompt: str, max_tokens: int) -> float:
    """One streamed request, read to the end; seconds to its first piece of text."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0, "stream": True}
    started, first = time.perf_counter(), None
    with requests.post(f"{url}/v1/chat/completions", json=body | {"max_tokens": max_tokens}, stream=True) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if first is None and line.startswith(b"data: {"):
                choices = json.loads(line[6:])["choices"]
                if choices and choices[0]["delta"].get("content"):
                    first = time.perf_counter() - started
    return first if first is not None else time.perf_counter() - started


def one_pass(url: str, requests_: list[tuple[str, str]], max_tokens: int, concurrency: int | None, label: str) -> dict:
    """requests_: (model, prompt) pairs. concurrency None: one at a time, plain requests only (the baseline)."""
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency or 1) as pool:
        answers = list(pool.map(lambda r: ask(url, *r, max_tokens), requests_))
    seconds = time.perf_counter() - started
    tokens = sum(n for n, _ in answers)
    row = {"concurrency": concurrency or "one at a time", "label": label, "requests": len(requests_)}
    row |= {"seconds": seconds, "completion_tokens": tokens, "tokens_per_s": tokens / seconds}
    row["answers"] = [text for _, text in answers]
    if concurrency is not None:
        with ThreadPoolExecutor(concurrency) as pool:
            ttft = sorted(pool.map(lambda r: first_token(url, *r, max_tokens), requests_))
        row |= {"ttft_median_s": statistics.median(ttft), "ttft_p90_s": ttft[min(len(ttft) - 1, int(0.9 * len(ttft)))]}
    return row


def passes(url: str, models: list[str], texts: list[str], max_tokens: int, levels: list[int]) -> list[dict]:
    """The adapter (or the only model) at each level against one at a time; with a base beside it, the same
    requests alternating adapter and base at the highest level, against one at a time."""
    adapter = [(models[-1], t) for t in texts]
    rows = [one_pass(url, adapter, max_tokens, None, models[-1])]
    rows += [one_pass(url, adapter, max_tokens, c, models[-1]) for c in levels]
    if len(models) > 1:
        mixed = [(models[-1 - i % 2], t) for i, t in enumerate(texts)]
        label = f"{models[-1]} + base, alternating"
        rows += [one_pass(url, mixed, max_tokens, None, label), one_pass(url, mixed, max_tokens, max(levels), label)]
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| requests to | concurrency | total s | completion tok/s | TTFT median s | TTFT p90 s | speed-up "
        "| same answers |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        base = next(r for r in rows if r["label"] == row["label"] and r["concurrency"] == "one at a time")
        same = sum(a == b for a, b in zip(row["answers"], base["answers"], strict=True))
        ttft = [f"{row[k]:.2f}" if k in row else "-" for k in ("ttft_median_s", "ttft_p90_s")]
        lines.append(
            f"| {row['label']} | {row['concurrency']} | {row['seconds']:.1f} | {row['tokens_per_s']:.1f} | "
            f"{ttft[0]} | {ttft[1]} | {row['tokens_per_s'] / base['tokens_per_s']:.2f}x | {same}/{row['requests']} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="smollm2-135m-instruct", help="A run, model or built-in alias to serve.")
    p.add_argument("--requests", type=int, default=32, help="Requests per pass.")
    p.add_argument("--max-tokens", type=int, default=64, help="max_tokens of every request.")
    p.add_argument("--concurrency", default="1,4,16", help="Comma-separated levels.")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], help="Default: the run's own.")
    p.add_argument("--mixed", action=argparse.BooleanOptionalAction, default=True, help="The adapter + base passes.")
    p.add_argument("--startup-timeout", type=float, default=600, help="Seconds to wait for the server.")
    p.add_argument("--save", type=Path, help="Write the rows and settings as JSON here.")
    args = p.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    port = free_port()
    server = start_server(args.run, port, args.startup_timeout, args.dtype)
    url = f"http://127.0.0.1:{port}"
    try:
        health = requests.get(f"{url}/health", timeout=10).json()
        models = health["models"][-2:] if args.mixed else health["models"][-1:]  # an adapter run: base, adapter
        texts = prompts(args.requests)
        ask(url, models[-1], texts[0], 2)  # warm-up, not timed
        rows = passes(url, models, texts, args.max_tokens, levels)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"{', '.join(models)}: {args.requests} requests, greedy, max_tokens {args.max_tokens}, {health['dtype']}\n")
    print(table(rows))
    if args.save:
        settings = {
            "models": models,
            "dtype": health["dtype"],
            "requests": args.requests,
            "max_tokens": args.max_tokens,
        }
        args.save.write_text(json.dumps({"settings": settings, "rows": rows}, indent=2) + "\n")
        print(f"\nwrote {args.save}")


if __name__ == "__main__":
    main()
