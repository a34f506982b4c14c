"""AI feedback end to end on the tiny model: `tunelab feedback` samples answers, a judge (a real HTTP endpoint whose
verdicts follow a known rule) checks them, pairs follow the verdicts and train with DPO; `tunelab eval` and `tunelab
compare` report the share of answers breaking a rule, with the judge's prompt and raw replies saved."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.helpers import Server, StubJudge, memorizable_rows, run_cli, write_config, write_jsonl
from tunelab.data.evalset import EvalExample
from tunelab.data.preference import preflight
from tunelab.evaluation.compare import slug
from tunelab.evaluation.feedback import choose_pairs
from tunelab.evaluation.rules import DEFAULT_JUDGE_PROMPT, Verdict


def odd_length(answer: str) -> str:
    """The stub judge's rule: an answer of odd length breaks it."""
    return "yes" if len(answer) % 2 else "No."


def has_e(answer: str) -> str:
    """The other stub judge's rule, for the memorized words (all five letters long): an "e" breaks it."""
    return "yes" if "e" in answer else "No."


def stub_judge(decide):
    stub = StubJudge(decide)
    with Server(stub.app) as server:
        stub.url = server.url + "/v1"
        yield stub


@pytest.fixture(scope="module")
def judge():
    yield from stub_judge(odd_length)


@pytest.fixture(scope="module")
def e_judge():
    yield from stub_judge(has_e)


@pytest.fixture
def rules(tmp_path):
    path = tmp_path / "rules.txt"
    path.write_text("# one rule\n- Answers have an even number of characters.\n")
    return path


def example(i: int) -> EvalExample:
    return EvalExample([{"role": "user", "content": f"q{i}"}], "ref", i + 1, f"t.jsonl:{i + 1}")


def v(*breaks, p=None) -> list[Verdict]:
    return [Verdict(i, b, "raw", p) for i, b in enumerate(breaks)]


def test_pairs_take_the_answer_breaking_fewest_rules_against_the_one_breaking_most():
    answers = ["a0", "a1", "a2", "b0", "b1", "b2", "c0", "c1", "c2"]
    verdicts = [
        v(True, True),
        v(False, True),
        v(True, None),  # 2, 1, 1.5 broken: a1 over a0
        v(False, False),
        v(False, False),
        v(False, False),  # all alike: no pair
        v(True, False, p=0.9),
        v(True, False, p=0.6),
        v(True, True),  # c1 (same count, lower p) over c2
    ]
    pairs = choose_pairs([example(0), example(1), example(2)], answers, verdicts, samples=3)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("a1", "a0"), ("c1", "c2")]
    assert pairs[0]["chosen_broken"] == [2] and pairs[0]["rejected_broken"] == [1, 2]
    assert pairs[1]["prompt"] == [{"role": "user", "content": "q2"}] and pairs[1]["source"] == "t.jsonl:3"


