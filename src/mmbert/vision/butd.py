"""The bottom-up-attention detector (Anderson et al., "Bottom-Up and Top-Down Attention for Image
Captioning and VQA", arXiv:1707.07998) as the Hugging Face LXMERT demo runs it: Faster R-CNN with a
ResNet-101 C4 backbone trained on Visual Genome (1600 objects + background, 400 attributes).

    image -> resize (short side 800, long side <= 1333) -> minus pixel mean
          -> stem + res2..res4 (stride 16) -> RPN (12 anchors; top 6000, NMS 0.7, keep 300)
          -> RoI max-pool 14x14 -> res5 (stride 1, dilation 2) -> mean over 14x14 = region feature
          -> 1601 class logits, 1600 class-specific boxes, attribute head (class embedding + feature)
          -> per region its best class and box -> one class-agnostic NMS (IoU 0.5, 0.6, 0.7 until the
             count fits [min_boxes, max_boxes]) -> boxes back in original-image pixels

Facts (layer sizes, key names, the decoding and selection rules) follow huggingface/transformers-research-projects
``lxmert/modeling_frcnn.py`` and ``lxmert/processing_image.py``; the module names equal the reference's
so that its ``pytorch_model.bin`` (``unc-nlp/frcnn-vg-finetuned``) loads one to one.

Deviations from the reference, each an option:
- channel order: the reference feeds a *file path* in RGB order although its pixel mean is BGR-ordered
  (URLs and tensors reach it in BGR). mmbert decodes every image the same way and feeds the order
  ``channel_order`` names: ``"bgr"`` (default; what the weights were trained with) or ``"rgb"`` (the
  reference's file-path behaviour).
- batching: the reference pads a batch to its largest image, which changes the smaller images' results,
  and divides normalised boxes by another image's size. mmbert runs the backbone on groups of equally
  sized images only and the RoI head image by image, so every image gets its single-image result.
- when no NMS threshold gives ``min_boxes`` boxes, the reference crashes (first image) or reuses the
  previous image's boxes; mmbert keeps what the last threshold kept (fewer than ``min_boxes``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.ops import nms, roi_pool

from mmbert.vision.detections import Detections, decode_boxes, select_bottomup, select_reference

BLOCKS_PER_STAGE = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


@dataclass
class ButdConfig:
    """The detector's settings; defaults are those of the published VG model (``unc-nlp/frcnn-vg-finetuned``)."""

    depth: int = 101
    stem_channels: int = 64
    res2_channels: int = 256
    width_per_group: int = 64
    num_groups: int = 1
    stride_in_1x1: bool = True
    caffe_maxpool: bool = True  # 3x3/2 max pool without padding, ceil mode (Caffe's)
    rpn_hidden: int = 512
    anchor_sizes: tuple[float, ...] = (64, 128, 256, 512)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_pre_nms_topk: int = 6000
    rpn_post_nms_topk: int = 300
    rpn_nms: float = 0.7
    rpn_min_size: float = 0.0
    rpn_box_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    num_classes: int = 1600
    num_attrs: int = 400
    pooler_resolution: int = 14
    res5_halve: bool = False  # False: res5 keeps stride 1 and uses dilation 2 (the VG model)
    box_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    nms_thresholds: tuple[float, ...] = (0.5, 0.6, 0.7)
    score_thresh: float = 0.2  # read by the reference but never applied; used by selection="bottomup"
    min_boxes: int = 36
    max_boxes: int = 36
    min_size: int = 800  # resize: short side; 600 / 1000 is the original Caffe test scale
    max_size: int = 1333
    pixel_mean: tuple[float, float, float] = (102.9801, 115.9465, 122.7717)  # BGR order
    pixel_std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    channel_order: str = "bgr"
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def res5_channels(self) -> int:
        return self.res2_channels * 8

    @classmethod
    def from_reference_yaml(cls, path: str | Path, **overrides) -> ButdConfig:
        """Read the reference's ``config.yaml`` (lower-case sections: model, input, resnets, rpn, ...)."""
        import yaml

        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise ValueError(f"{path}: cannot read the detector config: {e}") from e
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: a detector config is a mapping of sections, got {type(raw).__name__}")

        def get(section: str, key: str, default=None):
            sec = raw.get(section)
            value = sec.get(key, default) if isinstance(sec, dict) else default
            return default if value is None else value

        d = cls()
        found = dict(
            depth=int(get("resnets", "depth", d.depth)),
            stem_channels=int(get("resnets", "stem_out_channels", d.stem_channels)),
            res2_channels=int(get("resnets", "res2_out_channels", d.res2_channels)),
            width_per_group=int(get("resnets", "width_per_group", d.width_per_group)),
            num_groups=int(get("resnets", "num_groups", d.num_groups)),
            stride_in_1x1=bool(get("resnets", "stride_in_1x1", d.stride_in_1x1)),
            caffe_maxpool=bool(get("model", "max_pool", d.caffe_maxpool)),
            rpn_hidden=int(get("proposal_generator", "hidden_channels", d.rpn_hidden)),
            rpn_min_size=float(get("proposal_generator", "min_size", d.rpn_min_size)),
            anchor_sizes=tuple(float(s) for s in get("anchor_generator", "sizes", [d.anchor_sizes])[0]),
            aspect_ratios=tuple(float(a) for a in get("anchor_generator", "aspect_ratios", [d.aspect_ratios])[0]),
            rpn_pre_nms_topk=int(get("rpn", "pre_nms_topk_test", d.rpn_pre_nms_topk)),
            rpn_post_nms_topk=int(get("rpn", "post_nms_topk_test", d.rpn_post_nms_topk)),
            rpn_nms=float(get("rpn", "nms_thresh", d.rpn_nms)),
            rpn_box_weights=tuple(float(w) for w in get("rpn", "bbox_reg_weights", d.rpn_box_weights)),
            num_classes=int(get("roi_heads", "num_classes", d.num_classes)),
            score_thresh=float(get("roi_heads", "score_thresh_test", d.score_thresh)),
            nms_thresholds=tuple(
                float(t) for t in np.atleast_1d(get("roi_heads", "nms_thresh_test", list(d.nms_thresholds)))
            ),
            num_attrs=int(get("roi_box_head", "num_attrs", d.num_attrs)),
            pooler_resolution=int(get("roi_box_head", "pooler_resolution", d.pooler_resolution)),
            res5_halve=bool(get("roi_box_head", "res5halve", d.res5_halve)),
            box_weights=tuple(float(w) for w in get("roi_box_head", "bbox_reg_weights", d.box_weights)),
            min_size=int(get("input", "min_size_test", d.min_size)),
            max_size=int(get("input", "max_size_test", d.max_size)),
            pixel_mean=tuple(float(m) for m in get("model", "pixel_mean", d.pixel_mean)),
            pixel_std=tuple(float(s) for s in get("model", "pixel_std", d.pixel_std)),
            min_boxes=int(raw.get("min_detections", d.min_boxes)),
            max_boxes=int(raw.get("max_detections", d.max_boxes)),
        )
        if get("resnets", "norm", "BN") != "BN":
            raise ValueError(f"{path}: resnets.norm {get('resnets', 'norm')!r} is not supported (only BN)")
        if int(get("resnets", "res5_dilation", 1)) != 1:
            raise ValueError(f"{path}: resnets.res5_dilation must be 1 (the RoI head sets its own dilation)")
        if float(get("anchor_generator", "offset", 0.0)) != 0.0:
            raise ValueError(f"{path}: anchor_generator.offset must be 0")
        if raw.get("size_divisibility", 0) not in (0, None):
            raise ValueError(f"{path}: size_divisibility must be 0")
        found.update(overrides)
        return cls(**found)

    def settings(self) -> dict:
        """JSON-ready settings for the store metadata."""
        out = asdict(self)
        out.pop("extra")
        return out


