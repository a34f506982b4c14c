"""Specialized vocabulary (data.new_tokens): fertility in inspect-data, `auto`'s choice, each new row started at its
pieces' mean, LoRA training only those rows, and a run's new rows saved and loaded back (reload, merge, export)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from tests.conftest import build_tiny_llama
from tests.helpers import run_cli, write_config, write_jsonl
from tunelab import config, data, methods, models, train
from tunelab.data import vocabulary
from tunelab.errors import ConfigError
from tunelab.inference.loading import load_for_inference, load_runs
from tunelab.methods import new_tokens

CODES = ["XK-4471", "QZ-0937", "MV-2208"]
PROBE = "Where is XK-4471 kept? QZ-0937 is in bay 2."


def code_rows(codes: list[str] = CODES, times: int = 3) -> list[dict[str, str]]:
    """Each code asked about `times` ways; each row names it twice (prompt and answer)."""
    asks = ["Where is {} kept?", "Which bay holds {}?", "Find {} for me.", "Locate part {}.", "{}: which bay?"]
    return [
        {"prompt": asks[k].format(code), "completion": f"{code} is in bay {i + 1}."}
        for i, code in enumerate(codes)
        for k in range(times)
    ]


def run_config(tmp_path: Path, model_dir: Path, method=None, **data_options):
    train_file = write_jsonl(tmp_path / "train.jsonl", code_rows())
    data_cfg = {"train": str(train_file), **data_options}
    schedule = {"max_steps": 6, "learning_rate": 1e-2, "lr_scheduler_type": "constant", "save_strategy": "no"}
    method = method or {"name": "lora", "r": 4}
    path = write_config(tmp_path, model_dir, method=method, train=schedule, data=data_cfg)
    return config.load(path, ["forgetting.enabled=false"])


def rows_of(cfg):
    return data.preflight(cfg)


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_each_new_row_starts_as_the_mean_of_its_pieces(tmp_path, smol_tokenizer_dir, tied):
    model_dir = build_tiny_llama(smol_tokenizer_dir, tmp_path / "model", tie_word_embeddings=tied)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    cfg = run_config(tmp_path, model_dir, new_tokens=CODES)
    added = vocabulary.add_new_tokens(cfg, tokenizer, rows_of(cfg))
    assert len(added.pieces) == 2 * len(CODES)  # " XK-4471" and "XK-4471" for each code
    new_tokens.add_token_rows(model, added.pieces)
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    for new_id, old_ids in added.pieces.items():
        assert len(old_ids) >= 2
        torch.testing.assert_close(model.get_input_embeddings().weight[new_id], old_in[old_ids].mean(0))
        torch.testing.assert_close(model.get_output_embeddings().weight[new_id], old_out[old_ids].mean(0))
    n_old = old_in.shape[0]
    assert torch.equal(model.get_input_embeddings().weight[:n_old], old_in)
    assert torch.equal(model.get_output_embeddings().weight[:n_old], old_out)
    assert (model.get_input_embeddings().weight is model.get_output_embeddings().weight) == tied
    # The tokenizer now reads each code as one token, after a space and at the start of a line.
    ids = tokenizer(PROBE, add_special_tokens=False)["input_ids"]
    assert [tokenizer.decode([i]) for i in ids[2:4]] == [" XK-4471", " kept"]
    assert tokenizer.decode(ids[5:6]) == " QZ-0937" and tokenizer.decode(ids) == PROBE


class LogitsAtEnd(TrainerCallback):
    """The trained model's logits on PROBE, as training ends (before the run is saved and loaded back)."""

    def __init__(self):
        self.ids = self.logits = self.tokenizer = None

    def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        self.ids = processing_class(PROBE, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            self.logits = model.eval()(input_ids=self.ids).logits.float()


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def lora_run(request, smol_tokenizer_dir, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("lora_new_tokens")
    model_dir = build_tiny_llama(smol_tokenizer_dir, tmp_path / "model", tie_word_embeddings=request.param)
    cfg = run_config(tmp_path, model_dir, new_tokens=CODES)
    capture = LogitsAtEnd()
    result = train.run(cfg, callbacks=(capture,))
    return result, capture, model_dir


def test_lora_trains_only_the_new_rows_and_saves_them_with_the_adapter(lora_run):
    result, _, model_dir = lora_run
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(result.artifact_dir)
    n_old, n_new = base.get_input_embeddings().weight.shape[0], 2 * len(CODES)
    assert len(tokenizer) == n_old + n_new
    with safe_open(result.artifact_dir / "adapter_model.safetensors", "pt") as f:
        token_rows = {k: f.get_tensor(k).shape for k in f.keys() if "lora_" not in k}
    # Only the new rows are saved (one matrix when tied, input and LM head when not): never the whole embedding.
    assert token_rows and all(shape == (n_new, 32) for shape in token_rows.values())
    assert len(token_rows) == (1 if base.config.tie_word_embeddings else 2)
    merged = load_for_inference(str(result.run_dir)).model  # base grown, adapter folded in
    for got, old in (
        (merged.get_input_embeddings().weight, base.get_input_embeddings().weight),
        (merged.get_output_embeddings().weight, base.get_output_embeddings().weight),
    ):
        assert torch.equal(got[:n_old], old)  # every old row bit for bit the base's
    # Trainable: the LoRA weights and the new rows, nothing else (the adapter file holds exactly what trained).
    with safe_open(result.artifact_dir / "adapter_model.safetensors", "pt") as f:
        assert result.metrics["trainable_params"] == sum(f.get_tensor(k).numel() for k in f.keys())
    # The new rows moved from where they started (the mean of their pieces).
    start, base_tokenizer = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    new_ids = range(n_old, n_old + n_new)
    new_tokens.add_token_rows(
        start, {i: base_tokenizer(tokenizer.decode([i]), add_special_tokens=False)["input_ids"] for i in new_ids}
    )
    for got, initial in (
        (merged.get_input_embeddings().weight, start.get_input_embeddings().weight),
        (merged.get_output_embeddings().weight, start.get_output_embeddings().weight),
    ):
        assert not torch.allclose(got[n_old:], initial[n_old:])


def test_a_run_with_new_tokens_loads_back_to_the_same_logits(lora_run):
    result, capture, _ = lora_run
    ids = capture.ids[0].tolist()
    assert sum(i >= capture.logits.shape[-1] - 2 * len(CODES) for i in ids) == 2  # PROBE holds two new tokens
    for merge in (False, True):
        loaded = load_for_inference(str(result.run_dir), merge=merge)
        assert loaded.tokenizer(PROBE)["input_ids"] == ids
        with torch.no_grad():
            got = loaded.model(input_ids=capture.ids).logits.float()
        torch.testing.assert_close(got, capture.logits, atol=1e-4, rtol=1e-4)


def test_merge_and_export_carry_the_new_tokens(lora_run, tmp_path):
    result, capture, _ = lora_run
    merged_dir = tmp_path / "merged"
    done = run_cli(["merge", str(result.run_dir), "--output", str(merged_dir)])
    assert done.exit_code == 0, done.output
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    assert merged.config.vocab_size == len(AutoTokenizer.from_pretrained(merged_dir)) == capture.logits.shape[-1]
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=capture.ids).logits, capture.logits, atol=1e-4, rtol=1e-4)
    out = tmp_path / "run.gguf"
    exported = run_cli(["export", str(result.run_dir), "--format", "gguf", "--dtype", "f32", "--output", str(out)])
    assert exported.exit_code == 0, exported.output


