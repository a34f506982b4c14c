"""The ways of training that bench/speed.py compares, each run in its own child process.

    .venv/bin/python bench/speed_arms.py SPEC.json OUT.json     # what bench/speed.py runs per arm

- `trl`: TRL's SFTTrainer with its defaults for CPU (`use_cpu=True`: gradient checkpointing, padding to the
  longest row of each batch, bf16 autocast where the CPU has native bf16), a peft LoraConfig for lora.
- `plain`: a transformers + peft loop tuned by hand: fp32, batches padded to their longest row, no gradient
  checkpointing, AdamW with a linear schedule and gradient clipping at 1.0 (Trainer's defaults).
- `tunelab`: `tunelab.train.run` on a config, as `tunelab train` runs it, with its defaults.
- `tunelab-sel`: the same with `train.activation_checkpointing: selective` (matmul and attention outputs kept,
  the rest recomputed); `tunelab-ckpt`: with `full` (what TRL does by default): the memory each saves and the
  time it costs.

Every arm trains on the same rows (chat-templated prompt + completion, loss on the completion only), with the
same LoRA shape, batch size, learning rate, schedule and epochs, and then scores the same held-out rows with
`heldout_loss` in fp32, so quality is compared on the trained weights, not on the precision of the scoring.
The child reports: seconds of training (first step to last, model loading excluded), the real (non-padding)
tokens trained, the training loss of every step, and the held-out loss.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tunelab import launch  # noqa: E402 (this checkout's tunelab)

LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": "all-linear"}


def read_rows(path: Path, n: int | None = None) -> list[dict[str, str]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows[:n] if n else rows


def encode(tokenizer: Any, row: dict[str, str]) -> tuple[list[int], int]:
    """The chat-templated ids of prompt + completion, and where the completion starts."""
    user = [{"role": "user", "content": row["prompt"]}]
    prompt = tokenizer.apply_chat_template(user, add_generation_prompt=True, return_dict=True)["input_ids"]
    whole = tokenizer.apply_chat_template(
        [*user, {"role": "assistant", "content": row["completion"]}], return_dict=True
    )["input_ids"]
    assert whole[: len(prompt)] == prompt, "the template must extend the prompt"
    return whole, len(prompt)


def labelled(tokenizer: Any, row: dict[str, str]) -> tuple[torch.Tensor, torch.Tensor]:
    ids, start = encode(tokenizer, row)
    labels = list(ids)
    labels[:start] = [-100] * start
    return torch.tensor(ids), torch.tensor(labels)


def answer_only(labels: torch.Tensor, eos_id: int) -> torch.Tensor:
    """The labels up to and including the answer's end-of-turn token. Templates may add text after it (SmolLM2's
    adds a newline) that generation never produces, since it stops at end-of-turn; the arms differ in whether
    they train it (tunelab ends the row at end-of-turn), so the held-out loss leaves it out for every arm."""
    ends = (labels == eos_id).nonzero()
    if len(ends):
        labels = labels.clone()
        labels[int(ends[-1]) + 1 :] = -100
    return labels


def pad_batch(pairs: list[tuple[torch.Tensor, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest row of the batch."""
    width = max(len(ids) for ids, _ in pairs)
    ids = torch.full((len(pairs), width), pad_id)
    labels = torch.full((len(pairs), width), -100)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    for i, (row_ids, row_labels) in enumerate(pairs):
        ids[i, : len(row_ids)], labels[i, : len(row_ids)], mask[i, : len(row_ids)] = row_ids, row_labels, 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


@torch.no_grad()
def heldout_loss(model: Any, tokenizer: Any, rows: list[dict[str, str]]) -> float:
    """Mean cross-entropy per answer token (end-of-turn included) over the held-out rows, one row at a time, fp32."""
    model = model.float().eval()
    total, count = 0.0, 0
    for row in rows:
        ids, labels = labelled(tokenizer, row)
        labels = answer_only(labels, tokenizer.eos_token_id)
        out = model(input_ids=ids[None].to(model.device), labels=labels[None].to(model.device))
        trained = int((labels[1:] != -100).sum())
        total, count = total + out.loss.item() * trained, count + trained
    return total / count


# ---------------------------------------------------------------- (a) TRL


def run_trl(spec: dict[str, Any], tokenizer: Any, rows: list[dict[str, str]]) -> dict[str, Any]:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    data = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": r["prompt"]}],
                "completion": [{"role": "assistant", "content": r["completion"]}],
            }
            for r in rows
        ]
    )
    args = SFTConfig(
        output_dir=spec["scratch"],
        use_cpu=torch.device(spec["device"]).type == "cpu",
        per_device_train_batch_size=spec["batch"],
        learning_rate=spec["lr"],
        num_train_epochs=1,
        max_length=spec["max_length"],
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=spec["seed"],
        disable_tqdm=True,
        # TRL's own default is bf16=True. On a CPU without native bf16 (AVX512_BF16/AMX) every bf16 matmul is
        # emulated, ~10x slower than fp32; no one would keep that, and a crippled baseline flatters the others.
        # So bf16 follows the rule the other arms follow: on where the hardware runs it natively.
        bf16=spec["compute_dtype"] == "bfloat16",
    )
    peft_config = LoraConfig(task_type="CAUSAL_LM", **LORA) if spec["method"] == "lora" else None
    trainer = SFTTrainer(model=spec["model_dir"], args=args, train_dataset=data, peft_config=peft_config)
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    clock = StepClock()
    trainer.add_callback(clock)
    trainer.train()
    return clock.result(tokens, trainer.model, tokenizer, spec)


