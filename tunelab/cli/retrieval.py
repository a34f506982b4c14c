"""Retrieval commands: index (documents into a searchable index) and eval-retrieval (is the right passage found)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tunelab.cli.app import OverwriteOpt, TrustOpt, app
from tunelab.console import console
from tunelab.rag.chunking import DEFAULT_OVERLAP
from tunelab.rag.documents import DEFAULT_MAX_FILE_MB
from tunelab.rag.encoder import DEFAULT_ENCODER

IndexArg = Annotated[Path, typer.Argument(help="An index folder built by `tunelab index`.")]


@app.command(epilog="Example:  tunelab index examples/larkspur_docs/docs --output runs/larkspur-index")
def index(
    docs: Annotated[list[Path], typer.Argument(help="Documents or folders: .txt .md .html .pdf .jsonl.")],
    output: Annotated[
        Path, typer.Option("--output", help="The index folder (built again in place: changed files only).")
    ],
    encoder: Annotated[
        str, typer.Option(help="A sentence-transformers or Hugging Face encoder: alias, dir or hub id.")
    ] = (DEFAULT_ENCODER),
    chunk_tokens: Annotated[
        int | None, typer.Option(help="Most encoder tokens per chunk (default: as many as the encoder reads).")
    ] = None,
    overlap: Annotated[int, typer.Option(help="Tokens a chunk repeats from the one before.")] = DEFAULT_OVERLAP,
    store: Annotated[
        str | None,
        typer.Option("--store", help="A Qdrant server URL (API key from $QDRANT_API_KEY); default: embedded."),
    ] = None,
    text_field: Annotated[str, typer.Option(help="The text field of .jsonl documents.")] = "text",
    max_file_mb: Annotated[float, typer.Option(help="Largest document read, in MB.")] = DEFAULT_MAX_FILE_MB,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Index your documents for retrieval: chunks, dense vectors and BM25, searched together (hybrid)."""
    from tunelab import rag

    settings = rag.IndexSettings(
        encoder,
        rag.Chunking(chunk_tokens, overlap),
        store,
        text_field,
        max_file_mb,
        trust_remote_code=trust_remote_code,
    )
    report = rag.build(docs, output, settings)
    kept = report.files - len(report.changed)
    console.print(
        f"indexed {report.files} files into {report.chunks} chunks in {report.seconds:.1f} s: {len(report.changed)} "
        f"read and embedded, {kept} unchanged" + (f", {len(report.removed)} removed" if report.removed else ""),
        markup=False,
    )
    console.print(f"wrote {output}/index.json, chunks.jsonl, vectors.safetensors", markup=False)


@app.command(
    "eval-retrieval",
    epilog="Example:  tunelab eval-retrieval runs/larkspur-index --data examples/larkspur_docs/retrieval.jsonl",
)
def eval_retrieval(
    index_dir: IndexArg,
    data: Annotated[Path, typer.Option("--data", help="A .jsonl of {question, source} rows.")],
    mode: Annotated[
        list[str] | None, typer.Option("--mode", help="hybrid, dense or lexical (repeatable; default: all three).")
    ] = None,
    output_dir: Annotated[Path, typer.Option(help="Where retrieval.json/.md and hits.jsonl go.")] = Path(
        "runs/eval-retrieval"
    ),
    overwrite: OverwriteOpt = False,
    trust_remote_code: TrustOpt = False,
) -> None:
    """Measure retrieval: recall@k and MRR with 95% intervals, and latency per query, for each retrieval mode."""
    from tunelab import rag
    from tunelab.errors import ConfigError
    from tunelab.evaluation import retrieval

    modes = tuple(mode or rag.MODES)
    unknown = [m for m in modes if m not in rag.MODES]
    if unknown:
        raise ConfigError(f"--mode {unknown[0]}: use one of {', '.join(rag.MODES)}")
    questions = retrieval.read_questions(data, rag.sources(index_dir))
    retrieval.check_outputs(output_dir, overwrite)
    opened = rag.open_index(index_dir, trust_remote_code=trust_remote_code)
    results = retrieval.evaluate_modes(opened, questions, modes)
    retrieval.write(output_dir, index_dir, questions, results)
    console.print(retrieval.markdown(index_dir, questions, results), markup=False, soft_wrap=True)
    console.print(f"wrote {output_dir}/retrieval.json, retrieval.md, hits.jsonl", markup=False)
