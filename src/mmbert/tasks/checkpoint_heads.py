"""The task heads that came with a checkpoint (``PretrainingModel.task_heads``, e.g. the multi-task
ViLBERT's or UNITER's VQA classifier) as these tasks' heads, for evaluation or to continue fine-tuning."""

from __future__ import annotations

from torch import nn

from mmbert.models.pretraining import PretrainingModel
from mmbert.tasks.base import probe_encoder
from mmbert.tasks.nlvr2 import NLVR2Head
from mmbert.tasks.refexp import RegionScoreHead
from mmbert.tasks.retrieval import MatchHead
from mmbert.tasks.vqa import VQAHead


def heads_from_checkpoint(model: PretrainingModel) -> dict[str, nn.Module]:
    """Task name -> head taking ``(Encoded, Batch)``: ``vqa`` / ``gqa`` / ``snli-ve`` (``VQAHead``), ``nlvr2``
    (``NLVR2Head``), ``retrieval`` (``MatchHead``), ``refexp`` (``RegionScoreHead``), holding the
    checkpoint's weights (shared, not copied)."""
    out: dict[str, nn.Module] = {}
    for name, module in model.task_heads.items():
        if name in ("vqa", "gqa"):
            head = VQAHead(module.fc1.in_features, module.fc2.out_features)
            head.classifier = module
        elif name == "snli-ve":  # SNLI-VE's head is VQAHead; ViLBERT's classifier is one Linear
            head = VQAHead(module.in_features, module.out_features)
            head.classifier = module
        elif name == "nlvr2":
            head = NLVR2Head(module.fc1.in_features // 2)
            head.classifier = module
        elif name == "retrieval":
            head = MatchHead(module.proj.in_features)
            head.pair = module
        elif name == "refexp":
            head = RegionScoreHead(module.in_features, probe_encoder(model.encoder).region_offset)
            head.score = module
        else:
            raise KeyError(
                f"no task head for checkpoint head {name!r} (known: vqa, gqa, snli-ve, nlvr2, retrieval, refexp)"
            )
        out[name] = head.train(module.training)
    return out
