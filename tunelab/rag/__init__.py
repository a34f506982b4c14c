"""Retrieval for generation: documents into an index (chunk, embed, store), hybrid search over it, and the
passages into a prompt. Used by `tunelab index`, `eval-retrieval`, the `rag` arms of `compare`, and
`serve --index`.

The names below load their module on first use (PEP 562): the index pulls in torch through the encoder, and the
CLI reads this package's defaults at start-up, where 1.5 s of torch would slow every command.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "Passage": "augment",
    "context_prompt": "augment",
    "last_user_turn": "augment",
    "with_passages": "augment",
    "Chunking": "chunking",
    "MODES": "index",
    "Index": "index",
    "IndexSettings": "index",
    "build": "index",
    "open_index": "index",
    "read_manifest": "folder",
    "sources": "folder",
}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'tunelab.rag' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tunelab.rag.{_HOME[name]}"), name)
