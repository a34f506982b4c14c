"""`tunelab index DOCS... --output DIR`: a retrieval index, and the hybrid search over it.

The folder holds `index.json` (the encoder, the chunking, each file's SHA-256 and where the vectors are
served from), `chunks.jsonl` (every chunk's source and text) and `vectors.safetensors` (one unit vector per
chunk). It is written whole beside the old one and moved into place, so a crash mid-index leaves the old
index as it was. Building again re-reads and re-embeds only files whose bytes changed (when the encoder and
chunking are the same), and drops files no longer given.

Search is dense (the store's cosine), lexical (BM25 over the same chunks, bm25s; built when the index opens:
10,000 chunks in ~1 s), or hybrid: the two rankings fused by reciprocal rank (RRF, k = 60, Cormack et al. 2009),
which needs no score calibration between BM25 and cosine.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tunelab import artifacts
from tunelab.console import info
from tunelab.errors import ConfigError, DataError
from tunelab.rag import documents, store
from tunelab.rag.augment import Passage
from tunelab.rag.chunking import Chunking, chunk
from tunelab.rag.encoder import DEFAULT_ENCODER, Encoder, load_encoder

FORMAT = 1
MANIFEST_FILE, CHUNKS_FILE, VECTORS_FILE = "index.json", "chunks.jsonl", "vectors.safetensors"
INDEX_ENTRIES = frozenset({MANIFEST_FILE, CHUNKS_FILE, VECTORS_FILE})
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
    old = _previous(output)
    _check(settings.chunking.problems())
    if settings.store_url:
        store.connect(settings.store_url)  # a server that does not answer says so before anything is embedded
    encoder = load_encoder(settings.encoder, settings.device, settings.trust_remote_code)
    chunking = settings.chunking.for_window(encoder.window)
    _check(chunking.problems(encoder.window))
    settings = replace(settings, chunking=chunking)
    identity = {"encoder": settings.encoder, "encoder_sha256": encoder.fingerprint()}
    same = old is not None and all(old.get(k) == v for k, v in _identity(settings, identity).items())
    kept = _kept_by_file(output, old) if same else {}
    rows, vectors, digests, changed = _chunk_and_embed(files, kept, old or {}, encoder, settings)
    _check_unique_sources(rows)
    manifest = _manifest(settings, identity, encoder.dim, digests, rows, output)
    _write(output, rows, vectors, manifest, old)
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
        "format": FORMAT,
        **_identity(settings, identity),
        "dimension": dim,
        "chunks": len(rows),
        "files": per_file,
        "store": where,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _write(output: Path, rows: list[dict], vectors: np.ndarray, manifest: dict, old: dict | None) -> None:
    """The new index into a temp folder beside `output`, then moved into place; on a server, the new collection is
    removed again if anything fails, and the old one is dropped only after the folder names the new one."""
    from safetensors.numpy import save_file

    _sweep_stale(output)
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    where, published = manifest["store"], False
    try:
        tmp.mkdir(parents=True)
        (tmp / CHUNKS_FILE).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
        save_file({"vectors": vectors}, str(tmp / VECTORS_FILE))
        if where["kind"] == "server":
            payloads = [{"source": r["source"], "chunk": r["chunk"], "text": r["text"]} for r in rows]
            published = True
            store.publish(where["url"], where["collection"], vectors, payloads)
        artifacts.write_json(tmp / MANIFEST_FILE, manifest)  # last: a folder with a manifest is whole
        artifacts.replace_dir(tmp, output)
    except BaseException:
        if published:
            with contextlib.suppress(Exception):  # best effort: the build already failed, say that, not this
                store.drop(where["url"], where["collection"])
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if old is not None and old["store"]["kind"] == "server":
        try:
            store.drop(old["store"]["url"], old["store"]["collection"])
        except Exception as e:  # the new index is in place; the old collection is only left over
            info(f"could not drop the old collection {old['store']['collection']!r} ({e}); remove it by hand")


def _sweep_stale(output: Path) -> None:
    """Temp folders of builds that were killed (their process is gone): a crash leaves the old index in place and
    its half-written successor beside it, removed here by the next build."""
    for leftover in output.parent.glob(f".{output.name}.tmp-*"):
        pid = leftover.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _previous(output: Path) -> dict | None:
    """The manifest of the index already at `output`, None for a new or empty folder; refuses any other folder."""
    blocked = next((p for p in output.parents if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise ConfigError(f"--output {output}: {blocked} is a file, not a folder", ["choose another --output"])
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {output}: a file, not a folder", ["give the folder the index goes in"])
    if not output.exists() or not any(output.iterdir()):
        return None
    foreign = artifacts.foreign_entries(output, INDEX_ENTRIES)
    if foreign or not (output / MANIFEST_FILE).is_file():
        raise ConfigError(
            f"--output {output}: not a tunelab index (holds {', '.join(foreign) or 'no index.json'})",
            ["choose a new or empty folder; tunelab never replaces files it did not write"],
        )
    try:
        return read_manifest(output)
    except ConfigError:  # an index of another format, or damaged: only index files, so it is built again whole
        return None


REBUILD = "build the index again with `tunelab index DOCS... --output DIR`"
MANIFEST_KEYS = ("encoder", "encoder_sha256", "chunking", "text_field", "dimension", "chunks", "files", "store")


def read_manifest(path: Path) -> dict:
    """An index's manifest, after checking the folder holds a whole index this tunelab reads."""
    path = Path(path)
    if not (path / MANIFEST_FILE).is_file():
        raise ConfigError(f"{path}: not a tunelab index (no {MANIFEST_FILE})", [REBUILD])
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path / MANIFEST_FILE}: not readable ({e})", [REBUILD]) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise ConfigError(f"{path}: index format {found}, this tunelab reads {FORMAT}", [REBUILD])
    missing = [k for k in MANIFEST_KEYS if k not in manifest] + [
        name for name in (CHUNKS_FILE, VECTORS_FILE) if not (path / name).is_file()
    ]
    if missing:
        raise ConfigError(f"{path}: an incomplete index (no {', '.join(missing)})", [REBUILD])
    return manifest