def config_field_names() -> set[str]:
    return {f.name for f in fields(ButdConfig)} - {"extra"}


# --- the network ------------------------------------------------------------------------------------


class ConvNorm(nn.Conv2d):
    """A bias-free convolution followed by its BatchNorm (held as ``.norm``, as the reference's keys say)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1):
        super().__init__(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation, bias=False)
        self.norm = nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(super().forward(x))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 residual block; the stride sits on the first 1x1 (MSRA) or on the 3x3."""

    def __init__(self, cin: int, cout: int, width: int, stride: int, dilation: int, stride_in_1x1: bool):
        super().__init__()
        self.shortcut = ConvNorm(cin, cout, 1, stride=stride) if cin != cout else None
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = ConvNorm(cin, width, 1, stride=s1)
        self.conv2 = ConvNorm(width, width, 3, stride=s3, padding=dilation, dilation=dilation)
        self.conv3 = ConvNorm(width, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        out = self.conv3(out)
        out = out + (x if self.shortcut is None else self.shortcut(x))
        return F.relu(out)


def make_stage(n: int, cin: int, cout: int, width: int, stride: int, dilation: int, cfg: ButdConfig) -> nn.Sequential:
    blocks = [Bottleneck(cin if i == 0 else cout, cout, width, stride if i == 0 else 1, dilation,
                         cfg.stride_in_1x1) for i in range(n)]  # fmt: skip
    return nn.Sequential(*blocks)


class Stem(nn.Module):
    def __init__(self, cfg: ButdConfig):
        super().__init__()
        self.conv1 = ConvNorm(3, cfg.stem_channels, 7, stride=2, padding=3)
        self.caffe_maxpool = cfg.caffe_maxpool

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.conv1(x))
        if self.caffe_maxpool:
            return F.max_pool2d(x, kernel_size=3, stride=2, padding=0, ceil_mode=True)
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class Backbone(nn.Module):
    """ResNet stem + res2..res4: the C4 feature map at stride 16."""

    def __init__(self, cfg: ButdConfig):
        super().__init__()
        if cfg.depth not in BLOCKS_PER_STAGE:
            raise ValueError(f"ResNet depth {cfg.depth} is not one of {sorted(BLOCKS_PER_STAGE)}")
        n2, n3, n4, _ = BLOCKS_PER_STAGE[cfg.depth]
        w = cfg.num_groups * cfg.width_per_group
        c = cfg.res2_channels
        if cfg.num_groups != 1:
            raise ValueError("grouped convolutions (num_groups > 1) are not supported")
        self.stem = Stem(cfg)
        self.res2 = make_stage(n2, cfg.stem_channels, c, w, 1, 1, cfg)
        self.res3 = make_stage(n3, c, 2 * c, 2 * w, 2, 1, cfg)
        self.res4 = make_stage(n4, 2 * c, 4 * c, 4 * w, 2, 1, cfg)

    def forward(self, x: Tensor) -> Tensor:
        return self.res4(self.res3(self.res2(self.stem(x))))


