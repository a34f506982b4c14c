"""Tokenized training data with the real SmolLM2 tokenizer (ChatML; pad == eos == <|im_end|>): label masks,
the prompt/training prefix contract with generation, length checks, raw-text blocks, and inspect."""

from __future__ import annotations

import copy
import json

import pytest

from tests.test_data_helpers import make_cfg, write_lines, write_rows
from tunelab import data
from tunelab.data.build import encode_checked
from tunelab.data.templates import adds_special_tokens, render_prompt
from tunelab.errors import ConfigError, DataError

END = "<|im_end|>"
# Its generation prompt ends in a space, so jointly tokenized text would merge it into the completion's first
# token (" Paris"): the prefix test below checks training still starts from the tokens generation feeds.
CUSTOM = (
    "{% for m in messages %}<<{{ m.role }}>> {{ m.content }}{% if m.role == 'assistant' %}<|im_end|>{% endif %}\n"
    "{% endfor %}{% if add_generation_prompt %}<<assistant>> {% endif %}"
)


@pytest.fixture(scope="module")
def plain_tokenizer(smol_tokenizer):
    """The same tokenizer without a chat template, so prompts use the named plain templates."""
    tok = copy.deepcopy(smol_tokenizer)
    tok.chat_template = None
    return tok


def trained_text(tokenizer, example) -> str:
    return tokenizer.decode(
        [t for t, label in zip(example["input_ids"], example["labels"], strict=True) if label != -100]
    )


def test_chatml_trains_exactly_the_completion_and_its_end_token(tmp_path, smol_tokenizer):
    rows = [{"prompt": "Capital of France?", "completion": "Paris"}, {"prompt": "2+2?", "completion": " 4 "}]
    built = data.build(make_cfg(write_rows(tmp_path / "t.jsonl", rows)), smol_tokenizer)
    first, second = built.train
    assert trained_text(smol_tokenizer, first) == "Paris" + END
    assert trained_text(smol_tokenizer, second) == " 4 " + END
    # pad == eos here: the final <|im_end|> is a pad id, and it must be trained, not masked.
    assert first["labels"][-1] == first["input_ids"][-1] == smol_tokenizer.pad_token_id
    n_prompt = next(i for i, label in enumerate(first["labels"]) if label != -100)
    assert set(first["labels"][:n_prompt]) == {-100} and first["attention_mask"] == [1] * len(first["input_ids"])
    prompt = render_prompt(smol_tokenizer, [{"role": "user", "content": "Capital of France?"}])
    assert smol_tokenizer.decode(first["input_ids"][:n_prompt]) == prompt
    assert built.report.template == "chat_template" and built.validation is None


@pytest.mark.parametrize("template", ["auto", "alpaca"])
def test_plain_template_trains_the_completion_and_eos(tmp_path, plain_tokenizer, template):
    rows = [{"instruction": "Name a color.", "output": "Blue"}]
    built = data.build(make_cfg(write_rows(tmp_path / "t.jsonl", rows), template=template), plain_tokenizer)
    [example] = built.train
    assert trained_text(plain_tokenizer, example) == "Blue" + plain_tokenizer.eos_token
    assert "### Response:\n" in plain_tokenizer.decode(example["input_ids"])
    assert built.report.template == ("plain" if template == "auto" else "alpaca")


def test_weight_zero_assistant_turns_are_not_trained(tmp_path, smol_tokenizer):
    turns = [("user", "u1"), ("assistant", "Alpha one", 0), ("user", "u2"), ("assistant", "Bravo two", 1)]
    messages = [{"role": t[0], "content": t[1], **({"weight": t[2]} if len(t) == 3 else {})} for t in turns]
    both = [{**m, "weight": 1} if m["role"] == "assistant" else m for m in messages]
    path = write_rows(tmp_path / "t.jsonl", [{"messages": messages}, {"messages": both}])
    masked, unmasked = data.build(make_cfg(path), smol_tokenizer).train
    assert trained_text(smol_tokenizer, masked) == "Bravo two" + END
    assert trained_text(smol_tokenizer, unmasked) == "Alpha one" + END + "Bravo two" + END
    assert "Alpha one" in smol_tokenizer.decode(masked["input_ids"])  # still context, just not trained


PREFIX_ROWS = {
    "prompt_completion": {"prompt": "Capital of France?", "completion": "Paris"},
    "alpaca": {"instruction": "Translate.", "input": "chat", "output": "cat"},
    "chat": {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                          {"role": "assistant", "content": "Hello", "weight": 0}, {"role": "user", "content": "Bye"},
                          {"role": "assistant", "content": "\nGoodbye"}]},
    "classification": {"text": "What a fine day", "label": "positive"},
}  # fmt: skip