def test_a_run_with_its_own_tokens_serves_alone_but_not_beside_another(lora_run):
    result, capture, _ = lora_run
    loaded = load_runs([str(result.run_dir)])  # `tunelab serve RUN`: the adapter kept apart from its base
    with torch.no_grad():
        got = loaded.model(input_ids=capture.ids).logits.float()
        torch.testing.assert_close(got, capture.logits, atol=1e-4, rtol=1e-4)
        with methods.get("lora").disable(loaded.model):  # the base's own outputs: finite on the new tokens too
            assert loaded.model(input_ids=capture.ids).logits.isfinite().all()
    with pytest.raises(ConfigError, match="added tokens of its own"):
        load_runs([str(result.run_dir), str(result.run_dir)])


def test_full_fine_tuning_saves_the_grown_model(tmp_path, tiny_model_dir):
    cfg = run_config(tmp_path, tiny_model_dir, method="full", new_tokens=["XK-4471"])
    capture = LogitsAtEnd()
    result = train.run(cfg, callbacks=(capture,))
    loaded = load_for_inference(str(result.run_dir))
    assert loaded.model.get_input_embeddings().weight.shape[0] == len(loaded.tokenizer) == 49152 + 2
    with torch.no_grad():
        got = loaded.model(input_ids=capture.ids).logits.float()
    torch.testing.assert_close(got, capture.logits, atol=1e-4, rtol=1e-4)


