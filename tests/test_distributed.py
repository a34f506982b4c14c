"""Training in several processes: `tunelab train --nproc 2` on CPU (gloo), the tiny model, real processes.

DDP's weights equal one process's with the same global batch and seed (under torchrun); one run directory, one
set of logs;
a crashed process fails the run; `kill -9` of the launcher takes its processes with it, and `--resume` under
the same launcher ends where an uninterrupted run does. FSDP: accelerate shards on GPUs only, so on this CPU
the FSDP pieces that are ours (gathering sharded weights and saving them) run under torch's FSDP2 directly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import torch
from safetensors.torch import load_file

from tests.helpers import run_cli, write_config, write_jsonl
from tunelab.config import load
from tunelab.training import distributed

TUNELAB = Path(sys.executable).parent / "tunelab"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
# A constant rate: a run resumed with a different max_steps follows the same schedule as a straight one.
SCHEDULE = {"learning_rate": 5e-3, "lr_scheduler_type": "constant", "save_steps": 100, "save_total_limit": None}


def uneven_rows() -> list[dict[str, str]]:
    """Answers of 1 to 6 words: the processes' batches hold different numbers of trained tokens, so equal weights
    need the loss averaged over the tokens of all processes, not over each process's own."""
    words = ["apple", "river", "stone", "cloud", "ember", "maple", "north", "quiet"]
    return [{"prompt": f"Word {i}?", "completion": " ".join(words[: 1 + i % 6])} for i in range(8)]


def configs(tmp_path: Path, model_dir: Path, **train) -> tuple[Path, Path]:
    """The same run twice: one process with batch 4, and per process 2 (two processes: global batch 4)."""
    data = {"train": str(write_jsonl(tmp_path / "train.jsonl", uneven_rows()))}
    made = []
    for name, batch in (("one", 4), ("two", 2)):
        (tmp_path / name).mkdir()
        settings = SCHEDULE | {"per_device_train_batch_size": batch} | train
        made.append(write_config(tmp_path / name, model_dir, data=data, train=settings))
    return made[0], made[1]


def launch(config: Path, *args: str, log: Path) -> subprocess.Popen:
    """`tunelab train CONFIG ARGS --nproc 2` (accelerate's launcher, started by tunelab)."""
    return start([str(TUNELAB), "train", str(config), *args, "--nproc", "2"], log)


def start(command: list[str], log: Path) -> subprocess.Popen:
    """`command`, its output in `log` (a file: a pipe nobody reads could block it)."""
    with log.open("w") as out:
        env = {**os.environ, "TUNELAB_ALLOCATOR": "system"}
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


def finish(child: subprocess.Popen, log: Path, timeout: float = 180) -> str:
    child.wait(timeout=timeout)
    return log.read_text()


def adapter(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], start=None) -> None:
    """a == b up to float32 rounding: within 0.1% of the largest change training made (from `start`, a whole
    model's weights; for LoRA, from B's zeros). A wrong global batch or loss average is off by 10% or more."""
    assert a.keys() == b.keys()
    changes = [(a[k] - start[k]) if start is not None else a[k] for k in a if start is not None or "lora_B" in k]
    moved = max(change.abs().max().item() for change in changes)
    assert moved > 1e-3, "nothing trained"
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-3 * moved, f"weights differ by up to {worst} (training moved them by up to {moved})"


