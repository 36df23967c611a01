"""UNITER's word-region alignment (WRA): an optimal-transport distance between the text and the region
states, pulled down for matching pairs and pushed up for mismatched ones, added to the ITM loss.

As ChenRocks/UNITER model/ot.py (``optimal_transport_dist``: cosine cost, IPOT with beta 0.5, 50
iterations, k = 1, the plan computed without gradient) and model/pretrain.py / pretrain.py (``ot_loss =
(sum over matching pairs - sum over mismatched) / number of pairs``, weighted by ``itm_ot_lambda`` 0.1
in the pre-training configs). Text states are every real token ([CLS] and [SEP] included), region
states every real region.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmbert.objectives.base import LossOutput, Objective, ScoringInputs
from mmbert.objectives.pair import PairMatch

ITM_OT_LAMBDA = 0.1  # config/pretrain-*.json itm_ot_lambda


def cosine_cost(x: Tensor, y: Tensor, eps: float = 1e-5) -> Tensor:
    """1 - cosine similarity: (B, M, D), (B, N, D) -> (B, M, N)."""
    return 1 - F.normalize(x, p=2, dim=-1, eps=eps) @ F.normalize(y, p=2, dim=-1, eps=eps).transpose(1, 2)


@torch.no_grad()
def ipot_plan(cost: Tensor, x_real: Tensor, y_real: Tensor, beta: float = 0.5, iterations: int = 50,
              k: int = 1) -> Tensor:  # fmt: skip
    """The inexact proximal-point transport plan (B, N, M) (y by x, as UNITER's ``ipot``) for a cost
    (B, M, N) between the real positions of x (B, M) and y (B, N); zero at padding."""
    b, m, n = cost.shape
    x_len = x_real.sum(1).to(cost.dtype)
    y_len = y_real.sum(1).to(cost.dtype)
    joint_pad = (~x_real[:, :, None] | ~y_real[:, None, :]).transpose(1, 2)  # (B, N, M)
    sigma = (torch.ones(b, m, dtype=cost.dtype, device=cost.device) / x_len[:, None]).masked_fill(~x_real, 0)
    plan = torch.ones(b, n, m, dtype=cost.dtype, device=cost.device).masked_fill(joint_pad, 0)
    kernel = torch.exp(-cost.transpose(1, 2) / beta).masked_fill(joint_pad, 0)
    x_len, y_len = x_len[:, None, None], y_len[:, None, None]
    x_mask = ((~x_real).to(cost.dtype) * 1e4)[:, None]  # keeps 1 / (...) finite at padding
    y_mask = ((~y_real).to(cost.dtype) * 1e4)[:, None]
    delta = None
    for _ in range(iterations):
        q = kernel * plan  # (B, N, M)
        sigma = sigma.view(b, m, 1)
        for _ in range(k):
            delta = 1 / (y_len * (q @ sigma).view(b, 1, n) + y_mask)
            sigma = 1 / (x_len * (delta @ q) + x_mask)
        plan = delta.view(b, n, 1) * q * sigma
    return plan.masked_fill(joint_pad, 0)


def optimal_transport_distance(x: Tensor, y: Tensor, x_real: Tensor, y_real: Tensor, beta: float = 0.5,
                               iterations: int = 50, k: int = 1) -> Tensor:  # fmt: skip
    """Per-pair OT distance (B,) between x (B, M, D) and y (B, N, D) over their real positions, in fp32."""
    x, y = x.float(), y.float()
    cost = cosine_cost(x, y)
    joint_pad = ~x_real[:, :, None] | ~y_real[:, None, :]
    cost = cost.masked_fill(joint_pad, 0)
    plan = ipot_plan(cost.detach(), x_real, y_real, beta, iterations, k)
    return torch.diagonal(cost @ plan, dim1=1, dim2=2).sum(-1)


class MatchWithAlignment(Objective):
    """UNITER's ITM task: the 2-way CE on ``pair_logits`` plus ``ot_lambda`` x the WRA loss on the encoded
    states. Metrics: ``itm_loss`` (the CE), ``itm_ot_loss`` (WRA) and ``itm_wra_loss`` (their sum)."""

    output = "pair_logits"  # and the encoded states, from ``inputs.outputs``
    batch_fields = ("pair_labels", "text_mask", "region_feats", "region_mask")

    def check_model(self, config) -> None:
        """Refuse models it cannot run on: text-only ones, and two streams of different widths."""
        if not getattr(config, "region_feat_dim", None):
            raise ValueError(f"objective {self.name!r} aligns words with regions; {config.model_type} is text-only")
        width = getattr(config, "vision_dim", config.dim)
        if width != config.dim:
            raise ValueError(f"objective {self.name!r} compares text and region states: {config.model_type}'s "
                             f"streams are {config.dim} and {width} wide")  # fmt: skip

    def __init__(self, name: str = "itm_wra", ot_lambda: float = ITM_OT_LAMBDA) -> None:
        super().__init__()
        self.name, self.ot_lambda = name, ot_lambda
        self.match = PairMatch("itm")

    def score(self, pred: Tensor, inputs: ScoringInputs) -> LossOutput:
        labels = inputs.need("pair_labels", self.name)
        ce = self.match(pred, labels)
        if inputs.outputs is None:
            raise ValueError(f"{self.name} needs the encoded states (ScoringInputs.outputs)")
        encoded = inputs.outputs.encoded
        batch = inputs.batch
        text_real = batch.text_mask
        regions = inputs.align(encoded.vision, batch.region_feats.shape[1])
        region_real = batch.region_mask if batch.region_mask is not None else torch.ones(
            regions.shape[:2], dtype=torch.bool, device=regions.device)  # fmt: skip
        distance = optimal_transport_distance(encoded.text, regions, text_real, region_real)
        valid = labels != -100
        sign = torch.where(labels == 1, 1.0, -1.0).to(distance.dtype)
        ot = (distance * sign)[valid].sum() / max(int(valid.sum()), 1)
        loss = ce.loss + self.ot_lambda * ot
        metrics = {**ce.metrics, "itm_ot_loss": float(ot.detach()), f"{self.name}_loss": float(loss.detach())}
        return LossOutput(loss, metrics)
