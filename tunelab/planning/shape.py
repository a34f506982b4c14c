"""What a method does to the model, read from a weightless copy: exact parameter counts, weight bytes, and
which tensors a training step saves for backward.

    hf_config = model_config(cfg.model)                     # config.json or GGUF metadata; no weights
    layout = method_layout(hf_config, "lora", lora_cfg, torch.bfloat16)
    layout.trainable, layout.weight_bytes, layout.saved_bytes_per_token

The model is built on the `meta` device (shapes and dtypes, no storage) and the method's own `prepare`
(tunelab.methods) is applied to it, so the counts are the ones a real run logs. A quantized base (qlora:
MethodSpec.quantized_linears) is the one case the meta model cannot show: bitsandbytes quantizes while loading
real weights, so the linear layers it would quantize are found here and sized by `quantized_bytes`.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tunelab import methods
from tunelab.config.schema import ModelConfig
from tunelab.methods.base import count_parameters, transformer_blocks
from tunelab.planning.activations import (
    BlockTensors,
    attention_width,
    block_saved_bytes,
    is_norm,
    module_saved_bytes,
    selective_block_saved_bytes,
)

# bitsandbytes 4-bit (blocks of 64 weights): 0.5 byte per weight, plus one fp32 absmax per block (4/64 B),
# or with double quantization an 8-bit absmax per block and an fp32 constant per 256 blocks.
NF4_BYTES_PER_PARAM = 0.5
NF4_CONSTANTS = {False: 4 / 64, True: 1 / 64 + 4 / (64 * 256)}
# LLM.int8: one byte per weight plus an fp32 scale per output row (added per layer in quantized_bytes).
INT8_BYTES_PER_PARAM = 1.0


def model_config(cfg: ModelConfig) -> Any:
    """The model's transformers config without its weights: a local/converted dir's config.json, a
    not-yet-converted GGUF's metadata, or a hub id's config.json."""
    from transformers import AutoConfig

    from tunelab.models import hub
    from tunelab.models.conversion import require_gguf
    from tunelab.models.source import resolve

    source = resolve(cfg.name)
    if source.kind in ("builtin", "gguf"):
        if source.converted:
            return AutoConfig.from_pretrained(source.cache_dir)
        gguf = require_gguf(source)
        return AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if source.kind == "local":
        return AutoConfig.from_pretrained(source.path, trust_remote_code=cfg.trust_remote_code)
    return AutoConfig.from_pretrained(cfg.name, **hub.pretrained_kwargs(cfg))


@dataclass(frozen=True)
class Layout:
    """One method applied to one model, at one compute dtype."""

    trainable: int  # parameters that train (exact)
    total: int  # all parameters, adapters included (a 4-bit weight counts as the parameters it stands for)
    weight_bytes: int  # every weight at the dtype it is held in during training
    trainable_bytes: int  # the trainable weights' own bytes: their gradients and each Adam state are as big
    cast_copy_bytes: int  # compute-dtype copies of fp32 matmul weights that autocast keeps for backward
    saved_bytes_per_token: int  # activations saved for backward, per token of the batch, all blocks
    total_blocks: int
    blocks_on_grad_path: int  # blocks the backward pass runs through
    attention_width: int  # heads x head_dim (q.k and attn.v FLOPs per earlier token)
    grad_path_linear_params: int  # frozen + trainable matmul weights the backward multiplies by
    trainable_linear_params: int  # matmul weights whose gradient is computed
    forward_linear_params: int  # every matmul weight in the blocks (the LM head is counted apart)
    sparse_head: bool  # the LM head runs on trained positions only
    hidden_size: int
    vocab_size: int  # LM head rows: logits per position
    head_trainable: bool
    extra_tokens: int  # virtual tokens the method adds to every row (prompt tuning's soft prompt)
    padding_free: bool = False  # batches are the rows end to end, no padding (tunelab.training.padding_free)
    checkpointing: str = "off"  # train.activation_checkpointing: off, selective or full
    selective_saved_bytes_per_token: int = 0  # what the blocks keep under selective checkpointing, all blocks
    residual_bytes: int = 4  # bytes per element of the residual stream (a checkpointed block's kept input)
    largest_block_bytes: int = 0  # the biggest block's weights: what FSDP gathers for one decoder layer
    outside_blocks_bytes: int = 0  # weights outside the blocks (embeddings, final norm, LM head, soft prompts)


def method_layout(hf_config: Any, method_name: str, method_cfg: Any, compute_dtype: torch.dtype) -> Layout:
    """Build the meta model in the method's load dtype, apply the method, and read off the layout."""
    from transformers import AutoModelForCausalLM

    spec = methods.get(method_name)
    with torch.device("meta"), warnings.catch_warnings(), _quiet():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_config(hf_config, dtype=spec.load_dtype(compute_dtype))
        quantized = quantizable_linears(model) if spec.quantized_linears else set()
        prepared = spec.prepare(model, _without_text_init(method_cfg), None)
    return read_layout(prepared, method_cfg, spec, compute_dtype, quantized)


def quantizable_linears(model: nn.Module) -> set[int]:
    """The linear layers bitsandbytes quantizes at load: all but the LM head (transformers keeps the
    output embedding, and any weight tied to it, in full precision)."""
    head = model.get_output_embeddings()
    return {id(m) for m in model.modules() if isinstance(m, nn.Linear) and m is not head}


def quantized_bytes(linear: nn.Linear, method_cfg: Any) -> float:
    n = linear.weight.numel()
    if getattr(method_cfg, "bits", 4) == 8:
        return n * INT8_BYTES_PER_PARAM + 4 * linear.out_features
    return n * (NF4_BYTES_PER_PARAM + NF4_CONSTANTS[bool(getattr(method_cfg, "double_quant", True))])


