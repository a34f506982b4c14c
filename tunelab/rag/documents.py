"""The user's documents as plain text: .txt, .md, .html/.htm, .pdf (pypdf) and .jsonl (one document per row).

A folder stands for every supported file under it. Each document is named by its path relative to the folder
given (or by its file name when a file was given), with forward slashes; a .jsonl row by its `id` field when it
has one, else `file.jsonl:LINE`. `tunelab eval-retrieval` matches its `source` column against these names.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from tunelab.errors import DataError

SUFFIXES = (".txt", ".md", ".html", ".htm", ".pdf", ".jsonl")
DEFAULT_MAX_FILE_MB = 50.0


@dataclass(frozen=True)
class DocumentFile:
    path: Path
    name: str  # as sources are named: relative to the folder given, forward slashes

    def digest(self) -> str:
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError as e:
            raise DataError(f"{self.path}: cannot be read ({e.strerror})", ["check its permissions"]) from None


@dataclass(frozen=True)
class Document:
    source: str
    text: str


def find_files(paths: list[Path], max_file_mb: float = DEFAULT_MAX_FILE_MB) -> list[DocumentFile]:
    """Every supported file under `paths`, sorted by name; one clear error for a path that is missing, a file of
    another kind, a folder with no documents, an empty file, a file over the size limit, or two files that would
    share a name."""
    found: dict[str, DocumentFile] = {}
    for path in paths:
        for file in _expand(path):
            _check_size(file.path, max_file_mb)
            if file.name in found and found[file.name].path != file.path:
                raise DataError(
                    f"{file.path}: a second document named {file.name!r} (also {found[file.name].path})",
                    ["index folders whose files have different relative paths, or rename one"],
                )
            found[file.name] = file
    return [found[name] for name in sorted(found)]


def _expand(path: Path) -> list[DocumentFile]:
    if not path.exists():
        raise DataError(f"{path}: no such file or folder", ["check the path, or give the folder of your documents"])
    if path.is_file():
        if path.suffix.lower() not in SUFFIXES:
            raise DataError(f"{path}: not a document tunelab reads", [f"use one of {', '.join(SUFFIXES)}"])
        return [DocumentFile(path, path.name)]
    files = [p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in SUFFIXES]
    files = [p for p in files if not any(part.startswith(".") for part in p.relative_to(path).parts)]
    if not files:
        raise DataError(f"{path}: no documents in this folder", [f"tunelab reads {', '.join(SUFFIXES)}"])
    return [DocumentFile(p, p.relative_to(path).as_posix()) for p in files]


def _check_size(path: Path, max_file_mb: float) -> None:
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"{path}: the file is empty", ["remove it from the documents, or give it some text"])
    if size > max_file_mb * 1e6:
        raise DataError(
            f"{path}: {size / 1e6:.1f} MB, over the {max_file_mb:g} MB limit for one document",
            ["split it, or raise the limit with --max-file-mb"],
        )


def read(file: DocumentFile, text_field: str = "text") -> list[Document]:
    """The documents in one file (several for .jsonl); a clear error when it cannot be read or holds no text."""
    suffix = file.path.suffix.lower()
    if suffix == ".jsonl":
        docs = list(_jsonl_documents(file, text_field))
    else:
        docs = [Document(file.name, _text_of(file.path, suffix))]
    docs = [d for d in docs if d.text.strip()]
    if not docs:
        raise DataError(f"{file.path}: no text in this document", ["remove it from the documents, or give it text"])
    return docs


def _text_of(path: Path, suffix: str) -> str:
    if suffix == ".pdf":
        return _pdf_text(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start})", ["save it as UTF-8"]) from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror})", ["check its permissions"]) from None
    return _html_text(raw) if suffix in (".html", ".htm") else raw


def _pdf_text(path: Path) -> str:
    from pypdf import PdfReader  # 0.1 s to import; only when a PDF is indexed
    from pypdf.errors import PdfReadError

    try:
        return "\n\n".join(page.extract_text() or "" for page in PdfReader(path).pages)
    except (PdfReadError, ValueError, OSError) as e:
        raise DataError(f"{path}: not a readable PDF ({e})", ["check the file, or export it again"]) from None


class _TextOnly(HTMLParser):
    """The visible text of an HTML page: tags dropped, script/style skipped, block ends as line breaks."""

    BLOCKS = set("p div br li ul ol table tr td th h1 h2 h3 h4 h5 h6 section article pre blockquote".split())

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.skipping += tag in ("script", "style")
        if tag in self.BLOCKS:  # <br> and an unclosed <li> have no end tag: break where they start too
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        self.skipping -= tag in ("script", "style") and self.skipping > 0
        if tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def _html_text(raw: str) -> str:
    parser = _TextOnly()
    parser.feed(raw)
    lines = (" ".join(line.split()) for line in "".join(parser.parts).split("\n\n"))
    return "\n\n".join(line for line in lines if line)


def _jsonl_documents(file: DocumentFile, text_field: str) -> Iterator[Document]:
    for number, line in enumerate(_text_of(file.path, ".jsonl").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{file.path}:{number}: not valid JSON ({e.msg})", ["one JSON object per line"]) from None
        if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
            raise DataError(
                f"{file.path}:{number}: no {text_field!r} text field",
                ["give each row the field, or name the text field with --text-field"],
            )
        yield Document(str(row["id"]) if "id" in row else f"{file.name}:{number}", row[text_field])
