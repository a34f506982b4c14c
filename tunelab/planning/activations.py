"""Activation memory: the bytes a transformer block saves for backward, per token.

    tensors = BlockTensors(compute_bytes=2, residual_bytes=4, quantized=set(), config=hf_config)
    block_saved_bytes(block, tensors)      # bytes per token of the batch

A term-by-term account of what autograd keeps in a pre-norm decoder block (Llama-style: RMSNorm, SDPA
attention with rotary embeddings, SwiGLU MLP). It was read off the saved-tensor hooks
(torch.autograd.graph.saved_tensors_hooks) of SmolLM2-135M for full, lora and qlora under bf16 autocast,
and each term is a rule about which tensors autograd needs, so it follows the method:

- a norm keeps its fp32 input and a per-token scale; also its output when its weight trains;
- a linear layer keeps its input (cast to the compute dtype; autocast casts once per consumer, so q, k
  and v keep three copies) only when its weight trains: LoRA's A and B, every layer in `full`. Without a
  cast (fp32 compute on an fp32 model; peft casts the input to an fp32 adapter's dtype, which is one) the
  layers that read one tensor share it: q, k and v (and their LoRA A) keep one copy, gate and up one, and
  o_proj keeps none, reading attention's kept output (`SHARED_INPUTS`). tunelab's LoRA layer
  (methods/lora_linear.py) hands A its input as it comes, so under autocast its A shares whenever the
  residual stream is already in the compute dtype;
- SDPA keeps q, k, v, its output and a log-sum-exp (the fused kernels keep no seq x seq matrix), and
  the rotary cos/sin tables in the residual dtype;
- the MLP keeps the gate output, the activation's output and the up projection's output, in the dtype
  the base projections return (the compute dtype; a bitsandbytes layer returns its input's dtype);
- IA3 keeps the tensor it rescales; a bottleneck adapter its inner activation.

Under selective checkpointing (tunelab.training.activation_checkpointing) a block keeps only the outputs of its
matmuls whose inner dimension is at least activation_checkpointing.MIN_INNER_DIM, and attention's output and
log-sum-exp (`selective_block_saved_bytes`); the rest is recomputed in the backward pass.

Blocks before the first trainable weight keep nothing (no gradient flows there); shape.py decides which
blocks are on the gradient path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

FP32 = 4


@dataclass(frozen=True)
class BlockTensors:
    compute_bytes: int  # matmul dtype under autocast: 2 for bf16/fp16, 4 for fp32
    residual_bytes: int  # dtype of the residual stream (that of the embeddings): 4 when the base is fp32
    config: Any  # the transformers config (sizes)
    quantized: set[int] = field(default_factory=set)  # ids of linear layers bitsandbytes quantizes


# Projections of a Llama-style block that read the same tensor (the normed attention / MLP input), and o_proj,
# which reads attention's output: SDPA's fused kernels return it laid out as [batch, tokens, heads, head_dim],
# so transformers' transpose-and-contiguous before o_proj copies nothing and SDPA's kept output is that tensor.
SHARED_INPUTS = {"q_proj": "attention input", "k_proj": "attention input", "v_proj": "attention input"}
SHARED_INPUTS |= {"gate_proj": "mlp input", "up_proj": "mlp input", "o_proj": "attention output"}


def block_saved_bytes(block: nn.Module, tensors: BlockTensors) -> int:
    """Bytes saved for backward per token by one block on the gradient path."""
    saved = attention_core_bytes(tensors) + mlp_intermediate_bytes(block, tensors)
    kept_inputs = {"attention output"}  # counted in attention_core_bytes
    lean = lean_lora_a_ids(block)
    for name, module in block.named_modules():
        shared = shared_input(name) if isinstance(module, nn.Linear) and module.weight.requires_grad else None
        if shared is not None and reads_uncast(module, tensors, tunelab_lora_a=id(module) in lean):
            if shared in kept_inputs:
                continue  # one tensor, already counted for a sibling projection
            kept_inputs.add(shared)
        saved += module_saved_bytes(module, tensors)
    return saved


def reads_uncast(linear: nn.Linear, tensors: BlockTensors, tunelab_lora_a: bool = False) -> bool:
    """The layer multiplies its input as it comes: no autocast copy (the residual stream is already in the
    compute dtype) and no cast to its own weight's dtype (peft casts the input to an fp32 adapter's; tunelab's
    LoRA layer does not)."""
    if tunelab_lora_a:
        return tensors.compute_bytes == tensors.residual_bytes
    return linear.weight.element_size() == tensors.compute_bytes == tensors.residual_bytes


def lean_lora_a_ids(block: nn.Module) -> set[int]:
    """ids of the LoRA A layers whose forward is tunelab's (methods/lora_linear.py), not peft's."""
    from tunelab.methods.lora_linear import AddmmLoraLinear

    return {
        id(m.lora_A[adapter])
        for m in block.modules()
        if isinstance(m, AddmmLoraLinear) and (adapter := m.lean_adapter()) is not None
    }


def shared_input(name: str) -> str | None:
    """The shared tensor a linear layer reads: a projection in SHARED_INPUTS or its LoRA A (its LoRA B reads
    A's output, its own)."""
    parts = name.split(".")
    projection = next((p for p in parts if p in SHARED_INPUTS), None)
    return None if projection is None or "lora_B" in parts else SHARED_INPUTS[projection]


def selective_block_saved_bytes(block: nn.Module, tensors: BlockTensors) -> int:
    """Bytes per token one block keeps under selective checkpointing: what checkpointing.policy saves."""
    from tunelab.training.activation_checkpointing import MIN_INNER_DIM

    c = tensors.config
    saved = tensors.compute_bytes * attention_width(c) + FP32 * c.num_attention_heads
    for module in block.modules():
        if isinstance(module, nn.Linear) and module.in_features >= MIN_INNER_DIM:
            # bitsandbytes layers return their input's dtype (the residual's), as in mlp_intermediate_bytes
            out_bytes = tensors.residual_bytes if id(module) in tensors.quantized else tensors.compute_bytes
            saved += out_bytes * module.out_features
    return saved


def module_saved_bytes(module: nn.Module, tensors: BlockTensors) -> int:
    """What one sub-module adds: norms, trainable linear layers, IA3 scalings, adapter activations."""
    from tunelab.methods.adapter import Bottleneck

    hidden = tensors.config.hidden_size
    if is_norm(module):
        trains = any(p.requires_grad for p in module.parameters(recurse=False))
        return FP32 * hidden + FP32 + (tensors.residual_bytes * hidden if trains else 0)
    if isinstance(module, nn.Linear) and module.weight.requires_grad:
        return tensors.compute_bytes * module.in_features
    if hasattr(module, "ia3_l") and hasattr(module, "base_layer"):
        base = module.base_layer
        width = base.in_features if getattr(module, "is_feedforward", False) else base.out_features
        return tensors.compute_bytes * width
    if isinstance(module, Bottleneck):
        return tensors.compute_bytes * module.down.out_features
    return 0


def is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) or type(module).__name__.endswith("RMSNorm")