# ---------------------------------------------------------------- (b) plain transformers + peft


def run_plain(spec: dict[str, Any], tokenizer: Any, rows: list[dict[str, str]]) -> dict[str, Any]:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, get_linear_schedule_with_warmup

    device = torch.device(spec["device"])
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32).to(device)
    if spec["method"] == "lora":
        model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **LORA))
    model.train()
    examples = [labelled(tokenizer, r) for r in rows]
    order = list(range(len(examples)))
    random.Random(spec["seed"]).shuffle(order)
    batches = [order[i : i + spec["batch"]] for i in range(0, len(order), spec["batch"])]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=spec["lr"], weight_decay=0.0)
    schedule = get_linear_schedule_with_warmup(optimizer, 0, len(batches))
    losses, start = [], time.perf_counter()
    for batch_rows in batches:
        batch = {
            k: v.to(device) for k, v in pad_batch([examples[i] for i in batch_rows], tokenizer.pad_token_id).items()
        }
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    seconds = time.perf_counter() - start
    tokens = sum(len(ids) for ids, _ in examples)
    return finish(seconds, tokens, losses, model, tokenizer, spec)


# ---------------------------------------------------------------- (c) tunelab


def run_tunelab(spec: dict[str, Any], tokenizer: Any, rows: list[dict[str, str]]) -> dict[str, Any]:
    from tunelab import config, train

    data_file = Path(spec["scratch"]) / "train.jsonl"
    data_file.parent.mkdir(parents=True, exist_ok=True)
    data_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    lora = {
        "r": LORA["r"],
        "alpha": LORA["lora_alpha"],
        "dropout": LORA["lora_dropout"],
        "target_modules": "all-linear",
    }
    method = {"name": "full"} if spec["method"] == "full" else {"name": spec["method"], **lora}
    config_file = Path(spec["scratch"]) / "config.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "model": {"name": spec["model_name"], "device": spec["device"]},
                "data": {"train": str(data_file), "format": "prompt_completion"},
                "method": method,
                "train": {
                    "output_dir": str(Path(spec["scratch"]) / "run"),
                    "per_device_train_batch_size": spec["batch"],
                    "learning_rate": spec["lr"],
                    "num_train_epochs": 1,
                    "logging_steps": 1,
                    "save_strategy": "no",
                    "max_seq_length": spec["max_length"],
                    "seed": spec["seed"],
                },
                "forgetting": {"enabled": False},
            }
        )
    )
    cfg = config.load(config_file, spec.get("tunelab_overrides", []))  # as `tunelab train FILE KEY=VALUE ...`
    clock = StepClock()
    train.run(cfg, callbacks=(clock,))
    tokens = sum(len(encode(tokenizer, r)[0]) for r in rows)
    return clock.result(tokens, clock.model, tokenizer, spec)


# ---------------------------------------------------------------- shared


def _callback_base() -> type:
    from transformers import TrainerCallback

    return TrainerCallback


class StepClock(_callback_base()):
    """Training seconds (first step's start to the end of the last) and each step's loss, from Trainer's events."""

    def __init__(self) -> None:
        self.start = self.end = 0.0
        self.losses: list[float] = []
        self.model = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.start = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.end, self.model = time.perf_counter(), model

    def result(self, tokens: int, model: Any, tokenizer: Any, spec: dict[str, Any]) -> dict[str, Any]:
        return finish(self.end - self.start, tokens, self.losses, model, tokenizer, spec)


def finish(seconds: float, tokens: int, losses: list[float], model: Any, tokenizer: Any, spec: dict) -> dict:
    heldout = read_rows(Path(spec["heldout"]), spec["heldout_rows"])
    return {
        "seconds": seconds,
        "tokens": tokens,
        "losses": losses,
        "final_train_loss": sum(losses[-5:]) / len(losses[-5:]),
        "eval_loss": heldout_loss(model, tokenizer, heldout),
        "malloc": launch.in_use(),
    }


def main() -> None:
    from transformers import AutoTokenizer

    spec = json.loads(Path(sys.argv[1]).read_text())
    torch.manual_seed(spec["seed"])
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    rows = read_rows(Path(spec["train"]), spec["rows"])
    arm = run_tunelab if spec["arm"].startswith("tunelab") else {"trl": run_trl, "plain": run_plain}[spec["arm"]]
    Path(sys.argv[2]).write_text(json.dumps(arm(spec, tokenizer, rows)))


if __name__ == "__main__":
    main()