@pytest.mark.parametrize("fmt", list(PREFIX_ROWS))
@pytest.mark.parametrize(("tok_name", "template", "system"), [
    ("smol", "auto", None), ("smol", "auto", "You label things."), ("smol", CUSTOM, None),
    ("plain", "auto", None), ("plain", "alpaca", "You label things."),
])  # fmt: skip
def test_generation_prompt_is_exactly_the_untrained_prefix(
    tmp_path, smol_tokenizer, plain_tokenizer, fmt, tok_name, template, system
):
    tokenizer = smol_tokenizer if tok_name == "smol" else plain_tokenizer
    path = write_rows(tmp_path / "t.jsonl", [PREFIX_ROWS[fmt]])
    cfg = make_cfg(path, template=template, system=system, labels=["negative", "positive"])
    [enc] = encode_checked(cfg, tokenizer).kept["train"]
    [example] = data.read_eval_examples(path, cfg)
    prompt = render_prompt(tokenizer, example.messages, template, system)
    assert enc.text.startswith(prompt) and enc.text[len(prompt) :] == example.reference + tokenizer.eos_token
    assert enc.offsets[enc.prompt_length][0] == len(prompt)  # the first trained token starts right after it
    prompt_ids = tokenizer(prompt, add_special_tokens=adds_special_tokens(tokenizer, template))["input_ids"]
    assert enc.input_ids[: enc.prompt_length] == prompt_ids  # generation feeds the model the very same tokens
    if system and fmt != "chat":  # a row's own system message wins over the config's
        assert system in prompt


def length_rows(tokenizer) -> tuple[list[dict], int, int, int]:
    """A short row, one whose prompt alone fills max_seq_length, one whose completion would be cut."""
    long = " ".join(["word"] * 40)
    rows = [
        {"prompt": "Hi", "completion": "Yo"},
        {"prompt": long, "completion": "ok"},
        {"prompt": "Hi", "completion": long},
    ]

    def n_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    short = n_tokens(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}], tokenize=False
        ).rstrip("\n")
    )  # noqa: E501
    max_len = short + 10
    prompt2 = n_tokens(render_prompt(tokenizer, [{"role": "user", "content": long}]))
    row3 = n_tokens(render_prompt(tokenizer, [{"role": "user", "content": "Hi"}]) + long + END)
    assert prompt2 >= max_len and row3 > max_len > short  # the rows are what their names say
    return rows, max_len, prompt2, row3


def test_prompt_filling_max_seq_length_and_cut_completions_are_bad_rows(tmp_path, smol_tokenizer):
    rows, max_len, prompt2, row3 = length_rows(smol_tokenizer)
    path = write_lines(tmp_path / "t.jsonl", [json.dumps(r) for r in rows] + ['{"prompt": "no completion"}'])
    with pytest.raises(DataError) as exc:
        data.build(make_cfg(path, max_seq_length=max_len), smol_tokenizer)
    missing, prompt_problem, cut = exc.value.problems  # preflight and length problems, listed together
    assert missing.startswith(f"{path}:4: field 'completion': is missing")
    assert prompt_problem.startswith(
        f"{path}:2: field 'prompt': the prompt alone is {prompt2} tokens and train.max_seq_length is {max_len}"
    )
    over = row3 - max_len
    assert cut.startswith(f"{path}:3: field 'completion': the row is {row3} tokens, {over} over")
    assert f"shorten the row by {over} tokens" in cut


def test_skip_counts_length_and_preflight_problems_together(tmp_path, smol_tokenizer):
    rows, max_len, _, _ = length_rows(smol_tokenizer)
    path = write_lines(tmp_path / "t.jsonl", [json.dumps(r) for r in rows] + ['{"prompt": "no completion"}'])
    cfg = make_cfg(path, max_seq_length=max_len, on_bad_rows="skip", max_skip_fraction=0.75)
    built = data.build(cfg, smol_tokenizer)
    assert len(built.train) == 1 and trained_text(smol_tokenizer, built.train[0]) == "Yo" + END
    assert built.report.skipped == {"missing_field": 1, "prompt_too_long": 1, "truncated": 1}
    with pytest.raises(DataError, match="3 of 4 rows are bad"):
        data.build(make_cfg(path, max_seq_length=max_len, on_bad_rows="skip", max_skip_fraction=0.5), smol_tokenizer)


