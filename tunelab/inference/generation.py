"""Text generation for evaluation, demos and chat, with prompts rendered exactly as in training.

    texts = generate(model, tokenizer, ["What is the capital of France?"], Decoding(max_new_tokens=32))
    for piece in stream(model, tokenizer, [{"role": "user", "content": "Hi!"}]):
        print(piece, end="", flush=True)

Prompts go through `tunelab.data.templates.render_prompt`, the function training uses, so a tuned model
sees the layout it learned. Batches are left-padded by hand (the tokenizer's padding_side is never touched,
since training shares it) and sorted by length so little compute goes to padding.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tunelab.data.templates import Message, encode_prompt
from tunelab.errors import ConfigError
from tunelab.models.modes import eval_mode

Prompt = list[Message] | str


@dataclass(frozen=True)
class Decoding:
    """How to pick tokens. temperature 0 is greedy; > 0 samples (with top_k/top_p when set); `seed` makes
    sampling reproducible for the same prompts and batch_size without touching the global RNG."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.temperature < 0:
            raise ValueError(f"need max_new_tokens >= 1 and temperature >= 0, got {self}")
        if (self.top_k is not None and self.top_k < 1) or (self.top_p is not None and not 0 < self.top_p <= 1):
            raise ValueError(f"need top_k >= 1 and 0 < top_p <= 1 when set, got {self}")


def decoding(max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None, seed: int | None):
    try:
        return Decoding(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    except ValueError as exc:
        raise ConfigError("bad decoding options", [str(exc)]) from None


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    decoding: Decoding = Decoding(),
    *,
    batch_size: int = 8,
    template: str = "auto",
    system: str | None = None,
    progress: bool = False,
) -> list[str]:
    """The new text for each prompt, in input order, special tokens stripped, cut at EOS."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    encoded = [encode_prompt(tokenizer, p, template, system) for p in prompts]
    # Longest first: prompts of similar length share a batch, and an out-of-memory batch shows up at once.
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    outputs = [""] * len(encoded)
    with eval_mode(model), _seeded(model, decoding.seed), _progress(progress, len(encoded)) as advance:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            texts = _generate_batch(model, tokenizer, [encoded[i] for i in batch], decoding)
            for i, text in zip(batch, texts, strict=True):
                outputs[i] = text
            advance(len(batch))
    return outputs


@dataclass(frozen=True)
class PerRow:
    """What a server asks of one batched `generate`, row by row: `on_piece(row, text)` gets each row's new text
    as it is decoded; a row whose `finished(row)` turns true stops (its client left, or its stop sequence came);
    `adapter_names` picks an adapter per row (peft's mixed-adapter batches, "__base__" for none)."""

    on_piece: Callable[[int, str], None] | None = None
    finished: Callable[[int], bool] | None = None
    adapter_names: list[str] | None = None

    @property
    def streamed(self) -> bool:
        return self.on_piece is not None or self.finished is not None


def generate_encoded(model: Any, tokenizer: Any, ids: list[list[int]], decoding: Decoding, rows: PerRow) -> list[str]:
    """ONE batched `generate` over prompts already encoded (`encode_prompt`), for a server that batches requests."""
    with eval_mode(model), _seeded(model, decoding.seed):
        return _generate_batch(model, tokenizer, ids, decoding, rows)


def _generate_batch(
    model: Any, tokenizer: Any, ids: list[list[int]], decoding: Decoding, per_row: PerRow = PerRow()
) -> list[str]:
    from transformers import StoppingCriteriaList

    input_ids, attention_mask = left_pad(ids, tokenizer.pad_token_id, model.device)
    eos = set(eos_ids(model, tokenizer))
    rows = RowText(tokenizer, len(ids), eos, per_row.on_piece or (lambda row, text: None), per_row.finished)
    extra: dict[str, Any] = {} if per_row.adapter_names is None else {"adapter_names": per_row.adapter_names}
    if per_row.finished is not None:
        extra["stopping_criteria"] = StoppingCriteriaList([rows.stopping_criterion])
    out = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        streamer=rows if per_row.streamed else None,
        **extra,
        **generation_kwargs(model, tokenizer, decoding),
    )
    if per_row.streamed:
        return rows.texts()
    # A decoder-only model returns prompt + new tokens; an encoder-decoder returns the decoder's sequence,
    # which starts with its decoder start token (often pad, which may be EOS).
    new = out[:, 1:] if getattr(model.config, "is_encoder_decoder", False) else out[:, input_ids.shape[1] :]
    return [_decode_until_eos(tokenizer, row.tolist(), eos) for row in new]


