"""`tunelab serve` through the real thing: a uvicorn server on a free 127.0.0.1 port, two LoRA runs of the tiny
Llama on one base, and the real `openai` client. Answers equal `generate` on `load_runs` (greedy, fp32), at
concurrency 1 and 16 alike; bad input is a 4xx in OpenAI's error shape and never takes the server down."""

from __future__ import annotations

import http.client
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import openai
import pytest
import requests
import torch
import yaml
from safetensors import safe_open

from tests.helpers import Server, memorizable_rows, run_cli, train_adapter_run
from tunelab import methods
from tunelab.data.templates import encode_prompt
from tunelab.errors import ConfigError
from tunelab.inference.generation import Decoding, generate
from tunelab.inference.loading import LoadOptions, load_runs
from tunelab.serving import vllm
from tunelab.serving.app import build_app
from tunelab.serving.engine import Engine, load_engine
from tunelab.serving.protocol import ServerSettings

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
PROMPTS = [row["prompt"] for row in memorizable_rows(10)]
SETTINGS = ServerSettings(api_key=KEY, max_body_bytes=64 * 1024, max_tokens_cap=64)


QUICK = {"max_steps": 10, "learning_rate": 3e-2, "logging_steps": 10}  # enough for the adapters to differ


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir) -> list[str]:
    tmp = tmp_path_factory.mktemp("serving")
    rows = memorizable_rows()
    shouted = [{**r, "completion": r["completion"].upper() + "!"} for r in rows]
    return [
        train_adapter_run(tmp, tiny_model_dir, "plain", rows, **QUICK),
        train_adapter_run(tmp, tiny_model_dir, "shout", shouted, **QUICK),
    ]