class AnchorGenerator(nn.Module):
    """Cell anchors centred on (0, 0) — part of the reference's state dict — shifted over the grid."""

    def __init__(self, cfg: ButdConfig, stride: int = 16):
        super().__init__()
        cells = []
        for size in cfg.anchor_sizes:
            for ratio in cfg.aspect_ratios:
                w = math.sqrt(size**2.0 / ratio)
                h = ratio * w
                cells.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
        self.cell_anchors = nn.ParameterList([nn.Parameter(torch.tensor(cells), requires_grad=False)])
        self.stride = stride

    @property
    def num_anchors(self) -> int:
        return len(self.cell_anchors[0])

    def forward(self, height: int, width: int) -> Tensor:
        """(height * width * A, 4) anchors in (row, column, anchor) order."""
        cells = self.cell_anchors[0]
        xs = torch.arange(0, width * self.stride, step=self.stride, dtype=torch.float32, device=cells.device)
        ys = torch.arange(0, height * self.stride, step=self.stride, dtype=torch.float32, device=cells.device)
        sy, sx = torch.meshgrid(ys, xs, indexing="ij")
        sx, sy = sx.reshape(-1), sy.reshape(-1)
        shifts = torch.stack((sx, sy, sx, sy), dim=1)
        return (shifts.view(-1, 1, 4) + cells.view(1, -1, 4)).reshape(-1, 4)


