"""`tunelab serve --index DIR`: chat requests answered with passages retrieved for their last user message.

The passages go before the question in that message (the layout of `tunelab compare`'s rag arms), as many as
fit the context window beside the request's max_tokens; the response names them in an extra field,
`passages` (source, chunk, score, text), which the OpenAI client keeps (`response.model_extra["passages"]`).
A request opts out with `extra_body={"retrieval": False}`. Completions (raw prompts) are never changed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tunelab.data.templates import encode_prompt
from tunelab.rag import Index, Passage, context_prompt, fit_passages
from tunelab.serving.engine import Engine


def last_user_turn(messages: list[dict[str, str]]) -> int | None:
    return next((i for i in range(len(messages) - 1, -1, -1) if messages[i]["role"] == "user"), None)


async def augment(
    engine: Engine, index: Index, k: int, model: str, messages: list[dict[str, str]], max_tokens: int
) -> tuple[list[dict[str, str]], list[Passage]]:
    """The messages with passages before the last user turn's text, and the passages used (none when there is
    no user turn, or when not even one fits)."""
    turn = last_user_turn(messages)
    target = engine.targets[model]
    if turn is None or not messages[turn]["content"].strip() or not _renders(engine, target, messages):
        return messages, []  # nothing to retrieve for; messages the template refuses get their 400 from prepare()
    question = messages[turn]["content"]
    found = await asyncio.to_thread(index.search, question, k)  # ~15 ms of encoder work off the event loop
    budget = engine.context_window() - max_tokens

    def with_context(content: str) -> list[dict[str, str]]:
        return [*messages[:turn], {"role": "user", "content": content}, *messages[turn + 1 :]]

    def fits(content: str) -> bool:
        tokens = encode_prompt(engine.loaded.tokenizer, with_context(content), target.template, target.system)
        return len(tokens) <= budget

    used = fit_passages(question, found, fits)
    return with_context(context_prompt(question, used)), used


def _renders(engine: Engine, target: Any, messages: list[dict[str, str]]) -> bool:
    try:
        encode_prompt(engine.loaded.tokenizer, messages, target.template, target.system)
    except Exception:  # the chat template refused these messages (say, roles out of order)
        return False
    return True


def passages_field(passages: list[Passage]) -> dict[str, Any]:
    return {"passages": [p.as_dict() for p in passages]}
