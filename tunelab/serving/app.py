"""The FastAPI app: OpenAI's endpoints over an `Engine`, with auth, limits and errors in OpenAI's shape.

    app = build_app(load_engine(["runs/tickets"]).start(), ServerSettings(api_key="secret"))

Model names are looked up in the engine's loaded set and nowhere else: a name is never a path.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import StreamingResponse

from tunelab.data.templates import encode_prompt
from tunelab.inference.generation import Decoding, Prompt
from tunelab.rag import Index
from tunelab.serving import api_errors, protocol, retrieval, streaming
from tunelab.serving.api_errors import ApiError
from tunelab.serving.engine import Engine, Job, QueueFullError
from tunelab.serving.protocol import ChatRequest, CompletionRequest, ServerSettings


@dataclass(frozen=True)
class Prepared:
    model: str
    prompt: Prompt
    decoding: Decoding
    prompt_tokens: int


def build_app(engine: Engine, settings: ServerSettings, index: Index | None = None) -> FastAPI:
    """The app over `engine`; with an `index`, chat requests get retrieved passages (serving/retrieval.py)."""
    app = FastAPI(title="tunelab", docs_url=None, redoc_url=None, openapi_url=None)
    api_errors.install(app)
    app.add_middleware(api_errors.BodyLimit, limit=settings.max_body_bytes)
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(authorizer(settings.api_key))])

    @app.get("/health")
    async def health() -> dict[str, Any]:
        model = engine.loaded.model
        placement = {"device": str(model.device), "dtype": str(model.dtype).removeprefix("torch.")}
        return {"status": "ok", "models": list(engine.targets), "context_window": engine.context_window()} | placement

    @v1.get("/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(name) for name in engine.targets]}

    @v1.get("/models/{name:path}")
    async def get_model(name: str) -> dict[str, Any]:
        return _model_card(target_name(engine, name))

    @v1.post("/chat/completions")
    async def chat(req: ChatRequest) -> Any:
        prompt = [m.as_message() for m in req.messages]
        max_tokens = req.max_completion_tokens or req.max_tokens
        if index is None or not req.retrieval:
            return await answer(engine, settings, req, prompt, max_tokens, chat=True)
        model, budget = target_name(engine, req.model), max_tokens or settings.default_max_tokens
        prompt, used = await retrieval.augment(engine, index, settings.retrieval_k, model, prompt, budget)
        return await answer(engine, settings, req, prompt, max_tokens, chat=True, extra=retrieval.passages_field(used))

    @v1.post("/completions")
    async def completions(req: CompletionRequest) -> Any:
        if isinstance(req.prompt, list) and len(req.prompt) != 1:
            raise ApiError(400, "prompt: give one prompt (a string); batches of prompts are not served", "invalid_n")
        prompt = req.prompt if isinstance(req.prompt, str) else req.prompt[0]
        return await answer(engine, settings, req, prompt, req.max_tokens, chat=False)

    app.include_router(v1)
    return app


def authorizer(api_key: str | None) -> Any:
    async def authorize(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), api_key.encode()):
            raise ApiError(401, "missing or wrong API key: send Authorization: Bearer <key>", "invalid_api_key")

    return authorize


def target_name(engine: Engine, name: str) -> str:
    if name not in engine.targets:
        valid = ", ".join(engine.targets)
        raise ApiError(404, f"model {name!r} is not served here; models: {valid}", "model_not_found")
    return name


def _model_card(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "tunelab"}


async def answer(
    engine: Engine,
    settings: ServerSettings,
    req: Any,
    prompt: Prompt,
    max_tokens: int | None,
    chat: bool,
    extra: dict[str, Any] | None = None,
) -> Any:
    """The request's answer, whole or streamed; `extra` fields join the response (or a stream's first chunk)."""
    extra = extra or {}
    prepared = prepare(engine, settings, req, prompt, max_tokens)
    rid = protocol.new_id("chatcmpl" if chat else "cmpl")
    if req.stream:
        spec = streaming.StreamSpec(
            rid,
            prepared.model,
            req.stops(),
            prepared.decoding.max_new_tokens,
            prepared.prompt_tokens,
            bool(req.stream_options and req.stream_options.include_usage),
            chat,
            extra,
        )
        job, pieces = _queued(
            lambda: streaming.start(engine, prepared.model, prepared.prompt, prepared.decoding, spec.stops)
        )
        lines = streaming.events(job, pieces, spec, lambda text: count_tokens(engine, text))
        return StreamingResponse(lines, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    job = Job(prepared.model, prepared.prompt, prepared.decoding, tuple(req.stops()))
    _queued(lambda: engine.submit(job))
    text, stopped = protocol.cut_at_stop(await asyncio.wrap_future(job.future), req.stops())
    tokens = count_tokens(engine, text)
    finish = "stop" if stopped or tokens < prepared.decoding.max_new_tokens else "length"
    use = protocol.usage(prepared.prompt_tokens, tokens)
    if chat:
        return protocol.chat_response(rid, prepared.model, text, finish, use) | extra
    return protocol.completion_response(rid, prepared.model, text, finish, use)


def _queued(submit: Any) -> Any:
    try:
        return submit()
    except QueueFullError as exc:
        raise ApiError(429, f"server busy: {exc}; retry shortly", "queue_full", {"Retry-After": "1"}) from None


def prepare(engine: Engine, settings: ServerSettings, req: Any, prompt: Prompt, max_tokens: int | None) -> Prepared:
    """Every check a request needs before it is queued: n, model, token budget, decoding, context window."""
    if req.n != 1:
        raise ApiError(400, f"n={req.n}: only n=1 is served; send n requests instead", "invalid_n")
    model = target_name(engine, req.model)
    max_tokens = max_tokens or settings.default_max_tokens
    if max_tokens > settings.max_tokens_cap:
        cap = settings.max_tokens_cap
        raise ApiError(400, f"max_tokens={max_tokens} is over this server's cap {cap}", "max_tokens_over_cap")
    decoding = decoding_for(req, max_tokens)
    target = engine.targets[model]
    try:
        prompt_tokens = len(encode_prompt(engine.loaded.tokenizer, prompt, target.template, target.system))
    except Exception as exc:  # the chat template refused these messages (say, roles out of order)
        raise ApiError(400, f"messages: the model's template cannot render them: {exc}", "invalid_messages") from None
    window = engine.context_window()
    if prompt_tokens + max_tokens > window:
        raise ApiError(
            400,
            f"the prompt ({prompt_tokens} tokens) and max_tokens ({max_tokens}) exceed the context window ({window})",
            "context_length_exceeded",
        )
    return Prepared(model, prompt, decoding, prompt_tokens)


def decoding_for(req: Any, max_tokens: int) -> Decoding:
    """Greedy requests drop the sampling options they do not use, so they batch with each other."""
    if req.temperature == 0:
        return Decoding(max_tokens)
    try:
        return Decoding(max_tokens, req.temperature, req.top_k, req.top_p, req.seed)
    except ValueError as exc:
        raise ApiError(400, str(exc), "invalid_decoding") from None


def count_tokens(engine: Engine, text: str) -> int:
    return len(engine.loaded.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0
