"""UNIMO's cross-modal contrastive learning (CMCL): an InfoNCE loss over pooled [IMG] and [CLS] vectors.

Paper (arXiv:2012.15409, eq. 1): for an image V with positive texts W+ and negative texts W-,

    L = -log( sum_{W+} exp(d(V, W+) / tau) / sum_{W+ and W-} exp(d(V, W) / tau) )

with d the cosine similarity of the image's and the text's representations, each encoded *alone* (the
[IMG] pooler of an image-only forward, the [CLS] pooler of a text-only forward). The paper does not state
the temperature tau (nor the number of negatives): ``temperature`` is a parameter, 0.07 by default
(CLIP's initial value, an assumption). Candidates per image: its own positives (the caption and its
paraphrases / retrieved texts), its hard negatives (rewrites), and every other image's texts in the
batch; in the other direction each positive text contrasts its image with the batch's other images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmbert.objectives.base import LossOutput


def cmcl_loss(
    image: Tensor,
    texts: Tensor,
    positive: Tensor,
    valid: Tensor,
    temperature: float = 0.07,
    symmetric: bool = True,
) -> LossOutput:
    """image (B, D) pooled [IMG]; texts (B, K, D) pooled [CLS] of each image's K text variants; positive
    (B, K) bool (False = a hard negative); valid (B, K) bool (False = padding).

    Image -> text: each image against all B*K valid texts, positives its own positive variants.
    Text -> image (``symmetric``): each positive text against the B images. Returns the mean of the two.
    """
    if temperature <= 0:
        raise ValueError(f"CMCL temperature must be positive, got {temperature}")
    b, k, _ = texts.shape
    if positive.shape != (b, k) or valid.shape != (b, k):
        raise ValueError(
            f"positive / valid must be ({b}, {k}), got {tuple(positive.shape)} / {tuple(valid.shape)}"
        )
    positive = positive & valid
    if not bool(positive.any(1).all()):
        raise ValueError("every image needs at least one positive text for CMCL")
    img = F.normalize(image.float(), dim=-1)
    txt = F.normalize(texts.float(), dim=-1).reshape(b * k, -1)
    logits = img @ txt.T / temperature  # (B, B*K)
    flat_valid = valid.reshape(1, b * k).expand(b, -1)
    own = torch.zeros(b, b * k, dtype=torch.bool, device=image.device)
    own.view(b, b, k)[torch.arange(b), torch.arange(b)] = positive
    masked = logits.masked_fill(~flat_valid, float("-inf"))
    i2t = -(torch.logsumexp(masked.masked_fill(~own, float("-inf")), 1) - torch.logsumexp(masked, 1)).mean()
    metrics = {"cmcl_i2t": float(i2t.detach())}
    loss = i2t
    if symmetric:
        t2i_logits = logits.T[positive.reshape(-1)]  # (P, B): each positive text against every image
        target = torch.arange(b, device=image.device).repeat_interleave(k)[positive.reshape(-1)]
        t2i = F.cross_entropy(t2i_logits, target)
        metrics["cmcl_t2i"] = float(t2i.detach())
        loss = (i2t + t2i) / 2
    with torch.no_grad():  # how often the image's best-scored text is one of its positives
        best = masked.argmax(1)
        metrics["cmcl_acc"] = float(own[torch.arange(b), best].float().mean())
    metrics["cmcl_loss"] = float(loss.detach())
    return LossOutput(loss, metrics)
