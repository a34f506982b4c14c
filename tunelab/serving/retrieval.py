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
from tunelab.rag import Index, Passage, last_user_turn, with_passages
from tunelab.serving.engine import Engine


async def augment(
    engine: Engine, index: Index, k: int, model: str, messages: list[dict[str, str]], max_tokens: int
) -> tuple[list[dict[str, str]], list[Passage]]:
    """The messages with passages before the last user turn's text, and the passages used (none when there is
    no user turn, or when not even one fits)."""
    turn = last_user_turn(messages)
    target = engine.targets[model]
    if turn is None or not messages[turn]["content"].strip() or not _renders(engine, target, messages):
        return messages, []  # nothing to retrieve for; messages the template refuses get their 400 from prepare()
    found = await asyncio.to_thread(index.search, messages[turn]["content"], k)  # ~15 ms of encoder work
    budget = engine.context_window() - max_tokens

    def fits(candidate: list[dict[str, str]]) -> bool:
        return len(encode_prompt(engine.loaded.tokenizer, candidate, target.template, target.system)) <= budget

    return with_passages(messages, found, fits)


def _renders(engine: Engine, target: Any, messages: list[dict[str, str]]) -> bool:
    try:
        encode_prompt(engine.loaded.tokenizer, messages, target.template, target.system)
    except Exception:  # the chat template refused these messages (say, roles out of order)
        return False
    return True


def passages_field(passages: list[Passage]) -> dict[str, Any]:
    return {"passages": [p.as_dict() for p in passages]}