def test_raw_text_is_split_into_blocks_and_nothing_is_lost(tmp_path, smol_tokenizer):
    long = " ".join(f"token{i}" for i in range(60))
    path = write_rows(tmp_path / "t.jsonl", [{"text": long}, {"text": "Short one."}])
    built = data.build(make_cfg(path, max_seq_length=16), smol_tokenizer)
    ids = smol_tokenizer(long + END)["input_ids"]
    *blocks, short = built.train
    assert len(blocks) == -(-(len(ids) - 1) // 15) > 1 and all(len(b["input_ids"]) <= 16 for b in blocks)
    trained = [t for b in blocks for t in b["labels"] if t != -100]
    assert trained == ids  # every token once, in order, ending with EOS
    for prev, block in zip(blocks, blocks[1:], strict=False):  # each block opens with the previous one's last token
        assert block["input_ids"][0] == prev["input_ids"][-1] and block["labels"][0] == -100
    assert short["labels"] == short["input_ids"] and smol_tokenizer.decode(short["input_ids"]) == "Short one." + END
    assert built.report.rows["train"] == 2 and built.report.examples["train"] == len(blocks) + 1
    assert built.report.template == "raw"


def test_classification_trains_the_label_and_builds_validation(tmp_path, smol_tokenizer):
    train = write_rows(tmp_path / "t.csv", [{"text": "great", "label": "pos"}, {"text": "awful", "label": "neg"}])
    val = write_rows(tmp_path / "v.parquet", [{"text": "fine", "label": "pos"}])
    built = data.build(make_cfg(train, validation=str(val)), smol_tokenizer)
    assert trained_text(smol_tokenizer, built.train[1]) == "neg" + END
    assert trained_text(smol_tokenizer, built.validation[0]) == "pos" + END
    assert "neg, pos" in smol_tokenizer.decode(built.validation[0]["input_ids"])
    assert built.report.to_dict()["labels"] == ["neg", "pos"] and built.report.rows == {"train": 2, "validation": 1}


def test_template_problems_are_reported_before_rows_are_rendered(tmp_path, smol_tokenizer, plain_tokenizer):
    path = write_rows(tmp_path / "t.jsonl", [{"prompt": "p", "completion": "c"}])
    with pytest.raises(ConfigError, match="no chat template"):
        data.build(make_cfg(path, template="chat_template"), plain_tokenizer)
    with pytest.raises(ConfigError, match="unknown template 'vicuna'"):
        data.build(make_cfg(path, template="vicuna"), plain_tokenizer)
    no_eos = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    with pytest.raises(DataError, match="does not end with the EOS token") as exc:
        data.build(make_cfg(path, template=no_eos), smol_tokenizer)
    assert str(path) + ":1" in str(exc.value)


def test_inspect_reports_counts_lengths_and_a_masked_example(tmp_path, smol_tokenizer):
    from rich.console import Console

    rows, max_len, _, row3 = length_rows(smol_tokenizer)
    good = [{"prompt": "Hi", "completion": "Yo"}, {"prompt": "Hi there", "completion": "Yo"}]
    good.append({"prompt": "Hi there, how are you today?", "completion": "Fine"})
    train = write_lines(tmp_path / "t.jsonl", [json.dumps(r) for r in [*good, rows[2]]] + ["{oops"])
    val = write_rows(tmp_path / "v.jsonl", [{"prompt": "Bye", "completion": "Ciao"}])
    report = data.inspect(make_cfg(train, validation=str(val), max_seq_length=max_len), smol_tokenizer)

    def rendered(row) -> str:
        messages = [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["completion"]}]
        return smol_tokenizer.apply_chat_template(messages, tokenize=False).removesuffix("\n")

    lengths = sorted(len(smol_tokenizer(rendered(r), add_special_tokens=False)["input_ids"]) for r in good)
    assert report.rows_read == 6 and report.rows == {"train": 3, "validation": 1}
    assert report.rejected == {"unparseable": 1, "truncated": 1} and report.truncated == 1
    # nearest rank over the 4 well-formed training rows (the too-long one included)
    assert report.token_lengths == {"p50": lengths[1], "p90": row3, "p99": row3, "max": row3}
    assert report.example_where == f"{train}:1"
    assert "".join(text for text, _ in report.example) == rendered(good[0])
    assert [text for text, trained in report.example if trained] == ["Yo" + END]
    console = Console(record=True, width=120, force_terminal=True, color_system="standard")
    report.render(console)
    out = console.export_text(styles=True)
    assert "would be truncated" in out and "\x1b[1;32mYo" in out and "\x1b[2m<|im_start|>" in out
    assert report.to_dict()["example"][-1] == {"text": "Yo" + END, "trained": True}
