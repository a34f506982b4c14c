"""Several adapter runs on one base: loaded together, switched without reloading the base, each giving what
its run gives alone; and from the command line (`MODEL=runs/a,runs/b`, `--adapter`, an `adapter` per row)."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import memorizable_rows, run_cli, train_adapter_run, write_jsonl
from tunelab.inference.loading import load_for_inference, load_runs

PROMPT = "The secret word for sky?"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("adapters")
    rows = memorizable_rows()
    shouted = [{**r, "completion": r["completion"].upper() + "!"} for r in rows]
    return [train_adapter_run(tmp, tiny_model_dir, name, data) for name, data in (("plain", rows), ("shout", shouted))]


def next_token_logits(loaded):
    ids = loaded.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return loaded.model(input_ids=ids).logits[0, -1]


def test_adapters_share_one_base_and_switch_without_reloading(two_runs):
    loaded = load_runs(list(two_runs))
    assert list(loaded.adapters) == ["plain", "shout"]
    base = loaded.model.get_base_model()
    for run, name in zip(two_runs, ["plain", "shout"], strict=True):
        loaded.use(name)
        alone = load_for_inference(run, merge=False)
        torch.testing.assert_close(next_token_logits(loaded), next_token_logits(alone), rtol=0, atol=1e-6)
        assert loaded.model.get_base_model() is base  # the same base object: nothing was reloaded
    loaded.use("plain")
    plain = next_token_logits(loaded)
    loaded.use("shout")
    assert not torch.allclose(plain, next_token_logits(loaded)), "the two adapters must differ"


def test_a_run_directory_with_a_dot_in_its_name_loads_as_an_adapter(two_runs, tmp_path):
    import shutil

    dotted = tmp_path / "lr-1.5e-4"
    shutil.copytree(two_runs[0], dotted)
    config = dotted / "config.yaml"  # named by its directory, as a run without method.adapter_name is
    config.write_text("\n".join(line for line in config.read_text().splitlines() if "adapter_name:" not in line))
    alone = load_for_inference(str(dotted), merge=False)  # peft refuses adapter names with a dot
    torch.testing.assert_close(
        next_token_logits(alone), next_token_logits(load_for_inference(two_runs[0], merge=False)), rtol=0, atol=0
    )
    assert list(load_runs([str(dotted), two_runs[1]]).adapters) == ["lr-1_5e-4", "shout"]


def test_generate_switches_adapters_per_row_from_the_command_line(two_runs, tmp_path):
    both = ",".join(two_runs)
    rows = write_jsonl(tmp_path / "in.jsonl", [{"prompt": PROMPT, "adapter": "shout"}, {"prompt": PROMPT}])
    out = tmp_path / "out.jsonl"
    result = run_cli(["generate", both, "--input", str(rows), "--output", str(out), "--max-new-tokens", "6"])
    assert result.exit_code == 0, result.output
    shout_row, default_row = (json.loads(line) for line in out.read_text().splitlines())
    for run, row in ((two_runs[1], shout_row), (two_runs[0], default_row)):
        alone = run_cli(["generate", run, PROMPT, "--max-new-tokens", "6"])
        assert alone.exit_code == 0, alone.output
        assert alone.stdout.strip().splitlines()[-1] == row["output"].strip()
    picked = run_cli(["generate", both, PROMPT, "--adapter", "shout", "--max-new-tokens", "6"])
    assert picked.stdout.strip().splitlines()[-1] == shout_row["output"].strip()


def test_unknown_adapter_and_mismatched_bases_are_clear_errors(two_runs, tmp_path, tiny_model_dir):
    both = ",".join(two_runs)
    result = run_cli(["generate", both, PROMPT, "--adapter", "nope"])
    assert result.exit_code != 0 and "no adapter named 'nope'" in result.output and "plain, shout" in result.output
    other = train_adapter_run(tmp_path, tiny_model_dir, "ia3", memorizable_rows(), method={"name": "ia3"})
    mixed = run_cli(["generate", f"{two_runs[0]},{other}", PROMPT])
    assert mixed.exit_code != 0 and "do not share a base" in mixed.output and "Traceback" not in mixed.output


def first_weight(model, key="q_proj"):
    return dict(model.named_parameters())[f"model.layers.0.self_attn.{key}.weight"].detach().clone()


def test_combined_adapter_is_the_weighted_sum_of_the_updates(two_runs, tmp_path, tiny_model_dir):
    out = tmp_path / "combined"
    result = run_cli(["combine", *two_runs, "--weights", "1.0,0.5", "--output", str(out)])
    assert result.exit_code == 0, result.output
    base = first_weight(load_for_inference(str(tiny_model_dir), dtype="float32").model)
    deltas = [first_weight(load_for_inference(run).model) - base for run in two_runs]
    combined = first_weight(load_for_inference(str(out)).model) - base
    torch.testing.assert_close(combined, deltas[0] + 0.5 * deltas[1], rtol=1e-4, atol=1e-6)
    generated = run_cli(["generate", str(out), PROMPT, "--max-new-tokens", "4"])
    assert generated.exit_code == 0, generated.output
    bad = run_cli(["combine", *two_runs, "--weights", "1.0", "--output", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "one weight per run" in bad.output
