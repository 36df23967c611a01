"""UNIMO's fine-tuning heads and its retrieval loss, as the official scripts define them
(PaddlePaddle/Research ``NLP/UNIMO/src/finetune/{retrieval,visual_entailment}.py``).

- Retrieval (cross-encoder, trained by ``RetrievalTask.model_step``): ``match_fc(dropout(h_text * h_image))``, per pair,
  sigmoid in training (``use_sigmoid``); trained with the circle loss (margin 0.2, scale 1.0) of the
  positive (candidate 0) against the image negatives (candidates 1 .. (S+1)/2 - 1) and the caption
  negatives (the rest), the two losses averaged.
- Visual entailment (3-way): ``fc_2(dropout(fc_1(h_text + h_image)))`` with ``fc_1`` 2048 wide and no
  activation between, as ``visual_entailment.py``; its adversarial training is
  ``mmbert.tasks.unimo_adversarial`` (``snli-ve`` option ``adversarial``).
- VQA: UNIMO released no VQA fine-tuning. Its README lists VQA with no script ("TODOs: Add VQA tasks"),
  and the UNIMO-2 folder's VQA section is "todo"; no VQA finetune, reader or script exists in either. The
  VQA head is therefore mmbert's choice, not the authors'. It is the shared VQA head (``tasks.vqa.VQAHead``,
  VOLTA's nonlinear classifier on the pooled [CLS]), as for GQA. The entailment head above was used for
  VQA before. It has no nonlinearity (``fc_2(fc_1(.))`` is one linear map) and it lagged: on the synthetic
  world, VQA from a random encoder scored 38.5 +- 3.2, against 46.0 +- 1.1 for the shared head.

``h_text`` / ``h_image`` are ``Encoded.pooled`` / ``Encoded.pooled_vision`` of the joint (image, text)
forward: the ReLU poolers on [CLS] and [IMG].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmbert.models.outputs import Encoded


def _pooled_pair(enc: Encoded) -> tuple[Tensor, Tensor]:
    if enc.pooled_vision is None or enc.text is None:
        raise ValueError("UNIMO's fine-tuning heads need an image-text forward (pooled [CLS] and [IMG])")
    return enc.pooled, enc.pooled_vision


class UnimoMatchHead(nn.Module):
    """``match_fc`` over the product of the pooled text and image (``fusion_method`` "mul")."""

    def __init__(self, dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, 1)
        self.dropout = dropout

    circle_loss = True  # the retrieval task trains it with UNIMO's circle loss

    def forward(self, enc: Encoded, batch=None) -> Tensor:
        """(B, 2) as every match head: [0, score], so ``match_score`` (index 1 - index 0) is the score."""
        text, image = _pooled_pair(enc)
        score = self.fc(F.dropout(text * image, self.dropout, self.training))
        return torch.cat([torch.zeros_like(score), score], -1)


class UnimoClassifierHead(nn.Module):
    """``fc_2(dropout(fc_1(h_text + h_image)))``: SNLI-VE's 3 classes (official)."""

    def __init__(self, dim: int, num_labels: int, hidden: int = 2048, dropout: float = 0.1) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, num_labels)
        self.dropout = dropout

    def forward(self, enc: Encoded, batch=None) -> Tensor:
        text, image = _pooled_pair(enc)
        return self.fc2(F.dropout(self.fc1(text + image), self.dropout, self.training))


def circle_loss(positive: Tensor, negative: Tensor, margin: float = 0.2, scale: float = 1.0) -> Tensor:
    """Circle loss (Sun et al. 2020) as ``retrieval.py`` writes it: positive (B, L), negative (B, K) scores;
    ``log(1 + sum exp(scale an (sn - m)) * sum exp(-scale ap (sp - 1 + m)))`` with the weights
    ``ap = relu(1 + m - sp)``, ``an = relu(sn + m)`` held constant; mean over the batch (in float64)."""
    ap = F.relu(1.0 + margin - positive).detach()
    an = F.relu(negative + margin).detach()
    logit_p = -scale * ap * (positive - (1.0 - margin))
    logit_n = scale * an * (negative - margin)
    loss_p = torch.exp(logit_p.double()).sum(1)
    loss_n = torch.exp(logit_n.double()).sum(1)
    return torch.log1p(loss_n * loss_p).float().mean()


def unimo_retrieval_loss(scores: Tensor, margin: float = 0.2, scale: float = 1.0, sigmoid: bool = True) -> Tensor:
    """scores (B, S): candidate 0 the positive, 1 .. (S+1)//2 - 1 image negatives, the rest caption
    negatives (``retrieval.py``'s layout, S = 20 there); the two circle losses averaged."""
    if scores.dim() != 2 or scores.shape[1] < 3:
        raise ValueError(f"retrieval scores must be (batch, >= 3 candidates), got {tuple(scores.shape)}")
    if sigmoid:
        scores = torch.sigmoid(scores)
    split = (scores.shape[1] + 1) // 2
    positive = scores[:, :1]
    loss_i = circle_loss(positive, scores[:, 1:split], margin, scale)
    loss_c = circle_loss(positive, scores[:, split:], margin, scale)
    return (loss_c + loss_i) / 2