class RowText:
    """A `generate` streamer for a whole batch (transformers' own streamers take one row): each row's tokens up
    to its EOS, decoded as they come, with each row's new text handed to `on_piece(row, text)`. Text is held
    back while it ends in a partial character (U+FFFD: a multi-byte character split across tokens).
    `stopping_criterion` ends the rows whose `finished(row)` is true."""

    def __init__(self, tokenizer: Any, n_rows: int, eos: set[int], on_piece: Any, finished: Any = None):
        self.tokenizer, self.eos, self.on_piece = tokenizer, eos, on_piece
        self.finished = finished or (lambda row: False)
        self.tokens: list[list[int]] = [[] for _ in range(n_rows)]
        self.sent = [""] * n_rows
        self.open = [True] * n_rows
        self.first = True

    def put(self, value: torch.Tensor) -> None:
        if self.first:  # the prompt (or an encoder-decoder's start token), not new text
            self.first = False
            return
        for row, token in enumerate(value.reshape(-1).tolist()):
            if not self.open[row]:
                continue
            if token in self.eos:
                self.open[row] = False
                continue
            self.tokens[row].append(token)
            self._send(row, final=False)
            if self.finished(row):
                self.open[row] = False  # what comes after is padding

    def end(self) -> None:
        for row in range(len(self.tokens)):
            self._send(row, final=True)

    def _send(self, row: int, final: bool) -> None:
        text = self.tokenizer.decode(self.tokens[row], skip_special_tokens=True)
        if text.startswith(self.sent[row]) and (final or not text.endswith("\ufffd")) and text != self.sent[row]:
            self.on_piece(row, text[len(self.sent[row]) :])
            self.sent[row] = text

    def texts(self) -> list[str]:
        return [self.tokenizer.decode(tokens, skip_special_tokens=True) for tokens in self.tokens]

    def stopping_criterion(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        done = [not self.open[row] or self.finished(row) for row in range(len(self.tokens))]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _decode_until_eos(tokenizer: Any, new_ids: list[int], eos: set[int]) -> str:
    """Cut at the first EOS: a finished row is padded (with pad, which may be a normal token) until all are done."""
    end = next((k for k, t in enumerate(new_ids) if t in eos), len(new_ids))
    return tokenizer.decode(new_ids[:end], skip_special_tokens=True)


def left_pad(ids: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left padding keeps every prompt's last token at the end, where generation continues from it."""
    width = max(len(row) for row in ids)
    input_ids = torch.tensor([[pad_id] * (width - len(row)) + row for row in ids], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in ids], dtype=torch.long)
    return input_ids.to(device), mask.to(device)


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """The model's EOS ids (a chat model may have several) plus the tokenizer's."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured]
    return sorted({i for i in [*ids, tokenizer.eos_token_id] if i is not None})


def generation_kwargs(model: Any, tokenizer: Any, decoding: Decoding) -> dict[str, Any]:
    """`generate` arguments; sampling options not asked for are switched off explicitly, so a model's own
    generation_config (say temperature=0.6) cannot change what `decoding` describes."""
    kwargs: dict[str, Any] = {
        "max_new_tokens": decoding.max_new_tokens,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": eos_ids(model, tokenizer),
    }
    if decoding.temperature == 0:
        return {**kwargs, "do_sample": False, "temperature": None, "top_k": None, "top_p": None}
    return {
        **kwargs,
        "do_sample": True,
        "temperature": decoding.temperature,
        "top_k": decoding.top_k or 0,  # 0 = no top-k filter
        "top_p": decoding.top_p or 1.0,  # 1.0 = no nucleus filter
    }


def stream(
    model: Any,
    tokenizer: Any,
    prompt: Prompt,
    decoding: Decoding = Decoding(),
    *,
    template: str = "auto",
    system: str | None = None,
) -> Iterator[str]:
    """Yield text pieces as they are generated (generation runs in a thread; closing the iterator stops it)."""
    ids = [encode_prompt(tokenizer, prompt, template, system)]
    pieces: queue.Queue[str | BaseException | None] = queue.Queue()
    stop = threading.Event()

    def work() -> None:
        try:
            per_row = PerRow(on_piece=lambda row, text: pieces.put(text), finished=lambda row: stop.is_set())
            generate_encoded(model, tokenizer, ids, decoding, per_row)
            pieces.put(None)
        except BaseException as err:  # handed to the consumer below
            pieces.put(err)

    thread = threading.Thread(target=work, name="tunelab-stream", daemon=True)
    thread.start()
    try:
        while (piece := pieces.get()) is not None:
            if isinstance(piece, BaseException):
                raise piece
            yield piece
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def _seeded(model: Any, seed: int | None) -> Iterator[None]:
    """Seed the RNG for this block only; the caller's RNG state (e.g. mid-training) is restored after."""
    if seed is None:
        yield
        return
    device = model.device
    on_accelerator = device.type != "cpu"
    devices = [device.index or 0] if on_accelerator else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if on_accelerator else "cuda"):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Callable[[int], None]]:
    """A rich progress bar over prompts when enabled; otherwise a no-op `advance`."""
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from tunelab.console import console

    columns = (TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as bar:  # stderr: stdout may carry the generated JSONL
        task = bar.add_task("generating", total=total)
        yield lambda n: bar.advance(task, n)
