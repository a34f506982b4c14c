"""An index folder on disk: `index.json` (the manifest: encoder, chunking, each file's SHA-256, where the vectors
are served from), `chunks.jsonl` (every chunk's source and text) and `vectors.safetensors` (one unit vector per
chunk). Written whole beside the old folder and moved into place; read back only after checking the three agree.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from tunelab import artifacts
from tunelab.console import info
from tunelab.errors import ConfigError
from tunelab.rag import store

FORMAT = 1
MANIFEST_FILE, CHUNKS_FILE, VECTORS_FILE = "index.json", "chunks.jsonl", "vectors.safetensors"
INDEX_ENTRIES = frozenset({MANIFEST_FILE, CHUNKS_FILE, VECTORS_FILE})


def write(output: Path, rows: list[dict], vectors: np.ndarray, manifest: dict, old: dict | None) -> None:
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


def previous(output: Path) -> dict | None:
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


def read_index(path: Path, manifest: dict) -> tuple[list[dict], np.ndarray]:
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


def kept_by_file(output: Path, manifest: dict) -> dict[str, tuple[list[dict], np.ndarray]]:
    rows, vectors = read_index(output, manifest)
    by_file: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_file.setdefault(row["file"], []).append(i)
    return {name: ([rows[i] for i in idx], vectors[idx]) for name, idx in by_file.items()}
