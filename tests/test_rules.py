"""Rules instead of labels: the rules file, the judge's prompt, the verdict shares, and both kinds of judge (a model
loaded here, read through its next-token probabilities; an OpenAI-compatible endpoint, over real HTTP)."""

from __future__ import annotations

import pytest
import torch
from fastapi import FastAPI

from tests.helpers import Server, StubJudge
from tunelab.data.templates import encode_prompt
from tunelab.errors import ConfigError, DataError
from tunelab.evaluation import judge as judgemod
from tunelab.evaluation.judge import EndpointJudge, LocalJudge, RulesCheck, judge_answers, open_judge, word_ids
from tunelab.evaluation.rules import (
    DEFAULT_JUDGE_PROMPT,
    Verdict,
    broken_count,
    paired_change,
    read_judge_prompt,
    read_rules,
    rule_report,
)
from tunelab.inference.loading import load_for_inference


def test_rules_are_read_one_per_line_with_comments_and_list_marks_dropped(tmp_path):
    path = tmp_path / "rules.md"
    path.write_text("# House rules\n\n- Be brief.\n* Never name a price.\n3. Answer in English.\n  Say thanks.  \n")
    assert read_rules(path) == ["Be brief.", "Never name a price.", "Answer in English.", "Say thanks."]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# only a comment\n\n", "no rules; write one rule per line"),
        ("ok\n" + "x" * 501 + "\n", "rules.txt:2: rule is 501 characters"),
        ("".join(f"rule {i}\n" for i in range(33)), "33 rules; at most 32"),
    ],
)
def test_a_bad_rules_file_is_named_with_its_line(tmp_path, text, message):
    path = tmp_path / "rules.txt"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        read_rules(path)


def test_a_missing_or_binary_rules_file_says_so(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        read_rules(tmp_path / "nope.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe rule")
    with pytest.raises(DataError, match="not UTF-8"):
        read_rules(tmp_path / "bin.txt")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Rule {rule}. Answer {answer}.", r"missing \{prompt\}"),
        ("{rule} {prompt} {answer} {score}", r"unknown field\(s\) score"),
        ("{rule} {prompt} {answer} {", "literal brace"),
    ],
)
def test_a_judge_prompt_must_name_the_three_fields_and_no_other(tmp_path, text, message):
    path = tmp_path / "judge.txt"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_judge_prompt(path)


def test_the_default_judge_prompt_and_a_users_one_with_literal_braces(tmp_path):
    assert read_judge_prompt(None) == DEFAULT_JUDGE_PROMPT
    path = tmp_path / "judge.txt"
    path.write_text('Rule: {rule}\nQ: {prompt}\nA: {answer}\nReply {{"breaks": true}} or no.')
    assert read_judge_prompt(path).format(rule="r", prompt="p", answer="a").endswith('{"breaks": true} or no.')


def verdicts(*rows: str) -> list[list[Verdict]]:
    """ "10" -> rule 1 broken, rule 2 kept; "?" an unclear verdict."""
    return [[Verdict(i, None if c == "?" else c == "1", c) for i, c in enumerate(row)] for row in rows]


def test_the_report_counts_answers_breaking_any_rule_and_each_rule():
    report = rule_report(verdicts("00", "10", "11", "0?"), resamples=200)
    assert report.metrics == {"rules_broken": 0.5, "rule_1_broken": 0.5, "rule_2_broken": 0.25}
    assert report.unclear == 1
    for key, value in report.metrics.items():
        low, high = report.intervals[key]
        assert low <= value <= high and high - low > 0
    assert broken_count(verdicts("1?")[0]) == 1.5  # an unclear verdict ranks between a pass and a break


def test_the_paired_change_is_after_minus_before_on_the_same_rows():
    before = verdicts("10", "01", "11", "00", "10")
    after = verdicts("00", "00", "10", "00", "00")
    change, (low, high) = paired_change(before, after, resamples=500)
    assert change == pytest.approx(-0.6)  # 4 of 5 broke a rule before, 1 of 5 after
    assert low <= change <= high < 0


