"""Render rows with the prompt template, tokenize them once, and mark which tokens are trained.

    encoded = encode_rows(tokenizer, rows, fmt, cfg.data)

Trained text is found as character spans in the fully rendered conversation (each trained assistant turn:
its content through the EOS that ends it), then mapped onto tokens with the fast tokenizer's offsets. The
whole text is tokenized at once, so token boundaries are the ones the model sees (the one exception, a
token straddling a completion's start, is in `_tokenize_cut`); labels never come from pad ids (for many
models pad == eos, and the EOS must be trained).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunelab.config import DataConfig
from tunelab.data import formats
from tunelab.data.messages import Row
from tunelab.data.problems import Problem, RowError
from tunelab.data.templates import (
    Message,
    adds_special_tokens,
    apply_chat_template,
    is_custom_template,
    plain_template,
    render_plain,
    uses_chat_template,
    with_system,
)
from tunelab.errors import ConfigError, DataError

IGNORE = -100  # label of a token that is not trained (the loss skips it)
BATCH = 512  # rows per tokenizer call


class TemplateMismatch(Exception):
    """The template renders earlier turns differently once later turns follow (e.g. it drops them)."""


@dataclass(frozen=True)
class Encoded:
    """One row, rendered and tokenized: `trained[i]` says whether token i is learned."""

    row: Row
    text: str
    input_ids: list[int]
    offsets: list[tuple[int, int]]
    trained: list[bool]

    @property
    def labels(self) -> list[int]:
        return [t if keep else IGNORE for t, keep in zip(self.input_ids, self.trained, strict=True)]

    @property
    def prompt_length(self) -> int:
        """Tokens before the first trained one."""
        return next((i for i, keep in enumerate(self.trained) if keep), len(self.trained))


def template_name(tokenizer: Any, template: str, fmt: str) -> str:
    """How rows of `fmt` are rendered: raw, custom, chat_template, or the plain template's name."""
    if formats.get(fmt).RAW:
        return "raw"
    if is_custom_template(template):
        return "custom"
    if uses_chat_template(tokenizer, template):
        return "chat_template"
    return "plain" if template == "auto" else template


def check_tokenizer(tokenizer: Any, data: DataConfig) -> None:
    """Template and tokenizer problems, found before any row is rendered."""
    if not getattr(tokenizer, "is_fast", False):
        raise DataError("the tokenizer is not a fast tokenizer", ["token labels need offset mappings; use a fast one"])
    if not tokenizer.eos_token:
        raise DataError(
            "the tokenizer has no EOS token", ["the model could not learn to stop; set tokenizer.eos_token"]
        )
    if data.template == "chat_template" and not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            "data.template=chat_template, but the tokenizer has no chat template",
            ["data.template: use auto or plain, or give a Jinja chat template string"],
        )
    if not uses_chat_template(tokenizer, data.template):
        try:
            plain_template(data.template)
        except ValueError as exc:
            raise ConfigError(f"data.template: {exc}", [f"data.template: {exc}"]) from None


def render(tokenizer: Any, messages: list[Message], template: str, add_generation_prompt: bool) -> str:
    if uses_chat_template(tokenizer, template):
        return apply_chat_template(tokenizer, messages, template, add_generation_prompt)
    return render_plain(tokenizer, messages, template, add_generation_prompt)


