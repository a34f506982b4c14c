"""The prompts of each arm `tunelab compare` runs besides plain zero-shot: few-shot (training examples before
each prompt) and retrieval-augmented (passages from an index before each question). Both fill the model's
context window as far as it goes and no further, and the arm is named by what actually fit."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tunelab import data
from tunelab.config import RunConfig
from tunelab.errors import ConfigError
from tunelab.inference.generation import encode_prompt
from tunelab.inference.loading import Loaded
from tunelab.rag import MODES, Passage, open_index, read_manifest, with_passages


def context_window(model: Any) -> int:
    return int(getattr(model.config, "max_position_embeddings", 2048))


def arm_name(kind: str, k: int, mean_used: float, full: str) -> str:
    """`full` when every example got all k; else what fit on average, e.g. "rag (up to 4, 2.5 fit on average)"."""
    return full if mean_used == k else f"{kind} (up to {k}, {mean_used:.1f} fit on average)"


def few_shot_examples(cfg: RunConfig, loaded: Loaded, examples: list[Any], k: int) -> tuple[list[Any], float]:
    """Each test example with up to k training examples (of its own task, when there are several) before it as
    earlier turns, fewer when the prompt would not leave room for the answer within the model's context window;
    and the mean shots used."""
    shots_of = task_shots(data.preflight(cfg).own_train, k, cfg.train.seed)  # never replay's general rows
    budget = context_window(loaded.model) - cfg.eval.max_new_tokens
    out, used = [], []
    for example in examples:
        shots = shots_of.get(example.task) or next(iter(shots_of.values()), [])
        system = example.messages[:1] if example.messages[0]["role"] == "system" else []
        for n in range(len(shots), -1, -1):
            turns = [m for shot in shots[:n] for m in shot if m["role"] != "system"]
            messages = system + turns + example.messages[len(system) :]
            if n == 0 or len(encode_prompt(loaded.tokenizer, messages, loaded.template, loaded.system)) <= budget:
                break
        out.append(replace(example, messages=messages))
        used.append(n)
    return out, sum(used) / len(used)


def task_shots(rows: list[Any], k: int, seed: int) -> dict[str | None, list[Any]]:
    """k training examples per task (one pool when there are no tasks), drawn with one seeded generator."""
    rng = random.Random(seed)
    pools: dict[str | None, list[Any]] = {}
    for row in rows:
        pools.setdefault(row.task, []).append(row.messages)
    return {task: rng.sample(pool, min(k, len(pool))) for task, pool in pools.items()}


@dataclass(frozen=True)
class Retrieval:
    """The `rag` arms' retrieval: up to k passages from the index per question."""

    index: Path
    k: int = 4
    mode: str = "hybrid"

    def check(self) -> None:
        """Before any model loads: the index is readable and the options make sense."""
        read_manifest(self.index)
        if self.k < 1:
            raise ConfigError(f"--rag-k {self.k}: retrieve at least 1 passage")
        if self.mode not in MODES:
            raise ConfigError(f"--rag-mode {self.mode}: use one of {', '.join(MODES)}")


def question_of(example: Any) -> str:
    return example.messages[-1]["content"]


def retrieve(retrieval: Retrieval, examples: list[Any], trust_remote_code: bool = False) -> list[list[Passage]]:
    """Each example's best passages, best first (the index and its encoder are freed afterwards)."""
    index = open_index(retrieval.index, trust_remote_code=trust_remote_code)
    return index.search_many([question_of(e) for e in examples], retrieval.k, retrieval.mode)


def rag_examples(
    cfg: RunConfig, loaded: Loaded, examples: list[Any], retrieved: list[list[Passage]]
) -> tuple[list[Any], list[list[Passage]], float]:
    """Each example's question with as many of its passages as fit the window (leaving the answer's budget),
    the passages used, and their mean count."""
    budget = context_window(loaded.model) - cfg.eval.max_new_tokens

    def fits(messages: list[dict[str, str]]) -> bool:
        return len(encode_prompt(loaded.tokenizer, messages, loaded.template, loaded.system)) <= budget

    out, used = [], []
    for example, passages in zip(examples, retrieved, strict=True):
        messages, chosen = with_passages(example.messages, passages, fits)
        out.append(replace(example, messages=messages))
        used.append(chosen)
    return out, used, sum(map(len, used)) / len(used)