def test_two_processes_train_the_weights_of_one_with_the_same_global_batch(tmp_path, tiny_model_dir):
    # A full fine-tune with L2-SP here (the anchor reads the weights past DDP's wrapper), padding-free batches;
    # LoRA and padded batches in the resume test below. The command unchanged under torchrun here; the tests
    # below start it with --nproc (accelerate's launcher).
    one, two = configs(tmp_path, tiny_model_dir, max_steps=4, padding_free=True)
    full = ["method.name=full", "forgetting.l2_to_base=0.01"]
    child = start([*TORCHRUN, "-m", "tunelab", "train", str(two), *full, "energy.enabled=true"], tmp_path / "two.log")
    # Meanwhile, the same run in one process, with the loss computed as several processes compute it (the model's
    # own): the sparse head's gradients differ by ~2e-6 in near-zero embedding entries, which Adam, dividing by
    # their size, turns into weights 2.6e-4 apart after 4 steps (measured); the same head gives 1.4e-6.
    assert run_cli(["train", str(one), *full, "train.sparse_lm_head=false"]).exit_code == 0
    output = finish(child, tmp_path / "two.log")
    assert child.returncode == 0, output[-3000:]

    weights = [load_file(str(tmp_path / name / "run" / "model" / "model.safetensors")) for name in ("one", "two")]
    assert_same_weights(*weights, start=load_file(str(tiny_model_dir / "model.safetensors")))
    # One main process: it alone printed, scored the probe into the logs, and wrote the TensorBoard events.
    assert output.count('{"run_dir": ') == 1 and output.count("run complete") == 1
    assert output.count("retention probe on the result") == 1
    assert len(list((tmp_path / "two" / "run" / "logs").iterdir())) == 1
    assert (tmp_path / "two" / "run" / "COMPLETE").is_file()
    # Compute: both processes' device time; the machine's energy measured once (by its first process).
    compute = json.loads((tmp_path / "two" / "run" / "metrics.json").read_text())["compute"]
    assert compute["processes"] == 2 and sum(compute["devices"].values()) == 2
    assert compute["energy_kwh"]["total"] > 0 and compute["methods"]["cpu"], compute
    assert output.count("compute: ") == 1 and "device-hours" in output


