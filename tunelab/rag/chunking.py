"""Token-aware chunking with overlap, counted in the encoder's own tokens (a chunk longer than the encoder's
window would be cut silently when embedded).

Text is split at paragraph, then sentence, then word boundaries and packed greedily into chunks of at most
`size` tokens; each chunk after the first starts with the last whole sentences (or words) of the one before,
up to `overlap` tokens, so a fact that straddles a boundary is whole in one of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_OVERLAP = 32

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Chunking:
    size: int | None = None  # None: as many as the encoder reads (all-MiniLM-L6-v2: 254 besides [CLS] and [SEP])
    overlap: int = DEFAULT_OVERLAP

    def for_window(self, encoder_window: int) -> Chunking:
        return self if self.size is not None else Chunking(encoder_window, self.overlap)

    def problems(self, encoder_window: int | None = None) -> list[str]:
        """What is wrong with these settings; the checks that need the encoder's window only when it is given."""
        if self.size is None:
            return self.for_window(encoder_window).problems(encoder_window) if encoder_window else []
        out = []
        if self.size < 16:
            out.append(f"--chunk-tokens {self.size}: too small; use 16 or more (default: the encoder's window)")
        if not 0 <= self.overlap < self.size // 2:
            out.append(f"--overlap {self.overlap}: use 0 up to half the chunk size ({self.size // 2 - 1})")
        if encoder_window is not None and self.size > encoder_window:
            out.append(
                f"--chunk-tokens {self.size}: over the encoder's window of {encoder_window} tokens; use at most that"
            )
        return out


def chunk(text: str, count_tokens: Callable[[str], int], chunking: Chunking) -> list[str]:
    """`text` as chunks of at most `chunking.size` tokens (a single word longer than that is its own chunk);
    `chunking.size` must be set (Chunking.for_window)."""
    pieces = [p for para in re.split(r"\n\s*\n", text) for p in _pieces(para.strip(), count_tokens, chunking.size)]
    chunks: list[list[tuple[str, int]]] = []
    current: list[tuple[str, int]] = []
    for piece in pieces:
        n = count_tokens(piece)
        if current and sum(c for _, c in current) + n > chunking.size:
            chunks.append(current)
            current = _tail(current, chunking.overlap, chunking.size - n, count_tokens)
        current.append((piece, n))
    if current:
        chunks.append(current)
    return [_join(c) for c in chunks]


def _pieces(paragraph: str, count_tokens: Callable[[str], int], size: int) -> list[str]:
    """A paragraph as units that each fit: itself, else its sentences, else a long sentence's word runs."""
    if not paragraph:
        return []
    if count_tokens(paragraph) <= size:
        return [paragraph + "\n\n"]
    out = []
    for sentence in _SENTENCE_END.split(paragraph):
        out += [sentence + " "] if count_tokens(sentence) <= size else _word_runs(sentence, count_tokens, size)
    out[-1] = out[-1].rstrip() + "\n\n"
    return out


def _word_runs(sentence: str, count_tokens: Callable[[str], int], size: int) -> list[str]:
    runs, current = [], []
    for word in sentence.split():
        if current and count_tokens(" ".join([*current, word])) > size:
            runs.append(" ".join(current) + " ")
            current = []
        current.append(word)
    return [*runs, " ".join(current) + " "]


def _tail(pieces: list[tuple[str, int]], overlap: int, room: int, count_tokens: Callable[[str], int]):
    """The end of a chunk, up to `overlap` tokens (never more than `room`), to start the next one: whole pieces
    from the back, then the last words of the piece that did not fit whole."""
    budget, tail, total = min(overlap, room), [], 0
    for piece, n in reversed(pieces):
        if total + n <= budget:
            tail.insert(0, (piece, n))
            total += n
            continue
        words = piece.split()
        for start in range(len(words) - 1, -1, -1):
            text = " ".join(words[start:]) + (piece[len(piece.rstrip()) :] or " ")
            if total + count_tokens(text) > budget:
                if start < len(words) - 1:
                    text = " ".join(words[start + 1 :]) + (piece[len(piece.rstrip()) :] or " ")
                    tail.insert(0, (text, count_tokens(text)))
                break
        break
    return tail


def _join(pieces: list[tuple[str, int]]) -> str:
    return "".join(p for p, _ in pieces).strip()
