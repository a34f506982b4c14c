"""Hub ids: load from the Hugging Face cache when offline, and fail in seconds rather than minutes.

With no network, huggingface_hub retries every request 5 times with backoff (~25 s per file, measured)
before transformers gives up. So before calling `from_pretrained` we ask once, with a short timeout, whether
the hub answers; if not (or HF_HUB_OFFLINE is set) we load with `local_files_only=True`, and raise
`ModelNotAvailableError` at once when the model is not in the local cache.
"""

from __future__ import annotations

import os
from typing import Any

from tunelab.config.schema import ModelConfig
from tunelab.errors import ModelNotAvailableError

PROBE_TIMEOUT_S = 3.0
_TRUE = {"1", "true", "yes", "on"}


def offline_by_env() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE, read now: huggingface_hub reads them only at import."""
    from huggingface_hub import constants

    env = any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return env or constants.is_offline_mode()


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """One request, no retries, through huggingface_hub's own client (so HF_ENDPOINT and proxies apply)."""
    from huggingface_hub import constants, get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception:  # any transport failure (DNS, refused, timeout, TLS) means "not reachable": it is a probe
        return False
    return True


def in_local_cache(repo_id: str, revision: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    return isinstance(found, str)


def pretrained_kwargs(cfg: ModelConfig) -> dict[str, Any]:
    """`from_pretrained` arguments for a hub id; raises ModelNotAvailableError fast when it cannot be had."""
    kwargs: dict[str, Any] = {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code}
    if offline_by_env():
        reason = "offline mode is on (HF_HUB_OFFLINE)"
    elif not hub_reachable():
        reason = "the Hugging Face hub is not reachable (no network?)"
    else:
        return kwargs
    if not in_local_cache(cfg.name, cfg.revision):
        raise not_available(cfg, f"{reason} and it is not in the local Hugging Face cache")
    return {**kwargs, "local_files_only": True}


def not_available(cfg: ModelConfig, reason: str) -> ModelNotAvailableError:
    from tunelab.models.source import suggest_builtin

    rev = f" (revision {cfg.revision})" if cfg.revision else ""
    fixes = [
        "download it once with network access (it is then cached), or",
        "give the path of a local Hugging Face model directory or .gguf file as model.name",
    ]
    if hint := suggest_builtin(cfg.name):
        fixes.insert(0, hint)
    return ModelNotAvailableError(f"model {cfg.name!r}{rev} is not available: {reason}. Fix:", fixes)
