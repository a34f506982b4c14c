"""Training speed on this machine: TRL's SFTTrainer, a hand-tuned transformers + peft loop, and tunelab.

    .venv/bin/python bench/speed.py                          # lora on both data sets, then full (~35 min, 2 cores)
    .venv/bin/python bench/speed.py --data wide --arms plain tunelab --rows 40     # a quick look
    .venv/bin/python bench/speed.py --methods full qlora --data demo --arms trl plain tunelab
    .venv/bin/python bench/speed.py --results runs/bench/speed.json                # reprint a saved run

One run, one model (the built-in SmolLM2-135M-Instruct), the same rows, LoRA shape (r=16, alpha 32, all
linear layers, no dropout), batch size, learning rate, linear schedule, sequence limit and one epoch for
every arm; the arms are described in bench/speed_arms.py. Each arm trains in its own process so its peak
RSS (the child's ru_maxrss, loading included) is its own. tunelab's arms start on tcmalloc when the machine
has it, as `tunelab train` does (tunelab/launch.py); TRL and the plain loop on the malloc the bench started
with (`LD_PRELOAD=/path/libtcmalloc_minimal.so.4 bench/speed.py` gives it to every arm); the table says which.
Printed per arm: training seconds, real (non-padding) tokens per second, peak RSS, the training loss (mean of
the last 5 steps), the held-out loss (the same rows scored in fp32 for every arm), and MFU: tokens/s x FLOPs
per token over the fp32 and bf16 matmul rates measured at the start of this run. FLOPs per token are the
issue's nominal count, 2N forward + 2N backward through the frozen weights (+2N weight gradients for full), N
= all parameters; work an arm skips (padding it does not compute, logits it does not need) is not credited, so
packing and the sparse LM head show up as higher MFU rather than as a different count.

Data sets: `demo` is examples/support_tickets (prompt + completion, ~90 tokens a row with the chat
template); `wide` is examples/ticket_batches (45 to 530 tokens a row, evenly spread). Held-out rows are
the test split of each.
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

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tunelab import launch  # noqa: E402 (after the path insert, so this checkout's tunelab is the one measured)

DATA = {
    "demo": ("examples/support_tickets/train.jsonl", "examples/support_tickets/test.jsonl", 200),
    "wide": ("examples/ticket_batches/train.jsonl", "examples/ticket_batches/test.jsonl", 120),
}
ARMS = ("trl", "plain", "tunelab", "tunelab-sel", "tunelab-ckpt")
# tunelab-sel / tunelab-ckpt: tunelab with train.activation_checkpointing=selective / full (full is what TRL's
# SFTConfig defaults to); what each costs in speed and saves in memory, measured beside the rest.
TUNELAB_ARMS = ("tunelab", "tunelab-sel", "tunelab-ckpt")
ARM_OVERRIDES = {
    "tunelab-sel": ["train.activation_checkpointing=selective"],
    "tunelab-ckpt": ["train.activation_checkpointing=full"],
}
FLOPS_PER_PARAM = {"lora": 4, "qlora": 4, "full": 6}
MODEL = "smollm2-135m-instruct"
GB = 2**30


def model_dir() -> str:
    from tunelab import models
    from tunelab.config.schema import ModelConfig

    return str(models.model_dir(ModelConfig(name=MODEL)))  # converts the built-in GGUF once, then cached


def cpu_name() -> str:
    from tunelab.models.devices import cpu_has_native_bf16

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    family = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("cpu family")), "?")
    return f"{name} (family {family}, native bf16: {'yes' if cpu_has_native_bf16() else 'no'})"


def matmul_rates() -> dict[str, float]:
    from tunelab.models.devices import cpu_has_native_bf16
    from tunelab.planning.machine import MATMUL_SHAPE, measure_matmul_rate

    cpu = torch.device("cpu")
    # The best of three: on a shared or virtual machine a single timing came out anywhere from 40 to 65 GFLOP/s.
    rates = {"fp32": max(measure_matmul_rate(cpu, torch.float32, seconds=2.0) for _ in range(3))}
    # Without native bf16 one 2048x1024x4096 bf16 matmul takes minutes (emulated); a small one tells the same.
    shape = MATMUL_SHAPE if cpu_has_native_bf16() else (256, 256, 256)
    rates["bf16"] = max(measure_matmul_rate(cpu, torch.bfloat16, 2.0, shape) for _ in range(3))
    return rates


def run_arm(arm: str, method: str, data: str, args: argparse.Namespace, directory: str) -> dict:
    train, heldout, default_rows = DATA[data]
    spec = {
        "arm": arm,
        "method": method,
        "model_name": MODEL,
        "model_dir": args.model_dir,
        "device": "cpu",
        "train": str(REPO / train),
        "heldout": str(REPO / heldout),
        "rows": args.rows or default_rows,
        "heldout_rows": args.heldout_rows,
        "batch": args.batch,
        "lr": args.lr,
        "max_length": 1024,
        "seed": 42,
        "scratch": tempfile.mkdtemp(dir=directory),
        "tunelab_overrides": [*args.set, *ARM_OVERRIDES.get(arm, [])],
        "compute_dtype": args.compute_dtype,
    }
    spec_file, out_file = Path(directory) / f"{arm}-{method}-{data}.json", Path(directory) / "out.json"
    spec_file.write_text(json.dumps(spec))
    print(f"{data} / {method} / {arm}: training {spec['rows']} rows ...", flush=True)
    # tunelab's arms start as `tunelab train` does: on tcmalloc when the machine has it (tunelab.launch);
    # the others on whatever malloc this bench was started with (preload one for the bench to give it to all).
    env = launch.preload_env(os.environ) if arm.startswith("tunelab") else None
    command = [sys.executable, str(REPO / "bench/speed_arms.py"), str(spec_file), str(out_file)]
    child = subprocess.Popen(command, env=env)
    _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS
    if status != 0:
        raise SystemExit(f"{arm} failed (status {status})")
    result = json.loads(out_file.read_text())
    return {
        "arm": arm,
        "method": method,
        "data": data,
        "rows": spec["rows"],
        "peak_rss": usage.ru_maxrss * 1024,
        **result,
    }


def n_params() -> int:
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir()))
    return sum(p.numel() for p in model.parameters())


HEADER = (
    "| data | method | arm | rows | train s | real tokens | tokens/s | vs trl | vs plain | peak RSS "
    "| train loss | held-out loss | MFU fp32 | MFU bf16 | malloc |"
)


def table(results: dict) -> str:
    rates, n = results["rates"], results["params"]
    lines = [
        f"Matmul rate measured in this run: fp32 {rates['fp32'] / 1e9:.0f} GFLOP/s, bf16 {rates['bf16'] / 1e9:.0f} "
        f"GFLOP/s; N = {n / 1e6:.1f} M parameters; {results['machine']}.",
        "",
        HEADER,
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results["runs"]:
        same = {a["arm"]: a for a in results["runs"] if a["data"] == r["data"] and a["method"] == r["method"]}
        flops = speed(r) * FLOPS_PER_PARAM[r["method"]] * n
        cells = [
            r["data"],
            r["method"],
            r["arm"],
            r["rows"],
            f"{r['seconds']:.1f}",
            f"{r['tokens']:,}",
            f"{speed(r):.0f}",
            *(f"{speed(r) / speed(same[arm]):.2f}x" if arm in same else "-" for arm in ("trl", "plain")),
            f"{r['peak_rss'] / GB:.2f} GB",
            f"{r['final_train_loss']:.4f}",
            f"{r['eval_loss']:.4f}",
            f"{flops / rates['fp32']:.0%}",
            f"{flops / rates['bf16']:.0%}",
            r.get("malloc", "?").split(" ")[0],
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def speed(run: dict) -> float:
    return run["tokens"] / run["seconds"]


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", choices=sorted(DATA), default=["demo", "wide"])
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    p.add_argument("--methods", nargs="+", choices=sorted(FLOPS_PER_PARAM), default=["lora"])
    p.add_argument("--rows", type=int, help="training rows per data set (default: 200 demo, 120 wide)")
    p.add_argument("--heldout-rows", type=int, default=40)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for the tunelab arm")
    p.add_argument("--save", type=Path, help="write the measurements here as JSON")
    p.add_argument("--results", type=Path, help="reprint saved measurements instead of running")
    return p.parse_args()


def main() -> None:
    args = parse()
    if args.results:
        print(table(json.loads(args.results.read_text())))
        return
    args.model_dir = model_dir()
    from tunelab import models

    args.compute_dtype = str(models.pick_dtype("auto", torch.device("cpu"))).removeprefix("torch.")
    results = {
        "machine": f"{cpu_name()}, {os.cpu_count()} CPUs, compute dtype {args.compute_dtype}, torch "
        f"{torch.__version__}, load average before {os.getloadavg()[0]:.2f}",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "rates": matmul_rates(),
        "params": n_params(),
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as directory:
        for method in args.methods:
            for data in args.data:
                for arm in args.arms:
                    if method == "qlora" and arm not in TUNELAB_ARMS:
                        continue  # the reference arms are LoRA on a 16/32-bit base; qlora is ours alone
                    results["runs"].append(run_arm(arm, method, data, args, directory))
                    if args.save:
                        args.save.parent.mkdir(parents=True, exist_ok=True)
                        args.save.write_text(json.dumps(results, indent=1))
    print(table(results))


if __name__ == "__main__":
    main()
