"""The vector store: Qdrant, through one client API in two modes.

- Embedded (the default, no server): qdrant-client's local mode, in memory, filled from the index folder's
  `vectors.safetensors` when the index opens (10,000 chunks x 384 dims: 0.9 s; a query 8 ms, measured on 2 cores
  of a Zen 4). Why not its on-disk local mode: it stores points with pickle, and tunelab reads nothing that can
  run code when loaded (safetensors only); so the folder holds the vectors as safetensors and the store is
  rebuilt from them.
- Server: `tunelab index ... --store http://host:6333` (API key from $QDRANT_API_KEY) writes the vectors to a new
  collection on a Qdrant server, named in the index's manifest; queries then go to the server and the folder's
  own copy is not loaded. Each build writes a new collection and removes the one it replaces only after the
  manifest names the new one, so a query never sees half an index.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from tunelab.errors import ConfigError

API_KEY_ENV = "QDRANT_API_KEY"
UPLOAD_BATCH = 1024


def _models() -> Any:
    from qdrant_client import models  # ~0.5 s (grpc, pydantic models); only where an index is used

    return models


class VectorStore:
    """Nearest chunks by cosine similarity; chunk numbers are the point ids."""

    def __init__(self, client: Any, collection: str):
        self.client = client
        self.collection = collection

    @classmethod
    def embedded(cls, vectors: np.ndarray) -> VectorStore:
        from qdrant_client import QdrantClient

        store = cls(QdrantClient(":memory:"), "chunks")
        store._fill(vectors, payloads=None)
        return store

    @classmethod
    def server(cls, url: str, collection: str) -> VectorStore:
        client = connect(url)
        if not client.collection_exists(collection):
            raise ConfigError(
                f"{url}: the index's collection {collection!r} is not on this server",
                ["build the index again with `tunelab index ... --store URL`"],
            )
        return cls(client, collection)

    def _fill(self, vectors: np.ndarray, payloads: list[dict] | None) -> None:
        models = _models()
        params = models.VectorParams(size=int(vectors.shape[1]), distance=models.Distance.COSINE)
        self.client.create_collection(self.collection, vectors_config=params)
        self.client.upload_collection(
            self.collection, vectors=vectors, ids=list(range(len(vectors))), payload=payloads, batch_size=UPLOAD_BATCH
        )

    def search(self, vector: np.ndarray, limit: int) -> list[tuple[int, float]]:
        """(chunk number, cosine similarity), best first."""
        found = self.client.query_points(self.collection, query=vector, limit=limit, with_payload=False).points
        return [(int(p.id), float(p.score)) for p in found]


def connect(url: str) -> Any:
    """A client for a Qdrant server; one clear line when it does not answer."""
    from qdrant_client import QdrantClient

    client = QdrantClient(url=url, api_key=os.environ.get(API_KEY_ENV) or None, timeout=10)
    try:
        client.get_collections()
    except Exception as e:  # any transport or auth failure: the server cannot be used, say which and stop
        raise ConfigError(
            f"--store {url}: the Qdrant server does not answer ({type(e).__name__}: {e})",
            [f"start it (docker run -p 6333:6333 qdrant/qdrant), check the URL and ${API_KEY_ENV}"],
        ) from None
    return client


def publish(url: str, collection: str, vectors: np.ndarray, payloads: list[dict]) -> None:
    """A new collection on the server with every chunk's vector (and its source and text, for other readers)."""
    VectorStore(connect(url), collection)._fill(vectors, payloads)


def drop(url: str, collection: str) -> None:
    connect(url).delete_collection(collection)
