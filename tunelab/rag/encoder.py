"""The dense side of retrieval: a sentence encoder through sentence-transformers (the built-in all-MiniLM-L6-v2,
a local sentence-transformers or Hugging Face encoder directory, or a hub id), giving unit-length float32 vectors
so the store's cosine and a dot product agree."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tunelab.config.schema import ModelConfig
from tunelab.errors import ConfigError, ModelNotAvailableError

if TYPE_CHECKING:
    import numpy as np

DEFAULT_ENCODER = "all-minilm-l6-v2"
BATCH_SIZE = 32
PROGRESS_FROM = 512  # chunks: a bar from here on (~20 s with the built-in encoder on 2 CPU cores)


@dataclass
class Encoder:
    name: str  # as the user gave it; the index records it
    model: Any  # a sentence_transformers.SentenceTransformer

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def window(self) -> int:
        """Text tokens it reads: its max_seq_length less the special tokens ([CLS], [SEP]) it adds."""
        return int(self.model.max_seq_length) - self.model.tokenizer.num_special_tokens_to_add()

    def fingerprint(self) -> str:
        """A hash of its weights: an encoder folder trained again in place under the same name embeds
        differently, and its vectors must not be mixed with the old ones (all-MiniLM-L6-v2: 0.1 s)."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    def count_tokens(self, text: str) -> int:
        # verbose=False: a document longer than the window is expected here (it is being cut into chunks)
        return len(self.model.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def encode(self, texts: list[str]) -> np.ndarray:
        import numpy as np  # not at import: the CLI reads this module's defaults at start-up

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            texts,
            batch_size=BATCH_SIZE,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=len(texts) > PROGRESS_FROM,
        )
        return np.asarray(vectors, dtype=np.float32)


def load_encoder(name: str, device: str = "auto", trust_remote_code: bool = False) -> Encoder:
    """The encoder named `name`; one clear line when it does not exist, cannot be had offline, or is not an
    encoder (a GGUF or decoder-only model)."""
    # tunelab.models imports torch (~1.5 s): deferred so that `tunelab --help` and `index --help` stay fast
    from tunelab.models.devices import pick_device
    from tunelab.models.hub import pretrained_kwargs
    from tunelab.models.source import resolve

    try:
        source = resolve(name)
    except ModelNotAvailableError as e:
        raise ModelNotAvailableError(f"--encoder {name!r}: {_why(e)}", [FIX]) from None
    if source.kind in ("builtin", "gguf"):
        raise ConfigError(
            f"--encoder {name!r}: a GGUF chat model, not a sentence encoder",
            [f"use {DEFAULT_ENCODER!r} (built in) or a sentence-transformers model"],
        )
    options: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if source.kind == "hub":
        try:
            options |= pretrained_kwargs(ModelConfig(name=name, trust_remote_code=trust_remote_code))
        except ModelNotAvailableError as e:
            raise ModelNotAvailableError(f"--encoder {name!r}: {_why(e)}", [FIX]) from None
        options.pop("revision", None)
    from sentence_transformers import SentenceTransformer  # ~2 s to import; only when an index is built or read

    target = str(source.path) if source.path is not None else name
    try:
        model = SentenceTransformer(target, device=str(pick_device(device)), **options)
    except (OSError, ValueError, KeyError) as e:
        raise ModelNotAvailableError(f"--encoder {name!r}: could not load it as a sentence encoder ({e})") from None
    if not model.get_embedding_dimension():
        raise ConfigError(f"--encoder {name!r}: gives no fixed-size sentence embedding; use a sentence encoder")
    return Encoder(name, model.eval())


FIX = f"use {DEFAULT_ENCODER!r} (built in), a local encoder folder, or a hub id cached while online"


def _why(error: ModelNotAvailableError) -> str:
    """The reason in a model error, without the model.name advice that fits training configs, not --encoder."""
    return str(error).split(". Fix:")[0].split(": ", 1)[-1].split("\n")[0]
