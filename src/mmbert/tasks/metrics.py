"""The official metrics of the downstream tasks, as pure functions over plain Python / tensors.

- VQA v2: the official evaluator's answer normalisation (punctuation, number words, articles,
  contractions) and accuracy averaged over the 10 leave-one-out subsets of 9 human answers
  (GT-Vision-Lab/VQA ``vqaEval.py``; the normalisation and soft targets live in ``mmbert.data.answers``).
- Retrieval: recall@K in both directions over a full score matrix, ties broken pessimistically.
- Referring expressions: IoU of (x1, y1, x2, y2) boxes and accuracy at IoU >= 0.5.
- NLVR2: accuracy and consistency (lil-lab/nlvr ``nlvr2/eval/metrics.py``).
- VCR: Q->A, QA->R and the joint Q->AR accuracy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor

# The answer normalisation lives in data/ (pre-training data needs it too); re-exported for the task.
from mmbert.data.answers import clean_answer, process_digit_article, process_punctuation
from mmbert.data.answers import normalize_answer as normalize_answer
from mmbert.data.answers import vqa_soft_scores as vqa_soft_scores

# --- VQA -------------------------------------------------------------------------------------------


def vqa_accuracy(prediction: str, human_answers: Sequence[str]) -> float:
    """The official per-question VQA accuracy in [0, 1].

    As the official evaluator: answers are stripped; *only when the humans disagree* (more than one
    distinct raw answer) are the human answers and the prediction normalised. Then for each of the
    leave-one-out subsets of 9 answers, ``min(1, matches / 3)``; the result is their mean
    (1 of 10 humans -> 0.3, 2 -> 0.6, 3 -> 0.9, 4 or more -> 1.0). Matching ignores case.
    """
    if not human_answers:
        raise ValueError("vqa_accuracy needs at least one human answer")
    gts = [clean_answer(a) for a in human_answers]
    pred = clean_answer(prediction)
    if len(set(gts)) > 1:
        gts = [process_digit_article(process_punctuation(a)) for a in gts]
        pred = process_digit_article(process_punctuation(pred))
    pred = pred.lower()
    matches = [g.lower() == pred for g in gts]
    total = sum(matches)
    # leave one out: dropping a matching answer leaves total-1 matches, dropping another leaves total.
    scores = [min(1.0, (total - int(m)) / 3.0) for m in matches]
    return sum(scores) / len(scores)


def vqa_evaluate(
    predictions: Mapping[int | str, str],
    annotations: Mapping[int | str, Mapping],
    require_all: bool = True,
) -> dict:
    """Score predictions {question_id: answer} against official annotation records
    {question_id: {"answers": [{"answer": ...}] * 10, "answer_type", "question_type"}}.

    Returns overall accuracy and per answer type / question type, in percent rounded to 2 places as
    the official evaluator prints them, plus counts. Missing predictions are an error when
    ``require_all`` (the official evaluator refuses them too); predictions for unknown questions are
    always an error.
    """
    unknown = [q for q in predictions if q not in annotations]
    if unknown:
        raise ValueError(
            f"{len(unknown)} predictions for question ids not in the annotations, e.g. {unknown[:5]}"
        )
    missing = [q for q in annotations if q not in predictions]
    if missing and require_all:
        raise ValueError(
            f"{len(missing)} of {len(annotations)} annotated questions have no prediction, e.g. {missing[:5]}"
        )
    per_q: dict = {}
    by_ans: dict[str, list[float]] = {}
    by_ques: dict[str, list[float]] = {}
    for qid, ann in annotations.items():
        if qid not in predictions:
            continue
        acc = vqa_accuracy(predictions[qid], [a["answer"] for a in ann["answers"]])
        per_q[qid] = acc
        by_ans.setdefault(str(ann.get("answer_type", "unknown")), []).append(acc)
        by_ques.setdefault(str(ann.get("question_type", "unknown")), []).append(acc)

    def pct(xs: Iterable[float]) -> float:
        xs = list(xs)
        return round(100.0 * sum(xs) / len(xs), 2) if xs else 0.0

    return {
        "overall": pct(per_q.values()),
        "perAnswerType": {k: pct(v) for k, v in sorted(by_ans.items())},
        "perQuestionType": {k: pct(v) for k, v in sorted(by_ques.items())},
        "num_questions": len(per_q),
        "num_missing": len(missing),
    }


# --- Retrieval --------------------------------------------------------------------------------------


def recall_at_k(
    scores: Tensor, text_to_image: Sequence[int] | Tensor, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Recall@K (percent) in both directions from a (num_texts, num_images) score matrix.

    ``text_to_image[t]`` is the index of caption t's image. Text->image ("ir_r@K"): for each caption,
    the rank of its image among all images. Image->text ("tr_r@K"): for each image, the best rank of
    any of its captions among all captions. **Ties are broken pessimistically** (deterministic, and a
    model that scores everything alike earns nothing): a wrong candidate with a score equal to the
    ground truth ranks ahead of it. Another ground-truth caption of the same image never counts against
    it. Also returns the mean of the six recalls ("rsum"/6 = "r_mean") and the per-direction ranks.
    """
    scores = scores.float()
    n_text, n_img = scores.shape
    gt = torch.as_tensor(text_to_image, dtype=torch.long, device=scores.device)
    if gt.shape != (n_text,):
        raise ValueError(f"text_to_image has {gt.numel()} entries for {n_text} texts")
    if n_text and (int(gt.min()) < 0 or int(gt.max()) >= n_img):
        raise ValueError(f"text_to_image refers to images outside 0..{n_img - 1}")
    rows = torch.arange(n_text, device=scores.device)
    # text -> image
    gt_scores = scores[rows, gt]  # (N,)
    ir_rank = (scores >= gt_scores[:, None]).sum(1) - 1  # competitors at >= ; minus the gt itself
    # image -> text: best (max) score among an image's captions vs all other captions
    owns = torch.zeros(n_img, n_text, dtype=torch.bool, device=scores.device)
    owns[gt, rows] = True
    if not bool(owns.any(1).all()):
        empty = (~owns.any(1)).nonzero().flatten().tolist()
        raise ValueError(f"images {empty[:5]} have no caption: image->text recall is undefined for them")
    by_image = scores.t()  # (M, N)
    best = by_image.masked_fill(~owns, float("-inf")).max(1).values  # (M,)
    tr_rank = ((by_image >= best[:, None]) & ~owns).sum(1)
    out: dict[str, float] = {}
    for k in ks:
        out[f"ir_r@{k}"] = 100.0 * float((ir_rank < k).float().mean())
    for k in ks:
        out[f"tr_r@{k}"] = 100.0 * float((tr_rank < k).float().mean())
    out["r_mean"] = sum(out.values()) / len(out)
    return out


