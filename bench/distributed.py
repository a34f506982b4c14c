"""Training in several processes, measured on this machine's devices: N processes against one, per strategy.

    .venv/bin/python bench/distributed.py                                  # ddp, 2 processes, configs/lora.yaml
    .venv/bin/python bench/distributed.py --strategy fsdp --nproc 1        # one GPU: accelerate's FSDP2 path
    .venv/bin/python bench/distributed.py --strategy fsdp --nproc 2 --method full

The GPU check that CPU sessions cannot run (accelerate shards with FSDP and DeepSpeed on GPUs only). For the
config given: one process with the global batch (the reference, straight to --steps), then the same under
`torchrun --nproc_per_node N -m tunelab train` with the batch split N ways: stopped at half the steps, then
`--resume` to the end (a constant learning rate, so a resumed run follows the straight one's schedule). Prints
each run's wall time, the device, and the largest difference between the two artifacts against the largest change
training made (DDP, 2 CPU processes: SmolLM2 LoRA 3e-5 of 4e-3 after 4 steps; the tiny test model 1e-7). float32
unless --dtype says otherwise, so the difference is the strategy's, not bf16's rounding. Exits non-zero if a run
fails.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
TUNELAB = Path(sys.executable).parent / "tunelab"


def train(command: list[str], log: Path) -> float:
    """Run one training command; its wall seconds (the log's tail on failure)."""
    started = time.perf_counter()
    with open(log, "w") as sink:
        done = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        sys.exit(f"failed (exit {done.returncode}): {' '.join(command)}\n{log.read_text()[-3000:]}")
    return time.perf_counter() - started


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The artifact's tensors: an adapter's, or a whole model's (every safetensors file of it)."""
    folder = run_dir / "adapter" if (run_dir / "adapter").is_dir() else run_dir / "model"
    found: dict[str, torch.Tensor] = {}
    for path in sorted(folder.glob("*.safetensors")):
        found |= {name: tensor.float() for name, tensor in load_file(str(path)).items()}
    return found


def largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[float, float]:
    """The largest |a - b| and the largest value of a LoRA B matrix (it starts at zero: what training moved)."""
    if a.keys() != b.keys():
        sys.exit(f"the artifacts hold different tensors: {sorted(a.keys() ^ b.keys())[:5]}")
    worst = max((a[name] - b[name]).abs().max().item() for name in a)
    moved = [a[name].abs().max().item() for name in a if "lora_B" in name]
    return worst, max(moved) if moved else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default=str(ROOT / "configs" / "lora.yaml"))
    parser.add_argument("--strategy", default="ddp", choices=["ddp", "fsdp", "deepspeed"])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--method", default=None, help="method.name (default: the config's)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=2, help="per process; the reference takes batch x nproc")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--out", default=None, help="where the runs go (default: a temporary directory)")
    args = parser.parse_args()

    out = Path(args.out or tempfile.mkdtemp(prefix="tunelab-distributed-"))
    out.mkdir(parents=True, exist_ok=True)
    common = [
        f"model.dtype={args.dtype}",
        "train.lr_scheduler_type=constant",
        "train.warmup_ratio=0",
        "train.save_steps=2",
        "train.save_total_limit=null",
        "forgetting.enabled=false",
        *([f"method.name={args.method}"] if args.method else []),
    ]
    one = out / "one"
    reference = [f"train.output_dir={one}", f"train.per_device_train_batch_size={args.batch * args.nproc}"]
    # The loss as several processes compute it (the LM head on every position). With the sparse head the reference
    # is 3e-3 apart after 4 steps (SmolLM2 LoRA, CPU): float rounding flips the sign of near-zero LoRA A gradients,
    # and Adam moves each such weight by the whole learning rate. The same loss: 3e-5 (measured).
    reference.append("train.sparse_lm_head=false")
    seconds_one = train(
        [str(TUNELAB), "train", args.config, *common, *reference, f"train.max_steps={args.steps}"], out / "one.log"
    )

    several = out / f"{args.strategy}-{args.nproc}"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.nproc)]
    launched = [*torchrun, "-m", "tunelab", "train", args.config, *common, f"distributed.strategy={args.strategy}"]
    launched += [f"train.output_dir={several}", f"train.per_device_train_batch_size={args.batch}"]
    half = train([*launched, f"train.max_steps={args.steps // 2}"], out / "first-half.log")
    rest = train([*launched, f"train.max_steps={args.steps}", "--resume"], out / "resumed.log")
    resumed = "resuming from checkpoint-" in (out / "resumed.log").read_text()

    worst, moved = largest_difference(weights(several), weights(one))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"| strategy | processes | device | one process s | {args.nproc} processes s (half + resumed) | resumed |")
    print("|---|---|---|---|---|---|")
    print(f"| {args.strategy} | {args.nproc} | {device} | {seconds_one:.1f} | {half:.1f} + {rest:.1f} | {resumed} |")
    moved_text = f"; largest LoRA B value {moved:.2e}" if moved == moved else ""  # nan: no LoRA in the artifact
    print(f"largest weight difference {worst:.2e}{moved_text} (runs in {out})")


if __name__ == "__main__":
    main()
