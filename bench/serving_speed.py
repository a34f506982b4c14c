"""Throughput and time to first token of `tunelab serve`, one request at a time and at concurrency 1, 4 and 16.

    .venv/bin/python bench/serving_speed.py                          # the built-in model, 32 requests, 64 tokens
    .venv/bin/python bench/serving_speed.py --run runs/demo --save serving.json
    .venv/bin/python bench/serving_speed.py --requests 4 --max-tokens 4 --concurrency 1,4   # a quick check

Starts `tunelab serve` in a child process on a free loopback port and sends the same requests (greedy, a fixed
max_tokens, distinct prompts from examples/support_tickets/test.jsonl) one at a time, then at each concurrency.
Each pass is sent twice: plain requests (they batch in the server) give the total time and completion tokens/s;
streamed requests give the time to first token (the server decodes a streamed request alone, so at concurrency c
the figure includes the wait behind the others). Speed-up is tokens/s over the one-at-a-time pass.

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


def start_server(model: str, port: int, timeout: float) -> subprocess.Popen:
    command = [str(TUNELAB), "serve", model, "--port", str(port)]
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


def ask(url: str, model: str, prompt: str, max_tokens: int) -> int:
    """One plain request; its completion tokens."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0}
    response = requests.post(f"{url}/v1/chat/completions", json=body | {"max_tokens": max_tokens}, timeout=600)
    response.raise_for_status()
    return response.json()["usage"]["completion_tokens"]


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


def one_pass(url: str, model: str, texts: list[str], max_tokens: int, concurrency: int | None) -> dict:
    """concurrency None: one at a time, plain requests only (the baseline)."""
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency or 1) as pool:
        tokens = sum(pool.map(lambda p: ask(url, model, p, max_tokens), texts))
    seconds = time.perf_counter() - started
    row = {"concurrency": concurrency or "one at a time", "requests": len(texts), "seconds": seconds}
    row |= {"completion_tokens": tokens, "tokens_per_s": tokens / seconds}
    if concurrency is not None:
        with ThreadPoolExecutor(concurrency) as pool:
            ttft = sorted(pool.map(lambda p: first_token(url, model, p, max_tokens), texts))
        row |= {"ttft_median_s": statistics.median(ttft), "ttft_p90_s": ttft[min(len(ttft) - 1, int(0.9 * len(ttft)))]}
    return row


def table(rows: list[dict]) -> str:
    base = rows[0]["tokens_per_s"]
    lines = [
        "| concurrency | requests | total s | completion tok/s | TTFT median s | TTFT p90 s | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ttft = [f"{row[k]:.3f}" if k in row else "-" for k in ("ttft_median_s", "ttft_p90_s")]
        lines.append(
            f"| {row['concurrency']} | {row['requests']} | {row['seconds']:.1f} | {row['tokens_per_s']:.1f} | "
            f"{ttft[0]} | {ttft[1]} | {row['tokens_per_s'] / base:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="smollm2-135m-instruct", help="A run, model or built-in alias to serve.")
    p.add_argument("--requests", type=int, default=32, help="Requests per pass.")
    p.add_argument("--max-tokens", type=int, default=64, help="max_tokens of every request.")
    p.add_argument("--concurrency", default="1,4,16", help="Comma-separated levels.")
    p.add_argument("--startup-timeout", type=float, default=600, help="Seconds to wait for the server.")
    p.add_argument("--save", type=Path, help="Write the rows and settings as JSON here.")
    args = p.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    port = free_port()
    server = start_server(args.run, port, args.startup_timeout)
    url = f"http://127.0.0.1:{port}"
    try:
        model = requests.get(f"{url}/health", timeout=10).json()["models"][-1]  # an adapter run: its adapter
        texts = prompts(args.requests)
        ask(url, model, texts[0], 2)  # warm-up, not timed
        rows = [one_pass(url, model, texts, args.max_tokens, None)]
        rows += [one_pass(url, model, texts, args.max_tokens, c) for c in levels]
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"{model}: {args.requests} requests, greedy, max_tokens {args.max_tokens}\n")
    print(table(rows))
    if args.save:
        settings = {"model": model, "requests": args.requests, "max_tokens": args.max_tokens}
        args.save.write_text(json.dumps({"settings": settings, "rows": rows}, indent=2) + "\n")
        print(f"\nwrote {args.save}")


if __name__ == "__main__":
    main()
