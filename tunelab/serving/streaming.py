"""Server-sent events in OpenAI's chunk format: `data: {chunk}` per piece of text, then `data: [DONE]`.

The worker thread hands pieces to the event loop (`call_soon_threadsafe`); when the client goes away or a stop
sequence is reached, the job's cancel event stops generation at the next token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from tunelab.serving import protocol
from tunelab.serving.engine import Engine, Job


@dataclass(frozen=True)
class StreamSpec:
    """What one streamed answer needs: its id, model name, stop sequences, token budget and prompt size."""

    rid: str
    model: str
    stops: list[str]
    max_tokens: int
    prompt_tokens: int
    include_usage: bool
    chat: bool
    extra: dict[str, Any] = field(default_factory=dict)  # fields of the first chunk beside OpenAI's (passages)


def start(engine: Engine, model: str, prompt: Any, decoding: Any, stops: list[str]) -> tuple[Job, asyncio.Queue]:
    """Queue a streamed job (QueueFullError before any byte is sent, so the client gets a 429)."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue = asyncio.Queue()

    def emit(item: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: the server is shutting down
            loop.call_soon_threadsafe(pieces.put_nowait, item)

    job = Job(model, prompt, decoding, tuple(stops), emit)
    engine.submit(job)
    return job, pieces


async def events(job: Job, pieces: asyncio.Queue, spec: StreamSpec, count: Callable[[str], int]) -> AsyncIterator[str]:
    """The SSE lines of one answer; `count(text)` gives its token count for `usage` and `finish_reason`."""
    stop = protocol.StopFilter(spec.stops)
    sent: list[str] = []
    try:
        if spec.chat:
            first = protocol.chat_chunk(spec.rid, spec.model, {"role": "assistant", "content": ""}, None)
            yield _data(first | spec.extra)
        while (item := await pieces.get()) is not None and not stop.stopped:
            if isinstance(item, BaseException):
                failed = f"generation failed: {type(item).__name__}"
                yield _data({"error": {"message": failed, "type": "server_error", "code": "internal_error"}})
                return
            if text := stop.feed(item):
                sent.append(text)
                yield _data(_chunk(spec, text, None))
        if text := stop.flush():
            sent.append(text)
            yield _data(_chunk(spec, text, None))
        tokens = count("".join(sent))
        finish = "stop" if stop.stopped or tokens < spec.max_tokens else "length"
        yield _data(_chunk(spec, None, finish))
        if spec.include_usage:
            obj = "chat.completion.chunk" if spec.chat else "text_completion"
            yield _data(protocol.usage_chunk(spec.rid, spec.model, obj, protocol.usage(spec.prompt_tokens, tokens)))
        yield "data: [DONE]\n\n"
    finally:
        job.cancel.set()


def _chunk(spec: StreamSpec, text: str | None, finish: str | None) -> dict[str, Any]:
    if spec.chat:
        return protocol.chat_chunk(spec.rid, spec.model, {"content": text} if text is not None else {}, finish)
    return protocol.completion_response(spec.rid, spec.model, text or "", finish, None)


def _data(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"