@pytest.fixture(scope="module")
def engine(runs):
    engine = load_engine(runs).start()
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def server(engine):
    with Server(build_app(engine, SETTINGS)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def expected(runs, tiny_model_dir):
    """What `generate` gives on load_runs with `use(name)` (the base: every adapter disabled), greedy."""
    loaded = load_runs(runs)

    def answer(name: str, prompt, max_tokens: int = 6) -> str:
        dec = Decoding(max_new_tokens=max_tokens)
        if name == str(tiny_model_dir):
            with methods.get(loaded.method).disable(loaded.model):
                return generate(loaded.model, loaded.tokenizer, [prompt], dec)[0]
        loaded.use(name)
        return generate(loaded.model, loaded.tokenizer, [prompt], dec, template=loaded.template, system=loaded.system)[
            0
        ]

    return answer


def chat(client, model: str, prompt: str, **options):
    messages = [{"role": "user", "content": prompt}]
    options = {"temperature": 0, "max_tokens": 6, **options}
    return client.chat.completions.create(model=model, messages=messages, **options)


def test_models_lists_the_base_and_each_adapter(client, tiny_model_dir):
    assert [m.id for m in client.models.list()] == [str(tiny_model_dir), "plain", "shout"]
    assert client.models.retrieve("shout").id == "shout"


def test_chat_picks_the_adapter_per_request_and_matches_generate(client, expected, engine, tiny_model_dir):
    answers = {}
    for name in ["plain", "shout", str(tiny_model_dir)]:
        messages = [{"role": "user", "content": PROMPTS[1]}]
        reply = chat(client, name, PROMPTS[1])
        answers[name] = reply.choices[0].message.content
        assert answers[name] == expected(name, messages), name
        target = engine.targets[name]
        prompt_tokens = len(encode_prompt(engine.loaded.tokenizer, messages, target.template, target.system))
        assert reply.usage.prompt_tokens == prompt_tokens and reply.model == name
        assert reply.usage.total_tokens == prompt_tokens + reply.usage.completion_tokens
        assert reply.choices[0].finish_reason in ("stop", "length")
    assert len(set(answers.values())) > 1, f"the adapters and the base should not all agree: {answers}"


def test_streamed_chat_joins_to_the_non_streamed_text(client):
    whole = chat(client, "shout", PROMPTS[2]).choices[0].message.content
    chunks = list(chat(client, "shout", PROMPTS[2], stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_completions_match_generate_streamed_or_not(client, expected):
    reply = client.completions.create(model="plain", prompt=PROMPTS[3], temperature=0, max_tokens=6)
    assert reply.choices[0].text == expected("plain", PROMPTS[3])
    pieces = client.completions.create(model="plain", prompt=PROMPTS[3], temperature=0, max_tokens=6, stream=True)
    assert "".join(p.choices[0].text for p in pieces) == reply.choices[0].text


def test_a_stop_sequence_cuts_the_answer_streamed_or_not(client, expected):
    whole = expected("plain", [{"role": "user", "content": PROMPTS[4]}], 12)
    stop = whole[len(whole) // 2 : len(whole) // 2 + 2]
    assert stop.strip(), f"need some text to stop at: {whole!r}"
    reply = chat(client, "plain", PROMPTS[4], max_tokens=12, stop=[stop])
    assert reply.choices[0].message.content == whole[: whole.find(stop)]
    assert reply.choices[0].finish_reason == "stop"
    chunks = chat(client, "plain", PROMPTS[4], max_tokens=12, stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole[: whole.find(stop)]


def test_greedy_outputs_are_identical_at_concurrency_1_and_16(client, engine, tiny_model_dir):
    models = ["plain", "shout", str(tiny_model_dir)]
    requests = [(models[i % 3], PROMPTS[i % len(PROMPTS)] + " x" * (i % 5)) for i in range(32)]

    def ask(request):
        return chat(client, *request, max_tokens=8).choices[0].message.content

    one_by_one = [ask(r) for r in requests]
    engine.batch_sizes.clear()
    engine.models_per_batch.clear()
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(ask, requests))
    assert together == one_by_one
    assert max(engine.batch_sizes) > 1, f"concurrent requests should share a batch: {engine.batch_sizes}"
    # LoRA adapters serve one adapter per row: requests for both adapters and the base share batches.
    assert engine.mixed and max(engine.models_per_batch) > 1, engine.models_per_batch


def test_concurrent_streams_share_a_batch_and_join_to_their_answers(client, engine):
    requests = [(["plain", "shout"][i % 2], PROMPTS[i % len(PROMPTS)]) for i in range(8)]
    whole = [chat(client, *r, max_tokens=8).choices[0].message.content for r in requests]

    def streamed(request):
        return "".join(c.choices[0].delta.content or "" for c in chat(client, *request, max_tokens=8, stream=True))

    engine.batch_sizes.clear()
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(streamed, requests)) == whole
    assert max(engine.batch_sizes) > 1, f"concurrent streams should share a batch: {engine.batch_sizes}"


def test_mixed_adapter_batches_are_used_exactly_where_peft_serves_them(tiny_model_dir):
    """The methods' `mixed_batches` says what peft does: one adapter per row for LoRA, a refusal for DoRA."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunelab.config.methods import LoraMethod

    for use_dora in (False, True):
        model = get_peft_model(
            AutoModelForCausalLM.from_pretrained(tiny_model_dir),
            LoraConfig(r=2, target_modules="all-linear", use_dora=use_dora),
            adapter_name="a",
        ).eval()
        ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
        allowed = methods.get("lora").mixed_batches(LoraMethod(name="lora", use_dora=use_dora))
        assert allowed == (not use_dora)
        if allowed:
            model.generate(input_ids=ids, max_new_tokens=2, adapter_names=["a", "__base__"])
        else:
            with pytest.raises(ValueError, match="DoRA"):
                model.generate(input_ids=ids, max_new_tokens=2, adapter_names=["a", "__base__"])


def test_every_endpoint_but_health_asks_for_the_key(server, engine):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        response = requests.get(f"{server.url}/v1/models", headers=headers, timeout=30)
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
        post = requests.post(f"{server.url}/v1/chat/completions", headers=headers, json={"model": "plain"}, timeout=30)
        assert post.status_code == 401
    assert requests.get(f"{server.url}/v1/models", headers=AUTH, timeout=30).status_code == 200
    health = requests.get(f"{server.url}/health", timeout=30).json()
    assert health["status"] == "ok" and health["dtype"] == "float32"
    assert health["device"] == str(engine.loaded.model.device) and health["models"] == list(engine.targets)


@pytest.mark.parametrize(
    "name", ["../plain", "/etc/passwd", "..%2Fplain", "%2e%2e/plain", "plain/../plain", "./plain", "PLAIN", ""]
)
def test_a_model_name_is_never_a_path(server, runs, name):
    for model in (name, runs[0], runs[0] + "/adapter"):
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
        response = requests.post(f"{server.url}/v1/chat/completions", headers=AUTH, json=body, timeout=30)
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "model_not_found" and "plain, shout" in response.text
    retrieved = requests.get(f"{server.url}/v1/models/{quote(name, safe='')}", headers=AUTH, timeout=30)
    assert retrieved.status_code == 404 and "error" in retrieved.json()


def message(**fields):
    return {"model": "plain", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, **fields}


BAD = [
    ("malformed JSON", b'{"model": "plain", "messages": [', 400),
    ("not an object", b"[1, 2]", 400),
    ("messages a string", json.dumps(message(messages="hi")).encode(), 400),
    ("temperature a word", json.dumps(message(temperature="hot")).encode(), 400),
    ("max_tokens a word", json.dumps(message(max_tokens="many")).encode(), 400),
    ("model a number", json.dumps(message(model=5)).encode(), 400),
    ("unknown role", json.dumps(message(messages=[{"role": "wizard", "content": "hi"}])).encode(), 400),
    ("n=2", json.dumps(message(n=2)).encode(), 400),
    ("max_tokens over the cap", json.dumps(message(max_tokens=65)).encode(), 400),
    ("top_p over 1", json.dumps(message(temperature=1, top_p=2)).encode(), 400),
    (
        "over the context window",
        json.dumps(message(messages=[{"role": "user", "content": "cat " * 2100}])).encode(),
        400,
    ),
    ("body too large", json.dumps(message(padding="x" * 70_000)).encode(), 413),
]


@pytest.mark.parametrize(("body", "status"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_a_4xx_in_openai_shape(server, body, status):
    headers = {**AUTH, "Content-Type": "application/json"}
    response = requests.post(f"{server.url}/v1/chat/completions", headers=headers, data=body, timeout=30)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"] and "type" in error and "code" in error


def test_the_openai_client_sees_n_2_as_a_bad_request(client):
    with pytest.raises(openai.BadRequestError, match="n=2"):
        chat(client, "plain", PROMPTS[0], n=2)


def test_a_full_queue_answers_429_with_retry_after(engine):
    """An engine whose worker never starts, with room for one waiting request: the second is refused."""
    stalled = Engine(engine.loaded, engine.targets, max_queue=1)
    with Server(build_app(stalled, ServerSettings())) as running:
        url = f"{running.url}/v1/chat/completions"
        waiting = threading.Thread(target=_post_quietly, args=(url, message()), daemon=True)
        waiting.start()
        deadline = time.monotonic() + 10
        while stalled._queue.qsize() < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        response = requests.post(url, json=message(), timeout=10)
        assert response.status_code == 429 and response.headers["Retry-After"] == "1"
        assert response.json()["error"]["code"] == "queue_full"
        stalled._queue.get_nowait().future.set_result("")  # answer the waiting one: the server stops cleanly
        waiting.join(timeout=5)


def _post_quietly(url: str, body: dict) -> None:
    try:
        requests.post(url, json=body, timeout=3)
    except requests.RequestException:
        pass  # it was never meant to be answered


def fuzzed_request(rng: random.Random) -> tuple[str, str, dict[str, str], bytes]:
    """(method, path, headers, body): random bytes, random JSON, or a valid request with one field broken."""
    path = rng.choice(
        ["/v1/chat/completions", "/v1/completions"] * 3 + ["/v1/models", "/v1/models/x", "/health", "/v1/x"]
    )
    headers = dict(AUTH) if rng.random() < 0.9 else {"Authorization": rng.choice(["", "Bearer", "Basic a", KEY])}
    kind = rng.random()
    if kind < 0.2:
        body = rng.randbytes(rng.randint(0, 200))
    elif kind < 0.4:
        body = json.dumps(rng.choice([None, 1, "x", [], [1, {"a": 2}], {"model": []}, {"": ""}])).encode()
    else:
        valid = {"model": rng.choice(["plain", "shout"]), "max_tokens": 1, "temperature": 0}
        valid |= {"messages": [{"role": "user", "content": "hi"}]} if "chat" in path else {"prompt": "hi"}
        field = rng.choice(["model", "messages", "prompt", "temperature", "top_p", "top_k", "stop", "seed", "n"])
        valid[field] = rng.choice([None, -1, 0, 1.5, 10**30, "x", "", [], {}, [None], True, "\u0000", "../x"])
        valid["max_tokens"] = rng.choice([1, 2, 0, -5, "x", 10**12, 1.5])
        body = json.dumps(valid).encode()
    return rng.choice(["POST"] * 8 + ["GET", "PUT", "DELETE"]), path, headers, body


def test_fuzz_never_gives_a_5xx_and_the_server_keeps_answering(server):
    rng = random.Random(0)
    statuses: dict[int, int] = {}
    deadline = time.monotonic() + 40
    with requests.Session() as http:
        count = 0
        while count < 1200 and time.monotonic() < deadline:
            method, path, headers, body = fuzzed_request(rng)
            status = http.request(method, server.url + path, headers=headers, data=body, timeout=30).status_code
            statuses[status] = statuses.get(status, 0) + 1
            count += 1
            assert status < 500, (method, path, body[:200], status)
        assert count >= 1000, f"only {count} requests in the time allowed"
        assert http.get(f"{server.url}/health", timeout=10).status_code == 200
    print(f"{count} requests: {statuses}")
    assert statuses.get(400, 0) > 100 and statuses.get(401, 0) > 10, statuses


def test_the_serve_command_binds_loopback_and_takes_the_key_from_the_environment(runs):
    with socket.socket() as probe:  # a free port (the command binds it itself)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "TUNELAB_API_KEY": KEY, "TUNELAB_ALLOCATOR": "system"}
    command = [str(Path(sys.executable).parent / "tunelab"), "serve", *runs, "--port", str(port)]
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _answers(f"{url}/health"):
            assert child.poll() is None and time.monotonic() < deadline, child.communicate()[1][-3000:]
            time.sleep(0.1)
        assert requests.get(f"{url}/v1/models", timeout=10).status_code == 401
        listed = requests.get(f"{url}/v1/models", headers=AUTH, timeout=10).json()
        assert [m["id"] for m in listed["data"]][1:] == ["plain", "shout"]
    finally:
        child.terminate()
        child.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.ConnectionError:
        return False


def test_a_client_that_goes_away_mid_stream_stops_the_generation(engine, tiny_model_dir):
    """The base (random weights: no early end) asked for 1500 tokens, streamed; the client reads two chunks and
    hangs up. The worker stops at its next piece (the job ends cancelled, far short of 1500), and the next request
    is answered at once."""
    wide = ServerSettings(max_tokens_cap=1500)
    body = {"model": str(tiny_model_dir), "messages": [{"role": "user", "content": PROMPTS[0]}], "stream": True}
    body |= {"max_tokens": 1500, "temperature": 0}
    with Server(build_app(engine, wide)) as running:
        engine.streams.clear()
        host, port = running.url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status == 200
        chunks = 0
        while chunks < 2:
            chunks += response.readline().startswith(b"data: ")
        connection.close()
        deadline = time.monotonic() + 30
        while not engine.streams and time.monotonic() < deadline:
            time.sleep(0.02)
        assert engine.streams, "the streamed job did not end within 30 s of the client leaving"
        sent, cancelled = engine.streams[-1]
        assert cancelled and sent < 750, (sent, cancelled)
        started = time.monotonic()
        quick = dict(body, stream=False, max_tokens=4)
        answered = requests.post(f"{running.url}/v1/chat/completions", json=quick, timeout=30)
        assert answered.status_code == 200 and time.monotonic() - started < 10
    print(f"stopped after {sent} pieces")


def vllm_runs(runs, tmp_path, **method) -> str:
    """A copy of the first run with its method changed in config.yaml (what vllm_command reads)."""
    copy = tmp_path / "changed"
    shutil.copytree(runs[0], copy)
    cfg = yaml.safe_load((copy / "config.yaml").read_text())
    cfg["method"] = {k: v for k, v in cfg["method"].items() if k in ("name", "adapter_name")} | method
    (copy / "config.yaml").write_text(yaml.safe_dump(cfg))
    return str(copy)


def test_the_vllm_command_serves_lora_runs_under_tunelab_s_names(runs, tiny_model_dir):
    base = ["vllm", "serve", str(tiny_model_dir), "--served-model-name", str(tiny_model_dir)]
    one = vllm.vllm_command(runs[:1], "0.0.0.0", 8001, "secret")
    assert one.argv == [
        *base,
        *["--tokenizer", f"{runs[0]}/adapter", "--enable-lora", "--lora-modules", f"plain={runs[0]}/adapter"],
        *["--max-lora-rank", "8", "--max-loras", "1", "--host", "0.0.0.0", "--port", "8001"],
    ]
    assert one.env == {"VLLM_API_KEY": "secret"}  # never on the command line, where `ps` shows it
    placement = LoadOptions(trust_remote_code=True, dtype="bfloat16")
    two = vllm.vllm_command(runs, "127.0.0.1", 8000, None, placement)
    modules = [f"plain={runs[0]}/adapter", f"shout={runs[1]}/adapter"]
    assert two.argv == [
        *base,
        *["--tokenizer", f"{runs[0]}/adapter", "--enable-lora", "--lora-modules", *modules],
        *["--max-lora-rank", "8", "--max-loras", "2", "--host", "127.0.0.1", "--port", "8000"],
        *["--dtype", "bfloat16", "--trust-remote-code"],
    ]
    assert two.env == {}
    plain_model = vllm.vllm_command([str(tiny_model_dir)], "127.0.0.1", 8000, None)
    assert plain_model.argv[:5] == base


def test_a_lora_run_s_adapter_is_what_vllm_reads(runs):
    adapter = Path(runs[0]) / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 32 and config["target_modules"]
    assert config["peft_type"] == "LORA" and not config.get("use_dora")
    with safe_open(adapter / "adapter_model.safetensors", "pt") as weights:
        names = list(weights.keys())
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names), names[:5]


@pytest.mark.parametrize(
    ("method", "says"),
    [
        ({"name": "ia3"}, "trained with ia3"),
        ({"name": "prompt_tuning"}, "trained with prompt_tuning"),
        ({"name": "lora", "use_dora": True}, "DoRA"),
    ],
)
def test_a_run_vllm_cannot_load_as_lora_names_tunelab_merge(runs, tmp_path, method, says):
    changed = vllm_runs(runs, tmp_path, **method)
    with pytest.raises(ConfigError, match=says) as error:
        vllm.vllm_command([changed], "127.0.0.1", 8000, None)
    assert f"tunelab merge {changed} --output merged/changed" in str(error.value)


def test_serve_engine_vllm_says_when_vllm_is_missing_and_execs_it_when_not(runs, monkeypatch):
    monkeypatch.setattr(vllm, "installed", lambda: False)
    result = run_cli(["serve", "--engine", "vllm", runs[0]])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: --engine vllm: vLLM is not installed here; on a machine with an NVIDIA GPU: pip install vllm (or "
        "serve here with the default --engine tunelab)"
    ]
    executed = []
    monkeypatch.setattr(vllm, "installed", lambda: True)

    def execvpe(*args):  # the real one never returns: this process becomes vLLM
        executed.append(args)
        raise SystemExit(0)

    monkeypatch.setattr(vllm.os, "execvpe", execvpe)
    monkeypatch.setenv("TUNELAB_API_KEY", KEY)
    run_cli(["serve", "--engine", "vllm", runs[0], "--port", "8123"])
    file, argv, env = executed[0]
    assert file == "vllm" and argv == vllm.vllm_command(runs[:1], "127.0.0.1", 8123, KEY).argv
    assert env["VLLM_API_KEY"] == KEY and KEY not in argv
    run_cli(["serve", "--engine", "vllm", runs[0], "--dtype", "float16"])
    assert executed[1][1][-2:] == ["--dtype", "float16"]
    result = run_cli(["serve", "--engine", "vllm", runs[0], "--device", "cpu"])
    assert result.exit_code == 2 and "vLLM places the model itself" in result.output and len(executed) == 2


def test_serve_loads_in_the_dtype_asked_for(runs):
    default, bf16 = load_engine(runs[:1]), load_engine(runs[:1], LoadOptions(dtype="bfloat16"))
    assert default.loaded.model.dtype == torch.float32 and bf16.loaded.model.dtype == torch.bfloat16