# --- Boxes / referring expressions ------------------------------------------------------------------


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of (x1, y1, x2, y2) boxes, broadcasting: a (..., 4), b (..., 4) -> (...). Degenerate boxes
    (zero width or height) have zero area; when the union is empty the IoU is 0 (never NaN)."""
    x1 = torch.maximum(a[..., 0], b[..., 0])
    y1 = torch.maximum(a[..., 1], b[..., 1])
    x2 = torch.minimum(a[..., 2], b[..., 2])
    y2 = torch.minimum(a[..., 3], b[..., 3])
    inter = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    area_a = (a[..., 2] - a[..., 0]).clamp(min=0) * (a[..., 3] - a[..., 1]).clamp(min=0)
    area_b = (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))


def xywh_to_xyxy(box: Sequence[float]) -> list[float]:
    """COCO [x, y, w, h] -> [x1, y1, x2, y2]."""
    x, y, w, h = (float(v) for v in box)
    return [x, y, x + w, y + h]


def grounding_accuracy(ious: Sequence[float] | Tensor, threshold: float = 0.5) -> float:
    """Percent of expressions whose chosen box has IoU >= threshold with the ground truth."""
    ious = torch.as_tensor(ious, dtype=torch.float64)
    return 100.0 * float((ious >= threshold).double().mean()) if ious.numel() else 0.0


# --- NLVR2 ------------------------------------------------------------------------------------------


def nlvr2_sentence_key(identifier: str) -> str:
    """The consistency group of an example: the identifier "split-set-pair-sentence" with the pair
    field blanked (as the official script does), i.e. one sentence across its image pairs."""
    parts = identifier.split("-")
    if len(parts) != 4:
        raise ValueError(f"malformed NLVR2 identifier {identifier!r}: expected 'split-set-pair-sentence'")
    parts[2] = ""
    return "-".join(parts)


def nlvr2_scores(predictions: Mapping[str, bool], labels: Mapping[str, bool]) -> dict[str, float]:
    """Accuracy and consistency (percent). Consistency: fraction of unique sentences whose predictions
    are correct on every image pair they describe. Every labelled example needs a prediction."""
    missing = [i for i in labels if i not in predictions]
    if missing:
        raise ValueError(f"{len(missing)} of {len(labels)} examples have no prediction, e.g. {missing[:5]}")
    correct = 0
    consistent: dict[str, bool] = {}
    for ident, label in labels.items():
        ok = bool(predictions[ident]) == bool(label)
        correct += ok
        key = nlvr2_sentence_key(ident)
        consistent[key] = consistent.get(key, True) and ok
    n = len(labels)
    return {
        "accuracy": 100.0 * correct / n if n else 0.0,
        "consistency": 100.0 * sum(consistent.values()) / len(consistent) if consistent else 0.0,
        "num_examples": n,
        "num_sentences": len(consistent),
    }


# --- VCR --------------------------------------------------------------------------------------------


def vcr_scores(
    answer_pred: Sequence[int] | Tensor,
    answer_label: Sequence[int] | Tensor,
    rationale_pred: Sequence[int] | Tensor,
    rationale_label: Sequence[int] | Tensor,
) -> dict[str, float]:
    """Q->A, QA->R (rationale chosen given the correct answer) and Q->AR (both right), in percent."""
    qa = torch.as_tensor(answer_pred) == torch.as_tensor(answer_label)
    qar = torch.as_tensor(rationale_pred) == torch.as_tensor(rationale_label)
    if qa.shape != qar.shape:
        raise ValueError(f"{qa.numel()} answer predictions but {qar.numel()} rationale predictions")
    n = qa.numel()
    if n == 0:
        return {"q2a": 0.0, "qa2r": 0.0, "q2ar": 0.0, "num_examples": 0}
    return {
        "q2a": 100.0 * float(qa.double().mean()),
        "qa2r": 100.0 * float(qar.double().mean()),
        "q2ar": 100.0 * float((qa & qar).double().mean()),
        "num_examples": n,
    }
