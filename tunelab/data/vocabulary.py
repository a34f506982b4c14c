"""Specialized vocabulary: how finely the tokenizer splits your words, and whole tokens for the terms it splits most.

    report = measure(cfg, tokenizer, rows)        # `tunelab inspect-data`: tokens per word here and in general text
    added = add_new_tokens(cfg, tokenizer, rows)  # data.new_tokens (or `auto`'s choice) added to the tokenizer

A term becomes up to two tokens: " term" (after a space, where words mostly stand) and "term" (at the start of a
line, after a bracket or a quote, as an answer's first word). Byte-level BPE tokenizers such as SmolLM2's carry the
space inside the next word's token, so a bare "term" after a space would leave the space as a token of its own.
Each form is added only where the tokenizer splits it into 2+ pieces; the pieces are kept, so the model layer can
start the new embedding row as their mean (tunelab.methods.new_tokens).
"""

from __future__ import annotations

import string
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tunelab.config import RunConfig
from tunelab.console import info
from tunelab.data.replay import builtin_instructions
from tunelab.data.rows import RowSet
from tunelab.errors import ConfigError

# `auto`'s rule: a word of the training rows qualifies when it is seen AUTO_MIN_COUNT+ times (a new row learns only
# from the tokens that use it: a rarer term's row barely moves from its start), split into AUTO_MIN_PIECES+ pieces
# after a space (a 2-piece word saves one token a use), holds a letter (numbers stay digits: SmolLM2 splits every
# number into digits on purpose) and is not a word of general English text (those the base model knows as they are).
# The AUTO_MAX_TERMS that save the most tokens (count x (pieces - 1)) are added.
AUTO_MIN_COUNT = 5
AUTO_MIN_PIECES = 3
AUTO_MAX_TERMS = 50
REPORT_TERMS = 10  # terms `tunelab inspect-data` lists
PUNCTUATION = string.punctuation + "“”‘’«»…"  # stripped from a word's ends: "XK-4471," is the term XK-4471


@dataclass(frozen=True)
class Term:
    term: str
    count: int  # times it occurs in the training rows
    pieces: list[str]  # the tokens it is split into after a space, as text

    @property
    def saved(self) -> int:
        """Tokens a whole-word token would save over the training rows."""
        return self.count * (len(self.pieces) - 1)


@dataclass(frozen=True)
class NewTokens:
    """The tokens added to the tokenizer; `pieces`: each new token id -> the ids of the old pieces it replaces."""

    terms: list[str] = field(default_factory=list)
    pieces: dict[int, list[int]] = field(default_factory=dict)


@dataclass
class VocabularyReport:
    tokens_per_word: float  # on the training rows (every message's text), before any new token
    general_tokens_per_word: float  # on general English text: tunelab's built-in replay set
    fragmented: list[Term]  # the terms `auto` would add, most tokens saved first (the first REPORT_TERMS)
    candidates: int  # how many terms qualify for `auto` in all
    new_tokens: list[str] = field(default_factory=list)  # the terms data.new_tokens adds
    tokens_per_word_after: float | None = None  # on the training rows, with those tokens

    @property
    def ratio(self) -> float:
        return self.tokens_per_word / self.general_tokens_per_word


def measure(cfg: RunConfig, tokenizer: Any, rows: RowSet) -> VocabularyReport:
    """Tokens per word on the training rows and on general text, the most fragmented frequent terms, and (with
    data.new_tokens) tokens per word once those terms are added, which this does to `tokenizer`."""
    texts = training_texts(rows)
    terms = fragmented_terms(tokenizer, texts)
    report = VocabularyReport(
        tokens_per_word=tokens_per_word(tokenizer, texts),
        general_tokens_per_word=tokens_per_word(tokenizer, general_texts()),
        fragmented=terms[:REPORT_TERMS],
        candidates=len(terms),
    )
    added = add_new_tokens(cfg, tokenizer, rows, quiet=True)
    if added.terms:
        report.new_tokens = added.terms
        report.tokens_per_word_after = tokens_per_word(tokenizer, texts)
    return report