def sources(path: Path) -> set[str]:
    """The documents an index holds, read without loading its encoder."""
    read_manifest(path)
    return {row["source"] for row in _read_chunks(path)}


def _read_chunks(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / CHUNKS_FILE).read_text(encoding="utf-8").splitlines()]


def _read_vectors(path: Path) -> np.ndarray:
    from safetensors.numpy import load_file

    return load_file(str(path / VECTORS_FILE))["vectors"]


def _read_index(path: Path, manifest: dict) -> tuple[list[dict], np.ndarray]:
    """The chunk rows and their vectors, checked against each other and the manifest (a folder edited by hand, or
    copied in part, says so here rather than answering with the wrong passages)."""
    rows, vectors = _read_chunks(path), _read_vectors(path)
    if not len(rows) == len(vectors) == manifest["chunks"] or vectors.shape[1:] != (manifest["dimension"],):
        raise ConfigError(
            f"{path}: {len(rows)} chunks, {len(vectors)} vectors of {vectors.shape[1:]} values, the manifest says "
            f"{manifest['chunks']} of {manifest['dimension']}",
            [REBUILD],
        )
    return rows, vectors


def _kept_by_file(output: Path, manifest: dict) -> dict[str, tuple[list[dict], np.ndarray]]:
    rows, vectors = _read_index(output, manifest)
    by_file: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_file.setdefault(row["file"], []).append(i)
    return {name: ([rows[i] for i in idx], vectors[idx]) for name, idx in by_file.items()}


class Index:
    """An index opened for search: its encoder loaded, the store filled (or connected), BM25 built."""

    def __init__(self, path: Path, manifest: dict, encoder: Encoder):
        import bm25s  # 0.2 s; only where an index is opened

        self.path, self.manifest, self.encoder = path, manifest, encoder
        self.rows, vectors = _read_index(path, manifest)
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
    manifest = read_manifest(path)
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
            [REBUILD],
        )
    return Index(Path(path), manifest, loaded)
