"""Device and dtype choice: `auto` means the fastest thing this machine runs natively.

pick_device("auto")                  -> cuda, else mps, else cpu
pick_dtype("auto", torch.device("cpu")) -> bfloat16 on CPUs with AVX512-BF16/AMX (or ARM BF16), else float32
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from tunelab.errors import ConfigError

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# CPU features that give bf16 matmuls in hardware. Without them torch still runs bf16 on CPU, but by
# converting to fp32 and back, which is slower than plain fp32 (and less precise).
_NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16")


def cuda_available() -> bool:
    return torch.cuda.is_available()


def mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def pick_device(pref: str = "auto") -> torch.device:
    """The device for `model.device`; asking for one this machine lacks is a ConfigError."""
    if pref == "auto":
        if cuda_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_available() else torch.device("cpu")
    if pref == "cuda" and not cuda_available():
        raise ConfigError(
            f"model.device: cuda is not available (torch {torch.__version__} sees no CUDA GPU); "
            "use model.device=auto or model.device=cpu"
        )
    if pref == "mps" and not mps_available():
        raise ConfigError("model.device: mps (Apple GPU) is not available here; use model.device=auto or cpu")
    if pref not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"model.device: unknown device {pref!r}; choose auto, cpu, cuda or mps")
    return torch.device(pref)


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 in hardware (AVX512-BF16, AMX, or ARM BF16)."""
    get_caps = getattr(torch.cpu, "get_capabilities", None)
    if get_caps is not None:
        caps = get_caps()
        return any(bool(caps.get(flag)) for flag in _NATIVE_BF16_CPU_FLAGS)
    return _cpuinfo_has_bf16(Path("/proc/cpuinfo"))


def _cpuinfo_has_bf16(cpuinfo: Path) -> bool:
    """Fallback for torch builds without `torch.cpu.get_capabilities` (Linux only)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    flags = set(text.replace("\t", " ").split())
    return any(flag in flags for flag in _NATIVE_BF16_CPU_FLAGS)


def cuda_bf16_supported() -> bool:
    return cuda_available() and torch.cuda.is_bf16_supported()


def pick_dtype(pref: str, device: torch.device) -> torch.dtype:
    """The dtype for `model.dtype` on `device`; impossible combinations are ConfigErrors that say what to use."""
    if pref == "auto":
        native_bf16 = {"cuda": cuda_bf16_supported, "cpu": cpu_has_native_bf16}.get(device.type, lambda: False)()
        return torch.bfloat16 if native_bf16 else torch.float32
    if pref not in DTYPES:
        raise ConfigError(f"model.dtype: unknown dtype {pref!r}; choose auto, {', '.join(DTYPES)}")
    if pref == "float16" and device.type == "cpu":
        raise ConfigError(
            "model.dtype: float16 is not supported on cpu (no fast fp16 kernels, and fp16 training needs a GPU "
            "grad scaler); use model.dtype=auto, bfloat16 or float32"
        )
    if pref == "bfloat16" and device.type == "cuda" and not cuda_bf16_supported():
        raise ConfigError(
            f"model.dtype: this GPU ({torch.cuda.get_device_name(device)}) does not support bfloat16; "
            "use model.dtype=float16 or float32"
        )
    return DTYPES[pref]


# transformers' flash-attention kernels (the flash-attn package, CUDA only, fp16/bf16 only): fastest on a GPU and
# they take padding-free (packed) batches natively.
FLASH_ATTENTION = "flash_attention_2"


def flash_attention_installed() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def pick_attention(pref: str, device: torch.device, dtype: torch.dtype) -> str | None:
    """The attn_implementation for `model.attention`; None leaves transformers' default (SDPA where the model has
    it, else eager). `auto` takes flash attention on a CUDA GPU in fp16/bf16 when flash-attn is installed."""
    half = dtype in (torch.bfloat16, torch.float16)
    if pref == "auto":
        flash = device.type == "cuda" and half and flash_attention_installed()
        return FLASH_ATTENTION if flash else None
    if pref == FLASH_ATTENTION:
        if device.type != "cuda" or not half:
            raise ConfigError(
                f"model.attention: {FLASH_ATTENTION} runs on a CUDA GPU in bfloat16/float16 only (here: "
                f"{device.type}, {str(dtype).removeprefix('torch.')}); use model.attention=auto or sdpa"
            )
        if not flash_attention_installed():
            raise ConfigError(
                f"model.attention: {FLASH_ATTENTION} needs the flash-attn package; pip install flash-attn "
                "--no-build-isolation, or use model.attention=auto"
            )
    return pref
