"""Run the commands that train on tcmalloc when the machine has it (Linux; `TUNELAB_ALLOCATOR` chooses).

Why: glibc's malloc keeps much of what a training step frees, so the resident set grows far past the live
tensors (docs/speed.md: on a wide LoRA batch 3.08 GB live, 6.7-8.0 GB resident). Measured on the speed bench
(wide rows, LoRA, 40 rows, one process each): glibc 140 tokens/s at 6.35 GB peak RSS; tcmalloc 149 tokens/s
at 4.10 GB; jemalloc 132 tokens/s at 4.12 GB. With activation checkpointing: glibc 114 tokens/s at 2.26 GB,
tcmalloc 114 at 1.47 GB, jemalloc 93 at 1.43 GB. glibc's own knobs give the memory back only by faulting
pages in again (MALLOC_TRIM_THRESHOLD_=0: 1.9x the time). tcmalloc is not on PyPI; it comes from the
system (Debian/Ubuntu: libtcmalloc-minimal4; Fedora: gperftools-libs; conda: gperftools).

An allocator is chosen when a process starts (LD_PRELOAD), so `tunelab train` re-runs itself once, before
importing torch, with the library preloaded. TUNELAB_ALLOCATOR: `auto` (default: tcmalloc when found),
`system` (never re-run), or a library's path.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from tunelab.errors import ConfigError

SETTING = "TUNELAB_ALLOCATOR"
# Set in the re-run process: the library it was started with (also what stops a second re-run).
PRELOADED = "TUNELAB_ALLOCATOR_PRELOADED"
LIBRARIES = ("tcmalloc_minimal", "tcmalloc")
# tcmalloc reports every allocation over 1 GB on stderr; a full fine-tune's optimizer state is one.
QUIET = {"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(2**40)}


def find_tcmalloc() -> str | None:
    """tcmalloc's shared library: the system's (ldconfig), else one beside this Python (conda, a venv)."""
    for name in LIBRARIES:
        found = ctypes.util.find_library(name)
        if found:
            return found
    for folder in (Path(sys.prefix) / "lib", Path(sys.base_prefix) / "lib"):
        for name in LIBRARIES:
            matches = sorted(folder.glob(f"lib{name}.so*"))
            if matches:
                return str(matches[0])
    return None


def preload_env(environ: Mapping[str, str]) -> dict[str, str] | None:
    """The environment to re-run with tcmalloc preloaded, or None: not Linux, already re-run, turned off by
    TUNELAB_ALLOCATOR=system, or no library found."""
    setting = environ.get(SETTING, "auto").strip() or "auto"
    if not sys.platform.startswith("linux") or PRELOADED in environ or setting == "system":
        return None
    library = find_tcmalloc() if setting == "auto" else explicit_library(setting)
    if library is None or library in environ.get("LD_PRELOAD", ""):
        return None
    preload = " ".join(part for part in (library, environ.get("LD_PRELOAD", "")) if part)
    return {**QUIET, **environ, "LD_PRELOAD": preload, PRELOADED: library}


def explicit_library(setting: str) -> str:
    if not Path(setting).is_file():
        raise ConfigError(
            f"{SETTING}={setting!r}: no such file",
            [f"{SETTING}=auto (tcmalloc when installed), {SETTING}=system, or the path of a malloc library"],
        )
    return setting


def in_use() -> str:
    """The malloc this process runs on, as its memory map shows: tcmalloc, jemalloc or the system's."""
    maps = Path("/proc/self/maps")
    loaded = maps.read_text() if maps.is_file() else ""
    for name in ("tcmalloc", "jemalloc"):
        path = next((line.split()[-1] for line in loaded.splitlines() if f"lib{name}" in line), None)
        if path:
            return f"{name} ({path})"
    return "system"


def rerun_with_tcmalloc() -> None:
    """Replace this process with the same command on tcmalloc (returns only when there is nothing to do)."""
    env = preload_env(os.environ)
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    # sys.orig_argv: the interpreter's own command line (its flags, the script or -m), so the re-run is the
    # same command.
    os.execve(sys.executable, sys.orig_argv, env)


# Set by torchrun / accelerate launch in every process they start.
LAUNCHED = ("LOCAL_RANK", "TORCHELASTIC_RUN_ID")


def under_launcher(environ: Mapping[str, str] = os.environ) -> bool:
    return any(name in environ for name in LAUNCHED)


def processes(nproc: int, command: list[str], gpus: int) -> int:
    """`tunelab <command>` in `nproc` processes on this machine, started by accelerate's launcher (torchrun
    underneath) in this process; returns their exit code (0: all finished). One process per GPU where there
    are GPUs; CPU processes share the cores (OMP threads split between them)."""
    if under_launcher():
        raise ConfigError("--nproc starts its own processes: under accelerate launch or torchrun, leave it out")
    if gpus and nproc > gpus:
        raise ConfigError(f"--nproc {nproc}, but this machine has {gpus} GPU(s): one process per GPU, --nproc {gpus}")
    from accelerate.commands.launch import launch_command, launch_command_parser  # ~1 s: only when launching

    threads = max(1, (os.cpu_count() or 1) // nproc) if not gpus else 1
    flags = ["--multi_gpu", "--num_processes", str(nproc), "--num_machines", "1", "--mixed_precision", "no"]
    # --gpu_ids all: every GPU, whatever a user's saved `accelerate config` lists (it would set CUDA_VISIBLE_DEVICES).
    flags += ["--dynamo_backend", "no", "--main_process_port", str(free_port()), "--quiet", "--gpu_ids", "all"]
    flags += ["--num_cpu_threads_per_process", os.environ.get("OMP_NUM_THREADS", str(threads))]
    args = launch_command_parser().parse_args([*flags, "-m", "tunelab", *command])
    try:
        launch_command(args)  # accelerate prints a failed process's summary (no traceback: --quiet)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1
    return 0


def free_port() -> int:
    """A port nothing listens on now, for the processes' rendezvous (two runs on one machine must not share)."""
    import socket  # only when launching

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