def test_rules_need_a_judge_and_a_judge_needs_rules(tmp_path):
    (tmp_path / "rules.txt").write_text("Be brief.\n")
    with pytest.raises(ConfigError, match="--rules needs --judge"):
        RulesCheck.prepare(tmp_path / "rules.txt", None)
    with pytest.raises(ConfigError, match="need --rules FILE"):
        RulesCheck.prepare(None, "smollm2-135m-instruct")
    assert RulesCheck.prepare(None, None) is None


def test_a_judge_that_is_not_a_model_is_named_before_any_generation(tmp_path):
    (tmp_path / "rules.txt").write_text("Be brief.\n")
    with pytest.raises(ConfigError, match="^--judge .*no-such-model: no model directory"):
        RulesCheck.prepare(tmp_path / "rules.txt", str(tmp_path / "no-such-model"))


def test_yes_and_no_are_found_as_single_tokens_in_any_case(smol_tokenizer):
    yes, no = word_ids(smol_tokenizer, "yes"), word_ids(smol_tokenizer, "no")
    assert yes and no and not set(yes) & set(no)
    assert {smol_tokenizer.decode([i]).strip() for i in yes} >= {"yes", "Yes"}


def test_a_local_judge_reads_yes_against_no_from_one_forward_and_batches_exactly(tiny_model_dir):
    """Questions of different lengths in one left-padded batch give each the probabilities it gets alone."""
    loaded = load_for_inference(str(tiny_model_dir), device="cpu", dtype="float32")
    judge = LocalJudge(loaded, batch_size=4, min_mass=0.0)  # a random model puts little mass on yes and no
    questions = [
        DEFAULT_JUDGE_PROMPT.format(rule="Be brief.", prompt="Hi", answer="Hello there"),
        "Is the sky green?",
        DEFAULT_JUDGE_PROMPT.format(rule="No prices.", prompt="Cost?", answer="It costs ten dollars " * 5),
    ]
    answers = judge.ask(questions)
    for question, (breaks, raw, p_break) in zip(questions, answers, strict=True):
        ids = torch.tensor([encode_prompt(loaded.tokenizer, question, loaded.template)])
        with torch.no_grad():
            probs = torch.softmax(loaded.model(ids).logits[0, -1].float(), -1)
        p_yes, p_no = probs[judge.yes_ids].sum().item(), probs[judge.no_ids].sum().item()
        assert p_break == pytest.approx(p_yes / (p_yes + p_no), abs=1e-4)
        assert breaks == (p_yes > p_no) and f"P(yes)={p_yes:.4f}" in raw
    unsure = LocalJudge(loaded, min_mass=0.5).ask(questions)  # it says neither word: no verdict, the numbers kept
    assert [a[0] for a in unsure] == [None] * 3 and all("P(no)=" in a[1] for a in unsure)


@pytest.fixture(scope="module")
def stub():
    judge = StubJudge()
    with Server(judge.app) as server:
        judge.url = server.url + "/v1"
        yield judge


def test_an_endpoint_judge_asks_each_rule_of_each_answer_and_keeps_the_raw_reply(stub):
    judge = open_judge(stub.url)
    assert isinstance(judge, EndpointJudge) and judge.model == "stub-judge"  # the endpoint's first model
    rules = ["Be kind.", "Be brief."]
    got = judge_answers(judge, DEFAULT_JUDGE_PROMPT, rules, ["p1", "p2", "p3"], ["a BAD one", "a GOOD one", "meh"])
    assert [[v.breaks for v in row] for row in got] == [[True, True], [False, False], [None, None]]
    assert got[0][0].raw == "Yes, it does." and got[2][1].raw == "Hard to say."
    asked = DEFAULT_JUDGE_PROMPT.format(rule="Be brief.", prompt="p2", answer="a GOOD one")
    assert asked in stub.questions


def test_an_endpoint_judge_that_is_down_or_lacks_the_model_is_one_clear_line(stub, tmp_path):
    with pytest.raises(ConfigError, match="(?s)no model .big-judge.*it serves: stub-judge"):
        judgemod.check_judge(stub.url, "big-judge")
    with Server(FastAPI()) as gone:
        url = gone.url + "/v1"
    with pytest.raises(ConfigError, match="cannot connect"):
        judgemod.check_judge(url)