def add_new_tokens(cfg: RunConfig, tokenizer: Any, rows: RowSet, quiet: bool = False) -> NewTokens:
    """Add data.new_tokens (the listed terms, or `auto`'s choice) to `tokenizer`, before any model loads. A listed
    term the tokenizer already holds as one token is a ConfigError; one the rows never use is reported."""
    setting = cfg.data.new_tokens
    if not setting:
        return NewTokens()
    texts = training_texts(rows)
    terms = [t.term for t in fragmented_terms(tokenizer, texts)[:AUTO_MAX_TERMS]] if setting == "auto" else setting
    forms = {term: split_forms(tokenizer, term) for term in terms}
    whole = [term for term, split in forms.items() if not split]
    if whole:
        raise ConfigError(
            f"data.new_tokens: {', '.join(map(repr, whole))} already one token in the vocabulary of "
            f"{cfg.model.name}: remove {'it' if len(whole) == 1 else 'them'} from the list"
        )
    pieces = {form: ids for split in forms.values() for form, ids in split.items()}
    add_to_tokenizer(tokenizer, list(pieces))
    added = NewTokens(list(terms), {tokenizer.convert_tokens_to_ids(form): ids for form, ids in pieces.items()})
    if not quiet:
        report_added(setting, added, texts)
    return added


def add_to_tokenizer(tokenizer: Any, forms: list[str]) -> None:
    from tokenizers import AddedToken

    # normalized=False: matched in the text as written. The bare form must stand alone (single_word), so "XK-4471"
    # is not taken out of "aXK-4471"; the spaced form cannot ask that (its own space would fail the word-boundary
    # test), so " XK-4471" also matches the start of " XK-44712" unless that is a new token too (the longest wins).
    tokenizer.add_tokens([AddedToken(form, normalized=False, single_word=not form.startswith(" ")) for form in forms])


def report_added(setting: list[str] | str, added: NewTokens, texts: list[str]) -> None:
    if not added.terms:
        info(
            f"data.new_tokens=auto: no term of the training rows is seen {AUTO_MIN_COUNT}+ times and split into "
            f"{AUTO_MIN_PIECES}+ pieces; no token added"
        )
        return
    shown = ", ".join(added.terms[:8]) + (f" and {len(added.terms) - 8} more" if len(added.terms) > 8 else "")
    info(f"data.new_tokens{'=auto' if setting == 'auto' else ''}: {len(added.pieces)} tokens added for {shown}")
    used = {w for text in texts for w in words(text)}
    unused = [t for t in added.terms if t not in used]
    if unused:
        info(
            f"data.new_tokens: {', '.join(map(repr, unused))} never occur as a word in the training rows: their new "
            "rows keep their starting values (the mean of their pieces)"
        )


def split_forms(tokenizer: Any, term: str) -> dict[str, list[int]]:
    """The forms of `term` (" term", "term") that the tokenizer splits into 2+ pieces, with those pieces' ids."""
    forms = {form: tokenizer(form, add_special_tokens=False)["input_ids"] for form in (" " + term, term)}
    return {form: ids for form, ids in forms.items() if len(ids) > 1}


def fragmented_terms(tokenizer: Any, texts: list[str]) -> list[Term]:
    """The terms `auto` may add (see AUTO_MIN_COUNT), most tokens saved first."""
    counts = Counter(w for text in texts for w in words(text))
    general = {w.lower() for text in general_texts() for w in words(text)}
    frequent = [
        w
        for w, n in counts.items()
        if n >= AUTO_MIN_COUNT and any(c.isalpha() for c in w) and w.lower() not in general
    ]
    if not frequent:
        return []
    ids = tokenizer([" " + w for w in frequent], add_special_tokens=False)["input_ids"]
    terms = [
        Term(w, counts[w], [tokenizer.decode([i]) for i in pieces])
        for w, pieces in zip(frequent, ids, strict=True)
        if len(pieces) >= AUTO_MIN_PIECES
    ]
    return sorted(terms, key=lambda t: (-t.saved, t.term))


def tokens_per_word(tokenizer: Any, texts: list[str]) -> float:
    """Tokenizer fertility: tokens per whitespace-separated word, over all `texts` (each tokenized alone)."""
    n_words = sum(len(text.split()) for text in texts)
    if not n_words:
        return 0.0
    return sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]) / n_words


def words(text: str) -> list[str]:
    """Whitespace-separated words, punctuation stripped from their ends."""
    return [w for w in (raw.strip(PUNCTUATION) for raw in text.split()) if w]


def training_texts(rows: RowSet) -> list[str]:
    """The text of every message of the user's training rows (general rows mixed in by data.replay_fraction left
    out: they come last)."""
    own = rows.own_train
    return [m["content"] for row in own for m in row.messages if isinstance(m.get("content"), str) and m["content"]]


def general_texts() -> list[str]:
    """General English text to compare with: the prompts and answers of the built-in replay set."""
    return [text for row in builtin_instructions() for text in (row["prompt"], row["completion"])]
