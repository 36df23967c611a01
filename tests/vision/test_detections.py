"""The two region-selection rules on hand-made boxes and scores."""

from __future__ import annotations

import torch
from vision.vision_fixtures import require_vision_or_skip

require_vision_or_skip()

from mmbert.vision.detections import decode_boxes, select_bottomup, select_reference  # noqa: E402

# boxes 0 and 1 overlap with IoU 0.6 (10x10 squares shifted by 2.5), box 2 stands apart
BOXES = torch.tensor([[0, 0, 10, 10], [2.5, 0, 12.5, 10], [50, 50, 60, 60]], dtype=torch.float32)


def test_reference_rule_escalates_the_iou_until_min_boxes_survive():
    scores = torch.tensor([0.9, 0.8, 0.1])
    assert select_reference(BOXES, scores, (0.5, 0.7), 2, 3).tolist() == [0, 2]  # IoU 0.5 suffices
    assert select_reference(BOXES, scores, (0.5, 0.7), 3, 3).tolist() == [0, 1, 2]  # needs 0.7
    assert select_reference(BOXES, scores, (0.5, 0.55), 3, 3).tolist() == [0, 2]  # never reached: the last
    assert select_reference(BOXES, scores, (0.7,), 1, 2).tolist() == [0, 1]  # at most max_boxes, best first


def test_bottomup_rule_thresholds_per_class_nms_confidence_then_clamps():
    probs = torch.tensor([[0.7, 0.1], [0.6, 0.3], [0.05, 0.15]])  # 2 classes
    # class 0: box 1 suppressed by box 0 (IoU 0.6 > 0.3); class 1 keeps box 1 (0.3): confidences .7 .3 .15
    assert select_bottomup(BOXES, probs, 0.2, 1, 3).tolist() == [0, 1]  # proposal order
    assert select_bottomup(BOXES, probs, 0.5, 2, 3).tolist() == [0, 1]  # too few: best 2 by confidence
    assert select_bottomup(BOXES, probs, 0.0, 1, 2).tolist() == [0, 1]  # too many: best 2
    assert select_bottomup(BOXES, probs, 0.0, 1, 3).tolist() == [0, 1, 2]


def test_box_decoding_inverts_known_deltas():
    anchors = torch.tensor([[10.0, 20.0, 30.0, 60.0]])  # centre (20, 40), 20 x 40
    deltas = torch.tensor([[0.5, -0.25, float(torch.log(torch.tensor(2.0))), 0.0]])
    assert decode_boxes(deltas, anchors, (1, 1, 1, 1)).tolist() == [[10.0, 10.0, 50.0, 50.0]]  # centre (30, 30)
    big = torch.tensor([[0.0, 0.0, 100.0, 100.0]])  # dw, dh clamped at log(1000 / 16)
    out = decode_boxes(big, anchors, (1, 1, 1, 1))
    assert abs(float(out[0, 2] - out[0, 0]) - 20 * 1000 / 16) < 1e-2