class RPNHead(nn.Module):
    def __init__(self, cin: int, hidden: int, num_anchors: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, hidden, 3, padding=1)
        self.objectness_logits = nn.Conv2d(hidden, num_anchors, 1)
        self.anchor_deltas = nn.Conv2d(hidden, num_anchors * 4, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        t = F.relu(self.conv(x))
        return self.objectness_logits(t), self.anchor_deltas(t)


class RPN(nn.Module):
    def __init__(self, cfg: ButdConfig):
        super().__init__()
        self.cfg = cfg
        self.anchor_generator = AnchorGenerator(cfg)
        self.rpn_head = RPNHead(cfg.res2_channels * 4, cfg.rpn_hidden, self.anchor_generator.num_anchors)

    def forward(self, feats: Tensor, size: tuple[int, int]) -> list[tuple[Tensor, Tensor]]:
        """Proposals (P, 4) in resized-image pixels and their logits, per image of a same-size group."""
        cfg = self.cfg
        n, _, h, w = feats.shape
        logits, deltas = self.rpn_head(feats)
        a = self.anchor_generator.num_anchors
        logits = logits.permute(0, 2, 3, 1).reshape(n, -1)  # (N, H*W*A)
        deltas = deltas.view(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4)
        anchors = self.anchor_generator(h, w)
        out = []
        for i in range(n):
            boxes = decode_boxes(deltas[i], anchors, cfg.rpn_box_weights)
            k = min(cfg.rpn_pre_nms_topk, logits.shape[1])
            scores, order = logits[i].sort(descending=True)
            scores, boxes = scores[:k], boxes[order[:k]]
            boxes = clip_boxes(boxes, size)
            keep = ((boxes[:, 2] - boxes[:, 0]) > cfg.rpn_min_size) & ((boxes[:, 3] - boxes[:, 1]) > cfg.rpn_min_size)
            if not bool(keep.all()):
                boxes, scores = boxes[keep], scores[keep]
            keep = nms(boxes, scores, cfg.rpn_nms)[: cfg.rpn_post_nms_topk]
            boxes, scores = boxes[keep], scores[keep]
            scores, order = scores.sort(descending=True)
            out.append((boxes[order], scores))
        return out


class BoxPredictor(nn.Module):
    """Class logits, class-specific box deltas, and the attribute head (which reads the argmax class)."""

    def __init__(self, dim: int, num_classes: int, num_attrs: int):
        super().__init__()
        self.cls_score = nn.Linear(dim, num_classes + 1)
        self.bbox_pred = nn.Linear(dim, num_classes * 4)
        self.cls_embedding = nn.Embedding(num_classes + 1, dim // 8)
        self.fc_attr = nn.Linear(dim + dim // 8, dim // 4)
        self.attr_score = nn.Linear(dim // 4, num_attrs + 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        scores = self.cls_score(x)
        deltas = self.bbox_pred(x)
        emb = self.cls_embedding(scores.argmax(-1))  # background included, as the reference
        attr = self.attr_score(F.relu(self.fc_attr(torch.cat([x, emb], -1))))
        return scores, attr, deltas


class RoIHeads(nn.Module):
    def __init__(self, cfg: ButdConfig):
        super().__init__()
        c = cfg.res2_channels
        w = cfg.num_groups * cfg.width_per_group * 8
        stride, dilation = (2, 1) if cfg.res5_halve else (1, 2)
        self.res5 = make_stage(3, 4 * c, 8 * c, w, stride, dilation, cfg)
        self.box_predictor = BoxPredictor(8 * c, cfg.num_classes, cfg.num_attrs)
        self.resolution = cfg.pooler_resolution

    def pooled_features(self, feats: Tensor, boxes: Tensor) -> Tensor:
        """RoI max-pool (quantised, not RoIAlign) on the stride-16 map, res5, mean over the window."""
        x = roi_pool(feats, [boxes], output_size=self.resolution, spatial_scale=1.0 / 16)
        return self.res5(x).mean(dim=(2, 3))


class ButdDetector(nn.Module):
    """The detector. ``detect(images)`` takes decoded RGB uint8 HWC arrays and returns one
    :class:`Detections` per image; ``forward_preprocessed`` takes already preprocessed tensors."""

    name = "butd"
    feature_dim_attr = "res5_channels"

    def __init__(self, cfg: ButdConfig | None = None):
        super().__init__()
        self.cfg = cfg or ButdConfig()
        self.backbone = Backbone(self.cfg)
        self.proposal_generator = RPN(self.cfg)
        self.roi_heads = RoIHeads(self.cfg)
        self.register_buffer("pixel_mean", torch.tensor(self.cfg.pixel_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(self.cfg.pixel_std).view(3, 1, 1), persistent=False)

    @property
    def feature_dim(self) -> int:
        return self.cfg.res5_channels

    # preprocessing ---------------------------------------------------------------------------------
    def preprocess(self, image: np.ndarray) -> tuple[Tensor, tuple[int, int], Tensor]:
        """RGB uint8 (H, W, 3) -> normalised (3, h, w) float tensor, resized (h, w), scales_yx (2,) =
        original / resized. Bilinear without antialiasing on the float image, as the reference."""
        if self.cfg.channel_order == "bgr":
            image = image[:, :, ::-1]
        elif self.cfg.channel_order != "rgb":
            raise ValueError(f"channel_order must be 'bgr' or 'rgb', got {self.cfg.channel_order!r}")
        x = torch.from_numpy(np.array(image, dtype=np.uint8, order="C")).to(self.pixel_mean.device).float()
        return self.preprocess_tensor(x)

    def preprocess_tensor(self, x: Tensor) -> tuple[Tensor, tuple[int, int], Tensor]:
        """Float (H, W, 3) in network channel order -> as :meth:`preprocess`."""
        h, w = int(x.shape[0]), int(x.shape[1])
        newh, neww = resized_size(h, w, self.cfg.min_size, self.cfg.max_size)
        x = F.interpolate(x.permute(2, 0, 1).unsqueeze(0), (newh, neww), mode="bilinear", align_corners=False)
        x = (x.squeeze(0) - self.pixel_mean) / self.pixel_std
        scales = torch.tensor([h, w]) / torch.tensor([newh, neww])
        return x, (newh, neww), scales

    # detection -------------------------------------------------------------------------------------
    @torch.no_grad()
    def detect(self, images: Sequence[np.ndarray], selection: str = "reference") -> list[Detections]:
        prepped = [self.preprocess(im) for im in images]
        return self.forward_preprocessed(
            [p[0] for p in prepped], [p[1] for p in prepped], [p[2] for p in prepped], selection=selection
        )

    @torch.no_grad()
    def forward_preprocessed(
        self,
        images: Sequence[Tensor],
        sizes: Sequence[tuple[int, int]],
        scales_yx: Sequence[Tensor],
        selection: str = "reference",
        keep_proposals: bool = False,
    ) -> list[Detections]:
        """Detections per image. Images of equal size share one backbone pass (no padding ever enters
        the network); the RoI head runs per image, so a batch gives each image its single-image result."""
        results: list[Detections | None] = [None] * len(images)
        for group in group_by_size(sizes):
            size = tuple(sizes[group[0]])
            batch = torch.stack([images[i][..., : size[0], : size[1]] for i in group])
            feats = self.backbone(batch)
            proposals = self.proposal_generator(feats, size)
            for j, i in enumerate(group):
                boxes, logits = proposals[j]
                results[i] = self._head(feats[j : j + 1], boxes, size, scales_yx[i], selection)
                if keep_proposals:
                    results[i].proposals = (boxes, logits)
        return results  # type: ignore[return-value]

    def _head(self, feats: Tensor, proposals: Tensor, size: tuple[int, int], scales_yx: Tensor,
              selection: str) -> Detections:  # fmt: skip
        cfg = self.cfg
        pooled = self.roi_heads.pooled_features(feats, proposals)
        logits, attr_logits, deltas = self.roi_heads.box_predictor(pooled)
        probs = F.softmax(logits, dim=-1)  # (P, C+1), background last
        obj_probs, obj_ids = probs[:, :-1].max(1)
        chosen = deltas.view(len(deltas), -1, 4)[torch.arange(len(deltas)), obj_ids]
        boxes = clip_boxes(decode_boxes(chosen, proposals, cfg.box_weights), size)
        attr_probs, attr_ids = attr_logits[:, :-1].softmax(-1).max(-1)
        if selection == "reference":
            keep = select_reference(boxes, obj_probs, cfg.nms_thresholds, cfg.min_boxes, cfg.max_boxes)
        elif selection == "bottomup":  # the original Caffe rule: boxes are the proposals themselves
            keep = select_bottomup(proposals, probs[:, :-1], cfg.score_thresh, cfg.min_boxes, cfg.max_boxes)
            boxes = proposals
        else:
            raise ValueError(f"selection must be 'reference' or 'bottomup', got {selection!r}")
        out_boxes = boxes[keep].clone()
        out_boxes[:, 0::2] *= scales_yx[1]
        out_boxes[:, 1::2] *= scales_yx[0]
        cls_prob = torch.cat([probs[keep, -1:], probs[keep, :-1]], dim=1)  # background first (Caffe order)
        return Detections(
            boxes=out_boxes,
            features=pooled[keep],
            obj_ids=obj_ids[keep],
            obj_probs=obj_probs[keep],
            cls_prob=cls_prob,
            attr_ids=attr_ids[keep],
            attr_probs=attr_probs[keep],
            resized_size=size,
        )


# --- helpers ----------------------------------------------------------------------------------------


def resized_size(h: int, w: int, min_size: int, max_size: int) -> tuple[int, int]:
    """Short side -> min_size, long side capped at max_size, each rounded half up (the reference's)."""
    scale = min_size * 1.0 / min(h, w)
    newh, neww = (min_size, scale * w) if h < w else (scale * h, min_size)
    if max(newh, neww) > max_size:
        s = max_size * 1.0 / max(newh, neww)
        newh, neww = newh * s, neww * s
    return int(newh + 0.5), int(neww + 0.5)


def clip_boxes(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    h, w = size
    x = boxes[:, 0::2].clamp(min=0, max=w)
    y = boxes[:, 1::2].clamp(min=0, max=h)
    return torch.stack((x[:, 0], y[:, 0], x[:, 1], y[:, 1]), dim=1)


def group_by_size(sizes: Sequence[tuple[int, int]]) -> list[list[int]]:
    groups: dict[tuple[int, int], list[int]] = {}
    for i, s in enumerate(sizes):
        groups.setdefault((int(s[0]), int(s[1])), []).append(i)
    return list(groups.values())


def load_butd(weights: str | Path | None, config: str | Path | None = None, **overrides) -> ButdDetector:
    """The detector from a reference ``pytorch_model.bin`` (strict: every key maps one to one) and its
    ``config.yaml`` (``config``, or the one beside the weights; else the published model's defaults).
    ``weights=None`` keeps a random initialisation drawn from a fixed seed (tests, smoke runs)."""
    if config is None and weights is not None and (Path(weights).parent / "config.yaml").exists():
        config = Path(weights).parent / "config.yaml"
    unknown = set(overrides) - config_field_names()
    if unknown:
        raise ValueError(f"unknown butd settings {sorted(unknown)}")
    cfg = ButdConfig.from_reference_yaml(config, **overrides) if config else ButdConfig(**overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = ButdDetector(cfg)
    if weights is not None:
        from mmbert.vision.weights import load_into, load_state_dict_file

        state = load_state_dict_file(weights)
        # very old checkpoints name BatchNorm's affine parameters gamma / beta
        state = {k.replace(".gamma", ".weight").replace(".beta", ".bias"): v for k, v in state.items()}
        load_into(model, state, weights, "bottom-up-attention detector (this config)")
    return model.eval()
