"""Prompt templates: how a conversation becomes text, the same at training and at generation time.

`render_prompt` is what generation feeds the model; training renders the same prompt and appends
the completion, so the tuned model sees at inference exactly the layout it learned.
"""

from __future__ import annotations

from typing import Any

Message = dict[str, Any]  # {"role": "system"|"user"|"assistant", "content": str, "weight": 0|1 (optional)}

# Named plain templates for models without a chat template. Each turn is rendered as
# user_prefix + user + assistant_prefix; the assistant text follows, then the EOS token.
PLAIN_TEMPLATES: dict[str, dict[str, str]] = {
    "plain": {
        "system": "{system}\n\n",
        "user": "### Instruction:\n{content}\n\n### Response:\n",
        "after_assistant": "\n\n",
    },
    "alpaca": {
        "system": "{system}\n\n",
        "user": "Below is an instruction that describes a task. Write a response that appropriately completes "
        "the request.\n\n### Instruction:\n{content}\n\n### Response:\n",
        "after_assistant": "\n\n",
    },
}


def uses_chat_template(tokenizer: Any, template: str) -> bool:
    """True when prompts go through a Jinja chat template (the model's own, or a custom one)."""
    if template == "auto":
        return bool(getattr(tokenizer, "chat_template", None))
    return template == "chat_template" or is_custom_template(template)


def is_custom_template(template: str) -> bool:
    return "{{" in template or "{%" in template


def with_system(messages: list[Message], system: str | None) -> list[Message]:
    """Prepend the config's system prompt unless the conversation has its own."""
    if system and not (messages and messages[0]["role"] == "system"):
        return [{"role": "system", "content": system}, *messages]
    return messages


def render_prompt(tokenizer: Any, messages: list[Message], template: str = "auto", system: str | None = None) -> str:
    """The text that asks the model for the next assistant turn (no completion, no EOS)."""
    messages = with_system(messages, system)
    if uses_chat_template(tokenizer, template):
        return apply_chat_template(tokenizer, messages, template, add_generation_prompt=True)
    return render_plain(tokenizer, messages, template, add_generation_prompt=True)


def apply_chat_template(tokenizer: Any, messages: list[Message], template: str, add_generation_prompt: bool) -> str:
    custom = template if is_custom_template(template) else None
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    return tokenizer.apply_chat_template(
        plain, chat_template=custom, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def plain_template(template: str) -> dict[str, str]:
    name = "plain" if template in ("auto", "chat_template") else template
    if name not in PLAIN_TEMPLATES:
        raise ValueError(f"unknown template {template!r}; choose auto, chat_template, {', '.join(PLAIN_TEMPLATES)}")
    return PLAIN_TEMPLATES[name]


def render_plain(tokenizer: Any, messages: list[Message], template: str, add_generation_prompt: bool) -> str:
    """Plain-text rendering; assistant turns end with the EOS token so the model learns to stop."""
    parts = plain_template(template)
    eos = tokenizer.eos_token or ""
    out = []
    for m in messages:
        if m["role"] == "system":
            out.append(parts["system"].format(system=m["content"]))
        elif m["role"] == "user":
            out.append(parts["user"].format(content=m["content"]))
        else:
            out.append(m["content"] + eos + parts["after_assistant"])
    if not add_generation_prompt and out and messages[-1]["role"] == "assistant":
        out[-1] = out[-1][: -len(parts["after_assistant"])] if parts["after_assistant"] else out[-1]
    return "".join(out)


def adds_special_tokens(tokenizer: Any, template: str) -> bool:
    """Whether rendered text is tokenized with `add_special_tokens=True` (training and generation alike).

    A chat template writes its own special tokens (a BOS, if the model wants one), so adding them again
    would double them; plain templates rely on the tokenizer to add its BOS.
    """
    return not uses_chat_template(tokenizer, template)


def encode_prompt(
    tokenizer: Any, prompt: str | list[Message], template: str = "auto", system: str | None = None
) -> list[int]:
    """Token ids asking for the next assistant turn, tokenized as training tokenizes. A str is one user message."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    text = render_prompt(tokenizer, messages, template=template, system=system)
    return tokenizer(text, add_special_tokens=adds_special_tokens(tokenizer, template))["input_ids"]
