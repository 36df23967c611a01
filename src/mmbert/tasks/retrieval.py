"""Image-text retrieval (Flickr30k, COCO) from the Karpathy split JSON, fine-tuned or zero-shot.

Reads ``dataset_flickr30k.json`` / ``dataset_coco.json`` (``{"images": [{filename, imgid, split,
sentences: [{raw, tokens, sentid}], cocoid?}]}``); a split is "train" (with "restval" by default),
"val" or "test"; COCO's 1k test folds via ``fold`` (0-4: images 1000*fold .. 1000*fold+999 of the 5k).

The match head is the two-way ``PairHead`` (index 1 = matches) and a pair's score is its log-odds
``logit[1] - logit[0]``, so the pre-trained image-text matching head scores zero-shot retrieval and
fine-tuning starts from it. Fine-tuning: for every caption of a batch, its image against ``negatives``
other images of the batch (random in-batch negatives, or the hardest ones under the current model),
cross-entropy over the group (VOLTA's retrieval loss, there with 3 negatives).

Evaluation scores every caption against every image of the pool (N x M pairs) in batches with a
progress bar. Dual-stream encoders (ViLBERT, LXMERT) run their own single-modality stages
(``encode_text`` / ``encode_vision``) once per caption and once per image and only ``fuse`` per pair.
Metrics: text->image and image->text R@1/5/10 (``metrics.recall_at_k``, pessimistic ties).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmbert.data.batch import Batch, RegionFeatures
from mmbert.data.boxes import normalise_boxes
from mmbert.models.base import Encoded, EncoderModel
from mmbert.models.dual_stream import DualStreamModel, StreamStates
from mmbert.nn.heads import PairHead
from mmbert.objectives.base import LossOutput
from mmbert.tasks.base import EvalRun, Task, TaskOptions
from mmbert.tasks.features import check_images, open_features, region_lookup
from mmbert.tasks.files import read_json, require_fields, write_json
from mmbert.tasks.metrics import recall_at_k
from mmbert.tasks.model import TaskModel, probe_encoder
from mmbert.tasks.records import Example, LoadReport, TaskDataError, TaskDataset, View, encode_text


class MatchHead(nn.Module):
    """Pooled -> (B, 2) match logits, index 1 = matches (the pre-training pair head's layout)."""

    def __init__(self, pooled_dim: int) -> None:
        super().__init__()
        self.pair = PairHead(pooled_dim)

    def forward(self, enc: Encoded, batch: Batch | None = None) -> Tensor:
        return self.pair(enc.pooled)


def match_score(logits: Tensor) -> Tensor:
    """(..., 2) match logits -> the log-odds that the pair matches."""
    return logits[..., 1] - logits[..., 0]


def select_pairs(batch: Batch, text_index: Tensor, image_index: Tensor) -> Batch:
    """A batch of (text of row text_index[k], image of row image_index[k]) pairs."""
    out = Batch(
        text_ids=batch.text_ids[text_index],
        text_mask=batch.text_mask[text_index],
        segment_ids=batch.segment_ids[text_index],
    )
    if batch.region_feats is not None:
        out.region_feats = batch.region_feats[image_index]
        out.region_boxes = batch.region_boxes[image_index]
        out.region_mask = batch.region_mask[image_index]
    if batch.image_size is not None:
        out.image_size = batch.image_size[image_index]
    return out


@dataclass
class RetrievalOptions(TaskOptions):
    """Retrieval settings: the split (and COCO 1k fold), how images are named in the store, negatives."""

    split: str = "train"
    with_restval: bool = True  # "train" includes Karpathy's restval images
    fold: int | None = None  # COCO 1k test fold 0-4
    image_key: str = "filename"  # store key: 'filename' (its stem), 'cocoid' or 'imgid'
    max_text_len: int = 30
    negatives: int = 3  # other images of the batch per caption (VOLTA: 3)
    hard_negatives: bool = False  # the hardest in-batch negatives under the current model
    max_images: int | None = None  # only the first N images of the split (quick runs)

    def __post_init__(self) -> None:
        if self.image_key not in ("filename", "cocoid", "imgid"):
            raise ValueError(
                f"image_key must be 'filename' (its stem), 'cocoid' or 'imgid', got {self.image_key!r}"
            )


class RetrievalTask(Task):
    name = "retrieval"
    files = {"karpathy": "Karpathy split JSON (dataset_flickr30k.json / dataset_coco.json)"}
    prediction_file = "retrieval_rankings.json"
    main_metric = "r_mean"
    eval_batch_size = 64

    options_class = RetrievalOptions
    options: RetrievalOptions

    # data -------------------------------------------------------------------------------------------
    def _key(self, img: Mapping, where: str) -> str:
        key = self.options.image_key
        if key == "filename":
            require_fields(img, ("filename",), where)
            return Path(img["filename"]).stem
        require_fields(img, (key,), where)
        return str(img[key])

    def load(self, files: Mapping[str, Any], tokenizer: Any, features: Any = None) -> TaskDataset:
        path = self.require_files(files, "karpathy")["karpathy"]
        data = read_json(path)
        if not isinstance(data, dict) or "images" not in data:
            raise TaskDataError(f"{path}: not a Karpathy split file (no top-level 'images' list)")
        split = self.options.split
        wanted = {split, "restval"} if split == "train" and self.options.with_restval else {split}
        images: list[tuple[str, list[tuple[Any, str]]]] = []
        for i, img in enumerate(data["images"]):
            where = f"{path}: images[{i}]"
            require_fields(img, ("split", "sentences"), where)
            if img["split"] not in wanted:
                continue
            caps = []
            for j, s in enumerate(img["sentences"]):
                require_fields(s, ("raw",), f"{where}.sentences[{j}]")
                caps.append((s.get("sentid", f"{i}-{j}"), s["raw"]))
            if not caps:
                raise TaskDataError(f"{where}: an image without captions")
            images.append((self._key(img, where), caps))
        if self.options.fold is not None:
            fold = int(self.options.fold)
            if not 0 <= fold or 1000 * fold >= len(images):
                raise TaskDataError(f"{path}: fold {fold} is outside the {len(images)} {split} images")
            images = images[1000 * fold : 1000 * (fold + 1)]
        if self.options.max_images:
            images = images[: self.options.max_images]
        if not images:
            raise TaskDataError(f"{path}: no images in split {split!r}")
        report = LoadReport()
        store = open_features(features, self.options.trust_pickle) if features is not None else None
        missing = check_images([k for k, _ in images], store, report, "retrieval")
        images = [im for im in images if im[0] not in missing]
        records = [
            {"sentid": sid, "caption": raw, "image": key, "image_index": m}
            for m, (key, caps) in enumerate(images)
            for sid, raw in caps
        ]
        max_len, max_regions = self.options.max_text_len, self.options.max_regions

        def build(r: dict) -> Example:
            ids, segs = encode_text(tokenizer, r["caption"], max_length=max_len)
            regions = region_lookup(store, r["image"], max_regions) if store is not None else None
            return Example(
                [View(ids, segs, regions)], torch.tensor(1), {"sentid": r["sentid"], "image": r["image"]}
            )

        info = {
            "labelled": True,
            "images": [k for k, _ in images],
            "text_to_image": [r["image_index"] for r in records],
            "store": store,
            "tokenizer": tokenizer,
        }
        return TaskDataset(records, build, report, info)

    # model ------------------------------------------------------------------------------------------
    def build_head(self, encoder: EncoderModel) -> nn.Module:
        if encoder.config.model_type == "unimo":  # retrieval.py: match_fc on [CLS] x [IMG], circle loss
            from mmbert.tasks.unimo_heads import UnimoMatchHead

            return UnimoMatchHead(encoder.config.dim)
        return MatchHead(probe_encoder(encoder).pooled)

    def head_from_pretraining(self, pretraining: nn.Module) -> MatchHead:
        """The pre-trained image-text matching head as this task's head (zero-shot, or fine-tuning start)."""
        pair = getattr(getattr(pretraining, "heads", None), "pair", None)
        if pair is None:
            raise ValueError("this pre-training checkpoint has no image-text matching (pair) head")
        head = MatchHead(pair.proj.in_features)
        head.pair.load_state_dict(pair.state_dict())
        return head

    def loss(self, logits: Tensor, batch: Batch) -> LossOutput:
        """``logits`` (N, 1 + K): column 0 the positive. Cross-entropy towards column 0."""
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        loss = F.cross_entropy(logits.float(), target)
        with torch.no_grad():
            acc = (logits.argmax(1) == 0).float().mean()
        return LossOutput(loss, {"retrieval_loss": float(loss.detach()), "retrieval_acc": float(acc)})

    def model_step(self, model: TaskModel, batch: Batch) -> LossOutput:
        """Each caption against its own image and K in-batch images of other pictures; with UNIMO's head
        (``circle_loss``) also each image against K captions of other pictures, as its official script."""
        b = batch.size
        images = [m["image"] for m in batch.meta["items"]]
        k = self.options.negatives
        candidates = [[j for j in range(b) if images[j] != images[i]] for i in range(b)]
        rows = [i for i in range(b) if candidates[i]]
        if not rows or k < 1:
            raise ValueError(
                "a retrieval batch needs captions of at least two different images (use batch_size > 1)"
            )
        unimo = getattr(getattr(model, "head", None), "circle_loss", False)
        if self.options.hard_negatives:
            with torch.no_grad():
                was = model.training
                model.eval()
                ti, ii = torch.meshgrid(torch.arange(b), torch.arange(b), indexing="ij")
                s = match_score(model(select_pairs(batch, ti.flatten(), ii.flatten()))).view(b, b)
                model.train(was)
            image_order = {i: sorted(candidates[i], key=lambda j: -float(s[i, j])) for i in rows}
            caption_order = {i: sorted(candidates[i], key=lambda j: -float(s[j, i])) for i in rows}
        else:
            # the global RNG: the trainer checkpoints it, so a resumed run draws the same negatives
            image_order = {i: [candidates[i][j] for j in torch.randperm(len(candidates[i]))] for i in rows}
            caption_order = (
                {i: [candidates[i][j] for j in torch.randperm(len(candidates[i]))] for i in rows} if unimo else {}
            )
        image_negs = [[image_order[i][n % len(image_order[i])] for n in range(k)] for i in rows]
        text_index = [i for i in rows for _ in range(k + 1)]
        image_index = [j for i, ns in zip(rows, image_negs) for j in [i, *ns]]
        if not unimo:
            logits = self._scores(model, batch, text_index, image_index, len(rows))
            out = self.loss(logits, batch)
        else:
            # NLP/UNIMO/src/finetune/retrieval.py (PaddlePaddle/Research): candidate 0 the pair, then the
            # image negatives (the caption with other images), then the caption negatives (the image with
            # other captions); the circle losses of the two halves averaged (unimo_retrieval_loss)
            from mmbert.tasks.unimo_heads import unimo_retrieval_loss

            caption_negs = [[caption_order[i][n % len(caption_order[i])] for n in range(k)] for i in rows]
            per_row = [
                ([i] * (k + 1) + cs, [i, *ns] + [i] * k) for i, ns, cs in zip(rows, image_negs, caption_negs)
            ]
            text_index = [t for ts, _ in per_row for t in ts]
            image_index = [j for _, js in per_row for j in js]
            logits = self._scores(model, batch, text_index, image_index, len(rows))
            loss = unimo_retrieval_loss(logits)
            acc = float((logits.argmax(1) == 0).float().mean())
            out = LossOutput(loss, {"retrieval_loss": float(loss.detach()), "retrieval_acc": acc})
        out.metrics["retrieval_captions_without_negative"] = b - len(rows)
        return out

    @staticmethod
    def _scores(model: TaskModel, batch: Batch, text_index: list[int], image_index: list[int], rows: int) -> Tensor:
        """(rows, candidates) match scores of the (text row, image row) pairs, row-major."""
        pairs = select_pairs(batch, torch.tensor(text_index), torch.tensor(image_index))
        return match_score(model(pairs)).view(rows, -1)

    # evaluation -------------------------------------------------------------------------------------
    def predict_split(self, model: TaskModel, dataset: TaskDataset, run: EvalRun) -> tuple[dict, list[dict]]:
        """Recall@K over the whole pool's score matrix; the predictions are the rankings."""
        scores = self.score_matrix(model, dataset, run.batch_size, run.device, run.progress)
        metrics = recall_at_k(scores, dataset.info["text_to_image"])
        metrics.update(num_captions=scores.shape[0], num_images=scores.shape[1])
        return metrics, self.rankings(scores, dataset)

    def score_matrix(
        self,
        model: TaskModel,
        dataset: TaskDataset,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
        progress: bool = False,
        fast: bool = True,
    ) -> Tensor:
        """(num_captions, num_images) match scores over the whole pool."""
        tokenizer, max_len = dataset.info["tokenizer"], self.options.max_text_len
        # captions only: building full items would read each caption's image from the store again
        texts = [View(*encode_text(tokenizer, r["caption"], max_length=max_len)) for r in dataset.records]
        store, max_regions = dataset.info["store"], self.options.max_regions
        images = (
            [region_lookup(store, k, max_regions) for k in dataset.info["images"]]
            if store is not None
            else []
        )
        was = model.training
        model.eval()
        try:
            return pool_scores(model, texts, images, batch_size, device, progress, fast)
        finally:
            model.train(was)

    def rankings(self, scores: Tensor, dataset: TaskDataset, top: int = 10) -> list[dict]:
        """Per caption its top images; per image its top captions (ids as in the Karpathy file)."""
        image_ids, sentids = dataset.info["images"], [r["sentid"] for r in dataset.records]
        k_i, k_t = min(top, scores.shape[1]), min(top, scores.shape[0])
        ti = scores.topk(k_i, dim=1).indices.tolist()
        it = scores.t().topk(k_t, dim=1).indices.tolist()
        return [{"sentid": s, "images": [image_ids[j] for j in row]} for s, row in zip(sentids, ti)] + [
            {"image": im, "sentids": [sentids[j] for j in row]} for im, row in zip(image_ids, it)
        ]

    def write_predictions(self, predictions: list[dict], path: str | os.PathLike) -> Path:
        return write_json(predictions, path)


# --- pool scoring ----------------------------------------------------------------------------------


def _pad_texts(texts: list[View], pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    t = max(len(v.text_ids) for v in texts)
    ids = torch.full((len(texts), t), pad_id, dtype=torch.long)
    segs = torch.zeros(len(texts), t, dtype=torch.long)
    mask = torch.zeros(len(texts), t, dtype=torch.bool)
    for i, v in enumerate(texts):
        ids[i, : len(v.text_ids)] = torch.tensor(v.text_ids)
        segs[i, : len(v.segment_ids)] = torch.tensor(v.segment_ids)
        mask[i, : len(v.text_ids)] = True
    return ids, segs, mask


def _pad_images(images: list[RegionFeatures]) -> tuple[Tensor, Tensor, Tensor]:
    r = max(im.num_regions for im in images)
    f = images[0].feats.shape[1]
    feats, boxes = torch.zeros(len(images), r, f), torch.zeros(len(images), r, 4)
    mask = torch.zeros(len(images), r, dtype=torch.bool)
    for i, im in enumerate(images):
        k = im.num_regions
        feats[i, :k] = torch.tensor(im.feats, dtype=torch.float32)
        boxes[i, :k] = normalise_boxes(
            torch.tensor(im.boxes, dtype=torch.float32), im.image_size
        )
        mask[i, :k] = True
    return feats, boxes, mask


@torch.no_grad()
def encode_in_batches(encode: Callable[[Tensor], StreamStates], count: int, batch_size: int) -> StreamStates:
    """``encode(indices)`` over 0..count-1 in batches of ``batch_size``, concatenated (masks are all
    tensors here: the pool is padded)."""
    parts = [encode(torch.arange(s, min(s + batch_size, count))) for s in range(0, count, batch_size)]
    return StreamStates(torch.cat([p.states for p in parts]), torch.cat([p.mask for p in parts]))


def pool_scores(
    model: TaskModel,
    texts: list[View],
    images: list[RegionFeatures],
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = False,
    fast: bool = True,
) -> Tensor:
    """Score every text against every image: (N, M), in batches of ``batch_size`` pairs. With ``fast``
    and a dual-stream encoder (``DualStreamModel``: its ``encode_text`` / ``encode_vision`` / ``fuse``),
    each text and each image goes through its own stream once and only ``fuse`` runs per pair (the
    cached single-modality states take N x T x D + M x R x Dv memory); otherwise every pair runs the
    full encoder."""
    from tqdm import tqdm

    if not images:
        raise ValueError("retrieval needs region features: no feature store was given")
    ids, segs, tmask = (x.to(device) for x in _pad_texts(texts, model.config.pad_token_id))
    feats, boxes, rmask = (x.to(device) for x in _pad_images(images))
    sizes = torch.tensor([list(im.image_size) for im in images], dtype=torch.long, device=device)
    pixel = {"image_size": sizes} if getattr(model.encoder, "takes_image_size", False) else {}
    n, m = ids.shape[0], feats.shape[0]
    encoder = model.encoder
    stages = fast and isinstance(encoder, DualStreamModel)
    scores = torch.empty(n, m)
    pairs = torch.cartesian_prod(torch.arange(n), torch.arange(m))  # row-major: text, image
    bar = tqdm(total=len(pairs), desc="retrieval pairs", unit="pair", disable=not progress)
    if stages:  # each text once, each image once through its own stream
        text_states = encode_in_batches(lambda j: encoder.encode_text(ids[j], tmask[j], segs[j]), n, batch_size)
        vision_states = encode_in_batches(
            lambda j: encoder.encode_vision(feats[j], boxes[j], rmask[j]), m, batch_size
        )
    for s in range(0, len(pairs), batch_size):
        chunk = pairs[s : s + batch_size]
        t, i = chunk[:, 0].to(device), chunk[:, 1].to(device)
        if stages:
            enc = encoder.fuse(text_states.select(t), vision_states.select(i))
        else:
            enc = encoder(ids[t], text_mask=tmask[t], segment_ids=segs[t], region_feats=feats[i],
                          region_boxes=boxes[i], region_mask=rmask[i],
                          **{k: v[i] for k, v in pixel.items()})  # fmt: skip
        scores[chunk[:, 0], chunk[:, 1]] = match_score(model.head(enc, None)).float().cpu()
        bar.update(len(chunk))
    bar.close()
    return scores
