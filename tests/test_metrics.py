"""Task metrics against hand-computed values (no model needed)."""

from __future__ import annotations

import inspect

import pytest

from tunelab.evaluation import (
    METRICS,
    accuracy,
    bleu,
    chrf,
    exact_match,
    f1,
    is_row_decomposable,
    json_fields,
    main_metric,
    parse_json_object,
    rouge,
    score_rows,
    task_scorer,
)

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
    with pytest.raises(ValueError, match="unknown metric 'rogue'.*accuracy, bleu, chrf, contains, exact_match, f1"):
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
    assert main_metric(name) in scores


# The textbook pair: the output adds one word to the reference.
COLD_REF, COLD_OUT = "It is cold outside", "It is very cold outside"


def test_rouge_textbook_pair():
    # Unigrams: all 4 reference words appear among the 5 output words -> p 4/5, r 4/4.
    # Bigrams: reference {it is, is cold, cold outside}, output {it is, is very, very cold, cold outside}:
    # 2 shared -> p 2/4, r 2/3, F1 = 2 * 1/2 * 2/3 / (1/2 + 2/3) = 4/7. LCS "it is cold outside" = 4 -> as ROUGE-1.
    scores = rouge([COLD_OUT], [COLD_REF])
    assert scores == pytest.approx(
        {
            "rouge1_p": 0.8,
            "rouge1_r": 1.0,
            "rouge1_f": 8 / 9,
            "rouge2_p": 0.5,
            "rouge2_r": 2 / 3,
            "rouge2_f": 4 / 7,
            "rougeL_p": 0.8,
            "rougeL_r": 1.0,
            "rougeL_f": 8 / 9,
        }
    )


def test_rouge_averages_rows_and_single_types_have_a_headline():
    # Row 2 shares nothing, so every mean halves; stemming makes "outsides" match "outside".
    predictions, references = [COLD_OUT, "warm"], [COLD_REF, "It is cold outsides"]
    assert rouge(predictions, references)["rouge2_f"] == pytest.approx(2 / 7)
    assert task_scorer("rougeL")(predictions, references) == pytest.approx(
        {"rougeL": 4 / 9, "rougeL_p": 0.4, "rougeL_r": 0.5}
    )
    assert task_scorer("rouge1")(["it is cold outside"], ["It is cold outsides"])["rouge1"] == 1.0
    assert set(task_scorer("rouge2")([COLD_OUT], [COLD_REF])) == {"rouge2", "rouge2_p", "rouge2_r"}


def test_bleu_hand_computed_and_on_the_0_100_scale():
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == {"bleu": pytest.approx(100.0)}
    # One word swapped in six: 1- to 4-gram precisions 5/6, 3/5, 2/4, 1/3, equal lengths so no brevity penalty;
    # BLEU = 100 * geometric mean = 100 * (1/12) ** (1/4).
    assert bleu(["the cat sat on a mat"], ["the cat sat on the mat"])["bleu"] == pytest.approx(100 * (1 / 12) ** 0.25)


def test_bleu_is_corpus_level_not_a_mean_of_rows():
    # Row 2 has no 4-gram at all, so alone it scores 0; pooled with row 1 it still adds matches.
    predictions, references = ["the cat sat on the mat", "a dog"], ["the cat sat on the mat", "a dog"]
    assert bleu(predictions, references)["bleu"] == pytest.approx(100.0)
    assert [row["bleu"] for row in score_rows("bleu", predictions, references)] == [pytest.approx(100.0), 0.0]


def test_chrf_hand_computed():
    assert chrf(["the cat"], ["the cat"]) == {"chrf": pytest.approx(100.0)}
    assert chrf(["xyz"], ["abc"]) == {"chrf": 0.0}
    # "ab" vs "abc": 1-grams p 2/2, r 2/3; 2-grams p 1/1, r 1/2; higher orders absent from the output, so
    # averaged over 2 orders p = 1, r = 7/12 and chrF (beta 2) = 5pr / (4p + r) = 7/11.
    assert chrf(["ab"], ["abc"])["chrf"] == pytest.approx(100 * 7 / 11)


# Three classes; "fish" is not a label, so it is wrong and no class's false positive.
LABEL_REFS = ["cat", "cat", "cat", "dog", "dog", "bird"]
LABEL_PREDS = ["cat", " cat\n", "dog", "dog", "fish", "cat"]


def test_classification_hand_computed():
    assert accuracy(LABEL_PREDS, LABEL_REFS) == {"accuracy": 0.5}
    # cat: 2 hits of 3 predicted, 3 true; dog: 1 of 2 predicted, 2 true; bird: never predicted, 1 true.
    assert f1(LABEL_PREDS, LABEL_REFS) == pytest.approx(
        {
            "accuracy": 0.5,
            "f1": (2 / 3 + 1 / 2 + 0) / 3,
            "precision.cat": 2 / 3,
            "recall.cat": 2 / 3,
            "f1.cat": 2 / 3,
            "precision.dog": 1 / 2,
            "recall.dog": 1 / 2,
            "f1.dog": 1 / 2,
            "precision.bird": 0.0,
            "recall.bird": 0.0,
            "f1.bird": 0.0,
        }
    )


def test_unknown_label_lowers_recall_but_no_precision():
    scores = f1(["cat", "fish"], ["cat", "dog"])
    assert scores["precision.cat"] == 1.0 and scores["recall.dog"] == 0.0
    assert scores["f1"] == pytest.approx(0.5)
    assert not any("fish" in key for key in scores)
    # A wrong but known label is a false positive of that class.
    assert f1(["cat", "cat"], ["cat", "dog"])["precision.cat"] == 0.5


def test_main_metric_names_the_headline_key():
    expected = {"json_fields": "field_accuracy", "rouge": "rougeL_f", "rougeL": "rougeL", "bleu": "bleu"}
    assert {name: main_metric(name) for name in expected} == expected
    assert main_metric("f1") == "f1" and main_metric("exact_match") == "exact_match"
    with pytest.raises(ValueError, match="unknown metric"):
        main_metric("rogue")


SAMPLE_PREDS = [COLD_OUT, REF, "cat", "", "the cat sat on a mat"]
SAMPLE_REFS = [COLD_REF, REF, "dog", "cat", "the cat sat on the mat"]


@pytest.mark.parametrize("name", sorted(name for name in METRICS if is_row_decomposable(METRICS[name])))
def test_row_decomposable_metrics_are_the_mean_of_their_rows(name):
    rows = score_rows(name, SAMPLE_PREDS, SAMPLE_REFS)
    corpus = task_scorer(name)(SAMPLE_PREDS, SAMPLE_REFS)
    assert corpus == pytest.approx({key: sum(row[key] for row in rows) / len(rows) for key in corpus})


def test_corpus_level_metrics_are_flagged():
    flags = {name: is_row_decomposable(metric) for name, metric in METRICS.items()}
    assert [name for name, flag in flags.items() if not flag] == ["json_fields", "bleu", "chrf", "f1"]
    assert not is_row_decomposable(lambda predictions, references: {})  # unmarked: re-scored, always right
