"""Retrieved passages into a prompt: one layout for the `rag` arms of `tunelab compare`, `tunelab serve --index`,
and training rows that teach a model to read context (examples/larkspur_docs/make_data.py uses it too, so the
fine-tune sees at training time exactly what it sees at test and serve time)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

INSTRUCTION = "Answer using the passages below when they help."


@dataclass(frozen=True)
class Passage:
    source: str  # the document it came from (file name relative to the indexed folder, or a row id)
    text: str
    score: float = 0.0  # the retriever's score (fused rank score for hybrid retrieval)
    chunk: int = 0  # the chunk's number within its document

    def as_dict(self) -> dict[str, object]:
        return {"source": self.source, "chunk": self.chunk, "score": round(self.score, 6), "text": self.text}


def context_prompt(question: str, passages: Sequence[Passage]) -> str:
    """The question with numbered passages before it; the question alone when there are none."""
    if not passages:
        return question
    blocks = [f"[{i}] {p.source}\n{p.text.strip()}" for i, p in enumerate(passages, 1)]
    return "\n\n".join([INSTRUCTION, *blocks, f"Question: {question}"])


Messages = list[dict[str, str]]


def last_user_turn(messages: Messages) -> int | None:
    return next((i for i in range(len(messages) - 1, -1, -1) if messages[i]["role"] == "user"), None)


def with_passages(
    messages: Messages, passages: Sequence[Passage], fits: Callable[[Messages], bool]
) -> tuple[Messages, list[Passage]]:
    """The messages with the most passages, best first, before the last user turn's text that still `fits` (the
    caller's check against the model's window: prompt tokens plus the answer's budget), and the passages used;
    the messages as they were when there is no user turn or not even one passage fits."""
    turn = last_user_turn(messages)
    if turn is None:
        return messages, []
    question = messages[turn]["content"]

    def placed(chosen: Sequence[Passage]) -> Messages:
        content = context_prompt(question, chosen)
        return [*messages[:turn], {"role": "user", "content": content}, *messages[turn + 1 :]]

    for n in range(len(passages), 0, -1):
        if fits(placed(passages[:n])):
            return placed(passages[:n]), list(passages[:n])
    return messages, []
