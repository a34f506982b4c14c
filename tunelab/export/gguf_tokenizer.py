"""The tokenizer part of a GGUF export: a byte-level BPE ("gpt2") vocabulary as llama.cpp reads it.

    writer = gguf.GGUFWriter(None, "llama")
    add_tokenizer(writer, Path("runs/demo/model"), vocab_size=49152)  # raises TunelabError if unsupported

Follows `_set_vocab_gpt2` of llama.cpp's convert_hf_to_gguf.py: token strings and types from the HF
tokenizer, merges / special ids / chat template from `gguf.SpecialVocab`, and `tokenizer.ggml.pre`, which
tells llama.cpp which pre-tokenizer regex to use. The converter identifies the pre-tokenizer by hashing the
ids of a fixed text; we do the same with the entries for the byte-level BPE tokenizers of Llama-family models.
"""

from __future__ import annotations

import json
from hashlib import sha256
from pathlib import Path
from typing import Any

import gguf

from tunelab.errors import TunelabError

# The converter's probe text (get_vocab_base_pre): whitespace runs, emoji sequences, digit runs, scripts and
# contractions are where pre-tokenizers differ. It must stay byte-identical for the hashes below to apply.
PROBE_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫\ufe0f (multiple emojis concatenated) "
    "✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
    "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, "
    "'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)

# sha256(str(ids of PROBE_TEXT)) -> llama.cpp pre-tokenizer name, for the byte-level BPE tokenizers that
# Llama-architecture models ship (entries from the converter's get_vocab_base_pre; the smollm one is checked
# against the built-in model's tokenizer by the tests).
PRE_TOKENIZERS = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM, SmolLM2
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama 3, 3.1, 3.2
    "c136ed14d01c2745d4f60a9596ae66800e2b61fa45643e72436041855ad4089d": "smaug-bpe",  # Smaug-Llama-3
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",  # Mistral Nemo
    "049ecf7629871e3041641907f3de7c733e4dbfdc736f57d882ba0b0845599754": "deepseek-llm",
    "347715f544604f9118bb75ed199f68779f423cabb20db6de6f31b908d04d7821": "deepseek-coder",
    "9d032fcbd5501f4a38150912590928bfb36091efb5df11b8e2124b0390e3fb1e": "falcon3",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
}


def add_tokenizer(writer: gguf.GGUFWriter, model_dir: Path, vocab_size: int) -> None:
    """Add the tokenizer of `model_dir` to `writer` (in memory: nothing is written to disk here)."""
    from transformers import AutoTokenizer

    require_byte_level_bpe(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokens, token_types = token_table(tokenizer, vocab_size)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size)
    if not special.merges:
        raise TunelabError(f"{model_dir / 'tokenizer.json'} has no BPE merges; cannot export its tokenizer to GGUF")
    # Written explicitly from what the tokenizer does: SpecialVocab only finds them in some config layouts,
    # and llama.cpp's default when they are absent differs between pre-tokenizers.
    special.add_special_token["bos"], special.add_special_token["eos"] = adds_bos_eos(tokenizer)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(tokenizer, model_dir))
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    special.add_to_gguf(writer, quiet=True)


def require_byte_level_bpe(model_dir: Path) -> None:
    """Refuse tokenizers this exporter does not write (SentencePiece-style, WordPiece, Unigram) up front."""
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise TunelabError(f"{model_dir} has no tokenizer.json; save the tokenizer with the model (save_pretrained)")
    spec = json.loads(path.read_text(encoding="utf-8"))
    model, decoder = spec.get("model") or {}, spec.get("decoder") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback") or decoder.get("type") != "ByteLevel":
        raise TunelabError(
            f"{path}: only byte-level BPE tokenizers (Llama 3, SmolLM, Mistral Nemo) can be exported to GGUF; "
            "this one is not (SentencePiece-style tokenizers such as Llama 2's are not supported yet)"
        )


def pre_tokenizer_name(tokenizer: Any, model_dir: Path) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer; without it llama.cpp would split text differently."""
    probe_hash = sha256(str(tokenizer.encode(PROBE_TEXT)).encode()).hexdigest()
    if probe_hash not in PRE_TOKENIZERS:
        raise TunelabError(
            f"the tokenizer in {model_dir} uses a pre-tokenizer this exporter does not know (probe hash "
            f"{probe_hash[:12]}…), so llama.cpp could split text differently from training; "
            "convert this model with llama.cpp's convert_hf_to_gguf.py instead"
        )
    return PRE_TOKENIZERS[probe_hash]


def token_table(tokenizer: Any, vocab_size: int) -> tuple[list[str], list[int]]:
    """Token strings and llama.cpp token types, one per id up to the model's vocab_size (as get_vocab_base does).

    Ids the tokenizer does not use (embedding rows padded to a round number) become unused "[PADi]" tokens.
    """
    by_id = {token_id: token for token, token_id in tokenizer.get_vocab().items()}
    if max(by_id) >= vocab_size:
        raise TunelabError(f"the tokenizer has token id {max(by_id)} but the model's vocab_size is {vocab_size}")
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for token_id in range(vocab_size):
        token = by_id.get(token_id)
        if token is None:
            tokens.append(f"[PAD{token_id}]")
            types.append(gguf.TokenType.UNUSED)
        elif token_id in added:
            tokens.append(_added_token_text(tokenizer, token, added[token_id]))
            looks_special = added[token_id].special or (token.startswith("<|") and token.endswith("|>"))
            types.append(gguf.TokenType.CONTROL if looks_special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def _added_token_text(tokenizer: Any, token: str, added: Any) -> str:
    # llama.cpp matches added tokens against normalized text, so store them as the tokenizer would normalize them.
    if added.normalized:
        return token
    return tokenizer.decode(tokenizer.encode(token, add_special_tokens=False))


def adds_bos_eos(tokenizer: Any) -> tuple[bool, bool]:
    """Whether encoding text adds the BOS / EOS token, observed rather than read from configs."""
    with_special = tokenizer.encode("Hello world")
    plain = tokenizer.encode("Hello world", add_special_tokens=False)
    extra = len(with_special) > len(plain)
    adds_bos = extra and tokenizer.bos_token_id is not None and with_special[0] == tokenizer.bos_token_id
    adds_eos = extra and tokenizer.eos_token_id is not None and with_special[-1] == tokenizer.eos_token_id
    return adds_bos, adds_eos
