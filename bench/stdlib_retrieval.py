"""Retrieval on real text nobody on this project wrote: CPython's own standard-library docstrings.

    .venv/bin/python bench/stdlib_retrieval.py                      # writes runs/stdlib-docs/, prints the table
    .venv/bin/python bench/stdlib_retrieval.py --questions 400 --out /tmp/stdlib

One document per module (`<module>.txt`): for every public function, class and public method, its name, its
signature and its docstring WITHOUT the first line. The questions are those first lines (the one-line summary,
six words or more), each with its module's document as the source: the summary itself is not in the corpus, so
a retriever must find the module from the name, the signature and the rest of the docstring, as a user's
question is rarely worded like the page that answers it. Then `tunelab index` (the built-in all-MiniLM-L6-v2,
default chunking) and `tunelab eval-retrieval` for lexical, dense and hybrid retrieval side by side.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import platform
import random
import subprocess
import sys
from pathlib import Path

TUNELAB = Path(sys.executable).parent / "tunelab"
MODULES = """
argparse ast base64 bisect calendar codecs colorsys configparser contextlib copy csv dataclasses datetime
difflib dis email.utils enum fnmatch fractions ftplib functools getpass gettext glob gzip hashlib heapq hmac
html http.client http.cookies imaplib inspect ipaddress json locale logging mimetypes ntpath operator
pathlib platform plistlib poplib posixpath pprint queue quopri random re sched secrets selectors shlex shutil
smtplib socket ssl statistics string subprocess sysconfig tarfile tempfile textwrap threading tokenize
traceback typing urllib.parse urllib.request uuid warnings wave weakref webbrowser xml.dom.minidom zipfile
""".split()
MIN_SUMMARY_WORDS = 6


def documented(module) -> list[tuple[str, object]]:
    """(qualified name, object) for the module's own public functions, classes and their public methods."""
    out = []
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj) or inspect.isclass(obj):
            out.append((name, obj))
        if inspect.isclass(obj):
            for method, member in sorted(vars(obj).items()):
                if not method.startswith("_") and inspect.isfunction(member):
                    out.append((f"{name}.{method}", member))
    return out


def signature(obj) -> str:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"


def module_document(module) -> tuple[str, list[str]]:
    """The module's document (summaries left out) and its questions (the summaries)."""
    blocks, questions = [f"Module {module.__name__}."], []
    for name, obj in documented(module):
        doc = inspect.getdoc(obj) or ""
        summary, _, body = doc.partition("\n")
        if len(summary.split()) >= MIN_SUMMARY_WORDS and body.strip():
            questions.append(summary.strip())
        blocks.append(f"{name}{signature(obj)}\n{body.strip()}".strip())
    return "\n\n".join(blocks), questions


def build_corpus(out: Path, n_questions: int, seed: int) -> int:
    docs = out / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        text, questions = module_document(module)
        (docs / f"{name}.txt").write_text(text, encoding="utf-8")
        rows += [{"question": q, "source": f"{name}.txt"} for q in dict.fromkeys(questions)]
    rows = random.Random(seed).sample(rows, min(n_questions, len(rows)))
    (out / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/stdlib-docs"))
    parser.add_argument("--questions", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n = build_corpus(args.out, args.questions, args.seed)
    files = sorted((args.out / "docs").glob("*.txt"))
    words = sum(len(f.read_text(encoding="utf-8").split()) for f in files)
    print(
        f"CPython {platform.python_version()} standard library: {len(files)} modules, {words:,} words, {n} questions"
    )
    index = args.out / "index"
    subprocess.run([str(TUNELAB), "index", str(args.out / "docs"), "--output", str(index)], check=True)
    evaluate = [str(TUNELAB), "eval-retrieval", str(index), "--data", str(args.out / "qa.jsonl")]
    subprocess.run([*evaluate, "--output-dir", str(args.out / "eval"), "--overwrite"], check=True)


if __name__ == "__main__":
    main()
