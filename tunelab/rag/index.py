"""`tunelab index DOCS... --output DIR`: a retrieval index, and the hybrid search over it.

The folder (its files: rag/folder.py) is written whole beside the old one and moved into place, so a crash
mid-index leaves the old index as it was. Building again re-reads and re-embeds only files whose bytes changed
(when the encoder and chunking are the same), and drops files no longer given.

Search is dense (the store's cosine), lexical (BM25 over the same chunks, bm25s; built when the index opens:
10,000 chunks in ~1 s), or hybrid: the two rankings fused by reciprocal rank (RRF, k = 60, Cormack et al. 2009),
which needs no score calibration between BM25 and cosine.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tunelab.errors import ConfigError, DataError
from tunelab.rag import documents, folder, store
from tunelab.rag.augment import Passage
from tunelab.rag.chunking import Chunking, chunk
from tunelab.rag.encoder import DEFAULT_ENCODER, Encoder, load_encoder

MODES = ("hybrid", "dense", "lexical")
RRF_K = 60
CANDIDATES = 50  # each ranking's depth before fusion


@dataclass(frozen=True)
class IndexSettings:
    encoder: str = DEFAULT_ENCODER
    chunking: Chunking = field(default_factory=Chunking)
    store_url: str | None = None  # a Qdrant server; None: embedded
    text_field: str = "text"  # of .jsonl documents
    max_file_mb: float = documents.DEFAULT_MAX_FILE_MB
    device: str = "auto"
    trust_remote_code: bool = False


@dataclass
class BuildReport:
    output: Path
    files: int
    changed: list[str]  # new or edited files, read and embedded again
    removed: list[str]  # in the old index, not given this time
    chunks: int
    embedded: int  # chunks whose vectors were computed by this build
    seconds: float


def build(paths: list[Path], output: Path, settings: IndexSettings) -> BuildReport:
    """Index the documents under `paths` into `output` (see the module docstring)."""
    started = time.perf_counter()
    output = Path(os.path.abspath(output))
    files = documents.find_files(paths, settings.max_file_mb)  # every input error before the encoder loads
    old = folder.previous(output)
    _check(settings.chunking.problems())
    if settings.store_url:
        store.connect(settings.store_url)  # a server that does not answer says so before anything is embedded
    encoder = load_encoder(settings.encoder, settings.device, settings.trust_remote_code)
    chunking = settings.chunking.for_window(encoder.window)
    _check(chunking.problems(encoder.window))
    settings = replace(settings, chunking=chunking)
    identity = {"encoder": settings.encoder, "encoder_sha256": encoder.fingerprint()}
    same = old is not None and all(old.get(k) == v for k, v in _identity(settings, identity).items())
    kept = folder.kept_by_file(output, old) if same else {}
    rows, vectors, digests, changed = _chunk_and_embed(files, kept, old or {}, encoder, settings)
    _check_unique_sources(rows)
    manifest = _manifest(settings, identity, encoder.dim, digests, rows, output)
    folder.write(output, rows, vectors, manifest, old)
    removed = sorted(set((old or {}).get("files", {})) - set(digests))
    fresh_files = set(changed)
    embedded = sum(r["file"] in fresh_files for r in rows)
    return BuildReport(output, len(files), changed, removed, len(rows), embedded, time.perf_counter() - started)


def _check(problems: list[str]) -> None:
    if problems:
        raise ConfigError(problems[0], problems[1:])


def _identity(settings: IndexSettings, encoder_identity: dict) -> dict:
    """What must match for an old index's vectors to be kept: the encoder (by name and weights), the chunking and
    the text field read from .jsonl documents."""
    return encoder_identity | {"chunking": asdict(settings.chunking), "text_field": settings.text_field}


def _check_unique_sources(rows: list[dict]) -> None:
    """Two documents under one name (two .jsonl rows with one id, or an id equal to a file's name) would make the
    passages a reply names, and eval-retrieval's hits, ambiguous."""
    first: dict[tuple[str, int], str] = {}
    for row in rows:
        key = (row["source"], row["chunk"])
        if key in first:
            raise DataError(
                f"{row['file']}: a second document named {row['source']!r} (also in {first[key]})",
                ["give each .jsonl row its own id, distinct from the file names"],
            )
        first[key] = row["file"]


def _chunk_and_embed(files, kept, old, encoder: Encoder, settings: IndexSettings):
    """Every file's chunk rows and vectors, in file order: kept from the old index when the file's bytes are
    unchanged, else read, chunked and embedded (all new chunks in one batched pass)."""
    per_file: list[tuple[list[dict], np.ndarray | None]] = []
    digests, changed = {}, []
    for file in files:
        digests[file.name] = file.digest()
        if file.name in kept and old["files"][file.name]["sha256"] == digests[file.name]:
            per_file.append(kept[file.name])
        else:
            changed.append(file.name)
            per_file.append((_chunk_rows(file, encoder, settings), None))
    fresh = encoder.encode([r["text"] for file_rows, vectors in per_file if vectors is None for r in file_rows])
    rows, parts, cursor = [], [], 0
    for file_rows, vectors in per_file:
        if vectors is None:
            vectors, cursor = fresh[cursor : cursor + len(file_rows)], cursor + len(file_rows)
        rows += file_rows
        parts.append(vectors)
    return rows, np.concatenate(parts).astype(np.float32), digests, changed


def _chunk_rows(file: documents.DocumentFile, encoder: Encoder, settings: IndexSettings) -> list[dict]:
    rows = []
    for doc in documents.read(file, settings.text_field):
        for number, text in enumerate(chunk(doc.text, encoder.count_tokens, settings.chunking)):
            rows.append({"source": doc.source, "chunk": number, "file": file.name, "text": text})
    return rows


def _manifest(
    settings: IndexSettings, identity: dict, dim: int, digests: dict, rows: list[dict], output: Path
) -> dict:
    per_file = {name: {"sha256": digest, "chunks": 0} for name, digest in digests.items()}
    for row in rows:
        per_file[row["file"]]["chunks"] += 1
    where = {"kind": "embedded"}
    if settings.store_url:
        where = {
            "kind": "server",
            "url": settings.store_url,
            "collection": f"tunelab-{output.name}-{uuid.uuid4().hex[:8]}",
        }
    return {
        "format": folder.FORMAT,
        **_identity(settings, identity),
        "dimension": dim,
        "chunks": len(rows),
        "files": per_file,
        "store": where,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


class Index:
    """An index opened for search: its encoder loaded, the store filled (or connected), BM25 built."""

    def __init__(self, path: Path, manifest: dict, encoder: Encoder):
        import bm25s  # 0.2 s; only where an index is opened

        self.path, self.manifest, self.encoder = path, manifest, encoder
        self.rows, vectors = folder.read_index(path, manifest)
        where = manifest["store"]
        if where["kind"] == "server":
            self.store = store.VectorStore.server(where["url"], where["collection"])
        else:
            self.store = store.VectorStore.embedded(vectors)
        # A server searches from several threads at once; the encoder's fast tokenizer is not safe to share between
        # threads ("Already borrowed"), so searches take turns (each is ~15 ms of encoder work).
        self._lock = threading.Lock()
        self.bm25 = bm25s.BM25()
        self.bm25.index(
            bm25s.tokenize([r["text"] for r in self.rows], stopwords="en", show_progress=False), show_progress=False
        )

    @property
    def sources(self) -> set[str]:
        return {r["source"] for r in self.rows}

    def search(self, query: str, k: int = 4, mode: str = "hybrid") -> list[Passage]:
        return self.search_many([query], k, mode)[0]

    def search_many(self, queries: list[str], k: int = 4, mode: str = "hybrid") -> list[list[Passage]]:
        """The best `k` chunks for each query; dense queries are embedded in one batch."""
        if mode not in MODES:
            raise ConfigError(f"retrieval mode {mode!r}: use one of {', '.join(MODES)}")
        depth = min(max(CANDIDATES, k), len(self.rows))
        with self._lock:
            dense = self._dense(queries, depth) if mode != "lexical" else [[] for _ in queries]
            lexical = self._lexical(queries, depth) if mode != "dense" else [[] for _ in queries]
        out = []
        for d, lex in zip(dense, lexical, strict=True):
            ranked = d if mode == "dense" else lex if mode == "lexical" else fuse([d, lex])
            out.append([self._passage(i, score) for i, score in ranked[:k]])
        return out

    def _dense(self, queries: list[str], depth: int) -> list[list[tuple[int, float]]]:
        return [self.store.search(v, depth) for v in self.encoder.encode(queries)]

    def _lexical(self, queries: list[str], depth: int) -> list[list[tuple[int, float]]]:
        import bm25s

        tokens = bm25s.tokenize(queries, stopwords="en", return_ids=False, show_progress=False)
        ids, scores = self.bm25.retrieve(tokens, k=depth, show_progress=False)
        # BM25 scores 0 for a chunk sharing no term with the query: not a match, whatever its place
        return [
            [(int(i), float(s)) for i, s in zip(row_ids, row_scores, strict=True) if s > 0]
            for row_ids, row_scores in zip(ids, scores, strict=True)
        ]

    def _passage(self, i: int, score: float) -> Passage:
        row = self.rows[i]
        return Passage(row["source"], row["text"], score, row["chunk"])


def fuse(rankings: list[list[tuple[int, Any]]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: each item's sum over rankings of 1 / (k + rank), best first (ties: lower id)."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, (item, _) in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def open_index(path: Path, encoder: str | None = None, device: str = "auto", trust_remote_code: bool = False) -> Index:
    """The index at `path`, with the encoder it was built with; refuses another encoder in one line."""
    manifest = folder.read_manifest(path)
    if encoder is not None and encoder != manifest["encoder"]:
        raise ConfigError(
            f"{path}: built with the encoder {manifest['encoder']!r}, not {encoder!r}; its vectors only match queries "
            "embedded the same way",
            [
                f"query it with --encoder {manifest['encoder']}, "
                f"or build it again with `tunelab index ... --encoder {encoder}`"
            ],
        )
    loaded = load_encoder(manifest["encoder"], device, trust_remote_code)
    if loaded.fingerprint() != manifest["encoder_sha256"]:
        raise ConfigError(
            f"{path}: the encoder {manifest['encoder']!r} has changed since the index was built (other weights): "
            "its queries would not match the stored vectors",
            [folder.REBUILD],
        )
    return Index(Path(path), manifest, loaded)