def training_text(
    tokenizer: Any, messages: list[Message], template: str = "auto", system: str | None = None
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation up to the last trained EOS, and the trained character spans.

    Each trained assistant turn starts right where `render_prompt` of the turns before it ends, so
    generation continues from exactly the prefix the model was trained on.
    """
    messages = with_system(messages, system)
    full = render(tokenizer, messages, template, add_generation_prompt=False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant" or m.get("weight", 1) == 0:
            continue
        prompt = render(tokenizer, messages[:i], template, add_generation_prompt=True)
        turn = full if i == len(messages) - 1 else render(tokenizer, messages[: i + 1], template, False)
        spans.append(_assistant_span(prompt, turn, full, m["content"], tokenizer.eos_token))
    if not spans:
        raise ValueError("training_text needs at least one trained assistant message")
    return full[: spans[-1][1]], spans


def _assistant_span(prompt: str, turn: str, full: str, content: str, eos: str) -> tuple[int, int]:
    if not (turn.startswith(prompt) and full.startswith(turn)):
        raise TemplateMismatch("the prompt of an assistant turn is not a prefix of the rendered conversation")
    body = content.strip()  # some templates trim message content
    at = turn.find(body, len(prompt))
    if at < 0:
        raise TemplateMismatch("the assistant content does not appear after its prompt")
    eos_at = turn.find(eos, at + len(body))
    if eos_at < 0:
        raise TemplateMismatch(f"the assistant turn does not end with the EOS token {eos!r}")
    return len(prompt), eos_at + len(eos)


def trained_mask(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[bool]:
    """A token is trained when its characters overlap a trained span; added tokens (offsets (0, 0)) are not."""
    return [b > a and any(a < end and b > start for start, end in spans) for a, b in offsets]


def encode_rows(tokenizer: Any, rows: list[Row], fmt: str, data: DataConfig) -> list[Encoded]:
    """Render and tokenize every row (no length checks)."""
    raw = formats.get(fmt).RAW
    rendered = [_render_row(tokenizer, row, raw, data) for row in rows]
    special = True if raw else adds_special_tokens(tokenizer, data.template)
    out: list[Encoded] = []
    for start in range(0, len(rendered), BATCH):
        chunk = rendered[start : start + BATCH]
        enc = tokenizer([text for _, text, _ in chunk], return_offsets_mapping=True, add_special_tokens=special)
        for (row, text, spans), ids, offsets in zip(chunk, enc["input_ids"], enc["offset_mapping"], strict=True):
            ids, offsets = list(ids), [tuple(o) for o in offsets]
            cuts = [s for s, _ in spans if any(a < s < b for a, b in offsets)]
            if cuts:
                ids, offsets = _tokenize_cut(tokenizer, text, cuts, special)
            out.append(Encoded(row, text, ids, offsets, trained_mask(offsets, spans)))
    return out


def _tokenize_cut(
    tokenizer: Any, text: str, cuts: list[int], special: bool
) -> tuple[list[int], list[tuple[int, int]]]:
    """Tokenize with forced token boundaries at `cuts`.

    Needed only when a token straddles the start of a completion, e.g. a prompt ending in a space before
    "Paris" tokenizes as " Paris". Generation feeds the prompt tokenized alone (ending in " "), so training
    must too, or the model learns a continuation it is never asked for.
    """
    ids: list[int] = []
    offsets: list[tuple[int, int]] = []
    bounds = [0, *cuts, len(text)]
    for i, (lo, hi) in enumerate(zip(bounds, bounds[1:], strict=False)):
        enc = tokenizer(text[lo:hi], return_offsets_mapping=True, add_special_tokens=special and i == 0)
        ids += enc["input_ids"]
        offsets += [(a + lo, b + lo) if b > a else (a, b) for a, b in enc["offset_mapping"]]
    return ids, offsets


def _render_row(tokenizer: Any, row: Row, raw: bool, data: DataConfig) -> tuple[Row, str, list[tuple[int, int]]]:
    if raw:  # continued pre-training: the text as is, then EOS, all of it trained
        text = row.messages[0]["content"] + tokenizer.eos_token
        return row, text, [(0, len(text))]
    try:
        text, spans = training_text(tokenizer, row.messages, data.template, data.system)
    except TemplateMismatch as exc:
        name = template_name(tokenizer, data.template, "chat")
        raise DataError(
            f"the {name} template cannot be trained on with exact prompt masking",
            [
                f"{row.where}: {exc}; use data.template=plain, or a chat template that renders earlier turns "
                "unchanged and ends assistant turns with the EOS token"
            ],
        ) from None
    return row, text, spans


def check_lengths(encoded: list[Encoded], fmt: str, max_len: int) -> tuple[list[Encoded], list[Problem]]:
    """Rows whose prompt fills max_seq_length, or whose completion + EOS would be cut, are bad rows.

    Raw text is never too long: it is split into blocks instead (see `blocks`).
    """
    module = formats.get(fmt)
    if module.RAW:
        return encoded, []
    kept, problems = [], []
    for enc in encoded:
        err = length_error(enc, max_len, module.PROMPT_FIELD, module.COMPLETION_FIELD)
        if err is None:
            kept.append(enc)
        else:
            problems.append(Problem.of(enc.row.where, err))
    return kept, problems


def length_error(enc: Encoded, max_len: int, prompt_field: str, completion_field: str) -> RowError | None:
    n, prompt = len(enc.input_ids), enc.prompt_length
    if prompt >= max_len:
        return RowError(
            "prompt_too_long",
            prompt_field,
            f"the prompt alone is {prompt} tokens and train.max_seq_length is {max_len}: nothing is left to learn",
            "shorten the prompt, or raise train.max_seq_length",
        )
    if n > max_len:
        return RowError(
            "truncated",
            completion_field,
            f"the row is {n} tokens, {n - max_len} over train.max_seq_length={max_len}: the end of the "
            "completion and its EOS would be cut off, so the model would not learn to stop",
            f"shorten the row by {n - max_len} tokens, or raise train.max_seq_length",
        )
    return None


def blocks(ids: list[int], size: int) -> list[tuple[list[int], list[int]]]:
    """Split a long raw text into (input_ids, labels) blocks of at most `size` tokens, losing nothing.

    Each block after the first repeats the previous block's last token as untrained context, so every
    token but the very first is predicted exactly once (a causal LM never predicts a block's first token).
    """
    if len(ids) <= size:
        return [(ids, list(ids))]
    out, start = [], 0
    while True:
        chunk = ids[start : start + size]
        out.append((chunk, list(chunk) if start == 0 else [IGNORE, *chunk[1:]]))
        if start + size >= len(ids):
            return out
        start += size - 1


def examples(encoded: list[Encoded], fmt: str, max_len: int) -> dict[str, list[list[int]]]:
    """Columns input_ids, attention_mask, labels (unpadded) for a datasets.Dataset."""
    cols: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
    raw = formats.get(fmt).RAW
    for enc in encoded:
        parts = blocks(enc.input_ids, max_len) if raw else [(enc.input_ids, enc.labels)]
        for ids, labels in parts:
            cols["input_ids"].append(ids)
            cols["attention_mask"].append([1] * len(ids))
            cols["labels"].append(labels)
    return cols