def test_auto_picks_the_frequent_terms_split_into_many_pieces(tmp_path, tiny_model_dir):
    rare = "ZT-5512"  # split as finely, but seen 4 times: under AUTO_MIN_COUNT
    rows = code_rows(times=3) + [{"prompt": f"Stock check {rare}", "completion": f"{rare} ok"}] * 2
    cfg = run_config(tmp_path, tiny_model_dir, new_tokens="auto")
    write_jsonl(Path(cfg.data.train), rows)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    report = vocabulary.measure(cfg, tokenizer, rows_of(cfg))
    assert sorted(t.term for t in report.fragmented) == sorted(CODES)  # 6 times each; "bay" is general English
    assert {t.term: t.pieces for t in report.fragmented}["XK-4471"] == [" X", "K", "-", "4", "4", "7", "1"]
    assert sorted(report.new_tokens) == sorted(CODES) and len(tokenizer) == 49152 + 6
    assert report.tokens_per_word_after < report.tokens_per_word and report.ratio > 1.3


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("", "an entry is empty"),
        ("XK 4471", "entry 'XK 4471' holds whitespace"),
        ("XK-4471\t", "holds whitespace"),
    ],
)
def test_a_bad_entry_is_a_config_error(tmp_path, tiny_model_dir, entry, message):
    path = write_config(tmp_path, tiny_model_dir, data={"train": "t.jsonl", "new_tokens": ["XK-4471", entry]})
    with pytest.raises(ConfigError, match=message) as err:
        config.load(path)
    assert "data.new_tokens" in str(err.value)


def test_a_term_already_in_the_vocabulary_fails_before_the_model_loads(tmp_path, tiny_model_dir, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("the model loaded")

    monkeypatch.setattr(models, "load_model", no_loading)
    cfg = run_config(tmp_path, tiny_model_dir, new_tokens=["XK-4471", "the"])
    with pytest.raises(ConfigError) as err:
        train.run(cfg)
    assert str(err.value).count("\n") == 0
    assert "'the' already one token" in str(err.value) and "remove it from the list" in str(err.value)


def test_a_method_that_cannot_train_the_rows_is_refused_before_loading(tmp_path, tiny_model_dir):
    cfg = run_config(tmp_path, tiny_model_dir, method={"name": "freeze", "trainable_layers": 1}, new_tokens="auto")
    with pytest.raises(ConfigError, match="method freeze: its new embedding rows would never train"):
        train.run(cfg)


def test_inspect_data_shows_tokens_per_word_and_the_most_split_terms(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # a wide terminal, so rich does not wrap the table's cells
    cfg = write_config(tmp_path, tiny_model_dir, data={"train": str(write_jsonl(tmp_path / "t.jsonl", code_rows()))})
    result = run_cli(["inspect-data", str(cfg)])
    assert result.exit_code == 0, result.output
    table = dict(re.findall(r"^│ (.+?) +│ (.+?) +│$", result.output, flags=re.MULTILINE))
    here, general = re.fullmatch(
        r"([\d.]+) in your rows, ([\d.]+) in general English text \(.*\)", table["tokens per word"]
    ).groups()
    assert float(here) > 1.3 * float(general)
    assert "XK-4471  x6:  X|K|-|4|4|7|1" in result.output and "`data.new_tokens: auto` adds them" in result.output
    with_tokens = run_cli(["inspect-data", str(cfg), "data.new_tokens=auto"])
    table = dict(re.findall(r"^│ (.+?) +│ (.+?) +│$", with_tokens.output, flags=re.MULTILINE))
    assert table["data.new_tokens"].startswith(f"3 terms added: {here} -> ")
    assert "adds them" not in with_tokens.output  # no advice to do what the config does


def test_qlora_trains_the_new_rows_on_its_quantized_base(tmp_path, tiny_model_dir_64):
    method = {"name": "qlora", "r": 4, "bits": 4}
    cfg = run_config(tmp_path, tiny_model_dir_64, method=method, new_tokens=["XK-4471"])
    capture = LogitsAtEnd()
    result = train.run(cfg, callbacks=(capture,))
    loaded = load_for_inference(str(result.run_dir))
    with torch.no_grad():
        got = loaded.model(input_ids=capture.ids).logits.float()
    torch.testing.assert_close(got, capture.logits, atol=1e-3, rtol=1e-3)


def test_a_run_with_new_tokens_resumes_to_the_same_weights(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    def trained(folder: str, steps: int, resume: bool = False) -> dict:
        (tmp_path / folder).mkdir(exist_ok=True)
        cfg = run_config(tmp_path / folder, tiny_model_dir, new_tokens="auto")
        schedule = {"max_steps": steps, "save_strategy": "steps", "save_steps": 2, "lr_scheduler_type": "constant"}
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update=schedule)})
        train.run(cfg, resume=resume)
        return load_file(str(tmp_path / folder / "run" / "adapter" / "adapter_model.safetensors"))

    straight = trained("a", 6)
    trained("b", 4)
    resumed = trained("b", 6, resume=True)
    assert straight.keys() == resumed.keys() and any("trainable_tokens" in k for k in straight)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
