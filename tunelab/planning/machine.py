"""This machine: how fast it multiplies matrices, and how much memory a run may use.

    rate = matmul_rate(torch.device("cpu"), torch.bfloat16)   # FLOP/s; measured once (~1 s), then cached
    free, what = available_memory(torch.device("cpu"))          # bytes, "RAM" (or "GPU memory")

The rate is cached per device and dtype in $TUNELAB_CACHE/machine.json (default ~/.cache/tunelab), with
the torch version and core count it was measured with; a change of either measures again. Delete the
file to measure again by hand (e.g. after a busy machine gave a low figure).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from tunelab.models.registry import cache_root

# A transformer-sized matmul: a batch of 2048 token vectors through a 1024 -> 4096 projection.
MATMUL_SHAPE = (2048, 1024, 4096)
MEASURE_SECONDS = 1.0


def cache_file() -> Path:
    return cache_root() / "machine.json"


def cache_key(device: torch.device, dtype: torch.dtype) -> str:
    dtype_name = str(dtype).removeprefix("torch.")
    return f"{device.type}:{dtype_name}:torch-{torch.__version__}:threads-{torch.get_num_threads()}"


def matmul_rate(device: torch.device, dtype: torch.dtype, seconds: float = MEASURE_SECONDS) -> float:
    """FLOP/s of a realistic matmul in `dtype` on `device`, from the cache or measured now and cached."""
    path = cache_file()
    cached = read_cache(path)
    key = cache_key(device, dtype)
    if key in cached:
        return float(cached[key]["flops_per_second"])
    rate = measure_matmul_rate(device, dtype, seconds)
    cached[key] = {"flops_per_second": rate, "shape": list(MATMUL_SHAPE), "measured": time.strftime("%Y-%m-%d")}
    write_cache(path, cached)
    return rate


def measure_matmul_rate(
    device: torch.device,
    dtype: torch.dtype,
    seconds: float = MEASURE_SECONDS,
    shape: tuple[int, int, int] = MATMUL_SHAPE,
) -> float:
    """Repeat the matmul for about `seconds` (after one warm-up) and return FLOP/s.

    On CPU the time is this process's CPU time over its threads, not wall time: the machine may be
    shared, and a plan is for a run that has the cores to itself."""
    m, k, n = shape
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    _sync(device, a @ b)
    runs, wall, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - wall < seconds:
        _sync(device, a @ b)
        runs += 1
    elapsed = time.perf_counter() - wall
    if device.type == "cpu":
        elapsed = min(elapsed, (time.process_time() - cpu) / torch.get_num_threads())
    return 2 * m * k * n * runs / elapsed


def _sync(device: torch.device, result: torch.Tensor) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # missing or unreadable: measure again
    return data if isinstance(data, dict) else {}


def write_cache(path: Path, data: dict) -> None:
    """Atomic (temp file + replace), so concurrent plans never read half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def available_memory(device: torch.device) -> tuple[int, str]:
    """Bytes a run may take now: free GPU memory on cuda, else available RAM (psutil: free + reclaimable)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free), "GPU memory"
    import psutil

    return int(psutil.virtual_memory().available), "RAM"
