"""torchvision's COCO Faster R-CNNs (``fasterrcnn_resnet50_fpn`` v1 and v2) with the 1024-d box-head
feature of every kept region, and grid features (a ResNet-50's C5 map, each cell a region).

The regions are chosen with mmbert's region rules (``detections.select_reference`` / ``select_bottomup``)
rather than torchvision's per-class post-processing, so that every kept box is one region with one
feature and one class distribution (torchvision's own output may list a region once per class).
Batches are formed from images of equal size only: torchvision pads a batch to its largest image, which
would change the smaller images' features.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torchvision
from torch import Tensor, nn
from torch.nn import functional as F

from mmbert.vision.butd import group_by_size, resized_size
from mmbert.vision.detections import Detections, select_bottomup, select_reference
from mmbert.vision.weights import load_into, load_state_dict_file

MIN_BOX_SIDE = 1e-2  # torchvision's remove_small_boxes threshold in its post-processing
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _default_weights_error(what: str, e: Exception) -> ValueError:
    return ValueError(
        f"torchvision's default weights for {what} could not be loaded ({type(e).__name__}: {e}); "
        "this machine may not reach the download server: pass --weights FILE (a local state dict) "
        "or --weights random"
    )


class TorchvisionRCNN(nn.Module):
    """``fasterrcnn_resnet50_fpn`` (v1) or ``fasterrcnn_resnet50_fpn_v2`` returning per-region features."""

    def __init__(self, version: int = 1, weights: str | None = "random", min_size: int = 800,
                 max_size: int = 1333, min_boxes: int = 10, max_boxes: int = 100, conf: float = 0.2,
                 nms_thresholds: tuple[float, ...] = (0.5, 0.6, 0.7), proposals: int = 1000):  # fmt: skip
        super().__init__()
        from torchvision.models import detection

        if version not in (1, 2):
            raise ValueError(f"fasterrcnn version must be 1 or 2, got {version}")
        builder = detection.fasterrcnn_resnet50_fpn if version == 1 else detection.fasterrcnn_resnet50_fpn_v2
        self.name = f"fasterrcnn_v{version}"
        self.version = version
        common = dict(min_size=min_size, max_size=max_size, box_score_thresh=0.0,
                      rpn_pre_nms_top_n_test=max(1000, proposals), rpn_post_nms_top_n_test=proposals)  # fmt: skip
        if weights == "default":
            try:
                self.model = builder(weights="DEFAULT", **common)
            except Exception as e:  # download / hash errors come in many types
                raise _default_weights_error(self.name, e) from e
            enum = (detection.FasterRCNN_ResNet50_FPN_Weights if version == 1
                    else detection.FasterRCNN_ResNet50_FPN_V2_Weights)  # fmt: skip
            self.categories = list(enum.DEFAULT.meta["categories"])
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                self.model = builder(weights=None, weights_backbone=None, num_classes=91, **common)
            self.categories = []
            if weights not in (None, "random"):
                load_into(self.model, load_state_dict_file(weights), weights, f"torchvision {self.name}")
                if version == 1:  # the published v1 weights come with eps-0 frozen BatchNorm
                    for m in self.model.modules():
                        if isinstance(m, (nn.BatchNorm2d, torchvision.ops.FrozenBatchNorm2d)):
                            m.eps = 0.0
        self.min_size, self.max_size = min_size, max_size
        self.min_boxes, self.max_boxes, self.conf = min_boxes, max_boxes, conf
        self.nms_thresholds = tuple(nms_thresholds)
        self.proposals = proposals
        self.eval()

    @property
    def feature_dim(self) -> int:
        return int(self.model.roi_heads.box_predictor.cls_score.in_features)

    def settings(self) -> dict:
        return {"min_size": self.min_size, "max_size": self.max_size, "min_boxes": self.min_boxes,
                "max_boxes": self.max_boxes, "conf": self.conf, "nms_thresholds": list(self.nms_thresholds),
                "proposals": self.proposals, "min_box_side": MIN_BOX_SIDE,
                "num_classes": int(self.model.roi_heads.box_predictor.cls_score.out_features)}  # fmt: skip

    @torch.no_grad()
    def detect(self, images: Sequence[np.ndarray], selection: str = "reference") -> list[Detections]:
        m = self.model
        device = next(m.parameters()).device
        results: list[Detections | None] = [None] * len(images)
        for group in group_by_size([im.shape[:2] for im in images]):
            tensors = [torch.from_numpy(np.array(images[i], dtype=np.uint8)).to(device).permute(2, 0, 1).float()
                       / 255.0 for i in group]  # fmt: skip
            image_list, _ = m.transform(tensors)
            feats = m.backbone(image_list.tensors)
            proposals, _ = m.rpn(image_list, feats)
            box_feats = m.roi_heads.box_head(m.roi_heads.box_roi_pool(feats, proposals, image_list.image_sizes))
            logits, regression = m.roi_heads.box_predictor(box_feats)
            boxes_all = m.roi_heads.box_coder.decode(regression, proposals)  # (sum P, classes, 4)
            counts = [len(p) for p in proposals]
            for j, (i, feats_i, logits_i, boxes_i) in enumerate(
                zip(group, box_feats.split(counts), logits.split(counts), boxes_all.split(counts))
            ):
                size = tuple(image_list.image_sizes[j])
                probs = F.softmax(logits_i, -1)  # background = column 0
                obj_probs, obj = probs[:, 1:].max(1)
                boxes = torchvision.ops.clip_boxes_to_image(boxes_i[torch.arange(len(obj)), obj + 1], size)
                # as torchvision's own post-processing: regions whose box is (nearly) empty are dropped
                valid = torchvision.ops.remove_small_boxes(boxes, MIN_BOX_SIDE)
                feats_i, probs, obj_probs, obj, boxes = (feats_i[valid], probs[valid], obj_probs[valid], obj[valid],
                                                         boxes[valid])  # fmt: skip
                if selection == "reference":
                    keep = select_reference(boxes, obj_probs, self.nms_thresholds, self.min_boxes, self.max_boxes)
                elif selection == "bottomup":
                    boxes = proposals[j][valid]
                    keep = select_bottomup(boxes, probs[:, 1:], self.conf, self.min_boxes, self.max_boxes)
                else:
                    raise ValueError(f"selection must be 'reference' or 'bottomup', got {selection!r}")
                h0, w0 = images[i].shape[:2]
                scale = torch.tensor([w0 / size[1], h0 / size[0]] * 2, device=boxes.device, dtype=boxes.dtype)
                results[i] = Detections(boxes=boxes[keep] * scale, features=feats_i[keep], obj_ids=obj[keep],
                                        obj_probs=obj_probs[keep], cls_prob=probs[keep], resized_size=size)  # fmt: skip
        return results  # type: ignore[return-value]


class GridFeatures(nn.Module):
    """A ResNet-50's last feature map (stride 32) as regions: each cell's 2048-d feature and its box."""

    name = "grid"

    def __init__(self, weights: str | None = "random", min_size: int = 600, max_size: int = 1000):
        super().__init__()
        from torchvision.models import ResNet50_Weights, resnet50

        if weights == "default":
            try:
                net = resnet50(weights=ResNet50_Weights.DEFAULT)
            except Exception as e:
                raise _default_weights_error("resnet50", e) from e
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                net = resnet50(weights=None)
            if weights not in (None, "random"):
                load_into(net, load_state_dict_file(weights), weights, "torchvision resnet50")
        self.body = nn.Sequential(*list(net.children())[:-2])
        self.min_size, self.max_size = min_size, max_size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(3, 1, 1), persistent=False)
        self.eval()

    feature_dim = 2048

    def settings(self) -> dict:
        return {"min_size": self.min_size, "max_size": self.max_size, "stride": 32, "backbone": "resnet50"}

    @torch.no_grad()
    def detect(self, images: Sequence[np.ndarray], selection: str = "reference") -> list[Detections]:
        results: list[Detections | None] = [None] * len(images)
        for group in group_by_size([im.shape[:2] for im in images]):
            h0, w0 = images[group[0]].shape[:2]
            size = resized_size(h0, w0, self.min_size, self.max_size)
            x = torch.stack([torch.from_numpy(np.array(images[i], dtype=np.uint8)).permute(2, 0, 1)
                             for i in group]).to(self.mean.device).float() / 255.0  # fmt: skip
            x = F.interpolate(x, size, mode="bilinear", align_corners=False)
            fmap = self.body((x - self.mean) / self.std)  # (N, 2048, gh, gw)
            gh, gw = fmap.shape[-2:]
            boxes = cell_boxes(gh, gw, h0, w0).to(fmap.device)
            for j, i in enumerate(group):
                results[i] = Detections(boxes=boxes, features=fmap[j].flatten(1).T, resized_size=size)
        return results  # type: ignore[return-value]


def cell_boxes(gh: int, gw: int, h: int, w: int) -> Tensor:
    """(gh * gw, 4) boxes of a grid laid over an h x w image, row by row."""
    ys = torch.linspace(0, h, gh + 1)
    xs = torch.linspace(0, w, gw + 1)
    y1, x1 = torch.meshgrid(ys[:-1], xs[:-1], indexing="ij")
    y2, x2 = torch.meshgrid(ys[1:], xs[1:], indexing="ij")
    return torch.stack([x1.flatten(), y1.flatten(), x2.flatten(), y2.flatten()], dim=1)
