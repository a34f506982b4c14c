"""An OpenAI-compatible HTTP server over one base model and its adapter runs (`tunelab serve`).

    tunelab serve runs/tickets runs/summaries --port 8000
    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    client.chat.completions.create(model="tickets", messages=[{"role": "user", "content": "Hi"}])

engine (the model and its one worker thread, batching), app (routes, auth, limits), protocol (OpenAI's shapes),
streaming (server-sent events), api_errors (errors in OpenAI's shape, the body-size limit).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from tunelab.console import info
from tunelab.inference.loading import LoadOptions
from tunelab.serving.protocol import ServerSettings

__all__ = ["ServerSettings", "serve"]


def serve(
    refs: list[str],
    host: str,
    port: int,
    settings: ServerSettings,
    placement: LoadOptions,
    index_dir: Path | None = None,
) -> None:
    """Load the models (and the index, to augment chat requests), start the worker, serve until Ctrl-C."""
    # fastapi + uvicorn cost ~0.5 s to import: only this command pays it.
    import uvicorn

    from tunelab.serving.app import build_app
    from tunelab.serving.engine import load_engine

    if settings.api_key is None and not _is_loopback(host):
        info(f"serving on {host} without an API key: anyone who can reach it can use it (set TUNELAB_API_KEY)")
    index = None
    if index_dir is not None:
        from tunelab.rag import open_index

        index = open_index(index_dir, device=placement.device or "auto")
        info(f"chat requests get up to {settings.retrieval_k} passages from {index_dir} ({len(index.rows)} chunks)")
    batching = {"max_batch": settings.max_batch, "batch_window_s": settings.batch_window_s}
    engine = load_engine(refs, placement, max_queue=settings.max_queue, mixed=settings.mixed_batches, **batching)
    info(f"serving {', '.join(engine.targets)} at http://{host}:{port}/v1")
    try:
        uvicorn.run(build_app(engine.start(), settings, index), host=host, port=port, log_level="warning")
    finally:
        engine.close()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
