"""Every metric on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from mmbert.tasks.metrics import (
    box_iou,
    grounding_accuracy,
    nlvr2_scores,
    nlvr2_sentence_key,
    normalize_answer,
    process_punctuation,
    recall_at_k,
    vcr_scores,
    vqa_accuracy,
    vqa_evaluate,
    vqa_soft_scores,
    xywh_to_xyxy,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Yes!", "yes"),
        ("Two", "2"),
        ("none", "0"),
        ("the red car", "red car"),
        ("An apple.", "apple"),
        ("dont know", "don't know"),
        ("hot-dog", "hot dog"),  # a hyphen inside a word becomes a space
        ("hot - dog", "hot dog"),  # touching a space: deleted
        ("3,000", "3000"),  # digit,digit comma: every mark deleted
        ("2.5", "2.5"),  # a period before a digit is kept
        ("  a\tcat\n", "cat"),
        ("Im here", "im here"),  # the official table's capitalised keys never match lower-cased words
    ],
)
def test_official_answer_normalisation(raw, expected):
    assert normalize_answer(raw) == expected


def test_punctuation_rule_looks_at_the_original_text():
    # "," touches a space somewhere in the input, so *every* comma is deleted (also "b,c");
    # "?" touches none, so it becomes a space.
    assert process_punctuation("a, b,c?d") == "a bc d"


@pytest.mark.parametrize(
    ("count", "expected"), [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (7, 1.0), (10, 1.0)]
)
def test_leave_one_out_average_over_ten_answers(count, expected):
    humans = ["red"] * count + ["blue"] * (10 - count)
    if count == 10:
        humans = ["red"] * 10
    assert vqa_accuracy("red", humans) == pytest.approx(expected)


def test_accuracy_normalises_only_when_humans_disagree():
    # disagreeing humans: "two" is normalised to "2" on both sides
    assert vqa_accuracy("Two", ["2", "2", "3", "3", "3", "3", "3", "3", "3", "3"]) == pytest.approx(0.6)
    # unanimous humans: the official evaluator compares the stripped raw strings (case-insensitively)
    assert vqa_accuracy(" YES ", ["yes"] * 10) == 1.0
    assert vqa_accuracy("yes.", ["yes"] * 10) == 0.0
    assert vqa_accuracy("two", ["2"] * 10) == 0.0


def test_soft_scores_use_the_same_formula():
    humans = ["Two", "2", "two", "3", "3", "red", "4", "4", "4", "4"]
    scores = vqa_soft_scores(humans)
    assert scores == pytest.approx({"2": 0.9, "3": 0.6, "red": 0.3, "4": 1.0})


def test_vqa_evaluate_overall_per_type_and_missing():
    anns = {
        1: {"answers": [{"answer": "yes"}] * 10, "answer_type": "yes/no", "question_type": "is the"},
        2: {
            "answers": [{"answer": "2"}] * 2 + [{"answer": "3"}] * 8,
            "answer_type": "number",
            "question_type": "how many",
        },
    }
    out = vqa_evaluate({1: "yes", 2: "2"}, anns)
    assert out["overall"] == 80.0  # (1.0 + 0.6) / 2
    assert out["perAnswerType"] == {"number": 60.0, "yes/no": 100.0}
    with pytest.raises(ValueError, match="1 of 2 annotated questions have no prediction"):
        vqa_evaluate({1: "yes"}, anns)
    assert vqa_evaluate({1: "yes"}, anns, require_all=False)["num_missing"] == 1
    with pytest.raises(ValueError, match="not in the annotations"):
        vqa_evaluate({1: "yes", 2: "2", 9: "x"}, anns)


def test_recall_at_k_hand_computed():
    # 4 captions (2 per image) x 2 images
    s = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
    gt = [0, 0, 1, 1]
    out = recall_at_k(s, gt, ks=(1, 2))
    assert out["ir_r@1"] == 50.0  # captions 0 and 2 rank their image first
    assert out["ir_r@2"] == 100.0
    # image 0: its captions score 0.9, 0.2 -> best 0.9 beats the others -> rank 0
    # image 1: its captions score 0.7, 0.4; caption 1 (not its) scores 0.8 -> rank 1
    assert out["tr_r@1"] == 50.0 and out["tr_r@2"] == 100.0
    assert out["r_mean"] == pytest.approx((50 + 100 + 50 + 100) / 4)


def test_recall_ties_are_pessimistic():
    s = torch.zeros(3, 3)  # a model that scores everything alike
    out = recall_at_k(s, [0, 1, 2], ks=(1, 3))
    assert out["ir_r@1"] == 0.0 and out["tr_r@1"] == 0.0
    assert out["ir_r@3"] == 100.0 and out["tr_r@3"] == 100.0
    # a tie between two captions of the *same* image does not hurt it
    s = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert recall_at_k(s, [0, 0, 1], ks=(1,))["tr_r@1"] == 100.0


def test_recall_rejects_bad_mappings():
    with pytest.raises(ValueError, match="no caption"):
        recall_at_k(torch.zeros(2, 3), [0, 1])
    with pytest.raises(ValueError, match="outside"):
        recall_at_k(torch.zeros(2, 2), [0, 2])


def test_iou_edge_cases():
    a = torch.tensor([0.0, 0.0, 2.0, 2.0])
    assert float(box_iou(a, a)) == 1.0
    assert float(box_iou(a, torch.tensor([1.0, 1.0, 3.0, 3.0]))) == pytest.approx(1 / 7)
    assert float(box_iou(a, torch.tensor([2.0, 0.0, 4.0, 2.0]))) == 0.0  # touching edges
    assert float(box_iou(a, torch.tensor([5.0, 5.0, 6.0, 6.0]))) == 0.0  # disjoint
    assert float(box_iou(a, torch.tensor([0.0, 0.0, 1.0, 1.0]))) == 0.25  # contained
    degenerate = torch.tensor([1.0, 1.0, 1.0, 1.0])
    iou = box_iou(degenerate, degenerate)
    assert float(iou) == 0.0 and not math.isnan(float(iou))
    batch = box_iou(torch.stack([a, a]), torch.tensor([[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 2.0, 2.0]]))
    assert batch.tolist() == [0.5, 1.0]
    assert xywh_to_xyxy([1, 2, 3, 4]) == [1.0, 2.0, 4.0, 6.0]


def test_grounding_accuracy_threshold_is_inclusive():
    assert grounding_accuracy([0.5, 0.49, 0.9, 0.0]) == 50.0


def test_nlvr2_accuracy_and_consistency():
    labels = {"dev-1-0-0": True, "dev-1-1-0": False, "dev-1-0-1": True, "dev-2-0-0": False}
    preds = {"dev-1-0-0": True, "dev-1-1-0": True, "dev-1-0-1": True, "dev-2-0-0": False}
    out = nlvr2_scores(preds, labels)
    assert out["accuracy"] == 75.0
    # sentences: dev-1--0 (pairs 0 and 1; one wrong), dev-1--1, dev-2--0 -> 2 of 3 consistent
    assert out["consistency"] == pytest.approx(200 / 3)
    assert nlvr2_sentence_key("test1-10-2-3") == "test1-10--3"
    with pytest.raises(ValueError, match="malformed NLVR2 identifier"):
        nlvr2_sentence_key("dev-1-0")
    with pytest.raises(ValueError, match="no prediction"):
        nlvr2_scores({}, labels)


def test_vcr_joint_accuracy():
    out = vcr_scores([0, 1, 2, 3], [0, 1, 0, 3], [1, 1, 1, 0], [1, 2, 1, 0])
    assert out["q2a"] == 75.0 and out["qa2r"] == 75.0
    assert out["q2ar"] == 50.0  # items 0 and 3 right on both
