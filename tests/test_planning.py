"""`tunelab plan`: the arithmetic by hand, exact counts against real models, saved activations against
autograd, the recommendation rule, and the command itself."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import run_cli, write_config
from tunelab import config, methods
from tunelab.planning import estimate, machine, planner, recommend, report, shape
from tunelab.planning.activations import BlockTensors, block_saved_bytes
from tunelab.planning.tokens import TokenStats, from_lengths

# The methods whose plan a meta model shows whole: a quantized base is sized apart (bitsandbytes quantizes as real
# weights load), and checked against a real 4-bit model in test_qlora_counts_equal_a_real_4bit_model.
UNQUANTIZED_METHODS = [name for name, spec in methods.METHODS.items() if not spec.quantized_linears]
# Methods whose per-token account of saved activations is not checked against autograd here, and why.
SAVED_ACTIVATIONS_UNCHECKED = {
    # Its prefix adds keys and values in front of every layer's attention, which the per-token account does not
    # count (init_text: null, bf16: autograd keeps 455,680 B in the last block against 340,992 B counted).
    "prefix_tuning": "prefix keys and values are not in the per-token account",
}


def test_every_method_is_planned_and_ranked():
    assert SAVED_ACTIVATIONS_UNCHECKED.keys() <= set(UNQUANTIZED_METHODS)
    assert {name for _, name, _ in planner.ROWS} == methods.METHODS.keys()
    assert sorted(recommend.CAPABILITY) == sorted(label for label, _, _ in planner.ROWS)  # none never recommended


def method_cfg(name: str, **options):
    return config.load(
        None, ["data.train=x.jsonl", f"method.name={name}", *(f"method.{k}={v}" for k, v in options.items())]
    ).method


def tiny_hf_config(tiny_model_dir):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(tiny_model_dir)


def layout(tiny_model_dir, name, dtype=torch.bfloat16, **options):
    return shape.method_layout(tiny_hf_config(tiny_model_dir), name, method_cfg(name, **options), dtype)


@pytest.fixture
def machine_cache(monkeypatch, tmp_path):
    """A private cache with a known matmul rate, so no test spends a second timing matmuls."""
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "cache"))
    key = machine.cache_key(torch.device("cpu"), torch.float32)
    machine.write_cache(machine.cache_file(), {key: {"flops_per_second": 1e11}})
    return tmp_path / "cache"


# ------------------------------------------------------------------ arithmetic, by hand


def hand_layout(**changes) -> shape.Layout:
    fields = dict(
        trainable=1000,
        total=10_000,
        weight_bytes=40_000,
        trainable_bytes=4000,
        cast_copy_bytes=500,
        saved_bytes_per_token=100,
        total_blocks=2,
        blocks_on_grad_path=2,
        attention_width=8,
        grad_path_linear_params=3000,
        trainable_linear_params=1000,
        forward_linear_params=3000,
        sparse_head=True,
        hidden_size=8,
        vocab_size=50,
        head_trainable=False,
        extra_tokens=0,
    )
    return shape.Layout(**{**fields, **changes})


def hand_stats(**changes) -> TokenStats:
    fields = dict(
        rows=4,
        batch_size=2,
        longest_row=10,
        most_trained_in_row=3,
        padded_tokens_per_epoch=40,
        real_tokens_per_epoch=30,
        longest_batch_tokens=18,
        trained_tokens_per_epoch=12,
        steps_per_epoch=2,
        source="data",
    )
    return TokenStats(**{**fields, **changes})


def test_memory_components_by_hand():
    m = estimate.estimate_memory(hand_layout(), hand_stats(), compute_bytes=2, device_type="cpu")
    assert (m.weights, m.gradients, m.optimizer) == (40_000, 4000, 8000)  # AdamW: 2 fp32 states
    assert m.activations == 2 * 10 * 100 + 500  # batch 2 x 10 tokens x 100 B, plus autocast's weight copies
    assert m.logits == 2 * 3 * 50 * (2 + 4 + 4)  # trained positions only: 6 x vocab x (bf16 + fp32 + fp32)
    factor = estimate.ALLOCATOR_FACTOR["cpu"][2]
    assert m.step_transient == int(factor * (2500 + 3000))  # gradients (4000) reuse what backward frees
    assert m.evaluation == 0 and m.overhead == estimate.RUNTIME_OVERHEAD["cpu"]
    assert m.total == 40_000 + 8000 + m.step_transient + m.overhead


def test_padding_free_counts_the_rows_own_tokens():
    layout = hand_layout(padding_free=True)
    m = estimate.estimate_memory(layout, hand_stats(), compute_bytes=2, device_type="cpu")
    assert m.activations == 18 * 100 + 500  # the two longest rows end to end (18 tokens), not 2 x 10
    # 30 real tokens (context: rows of 7.5 on average), not 40 padded ones
    context = 30 / 4 / 2
    assert estimate.epoch_flops(layout, hand_stats()) == 30 * estimate.flops_per_token(layout, context) + 12 * 1600


def test_checkpointing_keeps_block_inputs_and_one_block_and_recomputes_the_forward():
    layout = hand_layout(checkpointing="full", residual_bytes=4)
    m = estimate.estimate_memory(layout, hand_stats(), compute_bytes=2, device_type="cpu")
    # 20 tokens x (2 blocks x hidden 8 x 4 B of kept input + one block's 100 / 2 B), plus autocast's weight copies
    assert m.activations == 20 * (2 * 8 * 4 + 50) + 500
    # the blocks' forward once more: 2 x 3000 + 4 x 5 x 8 x 2 blocks on top of test_flops_and_time_by_hand's 14,960
    assert estimate.flops_per_token(layout, 5) == 14_960 + 6000 + 320


def test_selective_checkpointing_keeps_block_inputs_its_account_and_one_block_and_recomputes_no_matmul():
    layout = hand_layout(checkpointing="selective", selective_saved_bytes_per_token=30, residual_bytes=4)
    m = estimate.estimate_memory(layout, hand_stats(), compute_bytes=2, device_type="cpu")
    # 20 tokens x (2 blocks x hidden 8 x 4 B of kept input + 30 B kept by the policy + one block's 100 / 2 B)
    assert m.activations == 20 * (2 * 8 * 4 + 30 + 50) + 500
    assert estimate.flops_per_token(layout, 5) == 14_960  # test_flops_and_time_by_hand's, no forward again


def test_gradients_bigger_than_activations_set_the_step_peak():
    m = estimate.estimate_memory(hand_layout(trainable_bytes=10**6), hand_stats(), compute_bytes=2, device_type="cpu")
    assert m.step_transient == 10**6 and m.optimizer == 2 * 10**6


def test_an_evaluation_batch_adds_its_full_logits():
    m = estimate.estimate_memory(hand_layout(), hand_stats(), compute_bytes=2, device_type="cpu", eval_positions=16)
    assert m.evaluation == 16 * 50 * (2 + 4 + 4)
    both = config.load(None, ["data.train=x.jsonl", "data.val_size=0.1", "train.per_device_eval_batch_size=3"])
    assert estimate.evaluation_positions(both, hand_stats(longest_row=1000)) == 3 * 1000  # beats the probe's
    assert estimate.evaluation_positions(both, hand_stats()) == estimate.PROBE_BATCH_TOKENS
    neither = config.load(None, ["data.train=x.jsonl", "forgetting.enabled=false"])
    assert estimate.evaluation_positions(neither, hand_stats()) == 0


def test_without_the_sparse_head_every_position_gets_logits():
    layout = hand_layout(sparse_head=False, extra_tokens=5)  # prompt tuning: 5 virtual tokens per row
    m = estimate.estimate_memory(layout, hand_stats(), compute_bytes=4, device_type="cuda")
    assert m.logits == 2 * (10 + 5) * 50 * (4 + 4 + 4)
    assert m.activations == 2 * 15 * 100 + 500
    assert m.step_transient == m.activations + m.logits  # the GPU allocator is taken as exact
    assert m.overhead == estimate.CUDA_CONTEXT


def test_flops_and_time_by_hand():
    layout = hand_layout()
    # context 5: forward 2 x 3000 + 4 x 5 x 8 x 2 blocks; backward 2 x 3000 + 2 x 1000 + 2 x (4 x 5 x 8) x 2
    assert estimate.flops_per_token(layout, 5) == 6000 + 320 + 6000 + 2000 + 640
    # the head: 2 x 8 x 50 forward, again for the gradient into the blocks (the head itself is frozen)
    assert estimate.head_flops_per_position(layout) == 1600
    # 40 tokens of rows averaging 10 (context 5), 12 trained positions
    flops = 40 * 14_960 + 12 * 1600
    assert estimate.epoch_flops(layout, hand_stats()) == flops
    bf16, fp32 = estimate.EFFICIENCY[2], estimate.EFFICIENCY[4]
    assert estimate.epoch_seconds(layout, hand_stats(), 1e6, 2) == pytest.approx(flops / (1e6 * bf16))
    assert estimate.epoch_seconds(layout, hand_stats(), 1e6, 4) == pytest.approx(flops / (1e6 * fp32))
    assert estimate.step_seconds(layout, hand_stats(), 1e6, 2) == pytest.approx(flops / (1e6 * bf16) / 2)
    assert estimate.epoch_seconds(layout, hand_stats(rows=None, padded_tokens_per_epoch=None), 1e6, 2) is None


def test_batches_are_padded_to_their_longest_row():
    cfg = config.load(None, ["data.train=x.jsonl", "train.seed=1"])
    stats = from_lengths([10, 20, 30, 40, 50], [1, 2, 3, 4, 5], batch_size=2, cfg=cfg)
    assert (stats.rows, stats.longest_row, stats.most_trained_in_row, stats.steps_per_epoch) == (5, 50, 5, 3)
    assert stats.trained_tokens_per_epoch == 15
    assert 150 <= stats.padded_tokens_per_epoch <= 2 * 50 + 2 * 40 + 30  # >= the unpadded sum, <= worst pairing
    assert stats.peak_batch_tokens == 100 and stats.peak_trained_tokens == 10


# ------------------------------------------------------------------ counts and bytes against real models


def test_lora_layout_by_hand(tiny_model_dir):
    """Tiny Llama: hidden 32, intermediate 64, 2 layers, 4 heads x 8, 2 kv heads, vocab V, tied embeddings."""
    cfg = tiny_hf_config(tiny_model_dir)
    h, i, v, r = 32, 64, cfg.vocab_size, 4
    got = layout(tiny_model_dir, "lora", r=r)
    # per layer: q, o (h->h), k, v (h->16), gate, up (h->i), down (i->h); LoRA adds r x (in + out) each
    per_layer = r * ((h + h) * 2 + (h + 16) * 2 + (h + i) * 2 + (i + h))
    base = v * h + 2 * (h * h * 2 + h * 16 * 2 + 3 * h * i + 2 * h) + h
    assert (got.trainable, got.total) == (2 * per_layer, base + 2 * per_layer)
    assert got.weight_bytes == 2 * base + 4 * 2 * per_layer  # bf16 frozen base, fp32 adapters
    assert got.trainable_bytes == 4 * 2 * per_layer
    # saved per token per block (bf16 compute, bf16 residual): 2 norms (fp32 input + scale), LoRA inputs
    # (A: in-features, B: r, bf16; tunelab's layer hands A the bf16 input uncast, so the A of q, k and v
    # share one, gate and up one, o's is attention's output, kept below: 2 of width h, and down's of width
    # i), SDPA (q, k, v, out, lse, rotary cos/sin), SwiGLU (3 x i, bf16)
    norms = 2 * (4 * h + 4)
    lora_inputs = 2 * (h * 2 + i) + 2 * r * 7
    attention = 2 * (2 * h + 2 * 16) + 4 * 4 + 2 * 2 * 8
    block = norms + lora_inputs + attention + 3 * 2 * i
    assert got.saved_bytes_per_token == 2 * block + (4 * h + 4)  # + the final norm
    assert got.blocks_on_grad_path == 2 and got.sparse_head and not got.head_trainable


def test_freeze_saves_nothing_below_its_first_trainable_block(tiny_model_dir):
    got = layout(tiny_model_dir, "freeze", trainable_layers=1, train_norm="false")
    full = layout(tiny_model_dir, "full")
    assert got.blocks_on_grad_path == 1 and full.blocks_on_grad_path == 2
    assert got.saved_bytes_per_token < full.saved_bytes_per_token / 1.5
    assert got.weight_bytes == full.weight_bytes == 4 * full.total  # fp32 master weights


def test_qlora_quantized_weights_are_sized_by_bits(tiny_model_dir):
    four, eight = layout(tiny_model_dir, "qlora"), layout(tiny_model_dir, "qlora", bits=8)
    lora = layout(tiny_model_dir, "lora")
    assert four.trainable == eight.trainable == lora.trainable
    assert four.weight_bytes < eight.weight_bytes
    cfg = tiny_hf_config(tiny_model_dir)
    linears = 2 * (32 * 32 * 2 + 32 * 16 * 2 + 3 * 32 * 64)
    rest = (cfg.vocab_size * 32 + 2 * 2 * 32 + 32) * 4  # embeddings and norms: fp32 after kbit preparation
    adapters = lora.trainable * 4
    assert four.weight_bytes == pytest.approx(linears * (0.5 + 1 / 64 + 4 / (64 * 256)) + rest + adapters, abs=2)


@pytest.mark.parametrize("name", UNQUANTIZED_METHODS)
def test_trainable_counts_equal_the_real_models(tiny_model_dir, smol_tokenizer, name):
    from transformers import AutoModelForCausalLM

    spec, cfg = methods.get(name), method_cfg(name)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=spec.load_dtype(torch.float32))
    real = methods.count_parameters(spec.prepare(model, cfg, smol_tokenizer))  # the tokenizer for text inits
    planned = shape.method_layout(tiny_hf_config(tiny_model_dir), name, cfg, torch.float32)
    assert (planned.trainable, planned.total) == real


def test_qlora_counts_equal_a_real_4bit_model(tiny_model_dir):
    pytest.importorskip("bitsandbytes")
    from tunelab.config import ModelConfig
    from tunelab.models import load_model

    spec, cfg = methods.get("qlora"), method_cfg("qlora")
    options = spec.load_options(cfg, torch.bfloat16)
    model = load_model(ModelConfig(name=str(tiny_model_dir)), torch.bfloat16, torch.device("cpu"), **options)
    real = methods.count_parameters(spec.prepare(model, cfg, None))
    planned = shape.method_layout(tiny_hf_config(tiny_model_dir), "qlora", cfg, torch.bfloat16)
    assert (planned.trainable, planned.total) == real


def saved_in_block(model, block, inputs, sparse_head: bool, autocast: bool) -> int:
    """Bytes autograd saves inside `block` in one forward (bf16 autocast, or none), each storage once."""
    from tunelab.training.loss import trained_positions_loss

    depth = [0]  # 1 while the block runs
    block.register_forward_pre_hook(lambda *_: depth.__setitem__(0, 1))
    block.register_forward_hook(lambda *_: depth.__setitem__(0, 0))
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if depth[0] and storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    cast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), cast:
        trained_positions_loss(model, inputs) if sparse_head else model(**inputs)
    return sum(seen.values())


@pytest.mark.parametrize("compute", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("name", [name for name in UNQUANTIZED_METHODS if name not in SAVED_ACTIVATIONS_UNCHECKED])
def test_saved_activations_match_autograd(tiny_model_dir, name, compute):
    """The per-token account (activations.py) against the tensors autograd really keeps in the last block,
    within 15%, under bf16 autocast and in plain fp32. (The first block on the gradient path is counted whole
    although a method whose first trainable weight sits mid-block saves less there: at most one block's worth
    too high.)"""
    from transformers import AutoModelForCausalLM

    from tunelab.methods.base import transformer_blocks
    from tunelab.training.loss import unwrap

    spec, cfg = methods.get(name), method_cfg(name, **({"trainable_layers": 1} if name == "freeze" else {}))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=spec.load_dtype(compute))
    model = spec.prepare(base, cfg, None)
    batch, length = 4, 96
    ids = torch.randint(100, 1000, (batch, length))
    labels = torch.full_like(ids, -100)
    labels[:, -8:] = ids[:, -8:]
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    inner = unwrap(model)
    last = transformer_blocks(inner)[-1]
    measured = saved_in_block(model, last, inputs, spec.sparse_head, autocast=compute == torch.bfloat16)

    residual = torch.finfo(inner.get_input_embeddings().weight.dtype).bits // 8
    compute_bytes = torch.finfo(compute).bits // 8
    tensors = BlockTensors(compute_bytes=compute_bytes, residual_bytes=residual, config=inner.config)
    per_token = block_saved_bytes(last, tensors)
    copies = shape.cast_copies([m for m in last.modules() if isinstance(m, torch.nn.Linear)], tensors)
    tokens = batch * (length + spec.virtual_tokens(cfg))
    assert measured == pytest.approx(tokens * per_token + copies, rel=0.15)


# ------------------------------------------------------------------ the recommendation rule


def candidates(**memory_and_time):
    return [recommend.Candidate(label, m, s) for label, (m, s) in memory_and_time.items()]


GB = 2**30


def test_full_when_it_fits_and_is_not_much_slower():
    rows = candidates(full=(6 * GB, 150), lora=(3 * GB, 100), **{"qlora (4-bit)": (2 * GB, 120)})
    assert recommend.recommend(rows, 16 * GB).label == "full"


def test_lora_when_memory_is_tight_for_full():
    rows = candidates(full=(14 * GB, 150), lora=(3 * GB, 100), **{"qlora (4-bit)": (2 * GB, 120)})
    choice = recommend.recommend(rows, 16 * GB)  # full fits in 16 GB, but not with 20% to spare
    assert choice.label == "lora" and "full needs" in choice.reason


def test_lora_when_full_would_take_more_than_three_times_as_long():
    rows = candidates(full=(6 * GB, 400), lora=(3 * GB, 100))
    choice = recommend.recommend(rows, 16 * GB)
    assert choice.label == "lora" and "4.0x as long" in choice.reason


def test_qlora_when_only_a_quantized_base_fits():
    rows = candidates(
        full=(20 * GB, 150), lora=(7 * GB, 100), **{"qlora (8-bit)": (6 * GB, 130), "qlora (4-bit)": (4 * GB, 140)}
    )
    assert recommend.recommend(rows, 8 * GB).label == "qlora (8-bit)"  # 6 GB <= 80% of 8 GB; lora's 7 GB is not
    assert recommend.recommend(rows, 6 * GB).label == "qlora (4-bit)"


def test_nothing_fits_names_the_smallest_and_the_fix():
    rows = candidates(full=(20 * GB, 150), lora=(9 * GB, 100), ia3=(8 * GB, 90), unavailable=(None, None))
    choice = recommend.recommend(rows, 4 * GB)
    assert choice.label == "ia3" and "per_device_train_batch_size" in choice.reason


# ------------------------------------------------------------------ the machine


def test_matmul_rate_is_measured_once_then_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path))
    calls = []
    real = machine.measure_matmul_rate
    monkeypatch.setattr(machine, "measure_matmul_rate", lambda d, t, s=1.0: calls.append(1) or real(d, t, 0.01))
    first = machine.matmul_rate(torch.device("cpu"), torch.float32)
    assert first > 1e8 and machine.matmul_rate(torch.device("cpu"), torch.float32) == first and len(calls) == 1
    assert json.loads((tmp_path / "machine.json").read_text())


def test_available_memory_on_cpu_is_ram():
    free, kind = machine.available_memory(torch.device("cpu"))
    assert kind == "RAM" and free > 0


# ------------------------------------------------------------------ the command


def test_plan_prints_a_row_per_method_and_a_recommendation(tmp_path, tiny_model_dir, machine_cache, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    cfg = write_config(tmp_path, tiny_model_dir, method={"name": "lora", "r": 8})
    result = run_cli(["plan", str(cfg)])
    assert result.exit_code == 0, result.output
    for label, _, _ in planner.ROWS:  # every registered method, qlora once per base precision
        assert (f"{label} (configured)" if label == "lora" else label) in result.output
    assert "Recommended:" in result.output and "8 rows" in result.output


def test_plan_json_and_no_weights_load(tmp_path, tiny_model_dir, machine_cache, monkeypatch):
    import transformers

    def no_weights(*args, **kwargs):
        raise AssertionError("tunelab plan loaded weights")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_weights)
    cfg = write_config(tmp_path, tiny_model_dir, method={"name": "lora", "r": 8})
    result = run_cli(["plan", str(cfg), "train.per_device_train_batch_size=2", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    rows = {row["label"]: row for row in plan["methods"]}
    assert rows["lora"]["method"]["r"] == 8 and rows["qlora (4-bit)"]["method"]["r"] == 8  # options shared
    assert rows["full"]["trainable_params"] == rows["full"]["total_params"]
    assert plan["tokens"]["batch_size"] == 2 and plan["tokens"]["rows"] == 8
    assert plan["recommendation"]["label"] in rows
    assert all(row["memory_bytes"]["total"] > 0 and row["seconds_per_epoch"] > 0 for row in rows.values())


def test_unreadable_data_falls_back_to_max_seq_length(tmp_path, tiny_model_dir, machine_cache):
    from tunelab.planning import plan

    cfg = config.load(write_config(tmp_path, tiny_model_dir), ["data.train=missing.jsonl", "train.max_seq_length=64"])
    result = plan(cfg)
    assert result.tokens.rows is None and result.tokens.longest_row == 64
    assert "max_seq_length" in result.notes[0]
    assert all(row.seconds_per_epoch is None for row in result.rows) and result.recommendation.label


def test_dense_lm_head_when_the_config_turns_the_sparse_one_off(tmp_path, tiny_model_dir, machine_cache):
    from tunelab.planning import plan

    path = write_config(tmp_path, tiny_model_dir)
    sparse, dense = plan(config.load(path)), plan(config.load(path, ["train.sparse_lm_head=false"]))
    lora = {r.label: r for r in sparse.rows}["lora"].memory
    lora_dense = {r.label: r for r in dense.rows}["lora"].memory
    assert lora_dense.logits > 3 * lora.logits  # every position instead of the few completion tokens


def test_plan_bad_config_is_a_clean_error(tmp_path, tiny_model_dir):
    cfg = write_config(tmp_path, tiny_model_dir)
    result = run_cli(["plan", str(cfg), "train.per_device_train_batch_sise=4"])
    assert result.exit_code == 2
    assert "per_device_train_batch_size" in result.output and "Traceback" not in result.output


def test_plan_refuses_other_tasks_cleanly(tmp_path, tiny_model_dir):
    cfg = write_config(tmp_path, tiny_model_dir)
    result = run_cli(["plan", str(cfg), "model.task=seq2seq"])
    assert result.exit_code == 2 and "causal language models" in result.output and "Traceback" not in result.output


def test_plan_help_has_an_example():
    result = run_cli(["plan", "--help"])
    assert result.exit_code == 0 and "tunelab plan" in result.output and "Example" in result.output


def test_checkpointing_lowers_the_activations_and_adds_time_when_configured(tmp_path, tiny_model_dir, machine_cache):
    from tunelab.planning import plan

    path = write_config(tmp_path, tiny_model_dir)
    kept, selective, full = (
        plan(config.load(path, [f"train.activation_checkpointing={mode}"])) for mode in ("off", "selective", "full")
    )
    for label in ("full", "lora"):
        before, middle, after = ({r.label: r for r in p.rows}[label] for p in (kept, selective, full))
        assert after.memory.activations < middle.memory.activations < before.memory.activations, label
        assert after.seconds_per_epoch > middle.seconds_per_epoch == before.seconds_per_epoch, label
    assert any("selective activation checkpointing" in note for note in selective.notes)


# ------------------------------------------------------------------ preference objectives


def objective_config(tmp_path, tiny_model_dir, rows, objective, **train):
    from tests.helpers import write_jsonl

    data = {"train": str(write_jsonl(tmp_path / "rows.jsonl", rows))}
    cfg = {"model": {"name": str(tiny_model_dir), "dtype": "float32"}, "data": data, "objective": objective}
    return config.validate({**cfg, "train": {"per_device_train_batch_size": 4, **train}})


def test_a_pair_is_two_sequences_and_unsupported_methods_are_said_so(tmp_path, tiny_model_dir, machine_cache):
    pairs = [{"prompt": f"q{i}", "chosen": "yes", "rejected": "no no no"} for i in range(12)]
    cfg = objective_config(tmp_path, tiny_model_dir, pairs, {"name": "dpo"})
    result = planner.plan(cfg)
    assert result.tokens.rows == 24 and result.tokens.batch_size == 8 and result.tokens.steps_per_epoch == 3
    rows = {row.label: row for row in result.rows}
    assert rows["prompt_tuning"].unavailable == "objective dpo trains with lora, qlora, full, freeze"
    assert rows["lora"].memory is not None and rows["lora"].memory.objective == 0  # reference precomputed
    assert any("two sequences" in note for note in result.notes)


def test_grpo_counts_its_groups_and_their_generation_cache(tmp_path, tiny_model_dir, machine_cache):
    prompts = [{"prompt": f"question {i}"} for i in range(6)]
    rewards = [{"name": "valid_json"}]
    small = {"name": "grpo", "rewards": rewards, "num_generations": 4, "max_completion_length": 16}
    base = planner.plan(objective_config(tmp_path, tiny_model_dir, prompts, small))
    assert base.tokens.rows == 24 and base.tokens.steps_per_epoch == 6  # 6 prompts x 4 answers, 4 a step
    hf = tiny_hf_config(tiny_model_dir)
    kv_per_token = 2 * hf.num_hidden_layers * hf.num_key_value_heads * (hf.hidden_size // hf.num_attention_heads) * 4
    lora = {row.label: row for row in base.rows}["lora"].memory
    assert lora.objective == 4 * base.tokens.longest_row * kv_per_token  # the generation batch's KV cache, fp32
    longer = planner.plan(objective_config(tmp_path, tiny_model_dir, prompts, {**small, "max_completion_length": 64}))
    assert {r.label: r for r in longer.rows}["lora"].memory.objective > lora.objective
    # With a KL penalty, full fine-tuning keeps a reference copy of the weights; an adapter's is its base.
    kl = planner.plan(objective_config(tmp_path, tiny_model_dir, prompts, {**small, "beta": 0.04}))
    by_label = {r.label: r.memory for r in kl.rows}
    assert by_label["full"].objective == lora.objective + by_label["full"].weights
    assert by_label["lora"].objective == lora.objective


# ------------------------------------------------------------------ several processes (--nproc)


def test_per_process_memory_by_hand():
    from tunelab.planning import distributed

    layout = hand_layout(largest_block_bytes=9000, outside_blocks_bytes=22_000)
    one = estimate.estimate_memory(layout, hand_stats(), compute_bytes=2, device_type="cpu")
    factor = estimate.ALLOCATOR_FACTOR["cpu"][2]
    ddp, fsdp, zero2, zero3 = (
        distributed.process_memory(one, layout, name, nproc=2, factor=factor) for name in distributed.SHARDED
    )
    # ddp: one process's whole account, plus the buckets (a flat copy of the 4000 B of trainable gradients)
    assert ddp.total == one.total + 4000 and ddp.step_transient == one.step_transient
    # fsdp: weights 40,000 and AdamW 8000 halved, plus the root unit and two layers whole
    assert (fsdp.weights, fsdp.optimizer, fsdp.gradients, fsdp.buckets) == (20_000, 4000, 2000, 0)
    assert fsdp.gathered == 22_000 + 2 * 9000
    assert fsdp.total == one.total - 20_000 - 4000 + 40_000
    assert (zero2.weights, zero2.optimizer, zero2.gathered) == (40_000, 4000, 0)
    assert zero3 == fsdp


def test_time_with_processes_on_gpus_and_on_one_shared_machine():
    from tunelab.planning import distributed

    layout = hand_layout()
    one = estimate.estimate_memory(layout, hand_stats(), compute_bytes=2, device_type="cuda")
    gpus = distributed.Processes(4, "ddp", share_machine=False, gradient_accumulation=1, steps_per_epoch=2)
    on_gpus = distributed.process_plan(one, layout, 100.0, gpus, factor=1.0)
    assert (on_gpus.seconds_per_epoch, on_gpus.seconds_per_step) == (25.0, 12.5)
    assert gpus.needed(on_gpus.memory["ddp"].total) == on_gpus.memory["ddp"].total  # a GPU each
    cpu = distributed.Processes(4, "ddp", share_machine=True, gradient_accumulation=1, steps_per_epoch=2)
    shared = distributed.process_plan(one, layout, 100.0, cpu, factor=1.0)
    assert shared.seconds_per_epoch == 100.0  # the cores are shared: no faster
    assert cpu.needed(shared.memory["ddp"].total) == 4 * shared.memory["ddp"].total  # and the RAM


def test_layout_splits_the_weights_into_layers_and_the_root_unit(tiny_model_dir):
    full = layout(tiny_model_dir, "full")
    cfg = tiny_hf_config(tiny_model_dir)
    assert full.outside_blocks_bytes == 4 * (cfg.vocab_size * 32 + 32)  # tied embeddings and the final norm, fp32
    assert full.outside_blocks_bytes + 2 * full.largest_block_bytes == full.weight_bytes  # two equal layers
    lora = layout(tiny_model_dir, "lora")
    assert lora.largest_block_bytes > full.largest_block_bytes / 2  # bf16 base + fp32 adapters


def test_two_processes_per_strategy(tmp_path, tiny_model_dir, machine_cache):
    path = write_config(tmp_path, tiny_model_dir)
    one = planner.plan(config.load(path))
    two = planner.plan(config.load(path), nproc=2)
    assert one.processes is None and two.processes.nproc == 2 and two.processes.strategy == "ddp"
    assert (one.tokens.steps_per_epoch, two.processes.steps_per_epoch) == (2, 1)  # 8 rows, batches of 4 x 2
    for single, row in zip(one.rows, two.rows, strict=True):
        assert row.memory == single.memory  # the one-process figures stay as they are
        if row.per_process is None:
            continue
        ddp, fsdp = row.per_process.memory["ddp"], row.per_process.memory["fsdp"]
        assert ddp.total >= single.memory.total, row.label
        assert fsdp.weights + fsdp.optimizer == pytest.approx(
            (single.memory.weights + single.memory.optimizer) / 2, abs=2
        ), row.label
    full = {row.label: row for row in two.rows}["full"].per_process.memory
    assert full["fsdp"].total < full["ddp"].total
    assert full["ddp"].total == {row.label: row for row in one.rows}["full"].memory.total + full["ddp"].buckets
    assert any("share this machine's RAM" in note for note in two.notes)


def test_nproc_must_be_at_least_one(tmp_path, tiny_model_dir):
    cfg = write_config(tmp_path, tiny_model_dir)
    result = run_cli(["plan", str(cfg), "--nproc", "0"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--nproc" in result.output and len(result.output.strip().splitlines()) == 1
    with pytest.raises(ValueError, match="nproc"):
        planner.plan(config.load(cfg), nproc=0)


def test_plan_json_and_table_with_processes_mark_the_configured_strategy(
    tmp_path, tiny_model_dir, machine_cache, monkeypatch
):
    monkeypatch.setenv("COLUMNS", "250")
    cfg = str(write_config(tmp_path, tiny_model_dir, method="full"))
    one = json.loads(run_cli(["plan", cfg, "--json"]).stdout)
    assert "nproc" not in one and all("per_process" not in row for row in one["methods"])
    result = run_cli(
        ["plan", cfg, "distributed.strategy=deepspeed", "distributed.zero_stage=3", "--nproc", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert (plan["nproc"], plan["strategy"], plan["steps_per_epoch_per_process"]) == (2, "zero3", 1)
    full = {row["label"]: row for row in plan["methods"]}["full"]["per_process"]
    assert set(full["memory_bytes"]) == set(full["fits"]) == {"ddp", "fsdp", "zero2", "zero3"}
    assert full["memory_bytes"]["ddp"]["buckets"] == full["memory_bytes"]["ddp"]["gradients"] > 0
    assert full["seconds_per_epoch"] > 0 and plan["assumptions"]
    table = run_cli(["plan", cfg, "distributed.strategy=fsdp", "--nproc", "2"])
    assert table.exit_code == 0, table.output
    assert "fsdp (configured)" in table.output and "per process, 2 processes" in table.output
    assert "no communication time" in table.output


def test_sharding_strategies_never_recommend_a_method_the_preflight_refuses(tmp_path, tiny_model_dir, machine_cache):
    from tunelab.training.distributed import SHARDED_METHODS

    cfg = config.load(write_config(tmp_path, tiny_model_dir), ["distributed.strategy=fsdp"])
    two = planner.plan(cfg, nproc=2)
    judged = [(row, planner.candidate(row, two.processes)) for row in two.rows if row.per_process is not None]
    assert {row.method["name"] for row, _ in judged} - set(SHARDED_METHODS), "no refused method to judge"
    for row, candidate in judged:
        assert (candidate.memory is None) == (row.method["name"] not in SHARDED_METHODS), row.label
    assert two.recommendation.label in SHARDED_METHODS
    # The table and the JSON say so too: no memory under a sharding strategy, "no" with the reason.
    refused = next(row for row, _ in judged if row.method["name"] not in SHARDED_METHODS)
    cells = report.process_row_cells(refused, two)
    assert cells[2] != "-" and cells[3:6] == ("-", "-", "-") and cells[6] == "no: fsdp shards lora and full only"
    fits = report.per_process_dict(refused, two.processes, two.available)["fits"]
    assert not fits["fsdp"] and not fits["zero2"] and not fits["zero3"]
    lora = next(row for row, _ in judged if row.method["name"] == "lora")
    assert "-" not in report.process_row_cells(lora, two)[2:6]