def test_feedback_writes_pairs_that_follow_the_judge_and_train_with_dpo(tmp_path, tiny_model_dir, judge, rules):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", memorizable_rows(8))
    out = tmp_path / "feedback"
    args = ["feedback", str(tiny_model_dir), "--data", str(prompts), "--rules", str(rules), "--judge", judge.url]
    result = run_cli([*args, "--samples", "4", "--max-new-tokens", "7", "--seed", "3", "--output", str(out)])
    assert result.exit_code == 0, result.output
    answers = [json.loads(line) for line in (out / "verdicts.jsonl").read_text().splitlines()]
    assert len(answers) == 32 and len(judge.questions) >= 32
    # Each prompt's first answer is the greedy one (what the model says deployed); the other three are sampled.
    from tunelab.inference.generation import Decoding, generate
    from tunelab.inference.loading import load_for_inference

    model = load_for_inference(str(tiny_model_dir))
    greedy = generate(model.model, model.tokenizer, [r["prompt"] for r in memorizable_rows(8)], Decoding(7))
    assert [r["answer"] for r in answers if r["sample"] == 0] == greedy
    assert len({r["answer"] for r in answers}) > 8, "sampled answers differ from the greedy ones"
    for row in answers:  # each verdict is the judge's, raw reply kept
        assert row["verdicts"][0]["raw"] == odd_length(row["answer"])
        assert row["verdicts"][0]["breaks"] == (len(row["answer"]) % 2 == 1)
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    by_prompt = {}
    for row in answers:
        by_prompt.setdefault(row["prompt"], []).append(row["answer"])
    differing = [p for p, texts in by_prompt.items() if len({len(t) % 2 for t in texts}) == 2]
    assert len(pairs) == len(differing) > 0, "sampling must give some prompts both kinds of answer"
    for pair in pairs:
        assert len(pair["chosen"]) % 2 == 0 and len(pair["rejected"]) % 2 == 1
        assert pair["chosen"] in by_prompt[pair["prompt"][-1]["content"]]
    summary = json.loads((out / "feedback.json").read_text())
    assert summary["pairs"] == len(pairs) and summary["judge"]["model"] == "stub-judge"
    share = sum(len(r["answer"]) % 2 for r in answers) / len(answers)
    assert summary["sampled_answers_breaking"]["rules_broken"] == pytest.approx(share)
    assert (out / "judge_prompt.txt").read_text() == DEFAULT_JUDGE_PROMPT
    assert (out / "rules.txt").read_text() == "1. Answers have an even number of characters.\n"
    assert "pairs from 8 prompts" in result.output
    # The pairs are preference data as they are: format pairs, objective dpo.
    data = {"train": str(out / "pairs.jsonl"), "format": "pairs"}
    cfg = write_config(tmp_path, tiny_model_dir, data=data, objective="dpo", train={"max_steps": 2})
    from tunelab import config

    assert len(preflight(config.load(cfg)).train) == len(pairs)
    trained = run_cli(["train", str(cfg), "forgetting.enabled=false"])
    assert trained.exit_code == 0, trained.output
    # Every judged answer, labelled, for kto: no pairs needed.
    judged = [json.loads(line) for line in (out / "judged.jsonl").read_text().splitlines()]
    assert [r["label"] for r in judged] == [len(r["answer"]) % 2 == 0 for r in answers]
    kto = {"train": str(out / "judged.jsonl"), "format": "kto"}
    cfg = write_config(tmp_path, tiny_model_dir, data=kto, objective="kto", name="kto.yaml")
    assert len(preflight(config.load(cfg)).train) == 32


def test_feedback_refuses_bad_options_before_loading_anything(tmp_path, tiny_model_dir, judge, rules):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", memorizable_rows(2))
    base = ["feedback", str(tiny_model_dir), "--data", str(prompts), "--rules", str(rules), "--judge", judge.url]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    cases = [
        (["--samples", "1", "--output", str(tmp_path / "o")], "need at least 2 answers"),
        (["--temperature", "0", "--output", str(tmp_path / "o")], "must be above 0"),
        (["--output", str(mine)], "holds other files (notes.txt)"),
        (["--judge-model", "nope", "--output", str(tmp_path / "o")], "no model 'nope'"),
    ]
    for extra, message in cases:
        result = run_cli([*base, *extra])
        assert result.exit_code == 2 and message in result.output, result.output
        assert "Traceback" not in result.output
    assert (mine / "notes.txt").read_text() == "keep me" and not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def memorized(tmp_path_factory, tiny_model_dir):
    """A full fine-tune that answers the word list; its answers are the words, so a judge's rule on them is known."""
    tmp = tmp_path_factory.mktemp("rules_run")
    train = {"max_steps": 60, "learning_rate": 1e-2, "lr_scheduler_type": "constant", "logging_steps": 30}
    cfg = write_config(tmp, tiny_model_dir, method={"name": "full"}, train=train)
    result = run_cli(["train", str(cfg), "forgetting.enabled=false"])
    assert result.exit_code == 0, result.output
    return tmp


def test_eval_with_rules_reports_the_share_breaking_them_and_saves_what_the_judge_said(memorized, e_judge, rules):
    test = write_jsonl(memorized / "test.jsonl", memorizable_rows())
    out = memorized / "eval-rules"
    args = ["eval", str(memorized / "run"), "--data", str(test), "--metrics", "exact_match", "--output-dir", str(out)]
    result = run_cli([*args, "--rules", str(rules), "--judge", e_judge.url])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    share = sum(float("e" in r["output"]) for r in rows) / len(rows)
    assert metrics["metrics"]["rules_broken"] == pytest.approx(share) == metrics["metrics"]["rule_1_broken"]
    assert 0 < share < 1, "some words have an e, some not, so the share can tell right from wrong"
    low, high = metrics["intervals"]["rules_broken"]
    assert low <= share <= high
    assert metrics["rules"]["judge_prompt"] == DEFAULT_JUDGE_PROMPT
    assert metrics["rules"]["rules"] == {"1": "Answers have an even number of characters."}
    assert all(r["verdicts"][0]["raw"] == has_e(r["output"]) for r in rows)
    assert "Answers have an even number of characters." in (out / "report.md").read_text()


