"""Task metrics against hand-computed values (no model needed)."""

from __future__ import annotations

import inspect

import pytest

from tunelab.evaluation import METRICS, exact_match, json_fields, parse_json_object, score_rows, task_scorer

REF = '{"category": "billing", "priority": "high", "product": "volt plug"}'


def test_exact_match_strips_whitespace_only():
    predictions = ["  " + REF + "\n", REF.replace(", ", ","), "billing"]
    assert exact_match(predictions, [REF, REF, REF]) == {"exact_match": pytest.approx(1 / 3)}


def test_json_fields_hand_computed():
    references = [REF] * 3
    predictions = [
        REF,  # 3/3 fields
        '{"category": "billing", "priority": "low", "product": "lumen cam"}',  # 1/3: category only
        '{"priority": "high"}',  # 1/3: missing keys are wrong, present ones still count
    ]
    scores = json_fields(predictions, references)
    assert scores == pytest.approx(
        {
            "field_accuracy": 5 / 9,
            "field_accuracy.category": 2 / 3,
            "field_accuracy.priority": 2 / 3,
            "field_accuracy.product": 1 / 3,
            "valid_json": 1.0,
            "invalid_json_count": 0.0,
        }
    )


def test_invalid_json_counts_and_scores_zero_on_every_field():
    references = [REF, REF, REF, REF]
    predictions = [REF, "category: billing, priority: high", '["billing", "high", "volt plug"]', ""]
    scores = json_fields(predictions, references)
    assert scores["invalid_json_count"] == 3.0
    assert scores["valid_json"] == pytest.approx(1 / 4)
    assert scores["field_accuracy"] == pytest.approx(3 / 12)
    assert scores["field_accuracy.product"] == pytest.approx(1 / 4)


def test_fenced_json_is_accepted_by_json_fields_but_not_exact_match():
    fenced = ["```json\n" + REF + "\n```", REF + "\n```", "\n```\n" + REF + "```  "]
    assert json_fields(fenced, [REF] * 3)["field_accuracy"] == 1.0
    assert json_fields(fenced, [REF] * 3)["valid_json"] == 1.0
    assert exact_match(fenced, [REF] * 3)["exact_match"] == 0.0


def test_fields_follow_each_reference_row():
    references = ['{"a": 1, "b": [1, 2]}', '{"a": 2}']
    predictions = ['{"a": 1, "b": [1, 2], "extra": true}', '{"a": 3}']
    scores = json_fields(predictions, references)
    assert scores["field_accuracy"] == pytest.approx(2 / 3)
    assert scores["field_accuracy.a"] == pytest.approx(1 / 2)
    assert scores["field_accuracy.b"] == 1.0
    assert "field_accuracy.extra" not in scores


def test_parse_json_object():
    assert parse_json_object(' ```\n{"a": 1}\n``` ') == {"a": 1}
    assert parse_json_object('{"a": 1} trailing words') is None
    assert parse_json_object("42") is None


def test_score_rows_gives_one_dict_per_row():
    rows = score_rows("json_fields", [REF, "nope"], [REF, REF])
    assert [r["field_accuracy"] for r in rows] == [1.0, 0.0]
    assert [r["invalid_json_count"] for r in rows] == [0.0, 1.0]
    assert score_rows(exact_match, [REF, " " + REF], [REF, REF]) == [{"exact_match": 1.0}] * 2


def test_unknown_metric_lists_valid_names():
    with pytest.raises(ValueError, match="unknown metric 'rogue'.*exact_match, json_fields"):
        task_scorer("rogue")
    with pytest.raises(ValueError, match="unknown metric"):
        score_rows("rogue", [REF], [REF])


def test_misuse_is_a_value_error():
    with pytest.raises(ValueError, match="pair up"):
        exact_match(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="no rows"):
        json_fields([], [])
    with pytest.raises(ValueError, match="reference row 1 is not a JSON object"):
        json_fields([REF, REF], [REF, "billing"])


@pytest.mark.parametrize("name", sorted(METRICS))
def test_every_metric_has_the_registry_shape(name):
    metric = task_scorer(name)
    assert list(inspect.signature(metric).parameters) == ["predictions", "references"]
    scores = metric([REF], [REF])
    assert scores and all(isinstance(v, float) for v in scores.values())