def read_layout(
    model: nn.Module, method_cfg: Any, spec: methods.MethodSpec, compute_dtype: torch.dtype, quantized: set[int]
) -> Layout:
    from tunelab.training.loss import supports_sparse_head, unwrap

    inner = unwrap(model)
    trainable, total = count_parameters(model)
    quantized_weights = {id(m.weight): m for m in inner.modules() if id(m) in quantized}
    weight_bytes, trainable_bytes = held_bytes(model.parameters(), quantized_weights, method_cfg)
    blocks = list(transformer_blocks(inner))
    block_bytes = [held_bytes(block.parameters(), quantized_weights, method_cfg)[0] for block in blocks]
    first = first_block_on_grad_path(model, inner, blocks)
    path = blocks[first:]
    a = torch.finfo(compute_dtype).bits // 8
    residual = torch.finfo(inner.get_input_embeddings().weight.dtype).bits // 8
    tensors = BlockTensors(compute_bytes=a, residual_bytes=residual, quantized=quantized, config=inner.config)
    head = inner.get_output_embeddings()
    linears = [m for block in blocks for m in block.modules() if isinstance(m, nn.Linear)]
    path_linears = [m for block in path for m in block.modules() if isinstance(m, nn.Linear)]
    return Layout(
        trainable=trainable,
        total=total,
        weight_bytes=weight_bytes,
        trainable_bytes=trainable_bytes,
        cast_copy_bytes=cast_copies(path_linears + ([head] if path or head.weight.requires_grad else []), tensors),
        saved_bytes_per_token=sum(block_saved_bytes(block, tensors) for block in path)
        + final_norm_bytes(inner, tensors),
        selective_saved_bytes_per_token=sum(selective_block_saved_bytes(block, tensors) for block in path),
        total_blocks=len(blocks),
        blocks_on_grad_path=len(path),
        attention_width=attention_width(inner.config),
        grad_path_linear_params=sum(m.weight.numel() for m in path_linears),
        trainable_linear_params=sum(m.weight.numel() for m in linears if m.weight.requires_grad),
        forward_linear_params=sum(m.weight.numel() for m in linears),
        sparse_head=spec.sparse_head and supports_sparse_head(model),
        hidden_size=head.in_features,
        vocab_size=head.out_features,
        head_trainable=head.weight.requires_grad,
        extra_tokens=spec.virtual_tokens(method_cfg),
        padding_free=spec.padding_free,  # for a decoder-only model (the planner's only kind) with SDPA attention
        residual_bytes=residual,
        largest_block_bytes=max(block_bytes, default=0),
        outside_blocks_bytes=weight_bytes - sum(block_bytes),
    )


def held_bytes(parameters: Any, quantized_weights: dict[int, nn.Linear], method_cfg: Any) -> tuple[int, int]:
    """Bytes of these weights at the dtype each is held in (a quantized one sized by `quantized_bytes`), and of
    the trainable ones among them; a weight shared by two modules counts once."""
    weight_bytes = trainable_bytes = 0.0
    for p in {id(p): p for p in parameters}.values():
        if id(p) in quantized_weights:
            weight_bytes += quantized_bytes(quantized_weights[id(p)], method_cfg)
            continue
        weight_bytes += p.numel() * p.element_size()
        trainable_bytes += p.numel() * p.element_size() if p.requires_grad else 0
    return int(weight_bytes), int(trainable_bytes)


def first_block_on_grad_path(prepared: nn.Module, model: nn.Module, blocks: list[nn.Module]) -> int:
    """Backward runs from the loss down to the earliest trainable weight: from block 0 when anything before
    the blocks trains (embeddings, soft prompts, prefixes that feed every layer, an LM head tied to the
    embeddings), else from the first block holding a trainable weight; past the last block when only the
    final norm or an untied LM head trains."""
    in_blocks = {id(p) for block in blocks for p in block.parameters()}
    head_side = {id(p) for p in model.get_output_embeddings().parameters()}
    head_side |= {id(p) for name, m in model.named_modules() if name.endswith(".norm") for p in m.parameters()}
    head_side -= {id(p) for p in model.get_input_embeddings().parameters()}
    for p in prepared.parameters():  # the peft wrapper's too: a soft prompt lives outside the base model
        if p.requires_grad and id(p) not in in_blocks and id(p) not in head_side:
            return 0
    for i, block in enumerate(blocks):
        if any(p.requires_grad for p in block.parameters()):
            return i
    return len(blocks)


def cast_copies(linears: list[nn.Module], tensors: BlockTensors) -> int:
    """Under bf16/fp16 autocast an fp32 weight is cast for each matmul, and the cast is kept for backward
    (the input gradient multiplies by it). Quantized and already-low-precision weights need no copy."""
    if tensors.compute_bytes >= 4:
        return 0
    return sum(
        m.weight.numel() * tensors.compute_bytes
        for m in {id(m): m for m in linears}.values()
        if id(m) not in tensors.quantized and m.weight.dtype == torch.float32
    )


def final_norm_bytes(model: nn.Module, tensors: BlockTensors) -> int:
    """The final norm sits on every gradient path (between the blocks and the LM head)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    norm = next((m for name, m in decoder.named_children() if is_norm(m)), None)
    return module_saved_bytes(norm, tensors) if norm is not None else 0


def _without_text_init(method_cfg: Any) -> Any:
    """A soft prompt initialized from text has as many parameters as a random one; skip the tokenizer."""
    if getattr(method_cfg, "init_text", None):
        return method_cfg.model_copy(update={"init_text": None})
    return method_cfg


@contextlib.contextmanager
def _quiet():
    """peft and transformers log about meta tensors and deprecations; none of it concerns a plan."""
    import logging

    loggers = [logging.getLogger(n) for n in ("transformers", "peft")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
