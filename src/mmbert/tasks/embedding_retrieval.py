"""Zero-shot image-text retrieval by embedding similarity, for models that encode each modality alone.

UNIMO pools an image-only forward at [IMG] (``Encoded.pooled_vision``) and a text-only forward at [CLS]
(``Encoded.pooled``); its contrastive pre-training (CMCL) trains their cosine similarity, which is the
score here. Every caption is scored against every image of the split; recall@K as ``recall_at_k``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmbert.data.collate import collate_regions, pad_1d
from mmbert.data.datasets import CaptionDataset
from mmbert.models import EncoderModel
from mmbert.tasks.metrics import recall_at_k


@torch.no_grad()
def embedding_scores(
    model: EncoderModel, captions: CaptionDataset, batch_size: int = 64
) -> tuple[Tensor, list[int]]:
    """(num_captions, num_images) cosine scores and each caption's image index."""
    if "image" not in getattr(model, "unimodal_inputs", ()):
        raise ValueError(
            f"{type(model).__name__} cannot encode an image alone (embedding retrieval is UNIMO's)"
        )
    model.eval()
    device = next(model.parameters()).device
    image_ids = list(dict.fromkeys(c.image_id for c in captions.captions))
    where = {i: n for n, i in enumerate(image_ids)}
    images = []
    for start in range(0, len(image_ids), batch_size):
        r = collate_regions([captions.regions(i) for i in image_ids[start : start + batch_size]])
        enc = model(None, region_feats=r["region_feats"].to(device), region_boxes=r["region_boxes"].to(device),
                    region_mask=r["region_mask"].to(device))  # fmt: skip
        images.append(F.normalize(enc.pooled_vision.float(), dim=-1))
    texts = []
    for start in range(0, len(captions.captions), batch_size):
        ids = [captions.encode_text(c.caption)[0] for c in captions.captions[start : start + batch_size]]
        text_ids, mask = pad_1d(ids, captions.tokenizer.pad_id)
        enc = model(text_ids.to(device), text_mask=mask.to(device))
        texts.append(F.normalize(enc.pooled.float(), dim=-1))
    scores = torch.cat(texts) @ torch.cat(images).T
    return scores.cpu(), [where[c.image_id] for c in captions.captions]


def embedding_retrieval(
    model: EncoderModel, captions: CaptionDataset, batch_size: int = 64
) -> dict[str, float]:
    """Recall@1/5/10 both ways (percent) of zero-shot embedding retrieval over ``captions``' split."""
    scores, gt = embedding_scores(model, captions, batch_size)
    out = recall_at_k(scores, gt)
    return {k: v for k, v in out.items() if isinstance(v, float)}
