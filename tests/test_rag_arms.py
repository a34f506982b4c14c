"""Retrieval where answers are made: the rag and fine-tuned+rag arms of `tunelab compare`, and `tunelab serve
--index`. The tiny Llama and a tiny encoder: these tests check that the passages retrieved are the ones the model
is given, that the window decides how many fit, and that the reply names them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import yaml

from tests.helpers import Server, memorizable_rows, run_cli, train_adapter_run, write_jsonl
from tests.test_rag import settings, write_docs
from tunelab import rag
from tunelab.data.templates import encode_prompt
from tunelab.evaluation import compare
from tunelab.inference.generation import Decoding, generate
from tunelab.serving.app import build_app
from tunelab.serving.engine import load_engine
from tunelab.serving.protocol import ServerSettings

QUESTIONS = ["How long does the Aero fan run?", "When are returns accepted?", "What does the Volt plug report?"]
KEY = "rag-key"


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir, tiny_encoder_dir):
    tmp = tmp_path_factory.mktemp("rag_arms")
    rag.build([write_docs(tmp / "docs")], tmp / "index", settings(tiny_encoder_dir))
    run = train_adapter_run(tmp, tiny_model_dir, "tuned", memorizable_rows(), max_steps=4)
    return tmp, run


def compare_config(tmp, tiny_model_dir) -> tuple:
    cfg = {
        "model": {"name": str(tiny_model_dir), "dtype": "float32", "device": "cpu"},
        "data": {"train": str(write_jsonl(tmp / "train.jsonl", memorizable_rows()))},
        "eval": {"metrics": ["contains"], "max_new_tokens": 4, "bootstrap_resamples": 50, "few_shot_k": 0},
    }
    (tmp / "compare.yaml").write_text(yaml.safe_dump(cfg))
    test = write_jsonl(tmp / "test.jsonl", [{"prompt": q, "completion": "14 hours"} for q in QUESTIONS])
    return tmp / "compare.yaml", test


def test_compare_adds_rag_arms_whose_prompts_hold_the_retrieved_passages(setup, tiny_model_dir, tmp_path):
    tmp, run = setup
    config, test = compare_config(tmp_path, tiny_model_dir)
    args = ["compare", str(config), "--run", run, "--data", str(test), "--output-dir", str(tmp_path / "out")]
    result = run_cli([*args, "--index", str(tmp / "index"), "--rag-k", "2"])
    assert result.exit_code == 0, result.output
    table = json.loads((tmp_path / "out" / "compare.json").read_text())
    arms = [k for k in table if k != "verdict"]
    assert arms == ["zero-shot", "rag (top 2)", f"fine-tuned ({run})", f"fine-tuned+rag ({run}, top 2)"]
    assert table["rag (top 2)"]["prompt_tokens_per_example"] > table["zero-shot"]["prompt_tokens_per_example"]
    index = rag.open_index(tmp / "index")
    for arm in (arms[1], arms[3]):
        predictions = tmp_path / "out" / f"predictions-{compare.slug(arm)}.jsonl"
        rows = [json.loads(line) for line in predictions.read_text().splitlines()]
        for question, row in zip(QUESTIONS, rows, strict=True):
            passages = index.search(question, k=2)
            assert row["passages"] == [{"source": p.source, "chunk": p.chunk} for p in passages]
            assert row["input"] == rag.context_prompt(question, passages)
    assert "zero-shot vs rag vs fine-tuned vs fine-tuned+rag" in result.output


def test_the_window_decides_how_many_passages_fit_and_the_arm_says_so(setup, tiny_model_dir, tmp_path, monkeypatch):
    from tunelab.evaluation import arms as armsmod
    from tunelab.inference.loading import load_for_inference

    tmp, _ = setup
    config, test = compare_config(tmp_path, tiny_model_dir)
    loaded = load_for_inference(str(tiny_model_dir))
    bare = len(encode_prompt(loaded.tokenizer, [{"role": "user", "content": QUESTIONS[0]}], "auto", None))
    one = rag.context_prompt(QUESTIONS[0], rag.open_index(tmp / "index").search(QUESTIONS[0], k=1))
    with_one = len(encode_prompt(loaded.tokenizer, [{"role": "user", "content": one}], "auto", None))
    monkeypatch.setattr(armsmod, "context_window", lambda model: with_one + 4)  # room for one passage, not two
    job = compare.prepare(config, test, [], None, tmp_path / "out", retrieval=armsmod.Retrieval(tmp / "index", 3))
    arms = compare.compare(job.cfg, job.test_file, [], job.metrics, job.examples, retrieval=job.retrieval)
    assert arms[1].name.startswith("rag (up to 3, ") and "fit on average" in arms[1].name
    first = arms[1].result.rows[0]
    assert len(first["passages"]) == 1 and first["input"] == one and bare < with_one


def test_compare_refuses_a_folder_that_is_not_an_index_before_any_model_loads(setup, tiny_model_dir, tmp_path):
    config, test = compare_config(tmp_path, tiny_model_dir)
    out = ["--output-dir", str(tmp_path / "compare")]  # not the default runs/compare, which a user may have
    result = run_cli(["compare", str(config), "--data", str(test), "--index", str(tmp_path), *out])
    assert result.exit_code == 2 and "not a tunelab index (no index.json)" in result.output


@pytest.fixture(scope="module")
def served(setup, tiny_model_dir):
    tmp, _ = setup
    engine = load_engine([str(tiny_model_dir)]).start()
    index = rag.open_index(tmp / "index")
    app = build_app(engine, ServerSettings(api_key=KEY, max_tokens_cap=4096, retrieval_k=2), index)
    with Server(app) as server:
        yield openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=60), engine, index
    engine.close()


def test_serve_index_answers_with_the_passages_and_names_them(served, tiny_model_dir):
    client, engine, index = served
    name = str(tiny_model_dir)
    messages = [{"role": "user", "content": QUESTIONS[1]}]
    reply = client.chat.completions.create(model=name, messages=messages, max_tokens=5, temperature=0)
    passages = index.search(QUESTIONS[1], k=2)
    assert [p["source"] for p in reply.model_extra["passages"]] == [p.source for p in passages]
    assert reply.model_extra["passages"][0]["text"] == passages[0].text
    augmented = [{"role": "user", "content": rag.context_prompt(QUESTIONS[1], passages)}]
    expected = generate(engine.loaded.model, engine.loaded.tokenizer, [augmented], Decoding(max_new_tokens=5))[0]
    assert reply.choices[0].message.content == expected
    plain = client.chat.completions.create(
        model=name, messages=messages, max_tokens=5, temperature=0, extra_body={"retrieval": False}
    )
    assert "passages" not in (plain.model_extra or {})
    assert reply.usage.prompt_tokens > plain.usage.prompt_tokens


def test_a_streamed_reply_names_its_passages_in_the_first_chunk(served, tiny_model_dir):
    client, _, index = served
    stream = client.chat.completions.create(
        model=str(tiny_model_dir), messages=[{"role": "user", "content": QUESTIONS[0]}], max_tokens=4, stream=True
    )
    first = next(iter(stream))
    assert [p["source"] for p in first.model_extra["passages"]] == [p.source for p in index.search(QUESTIONS[0], 2)]


def test_passages_that_do_not_fit_beside_max_tokens_are_left_out(served, tiny_model_dir):
    client, engine, _ = served
    messages = [{"role": "user", "content": QUESTIONS[2]}]
    bare = len(encode_prompt(engine.loaded.tokenizer, messages, "auto", None))
    room = engine.context_window() - bare  # max_tokens that leaves no room for any passage
    reply = client.chat.completions.create(model=str(tiny_model_dir), messages=messages, max_tokens=room)
    assert reply.model_extra["passages"] == [] and reply.usage.prompt_tokens == bare


def test_serve_index_needs_an_index_folder_and_the_tunelab_engine(tmp_path, tiny_model_dir):
    result = run_cli(["serve", str(tiny_model_dir), "--index", str(tmp_path)])
    assert result.exit_code == 2 and "not a tunelab index" in result.output
    result = run_cli(["serve", str(tiny_model_dir), "--engine", "vllm", "--index", str(tmp_path)])
    assert result.exit_code == 2 and "--engine tunelab" in result.output


def test_the_serve_command_opens_the_index_and_its_replies_name_passages(setup, tiny_model_dir):
    tmp, _ = setup
    with socket.socket() as probe:  # a free port (the command binds it itself)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "TUNELAB_API_KEY": KEY, "TUNELAB_ALLOCATOR": "system"}
    command = [str(Path(sys.executable).parent / "tunelab"), "serve", str(tiny_model_dir), "--port", str(port)]
    command += ["--index", str(tmp / "index"), "--rag-k", "1"]
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0, timeout=60)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                assert child.poll() is None and time.monotonic() < deadline, child.communicate()[1][-3000:]
                time.sleep(0.2)
        messages = [{"role": "user", "content": "How long do I have to return a purchase?"}]
        reply = client.chat.completions.create(model=str(tiny_model_dir), messages=messages, max_tokens=3)
        assert [p["source"] for p in reply.model_extra["passages"]] == [
            p.source for p in rag.open_index(tmp / "index").search(messages[0]["content"], k=1)
        ]
    finally:
        child.terminate()
        child.wait(timeout=30)


def test_concurrent_requests_all_get_their_own_passages(served, tiny_model_dir):
    client, _, index = served

    def ask(question):
        reply = client.chat.completions.create(
            model=str(tiny_model_dir), messages=[{"role": "user", "content": question}], max_tokens=2
        )
        return [p["source"] for p in reply.model_extra["passages"]]

    questions = QUESTIONS * 4
    with ThreadPoolExecutor(max_workers=len(questions)) as pool:
        got = list(pool.map(ask, questions))
    assert got == [[p.source for p in index.search(q, k=2)] for q in questions]


def test_messages_the_template_refuses_are_a_400_with_an_index_too(served, tiny_model_dir, monkeypatch):
    client, _, _ = served

    def refuse(*args, **kwargs):
        raise ValueError("Conversation roles must alternate")

    monkeypatch.setattr("tunelab.serving.retrieval.encode_prompt", refuse)
    monkeypatch.setattr("tunelab.serving.app.encode_prompt", refuse)
    with pytest.raises(openai.BadRequestError, match="template cannot render them"):
        client.chat.completions.create(model=str(tiny_model_dir), messages=[{"role": "user", "content": "hi"}])