def attention_core_bytes(tensors: BlockTensors) -> int:
    """q, k, v, the attention output and a log-sum-exp per head; the rotary cos/sin tables."""
    c = tensors.config
    head_dim = attention_width(c) // c.num_attention_heads
    q_dim = attention_width(c)
    kv_dim = (getattr(c, "num_key_value_heads", None) or c.num_attention_heads) * head_dim
    a = tensors.compute_bytes
    return a * (2 * q_dim + 2 * kv_dim) + FP32 * c.num_attention_heads + 2 * tensors.residual_bytes * head_dim


def attention_width(config: Any) -> int:
    """heads x head_dim (most models: the hidden size; some set head_dim apart)."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return config.num_attention_heads * head_dim


def mlp_intermediate_bytes(block: nn.Module, tensors: BlockTensors) -> int:
    """A gated MLP keeps gate output, activation output and up output; a plain one the activation input."""
    c = tensors.config
    intermediate = getattr(c, "intermediate_size", None) or 4 * c.hidden_size
    linears = [(name, m) for name, m in block.named_modules() if isinstance(m, nn.Linear)]
    gated = any("gate" in name for name, _ in linears)
    quantized = any(id(m) in tensors.quantized for _, m in linears)
    # bitsandbytes layers return their input's dtype (the residual's); nn.Linear under autocast the compute dtype
    out_bytes = tensors.residual_bytes if quantized else tensors.compute_bytes
    return (3 if gated else 1) * out_bytes * intermediate
