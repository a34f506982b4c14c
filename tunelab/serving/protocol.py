"""OpenAI's request and response shapes, as far as tunelab serves them (https://platform.openai.com/docs/api-reference).

Requests are strict about types (a wrong type is a 400) and ignore fields tunelab does not act on (`user`,
`logprobs`, ...), as OpenAI-compatible servers do, so clients that send them keep working.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True)
class ServerSettings:
    """Limits and access. Defaults are safe for a server on one machine; `api_key` None: no key asked."""

    api_key: str | None = None
    max_body_bytes: int = 1 << 20  # 1 MiB: far above any prompt that fits a context window
    max_tokens_cap: int = 4096
    default_max_tokens: int = 256
    max_queue: int = 256
    max_batch: int = 16
    # How long the worker waits for more requests before it starts a batch: requests that arrive together share
    # one (a batch runs to its end before the next starts, so a late arrival waits for all of it).
    batch_window_s: float = 0.02
    # LoRA: requests for different adapters share a batch, one adapter per row.
    mixed_batches: bool = True
    retrieval_k: int = 4  # with `serve --index`: passages retrieved per chat request (as many as fit are used)


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    temperature: float = Field(1.0, ge=0, le=2)  # OpenAI's default; 0 is greedy
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=1)  # not OpenAI's: send it with extra_body={"top_k": 40}
    max_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else self.stop or []
        return [s for s in stops if s]


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def as_message(self) -> dict[str, str]:
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class ChatRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # the newer name of max_tokens
    retrieval: bool = True  # not OpenAI's: with `serve --index`, extra_body={"retrieval": False} skips it


class CompletionRequest(_Request):
    prompt: str | list[str]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_response(rid: str, model: str, text: str, finish: str, use: dict[str, int]) -> dict[str, Any]:
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
    return _envelope(rid, "chat.completion", model) | {"choices": [choice], "usage": use}


def chat_chunk(rid: str, model: str, delta: dict[str, str], finish: str | None) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return _envelope(rid, "chat.completion.chunk", model) | {"choices": [choice]}


def completion_response(rid: str, model: str, text: str, finish: str | None, use: dict | None) -> dict[str, Any]:
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
    body = _envelope(rid, "text_completion", model) | {"choices": [choice]}
    return body | {"usage": use} if use is not None else body


def usage_chunk(rid: str, model: str, obj: str, use: dict[str, int]) -> dict[str, Any]:
    return _envelope(rid, obj, model) | {"choices": [], "usage": use}


def _envelope(rid: str, obj: str, model: str) -> dict[str, Any]:
    return {"id": rid, "object": obj, "created": int(time.time()), "model": model}


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """The text up to the first stop sequence (which is not returned), and whether one was found."""
    ends = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(ends)], True) if ends else (text, False)


class StopFilter:
    """Streamed pieces with the stop sequences cut out: text that could still be the start of a stop sequence is
    held back until the next piece shows whether it is."""

    def __init__(self, stops: list[str]):
        self.stops, self.held, self.stopped = stops, "", False
        self.keep = max((len(s) for s in stops), default=1) - 1

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        text, self.stopped = cut_at_stop(self.held + piece, self.stops)
        if self.stopped or not self.stops:
            self.held = ""
            return text
        split = max(0, len(text) - self.keep)
        self.held = text[split:]
        return text[:split]

    def flush(self) -> str:
        held, self.held = self.held, ""
        return "" if self.stopped else held