def processes_of(launcher: subprocess.Popen) -> dict[int, psutil.Process]:
    """The training processes under a launcher, by rank."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ranks = {}
        for proc in psutil.Process(launcher.pid).children(recursive=True):
            try:
                rank = proc.environ().get("RANK")
            except psutil.Error:
                continue
            if rank is not None:
                ranks[int(rank)] = proc
        if len(ranks) == 2:
            return ranks
        time.sleep(0.2)
    raise AssertionError("the launcher started no 2 training processes")


def wait_for_checkpoint(run_dir: Path, step: int, launcher: subprocess.Popen, log: Path) -> None:
    marker = run_dir / "checkpoints" / f"checkpoint-{step}" / "CHECKPOINT_COMPLETE"
    deadline = time.monotonic() + 180
    while not marker.is_file():
        assert launcher.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)


def test_a_crashed_process_fails_the_run_and_kill_9_of_the_launcher_then_resume_ends_as_one_straight_run(
    tmp_path, tiny_model_dir
):
    one, two = configs(tmp_path, tiny_model_dir, max_steps=10_000, save_steps=2, padding_free=False)
    run_dir = tmp_path / "two" / "run"

    # A process dies (rank 1, kill -9): the launcher stops the other and fails with one line, the run incomplete.
    child = launch(two, log=tmp_path / "crash.log")
    wait_for_checkpoint(run_dir, 2, child, tmp_path / "crash.log")
    processes_of(child)[1].kill()
    output = finish(child, tmp_path / "crash.log", timeout=120)
    assert child.returncode != 0
    assert "training in 2 processes failed" in output and "--resume" in output
    assert "Traceback (most recent call last)" not in output
    assert not (run_dir / "COMPLETE").exists()

    # Resumed, then the launcher itself is killed: its processes die with it (no orphan goes on writing).
    child = launch(two, "--resume", log=tmp_path / "killed.log")
    ranks = processes_of(child)
    last = max(int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("checkpoint-*"))
    wait_for_checkpoint(run_dir, last + 2, child, tmp_path / "killed.log")
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    gone, alive = psutil.wait_procs(list(ranks.values()), timeout=30)
    assert not alive, "training processes outlived their launcher"
    assert not (run_dir / "COMPLETE").exists()

    # Resumed to a fixed end: the same weights as one process trained straight to it.
    steps = max(int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("checkpoint-*")) + 2
    child = launch(two, "--resume", f"train.max_steps={steps}", log=tmp_path / "resumed.log")
    assert run_cli(["train", str(one), f"train.max_steps={steps}"]).exit_code == 0
    output = finish(child, tmp_path / "resumed.log")
    assert child.returncode == 0, output[-3000:]
    assert "resuming from checkpoint-" in output
    assert_same_weights(adapter(tmp_path / "one" / "run"), adapter(run_dir))


FSDP_SCRIPT = textwrap.dedent(
    """
    import sys, torch, torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from transformers import AutoModelForCausalLM
    from peft import LoraConfig, get_peft_model
    from tunelab.training import distributed

    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(sys.argv[1]), LoraConfig(r=4, init_lora_weights=False))
    for layer in model.get_base_model().model.layers:  # the decoder-layer wrap tunelab asks accelerate for
        fully_shard(layer)
    fully_shard(model)
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    logits = model(input_ids=ids).logits  # every process takes part in each forward
    whole = distributed.gathered(model)
    if dist.get_rank() == 0:
        distributed.save_with(whole)(model, sys.argv[2])
        torch.save(logits.detach(), sys.argv[2] + "/logits.pt")
    dist.barrier()
    dist.destroy_process_group()
    import gc; gc.freeze()  # as tunelab's command does: exit without a full collection (1.5 s a process)
    """
)


def test_fsdp_sharded_adapter_is_gathered_and_loads_in_one_process_with_the_same_logits(tmp_path, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    script = tmp_path / "fsdp.py"
    script.write_text(FSDP_SCRIPT)
    out = tmp_path / "adapter"
    done = subprocess.run([*TORCHRUN, str(script), str(tiny_model_dir), str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]

    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out)
    sharded_logits = torch.load(out / "logits.pt", weights_only=True)
    logits = loaded(input_ids=torch.tensor([[1, 2, 3, 4, 5, 6]])).logits
    assert torch.allclose(logits, sharded_logits, atol=1e-5)
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir)(input_ids=torch.tensor([[1, 2, 3, 4, 5, 6]])).logits
    assert not torch.allclose(plain, sharded_logits, atol=1e-3), "the adapter changed nothing: the test shows nothing"


def test_mistakes_are_said_once_before_any_process_starts(tmp_path, tiny_model_dir, monkeypatch):
    _, two = configs(tmp_path, tiny_model_dir, max_steps=2)
    fsdp = run_cli(["train", str(two), "distributed.strategy=fsdp", "--nproc", "2"])
    assert fsdp.exit_code == 2 and "fsdp on CPU" in fsdp.output and "distributed.strategy: ddp" in fsdp.output
    deepspeed = run_cli(["train", str(two), "distributed.strategy=deepspeed", "--nproc", "2"])
    assert deepspeed.exit_code == 2 and "deepspeed is not installed" in deepspeed.output
    assert run_cli(["train", str(two), "--nproc", "0"]).exit_code == 2
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # an accelerate config that asks for FSDP
    mismatch = run_cli(["train", str(two), "--nproc", "2"])
    assert mismatch.exit_code == 2 and "accelerate config asks for fsdp" in mismatch.output
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    monkeypatch.setenv("LOCAL_RANK", "0")  # as under torchrun / accelerate launch
    nested = run_cli(["train", str(two), "--nproc", "2"])
    assert nested.exit_code == 2 and "leave it out" in nested.output
    assert not (tmp_path / "two" / "run").exists()


def test_the_rank_is_read_as_accelerate_reads_it_under_torchrun_and_mpi_launchers(monkeypatch):
    from tunelab.console import is_main_process

    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.world() == distributed.World(0, 0, 1, 1) and is_main_process()
    # mpirun (Open MPI) sets its own names; accelerate takes them on CPU, so tunelab must too.
    for name, value in (("RANK", "1"), ("LOCAL_RANK", "1"), ("SIZE", "4"), ("LOCAL_SIZE", "2")):
        monkeypatch.setenv(f"OMPI_COMM_WORLD_{name}", value)
    assert distributed.world() == distributed.World(rank=1, local_rank=1, size=4, local_size=2)
    assert not is_main_process()
    monkeypatch.setenv("RANK", "0")  # torchrun's names first, as accelerate reads them
    assert distributed.world().rank == 0 and is_main_process()


def test_the_strategy_reaches_training_arguments(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    _, two = configs(tmp_path, tiny_model_dir, max_steps=2)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    fsdp = distributed.training_arguments(load(two, ["distributed.strategy=fsdp"]), model)
    assert fsdp["fsdp_config"]["transformer_layer_cls_to_wrap"] == ["LlamaDecoderLayer"]
    assert fsdp["fsdp_config"]["version"] == 2 and fsdp["fsdp_config"]["state_dict_type"] == "SHARDED_STATE_DICT"
    zero3 = distributed.training_arguments(
        load(two, ["distributed.strategy=deepspeed", "distributed.zero_stage=3"]), model
    )
    assert zero3["deepspeed"]["zero_optimization"]["stage"] == 3
    ddp = distributed.training_arguments(load(two, ["distributed.timeout_s=300"]), model)
    assert ddp == {"ddp_timeout": 300, "ddp_find_unused_parameters": False}
