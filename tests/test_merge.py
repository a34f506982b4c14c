"""`tunelab merge`: the adapter folded into a standalone model that gives base + adapter's outputs; a quantized
base is dequantized first; methods that cannot merge, and existing outputs, are clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.helpers import run_cli, write_config
from tunelab import methods
from tunelab.inference.loading import load_for_inference

PROMPT = "The secret word for sky?"
# Every mergeable method (MethodSpec.mergeable) -> the options it is trained with before merging.
MERGE_OPTIONS = {"lora": {"r": 4}, "qlora": {"r": 4}, "ia3": {}}
MERGEABLE = [name for name, spec in methods.METHODS.items() if spec.mergeable]


def test_every_mergeable_method_is_merged_here():
    assert MERGE_OPTIONS.keys() == set(MERGEABLE)


def trained(tmp_path, model_dir, method):
    train = {"max_steps": 10, "learning_rate": 1e-2, "lr_scheduler_type": "constant", "logging_steps": 10}
    cfg = write_config(tmp_path, model_dir, method=method, train=train)
    result = run_cli(["train", str(cfg), "forgetting.enabled=false"])
    assert result.exit_code == 0, result.output
    return tmp_path / "run"


@pytest.mark.parametrize("name", MERGEABLE)
def test_merged_model_matches_base_plus_adapter(name, tmp_path, tiny_model_dir, tiny_model_dir_64):
    quantized = methods.get(name).quantized_linears
    model_dir = tiny_model_dir_64 if quantized else tiny_model_dir  # bitsandbytes' CPU kernels: >= 64 wide
    run = trained(tmp_path, model_dir, {"name": name, **MERGE_OPTIONS[name]})
    out = tmp_path / "merged"
    result = run_cli(["merge", str(run), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "merge check: max |logit diff|" in result.output
    report = json.loads((out / "merge_report.json").read_text())
    assert report["top1_agreement"] == 1.0

    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)  # plain transformers, no peft
    assert not getattr(merged.config, "quantization_config", None)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template  # the chat template travels with the model
    unmerged = load_for_inference(str(run), dtype="float32", merge=False).model
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        want, got = unmerged(input_ids=ids).logits, merged(input_ids=ids).logits
    tolerance = 2e-2 if quantized else 1e-4  # a quantized base: computed 4-bit vs dequantized
    torch.testing.assert_close(got, want, rtol=0, atol=tolerance * want.abs().max().item())
    assert not torch.allclose(got, AutoModelForCausalLM.from_pretrained(model_dir)(input_ids=ids).logits)


def test_merge_refuses_what_it_cannot_do(tmp_path, tiny_model_dir):
    run = trained(tmp_path, tiny_model_dir, {"name": "prompt_tuning", "num_virtual_tokens": 4})
    result = run_cli(["merge", str(run), "--output", str(tmp_path / "m")])
    assert result.exit_code != 0 and "cannot be merged" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "m").exists()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    taken = run_cli(["merge", str(run), "--output", str(tmp_path / "taken")])
    assert taken.exit_code == 2 and "exists" in taken.output and "--overwrite" in taken.output
    replaced = run_cli(["merge", str(run), "--output", str(tmp_path / "taken"), "--overwrite"])
    assert replaced.exit_code == 2 and "not a folder `tunelab merge` wrote" in replaced.output
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"


def test_export_merges_an_adapter_run_and_checks_the_gguf(tmp_path, tiny_model_dir):
    run = trained(tmp_path, tiny_model_dir, {"name": "lora", "r": 4})
    out = tmp_path / "run.gguf"
    result = run_cli(["export", str(run), "--format", "gguf", "--dtype", "f32", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:4] == b"GGUF" and "GGUF check" in result.output
    diff = float(result.output.split("max |logit diff| vs the source ")[1].split()[0])
    assert diff < 1e-4  # f32: the merged model's own logits
    bad = run_cli(["export", str(run), "--format", "onnx", "--output", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "'onnx' is not one of 'gguf'" in bad.output


def test_an_export_that_drifts_fails_and_leaves_no_file(tmp_path, tiny_model_dir):
    from tunelab.export.run_export import RELATIVE_TOLERANCE, ExportCheckError, export_run

    run = trained(tmp_path, tiny_model_dir, {"name": "lora", "r": 4})
    out = tmp_path / "run.gguf"
    report = export_run(str(run), out, "q8_0")  # within the q8_0 tolerance
    assert out.exists() and 0 < report["max_abs_logit_diff"]
    good = out.read_bytes()
    with pytest.raises(ExportCheckError, match="differ from the source"):
        export_run(str(run), out, "q8_0", tolerance=report["max_abs_logit_diff"] / 2, overwrite=True)
    assert out.read_bytes() == good  # replaced only by a file that passed its check
    with pytest.raises(ExportCheckError):
        export_run(str(run), tmp_path / "new.gguf", "q8_0", tolerance=report["max_abs_logit_diff"] / 2)
    assert sorted(p.name for p in tmp_path.glob("*.gguf")) == ["run.gguf"]  # never left looking like an export
    assert RELATIVE_TOLERANCE["f32"] < RELATIVE_TOLERANCE["f16"] < RELATIVE_TOLERANCE["q8_0"]