def test_compare_with_rules_gives_each_arm_its_share_and_the_paired_change(memorized, e_judge, rules, tmp_path):
    cfg = yaml.safe_load((memorized / "config.yaml").read_text())
    cfg["eval"] = {"metrics": ["exact_match"], "max_new_tokens": 8, "bootstrap_resamples": 200}
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(cfg))
    test = write_jsonl(tmp_path / "test.jsonl", memorizable_rows())
    out = tmp_path / "cmp"
    args = ["compare", str(path), "--run", str(memorized / "run"), "--data", str(test), "--output-dir", str(out)]
    result = run_cli([*args, "--rules", str(rules), "--judge", e_judge.url])
    assert result.exit_code == 0, result.output
    table = json.loads((out / "compare.json").read_text())
    zero, tuned = table["zero-shot"], table[f"fine-tuned ({memorized / 'run'})"]
    shares = {}  # the few-shot arm is judged too; the fine-tuned one's change is against zero-shot
    for name in ("zero-shot", f"fine-tuned ({memorized / 'run'})"):
        rows = [json.loads(line) for line in (out / f"predictions-{slug(name)}.jsonl").read_text().splitlines()]
        shares[name] = [float("e" in r["output"]) for r in rows]
        assert table[name]["metrics"]["rules_broken"] == pytest.approx(sum(shares[name]) / len(rows))
    assert tuned["rules"]["change"] == pytest.approx(
        tuned["metrics"]["rules_broken"] - zero["metrics"]["rules_broken"]
    )
    assert tuned["rules"]["change_vs"] == "zero-shot" and "change" not in zero["rules"]
    assert "rules broken, fine-tuned" in (out / "compare.md").read_text()
    assert "points (95% CI" in result.output


def test_another_tunelab_serve_is_a_judge_with_its_key_and_its_own_answers(
    memorized, tiny_model_dir, rules, monkeypatch
):
    """The judge is a real `tunelab serve` engine behind an API key: its replies are the verdicts' raw text, exactly
    what the served model generates greedily for the judge's question."""
    from tunelab.inference.generation import Decoding, generate
    from tunelab.inference.loading import load_for_inference
    from tunelab.serving.app import build_app
    from tunelab.serving.engine import load_engine
    from tunelab.serving.protocol import ServerSettings

    test = write_jsonl(memorized / "test2.jsonl", memorizable_rows(3))
    out = memorized / "eval-served"
    engine = load_engine([str(tiny_model_dir)]).start()
    try:
        with Server(build_app(engine, ServerSettings(api_key="sesame"))) as server:
            args = ["eval", str(memorized / "run"), "--data", str(test), "--metrics", "exact_match"]
            args += ["--output-dir", str(out), "--rules", str(rules), "--judge", server.url + "/v1"]
            refused = run_cli(args)
            assert refused.exit_code == 2 and "API key was refused; set TUNELAB_JUDGE_API_KEY" in refused.output
            monkeypatch.setenv("TUNELAB_JUDGE_API_KEY", "sesame")
            result = run_cli(args)
    finally:
        engine.close()
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    judge = load_for_inference(str(tiny_model_dir))
    rule = "Answers have an even number of characters."
    for row in rows:
        question = DEFAULT_JUDGE_PROMPT.format(rule=rule, prompt=row["input"], answer=row["output"])
        expected = generate(judge.model, judge.tokenizer, [question], Decoding(max_new_tokens=8))[0]
        assert row["verdicts"][0]["raw"] == expected
        first = expected.strip().split(" ")[0].strip(".,!").lower() if expected.strip() else ""
        assert row["verdicts"][0]["breaks"] == ({"yes": True, "no": False}.get(first))
