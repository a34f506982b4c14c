"""The judge: a model that says, for one answer and one rule, whether the answer breaks the rule.

    judge = open_judge("smollm2-135m-instruct")                       # any model or run tunelab loads
    judge = open_judge("http://127.0.0.1:8001/v1", model="tickets")  # any OpenAI-compatible endpoint
    verdicts = judge_answers(judge, template, rules, prompts, answers)  # one Verdict per (answer, rule)

A local judge is not asked to write: its next-token probabilities of "yes" and "no" after the question are
read in one forward pass, so every question gets a verdict (no reply to parse) and a probability, and a batch of
questions costs one forward instead of a generation. An endpoint judge writes a short reply; its first word
decides (yes / no), anything else is an unclear verdict, kept with its raw text for a person to read.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from tunelab import artifacts, models
from tunelab.config import ModelConfig
from tunelab.console import info
from tunelab.data.templates import encode_prompt
from tunelab.errors import ConfigError, TunelabError
from tunelab.evaluation.rules import Verdict, judge_question, read_judge_prompt, read_rules
from tunelab.inference.generation import left_pad
from tunelab.inference.loading import Loaded, load_for_inference
from tunelab.models.modes import eval_mode
from tunelab.models.tasks import CAUSAL_LM, model_task

Answer = tuple[bool | None, str, float | None]  # breaks, raw reply, p_break
API_KEY_ENV = "TUNELAB_JUDGE_API_KEY"
_FIRST_WORD = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)


def local_description(model: str) -> dict[str, Any]:
    return {"kind": "local", "model": model, "verdict": "P(yes) > P(no) for the next token"}


def endpoint_description(url: str, model: str) -> dict[str, Any]:
    return {"kind": "endpoint", "url": url, "model": model, "verdict": "first word of the reply"}


class Judge(Protocol):
    def ask(self, questions: list[str]) -> list[Answer]: ...

    def describe(self) -> dict[str, Any]: ...


def judge_answers(
    judge: Judge, template: str, rules: list[str], prompts: list[str], answers: list[str]
) -> list[list[Verdict]]:
    """For each answer, one Verdict per rule (in rule order)."""
    questions = [judge_question(template, rule, p, a) for p, a in zip(prompts, answers, strict=True) for rule in rules]
    replies = judge.ask(questions)
    n = len(rules)
    return [[Verdict(r, *replies[i * n + r]) for r in range(n)] for i in range(len(answers))]


@dataclass
class LocalJudge:
    """A causal LM loaded in this process; "yes" against "no" read from its next-token distribution."""

    loaded: Loaded
    batch_size: int = 8
    # Below this much probability on "yes" and "no" together, the judge would say something else: an unclear verdict
    # rather than a coin flip between two words it does not mean.
    min_mass: float = 1e-3
    yes_ids: list[int] = field(init=False)
    no_ids: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.yes_ids, self.no_ids = word_ids(self.loaded.tokenizer, "yes"), word_ids(self.loaded.tokenizer, "no")
        if not self.yes_ids or not self.no_ids:
            raise ConfigError(
                f"judge {self.loaded.source}: its tokenizer has no single token for 'yes' or 'no'",
                ["use another judge model, or an OpenAI-compatible endpoint (--judge http://HOST:PORT/v1)"],
            )

    def describe(self) -> dict[str, Any]:
        return local_description(self.loaded.source)

    def ask(self, questions: list[str]) -> list[Answer]:
        tok = self.loaded.tokenizer
        encoded = [encode_prompt(tok, q, self.loaded.template) for q in questions]
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))  # similar lengths share a batch
        out: list[Answer] = [(None, "", None)] * len(encoded)
        with eval_mode(self.loaded.model), torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                probs = self._next_token_probs([encoded[i] for i in batch])
                for i, row in zip(batch, probs, strict=True):
                    out[i] = self._answer(row)
        return out

    def _next_token_probs(self, ids: list[list[int]]) -> torch.Tensor:
        device = next(self.loaded.model.parameters()).device
        input_ids, mask = left_pad(ids, self.loaded.tokenizer.pad_token_id or 0, device)
        # Left padding: positions count real tokens only, so a padded row sees the positions it would alone.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.loaded.model(input_ids=input_ids, attention_mask=mask, position_ids=positions).logits
        return torch.softmax(logits[:, -1].float(), dim=-1).cpu()

    def _answer(self, probs: torch.Tensor) -> Answer:
        p_yes, p_no = float(probs[self.yes_ids].sum()), float(probs[self.no_ids].sum())
        top = self.loaded.tokenizer.decode([int(probs.argmax())])
        raw = f"P(yes)={p_yes:.4f} P(no)={p_no:.4f}; most likely next token {top!r}"
        if p_yes + p_no < self.min_mass:
            return None, raw, None
        p_break = p_yes / (p_yes + p_no)
        return p_break > 0.5, raw, p_break


def word_ids(tokenizer: Any, word: str) -> list[int]:
    """Ids of the single tokens that read as `word` in any case, with or without a leading space."""
    ids = set()
    for variant in (word, word.capitalize(), word.upper()):
        for text in (variant, " " + variant):
            pieces = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(pieces) == 1 and tokenizer.decode(pieces).strip().lower() == word:
                ids.add(pieces[0])
    return sorted(ids)


@dataclass
class EndpointJudge:
    """An OpenAI-compatible chat endpoint (another `tunelab serve`, vLLM, llama.cpp's server, OpenAI itself),
    asked greedily for a short reply; requests go out concurrently so a batching server can batch them."""

    url: str
    model: str
    client: Any
    concurrency: int = 8

    def describe(self) -> dict[str, Any]:
        return endpoint_description(self.url, self.model)

    def ask(self, questions: list[str]) -> list[Answer]:
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(self._ask_one, questions))

    def _ask_one(self, question: str) -> Answer:
        reply = endpoint_call(
            self.url,
            lambda: self.client.chat.completions.create(
                model=self.model, messages=[{"role": "user", "content": question}], max_tokens=8, temperature=0
            ),
        )
        raw = reply.choices[0].message.content or ""
        word = _FIRST_WORD.match(raw)
        return (word[1].lower() == "yes" if word else None), raw, None


def endpoint_call(url: str, call: Any) -> Any:
    """`call()`, with the client's errors turned into one line that says what to fix."""
    import openai  # deferred: ~0.4 s, and only endpoint judges need it

    try:
        return call()
    except openai.APIConnectionError:
        raise ConfigError(
            f"judge {url}: cannot connect", ["start it (tunelab serve MODEL --port PORT) or check --judge"]
        ) from None
    except openai.AuthenticationError:
        raise ConfigError(f"judge {url}: the API key was refused; set {API_KEY_ENV}") from None
    except openai.APIStatusError as exc:
        raise ConfigError(f"judge {url}: HTTP {exc.status_code}: {_message(exc)}") from None


def _message(exc: Any) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    return str(body.get("message") or body.get("error", {}).get("message") or exc.message)


def is_endpoint(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def check_judge(spec: str, model: str | None = None, trust_remote_code: bool = False) -> tuple[Any, str] | None:
    """What can be checked before any answer is generated: the endpoint answers (and has the model), or the
    model exists and is a causal LM. Returns the endpoint's (client, model name), or None for a local judge."""
    if is_endpoint(spec):
        return _endpoint_client(spec, model)
    if artifacts.looks_like_run(spec):
        artifacts.open_run(spec)
        return None
    if model is not None:
        raise ConfigError("--judge-model names a model on an endpoint; with a local judge give only --judge")
    try:
        task = models.resolve_task(ModelConfig(name=spec, trust_remote_code=trust_remote_code))
    except TunelabError as exc:  # said of model.name; here the model is the judge's
        raise ConfigError(f"--judge {spec}: {exc.args[0].removeprefix('model.name: ')}", exc.problems) from None
    if task != CAUSAL_LM:
        raise ConfigError(f"--judge {spec}: a {task} model cannot judge; give a chat (causal LM) model")
    return None


def _endpoint_client(url: str, model: str | None) -> tuple[Any, str]:
    import openai

    client = openai.OpenAI(base_url=url, api_key=os.environ.get(API_KEY_ENV, "none"), timeout=300, max_retries=1)
    served = [m.id for m in endpoint_call(url, client.models.list).data]
    if model is None and served:
        model = served[0]
    if model not in served:
        raise ConfigError(f"judge {url}: no model {model!r}", [f"it serves: {', '.join(served) or 'nothing'}"])
    return client, model


def open_judge(spec: str, model: str | None = None, trust_remote_code: bool = False, batch_size: int = 8) -> Judge:
    """A judge from a model reference (loaded here) or an endpoint URL (with `model`, default its first)."""
    if is_endpoint(spec):
        client, name = _endpoint_client(spec, model)
        return EndpointJudge(spec, name, client)
    loaded = load_for_inference(spec, trust_remote_code=trust_remote_code)
    if model_task(loaded.model) != CAUSAL_LM:  # a classifier run, say: it has no next token to read
        raise ConfigError(f"--judge {spec}: a {model_task(loaded.model)} model cannot judge; give a chat model")
    return LocalJudge(loaded, batch_size)


@dataclass(frozen=True)
class RulesCheck:
    """Rules, the judge's prompt and the judge, checked before any answer is generated (`prepare`)."""

    rules: list[str]
    template: str
    judge: str
    judge_model: str | None = None
    trust_remote_code: bool = False
    description: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def prepare(
        cls,
        rules_path: Path | None,
        judge: str | None,
        judge_model: str | None = None,
        judge_prompt: Path | None = None,
        trust_remote_code: bool = False,
    ) -> RulesCheck | None:
        """None when no rules are given; a ConfigError for rules without a judge (or a judge without rules)."""
        if rules_path is None:
            if judge is not None or judge_prompt is not None:
                raise ConfigError("--judge and --judge-prompt need --rules FILE: the rules the judge checks")
            return None
        if judge is None:
            raise ConfigError(
                "--rules needs --judge: a model or run (--judge runs/judge) or an endpoint (--judge http://HOST:PORT/v1)"
            )
        rules, template = read_rules(rules_path), read_judge_prompt(judge_prompt)
        checked = check_judge(judge, judge_model, trust_remote_code)
        described = endpoint_description(judge, checked[1]) if checked else local_description(judge)
        return cls(rules, template, judge, judge_model, trust_remote_code, described)

    def open(self) -> Judge:
        return open_judge(self.judge, self.judge_model, self.trust_remote_code)

    def audit(self) -> dict[str, Any]:
        """What a person needs to check the verdicts: the judge, its prompt and the numbered rules."""
        numbered = {str(i): rule for i, rule in enumerate(self.rules, start=1)}
        return {"judge": self.description, "judge_prompt": self.template, "rules": numbered}


def judge_texts(check: RulesCheck, prompts: list[str], answers: list[str]) -> list[list[Verdict]]:
    """Open the judge, and for each answer one Verdict per rule; the judge is freed afterwards."""
    judge = check.open()
    info(f"judging {len(answers)} answers against {len(check.rules)} rule(s) with {judge.describe()['model']}")
    return judge_answers(judge, check.template, check.rules, prompts, answers)
