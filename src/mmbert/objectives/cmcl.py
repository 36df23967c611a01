"""UNIMO's cross-modal contrastive learning (CMCL): an InfoNCE loss over pooled [IMG] and [CLS] vectors with
several positives.

Paper (arXiv:2012.15409, section 2.2, as we read it): for an image-text pair (V, W), a positive set X+
(the paper's X^{+,I,T}) of image-text pairs — the pair itself, (V, W+) for the rewritten positive texts
W+, and the related texts and images retrieved from the text-only and image-only corpora, each paired
with the pair's other side: (V, W_T) and (V_I, W) — and a negative set X- (the hard-negative rewrites
(V, W-)); the loss is

    L = E_{(V, W)} [ -log( sum_{(V', W') in X+} exp(d(V', W') / tau)
                          / sum_{(V', W') in X+ and X-} exp(d(V', W') / tau) ) ]

with d the similarity of the image's and the text's representations, each encoded *alone* (the [IMG]
pooler of an image-only forward, the [CLS] pooler of a text-only forward). The paper does not state the
temperature tau, the number of negatives, or how the sum splits into directions: ``temperature`` is a
parameter, 0.07 by default (CLIP's initial value, an assumption); d is the cosine here.

mmbert's form. d = cosine, s(v, t) = cos(v, t) / tau. The images are the B pair images and the M images
retrieved from the image-only pool (``retrieved``); the texts are the B x K text variants (each pair's
positives, then its hard negatives). A pair (v, t) is positive when t is a positive text of pair i and v
is a positive image of pair i (``image_positive[v, i]``: its own image, another pair's copy of the same
image, or an image retrieved for it). Then

    i2t(i) = -log( sum_{t : (v_i, t) positive} exp s(v_i, t) / sum_{t valid} exp s(v_i, t) )     i < B
    t2i(t) = -log( sum_{v : (v, t) positive} exp s(v, t) / sum_{v in B + M} exp s(v, t) )        t positive
    L = (mean_i i2t(i) + mean_t t2i(t)) / 2           (``symmetric=False``: mean_i i2t(i))

so every text candidate of the batch (other pairs' texts and all hard negatives) is a negative for an
image, and every image (pair images and retrieved ones) a negative for a text, unless the pair is positive.
A retrieved image thus enters X+ with the pair's positive texts (the paper pairs it with the caption W;
mmbert also with W's paraphrases and retrieved texts, which describe the same image, so that one image is
never a positive for one description of V and a negative for another). Without retrieved images and with
one pair per image this is the plain one-positive-image InfoNCE in the text-to-image direction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmbert.objectives.base import LossOutput


def multi_positive_nce(logits: Tensor, positive: Tensor, candidate: Tensor) -> Tensor:
    """Per row: -log(sum over ``positive`` of exp(logits) / sum over ``candidate`` of exp(logits)).
    ``positive`` must lie within ``candidate`` and hold at least one entry per row."""
    neg_inf = float("-inf")
    masked = logits.masked_fill(~candidate, neg_inf)
    return torch.logsumexp(masked, 1) - torch.logsumexp(masked.masked_fill(~positive, neg_inf), 1)


def cmcl_loss(
    image: Tensor,
    texts: Tensor,
    positive: Tensor,
    valid: Tensor,
    temperature: float = 0.07,
    symmetric: bool = True,
    retrieved: Tensor | None = None,
    image_positive: Tensor | None = None,
) -> LossOutput:
    """image (B, D) pooled [IMG] of the pair images; texts (B, K, D) pooled [CLS] of each pair's K text
    variants; positive (B, K) bool (False = a hard negative); valid (B, K) bool (False = padding);
    retrieved (M, D) pooled [IMG] of images retrieved from the image-only pool, or None; image_positive
    (B + M, B) bool, which images are positives of pair i (the module docstring; a pair's own image is
    always one), or None for the own image only."""
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
    m = 0 if retrieved is None else int(retrieved.shape[0])
    own = torch.eye(b, dtype=torch.bool, device=image.device)
    if image_positive is None:
        if m:
            raise ValueError("retrieved images need image_positive (which pairs each one is a positive of)")
        image_positive = own
    elif image_positive.shape != (b + m, b):
        raise ValueError(f"image_positive must be ({b + m}, {b}) (pair images, then retrieved ones, by pair), "
                         f"got {tuple(image_positive.shape)}")  # fmt: skip
    else:
        image_positive = image_positive.clone()
        image_positive[:b] |= own
    images = image if retrieved is None else torch.cat([image, retrieved], 0)
    img = F.normalize(images.float(), dim=-1)
    txt = F.normalize(texts.float(), dim=-1).reshape(b * k, -1)
    logits = img @ txt.T / temperature  # (B + M, B*K)
    pair_of_text = torch.arange(b, device=image.device).repeat_interleave(k)
    pos_pairs = image_positive[:, pair_of_text] & positive.reshape(1, b * k)  # (B + M, B*K)
    flat_valid = valid.reshape(1, b * k).expand(b, -1)
    i2t = multi_positive_nce(logits[:b], pos_pairs[:b], flat_valid).mean()
    metrics = {"cmcl_i2t": float(i2t.detach())}
    loss = i2t
    if symmetric:
        anchors = positive.reshape(-1)
        t2i_pos = pos_pairs.T[anchors]  # (P, B + M)
        t2i = multi_positive_nce(logits.T[anchors], t2i_pos, torch.ones_like(t2i_pos)).mean()
        metrics["cmcl_t2i"] = float(t2i.detach())
        loss = (i2t + t2i) / 2
    with torch.no_grad():  # how often the image's best-scored text is one of its positives
        best = logits[:b].masked_fill(~flat_valid, float("-inf")).argmax(1)
        metrics["cmcl_acc"] = float(pos_pairs[torch.arange(b), best].float().mean())
    if m:
        metrics["cmcl_retrieved_images"] = float(m)
    metrics["cmcl_loss"] = float(loss.detach())
    return LossOutput(loss, metrics)
