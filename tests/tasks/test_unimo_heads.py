"""UNIMO's fine-tuning heads and circle loss against the official scripts' formulas, written out."""

from __future__ import annotations

import math

import pytest
import torch

import mmbert
from mmbert.models.outputs import Encoded
from mmbert.tasks.unimo_heads import UnimoClassifierHead, UnimoMatchHead, circle_loss, unimo_retrieval_loss


def test_circle_loss_by_hand():
    sp, sn = torch.tensor([[0.9]]), torch.tensor([[0.3, 0.5]])
    m, s = 0.2, 1.0
    ap = max(0.0, 1 + m - 0.9)
    lp = math.exp(-s * ap * (0.9 - (1 - m)))
    ln = sum(math.exp(s * max(0.0, x + m) * (x - m)) for x in (0.3, 0.5))
    assert float(circle_loss(sp, sn, m, s)) == pytest.approx(math.log(1 + ln * lp), rel=1e-6)


def test_retrieval_loss_splits_image_and_caption_negatives():
    scores = torch.randn(2, 5)
    p = torch.sigmoid(scores)
    expected = (circle_loss(p[:, :1], p[:, 3:]) + circle_loss(p[:, :1], p[:, 1:3])) / 2
    assert float(unimo_retrieval_loss(scores)) == pytest.approx(float(expected), rel=1e-6)
    with pytest.raises(ValueError, match="at least|>= 3"):
        unimo_retrieval_loss(torch.randn(2, 2))


def test_heads_fuse_the_two_poolers_as_the_scripts_do():
    torch.manual_seed(0)
    text, image = torch.randn(3, 8), torch.randn(3, 8)
    enc = Encoded(text=torch.randn(3, 4, 8), vision=torch.randn(3, 2, 8), pooled=text, pooled_vision=image)
    match = UnimoMatchHead(8).eval()
    torch.testing.assert_close(match(enc)[:, 1] - match(enc)[:, 0], match.fc(text * image).squeeze(-1))
    ve = UnimoClassifierHead(8, 3, hidden=16).eval()
    torch.testing.assert_close(ve(enc), ve.fc2(ve.fc1(text + image)))
    with pytest.raises(ValueError, match="image-text forward"):
        ve(Encoded(text=None, vision=enc.vision, pooled=image, pooled_vision=image))


def test_heads_on_unimo_tiny():
    model = mmbert.build_model("unimo_tiny").eval()
    enc = model(torch.tensor([[0, 5, 6, 2]]), region_feats=torch.randn(1, 3, 16),
                region_boxes=torch.tensor([[[0.1, 0.1, 0.5, 0.6]] * 3]))  # fmt: skip
    assert UnimoClassifierHead(model.config.dim, 3)(enc).shape == (1, 3)
    assert UnimoMatchHead(model.config.dim)(enc).shape == (1, 2)
    from mmbert.tasks.retrieval import RetrievalTask
    from mmbert.tasks.snli_ve import SNLIVETask

    assert isinstance(SNLIVETask().build_head(model), UnimoClassifierHead)
    assert isinstance(RetrievalTask().build_head(model), UnimoMatchHead)


def test_unimo_vqa_takes_the_shared_nonlinear_head():
    """No official UNIMO VQA head exists. The entailment head (one linear map) lagged on VQA (38.5 +- 3.2
    against 46.0 +- 1.1 from a random encoder on the synthetic world), so VQA, like GQA, takes the shared
    VQAHead on the pooled [CLS]."""
    from mmbert.tasks.vqa import VQAHead, VQATask

    model = mmbert.build_model("unimo_tiny").eval()
    head = VQATask(answer_list=["yes", "no", "2"]).build_head(model).eval()
    assert isinstance(head, VQAHead)
    enc = model(torch.tensor([[0, 5, 6, 2]]), region_feats=torch.randn(1, 3, 16),
                region_boxes=torch.tensor([[[0.1, 0.1, 0.5, 0.6]] * 3]))  # fmt: skip
    torch.testing.assert_close(head(enc, None), head.classifier(enc.pooled))


def _hand_circle(sp: float, sn: list[float], m: float = 0.2, s: float = 1.0) -> float:
    lp = math.exp(-s * max(0.0, 1 + m - sp) * (sp - (1 - m)))
    ln = sum(math.exp(s * max(0.0, x + m) * (x - m)) for x in sn)
    return math.log(1 + ln * lp)


def test_retrieval_task_trains_unimo_with_the_official_two_sided_loss(tmp_path, tokenizer):
    """Regression: the task scored image negatives only. The official retrieval.py scores the caption
    with other images and the image with other captions; the two circle losses are averaged."""
    from tasks.task_fixtures import make_store, tiny_encoder
    from tasks.test_retrieval import write_karpathy

    from mmbert.tasks import TaskModel
    from mmbert.tasks.base import collate
    from mmbert.tasks.retrieval import RetrievalTask, match_score, select_pairs

    task = RetrievalTask(negatives=2)  # every other image of the batch: the loss does not depend on the draw
    ds = task.load({"karpathy": write_karpathy(tmp_path / "k.json")}, tokenizer,
                   make_store([str(1000 + i) for i in range(8)]))  # fmt: skip
    items = [ds[i] for i in range(len(ds))]
    picked = [next(e for e in items if e.meta["image"] == im) for im in ("1000", "1001", "1002")]
    batch = collate(picked)
    encoder = tiny_encoder("unimo_tiny")
    model = TaskModel(encoder, task.build_head(encoder)).eval()
    with torch.no_grad():
        model.head.fc.weight.mul_(200.0)  # spread the scores so the two halves of the loss differ
    out = task.model_step(model, batch)
    with torch.no_grad():
        t, i = torch.meshgrid(torch.arange(3), torch.arange(3), indexing="ij")
        p = torch.sigmoid(match_score(model(select_pairs(batch, t.flatten(), i.flatten()))).view(3, 3)).tolist()
    others = [[j for j in range(3) if j != r] for r in range(3)]
    loss_i = sum(_hand_circle(p[r][r], [p[r][j] for j in others[r]]) for r in range(3)) / 3  # caption x images
    loss_c = sum(_hand_circle(p[r][r], [p[j][r] for j in others[r]]) for r in range(3)) / 3  # image x captions
    assert abs(loss_c - loss_i) > 5e-3  # the two halves differ, so leaving one out shows
    assert float(out.loss.detach()) == pytest.approx((loss_c + loss_i) / 2, rel=1e-5, abs=1e-6)
    out.loss.backward()
    assert model.head.fc.weight.grad is not None
