"""The `method:` section: one strict class per fine-tuning method, a discriminated union on `name`.

    method: {name: qlora, r: 16, bits: 4}      # an option of another method fails by structure

Kept apart from schema.py because the method family is the part of the config that grows; each class
documents its options once, here. The code that applies a method lives in tunelab/methods/<name>.py.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class FullMethod(Strict):
    """Every weight trains."""

    name: Literal["full"]


class FreezeMethod(Strict):
    """Feature extraction: early blocks frozen, the last `trainable_layers` transformer blocks train
    (0: only what train_norm / train_lm_head / a classification head add)."""

    name: Literal["freeze"]
    trainable_layers: int = Field(2, ge=0, description="How many of the last transformer blocks train.")
    train_norm: bool = Field(True, description="Also train the final normalization layer.")
    train_lm_head: bool = Field(False, description="Also train the LM head (and tied embeddings, if tied).")


class AdapterMethodBase(Strict):
    """Methods whose artifact is a small adapter on a frozen base; several can share one loaded base."""

    adapter_name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_-]*$",
        description="This run's adapter name when several are loaded on one base "
        "(`tunelab generate runs/a,runs/b --adapter NAME 'prompt'`): letters, digits, _ and -. Default: the run "
        "directory's name, each . as _.",
    )


class LoraOptions(AdapterMethodBase):
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: float = Field(
        32, gt=0, description="LoRA alpha; the update is scaled by alpha/r (alpha/sqrt(r) with rsLoRA)."
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt, or `all-linear` (every linear layer but the LM head)."
    )
    use_rslora: bool = Field(False, description="rsLoRA: scale by alpha/sqrt(r), stabler at high rank.")
    use_dora: bool = Field(False, description="DoRA: weight-decomposed LoRA (magnitude + direction).")


class LoraMethod(LoraOptions):
    """LoRA through peft: low-rank updates on the chosen linear layers; the base stays frozen."""

    name: Literal["lora"]


class QLoraMethod(LoraOptions):
    """LoRA on a base quantized by bitsandbytes at load time: 4-bit (NF4/FP4) or 8-bit."""

    name: Literal["qlora"]
    bits: Literal[4, 8] = Field(4, description="Base weight precision: 4 (NF4/FP4) or 8 (LLM.int8).")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type; NF4 suits normal weights.")
    double_quant: bool = Field(True, description="4-bit: quantize the quantization constants too (~0.4 bit/param).")
    compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="4-bit matmul dtype; `auto`: the run's compute dtype."
    )


class Ia3Method(AdapterMethodBase):
    """IA3: learned vectors rescale keys, values and the feed-forward input; ~0.01-0.1% of the parameters."""

    name: Literal["ia3"]
    target_modules: list[str] | None = Field(
        None, description="Modules whose activations are rescaled. Default: peft's for the architecture."
    )
    feedforward_modules: list[str] | None = Field(
        None, description="Which of target_modules are feed-forward (rescaled at the input). Default: peft's."
    )


class PromptTuningMethod(AdapterMethodBase):
    """Soft prompts: `num_virtual_tokens` trained embeddings prepended to every input; the model is frozen."""

    name: Literal["prompt_tuning"]
    num_virtual_tokens: int = Field(20, ge=1, description="Length of the soft prompt, in tokens.")
    init_text: str | None = Field(
        None, description="Initialize the soft prompt from this text's token embeddings (default: random)."
    )


# Li & Liang (2021, section 7.2): initializing the prefix with activations of real words trains far better
# than random init; any ordinary text works, the task's own words a little better.
PREFIX_INIT_TEXT = "Read the request carefully, then give a short, correct answer."


class PrefixTuningMethod(AdapterMethodBase):
    """Prefix tuning: trained key/value prefixes at every layer's attention; the model is frozen."""

    name: Literal["prefix_tuning"]
    num_virtual_tokens: int = Field(20, ge=1, description="Prefix length, in tokens.")
    projection: bool = Field(False, description="Reparameterize the prefix through an MLP (stabler, more params).")
    init_text: str | None = Field(
        PREFIX_INIT_TEXT,
        description="Start the prefix as the model's own keys/values for this text (null: random, as peft; "
        "random prefixes start far from the base model: loss ~10 on the built-in model). Used when projection: false.",
    )

    @model_validator(mode="after")
    def _init_needs_no_projection(self) -> PrefixTuningMethod:
        # The default text is simply not used through an MLP; only an explicit one is a contradiction.
        if self.projection and self.init_text is not None and "init_text" in self.model_fields_set:
            raise ValueError("init_text seeds the prefix itself; with projection: true set init_text: null")
        return self


class BottleneckAdapterMethod(AdapterMethodBase):
    """Bottleneck adapters: small down-project → activation → up-project blocks with a residual, after the
    feed-forward block (Pfeiffer) or after attention and feed-forward (Houlsby)."""

    name: Literal["adapter"]
    style: Literal["pfeiffer", "houlsby"] = Field(
        "pfeiffer", description="`pfeiffer`: after each feed-forward block; `houlsby`: after attention too."
    )
    reduction_factor: int = Field(16, ge=1, description="Bottleneck width = hidden size / reduction_factor.")
    activation: Literal["relu", "gelu", "silu"] = Field("relu", description="Non-linearity inside the bottleneck.")


# Every method's options class, in registry order: a new method is its class above and one entry here.
METHOD_CLASSES: tuple[type[Strict], ...] = (
    FullMethod,
    FreezeMethod,
    LoraMethod,
    QLoraMethod,
    Ia3Method,
    PromptTuningMethod,
    PrefixTuningMethod,
    BottleneckAdapterMethod,
)
METHOD_MODELS: dict[str, type[Strict]] = {
    cls.model_fields["name"].annotation.__args__[0]: cls for cls in METHOD_CLASSES
}

# The `method:` section: the class whose `name` the YAML gives (pydantic validates against that one only).
# Union[...] of the tuple, not X | Y: that would list every class a second time.
MethodConfig = Annotated[Union[METHOD_CLASSES], Field(discriminator="name")]  # noqa: UP007
