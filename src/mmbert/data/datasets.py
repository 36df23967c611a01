"""Caption datasets: a caption corpus joined with a feature store, one unpadded example per caption.

::

    store = mmbert.features.open("train2014_obj36.h5")
    captions = read_captions("captions_train2014.json", image_key="file_name")
    data = CaptionDataset(captions, store, tokenizer, max_text_length=20, max_regions=36)
    data.missing                                   # MissingImages: captions whose image is absent
    loader = DataLoader(data, batch_size=256, shuffle=True, num_workers=4, collate_fn=data.collate)
    batch = next(iter(loader))                     # Batch: text_ids (B, T), region_feats (B, R, F), ...

Each ``DataLoader`` worker re-opens the store on its first read (stores are lazy and fork-safe), and
the dataset itself pickles without any open handle. ``prepare_regions`` is the one place where a store
record becomes model input: at most ``max_regions`` regions (the most confident ones when the store has
confidences, in their stored order), boxes normalised once, the detector targets kept alongside.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Collection, Iterable, Sequence
from functools import partial

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from mmbert.data import features as features_api
from mmbert.data.batch import Batch, CaptionExample, RegionFeatures, Regions
from mmbert.data.boxes import normalise_boxes
from mmbert.data.captions import Caption, join_with_store, read_captions
from mmbert.data.collate import collate_captions
from mmbert.data.features.base import OPTIONAL_FIELDS, FeatureStoreError
from mmbert.data.features.validate import training_problem
from mmbert.data.tokenizer import Tokenizer


def region_confidence(record: RegionFeatures) -> np.ndarray | None:
    """Per-region detector confidence: ``obj_conf`` when stored, else the best non-background class
    probability from ``cls_prob`` (column 0 is background in the Faster R-CNN convention), else None."""
    if record.obj_conf is not None and len(record.obj_conf) == record.num_regions:
        return np.asarray(record.obj_conf, dtype=np.float32)
    if (
        record.cls_prob is not None
        and record.cls_prob.ndim == 2
        and record.cls_prob.shape[0] == record.num_regions
    ):
        probs = record.cls_prob[:, 1:] if record.cls_prob.shape[1] > 1 else record.cls_prob
        return probs.max(axis=1)
    return None


def select_regions(record: RegionFeatures, max_regions: int | None) -> np.ndarray | None:
    """Indices of the regions to keep (None = all): the ``max_regions`` most confident ones, in their
    stored order; the first ``max_regions`` when the store has no confidences."""
    n = record.num_regions
    if max_regions is None or n <= max_regions:
        return None
    conf = region_confidence(record)
    if conf is None:
        return np.arange(max_regions)
    return np.sort(np.argsort(-conf, kind="stable")[:max_regions])


def _tensor(array: np.ndarray | None, keep: np.ndarray | None, dtype: torch.dtype) -> Tensor | None:
    if array is None:
        return None
    if keep is not None:
        array = array[keep]  # fancy indexing copies: writable
    elif not array.flags.writeable:
        array = array.copy()  # np.frombuffer over bytes is read-only; torch wants writable memory
    return torch.from_numpy(array).to(dtype)


def prepare_regions(record: RegionFeatures, max_regions: int | None = None, where: str = "") -> Regions:
    """Store record -> model-ready ``Regions``: limited to ``max_regions``, boxes normalised to [0, 1]."""
    n = record.num_regions
    if record.boxes.shape != (n, 4):
        raise FeatureStoreError(
            f"{where}image {record.image_id!r}: {n} feature rows but boxes of shape "
            f"{tuple(record.boxes.shape)} (run `mmbert features check`)"
        )
    for name in OPTIONAL_FIELDS:
        value = getattr(record, name)
        if value is not None and len(value) != n:
            raise FeatureStoreError(
                f"{where}image {record.image_id!r}: {name} has {len(value)} rows for {n} regions "
                "(run `mmbert features check`)"
            )
    keep = select_regions(record, max_regions)
    boxes = _tensor(record.boxes, keep, torch.float32)
    return Regions(
        feats=_tensor(record.feats, keep, torch.float32),
        boxes=normalise_boxes(boxes, record.image_size),
        image_size=record.image_size,
        cls_prob=_tensor(record.cls_prob, keep, torch.float32),
        labels=_tensor(record.obj_id, keep, torch.long),
        obj_conf=_tensor(record.obj_conf, keep, torch.float32),
        attr_labels=_tensor(record.attr_id, keep, torch.long),
        attr_conf=_tensor(record.attr_conf, keep, torch.float32),
    )


class CaptionDataset(Dataset):
    """Caption-image pairs: ``dataset[i]`` -> :class:`CaptionExample` (unpadded).

    captions: ``Caption`` records (any iterable; a path is read with ``read_captions``).
    store: a feature store or its path (opened with ``mmbert.features.open``).
    max_text_length: token budget including [CLS]/[SEP]; max_regions: regions kept per image (None = all).
    region_fields: the optional detector arrays to read (default all of ``OPTIONAL_FIELDS``; ``()`` reads
    only features and boxes, the fastest). Captions whose image the store lacks are left out and counted
    in ``self.missing`` (and warned about once).

    Every record read is checked for what would break or poison training (NaN/inf, flipped boxes,
    non-positive image sizes, a width other than ``feat_dim``): a bad one raises an error naming the
    store and the image. ``skip_bad_records=True`` instead scans the store once up front and leaves
    those images' captions out, listed in ``self.bad_records`` (image id, problem): the set is a function
    of the store alone, so a resumed run skips exactly the same examples and keeps the same data order."""

    def __init__(
        self,
        captions: Iterable[Caption] | str | os.PathLike,
        store: features_api.StoreReader | str | os.PathLike,
        tokenizer: Tokenizer,
        max_text_length: int = 40,
        max_regions: int | None = 36,
        region_fields: Collection[str] = OPTIONAL_FIELDS,
        trust_pickle: bool = False,
        feat_dim: int | None = None,
        skip_bad_records: bool = False,
    ) -> None:
        if isinstance(store, (str, os.PathLike)):
            store = features_api.open(store, trust_pickle=trust_pickle)
        if isinstance(captions, (str, os.PathLike)):
            captions = read_captions(captions)
        self.store = store
        self.tokenizer = tokenizer
        self.max_text_length = max_text_length
        self.max_regions = max_regions
        self.region_fields = tuple(region_fields)
        self.feat_dim = feat_dim
        self.captions, self.missing = join_with_store(captions, set(store.keys()))
        if self.missing:
            warnings.warn(f"{getattr(store, 'path', 'feature store')}: {self.missing}", stacklevel=2)
        self.bad_records: list[tuple[str, str]] = []
        if skip_bad_records:
            self.bad_records = self._scan(dict.fromkeys(i for i, _ in self.captions))
            bad = {i for i, _ in self.bad_records}
            self.captions = [c for c in self.captions if c[0] not in bad]
        if hasattr(store, "close"):
            store.close()  # workers open their own handles; the parent re-opens lazily if it reads

    def __len__(self) -> int:
        return len(self.captions)

    def _scan(self, image_ids: Iterable[str]) -> list[tuple[str, str]]:
        """(image id, problem) for every unusable image among ``image_ids`` (features and boxes only)."""
        from tqdm import tqdm

        bad = []
        ids = list(image_ids)
        for image_id in tqdm(ids, desc="scan features", unit="img", disable=len(ids) < 10000):
            try:
                record = self.store.read(image_id, ()) if hasattr(self.store, "read") else self.store[image_id]
            except FeatureStoreError as e:
                bad.append((image_id, str(e)))
                continue
            problem = training_problem(record, self.feat_dim)
            if problem is not None:
                bad.append((image_id, problem))
        return bad

    def encode_text(self, text: str) -> tuple[Tensor, Tensor, list[int | None]]:
        """Caption -> (text_ids (T,), segment_ids (T,), word_ids) with [CLS]/[SEP], truncated."""
        enc = self.tokenizer.encode(text, max_length=self.max_text_length)
        return (
            torch.tensor(enc.ids, dtype=torch.long),
            torch.tensor(enc.segment_ids, dtype=torch.long),
            enc.word_ids,
        )

    def regions(self, image_id: str) -> Regions:
        """One image's model-ready regions (also for building mismatched pairs from another image)."""
        # obj_conf (R floats) is always read when regions may be dropped: it decides which ones stay.
        need_conf = self.max_regions is not None and "obj_conf" not in self.region_fields
        fields = (*self.region_fields, "obj_conf") if need_conf else self.region_fields
        if hasattr(self.store, "read"):
            record = self.store.read(image_id, fields)
        else:  # any mapping of image id -> RegionFeatures (e.g. a dict in tests)
            record = self.store[image_id]
        where = f"{getattr(self.store, 'path', 'feature store')}: "
        problem = training_problem(record, self.feat_dim)
        if problem is not None:
            raise FeatureStoreError(f"{where}image {image_id!r}: {problem} (`mmbert features check` lists every "
                                    "such record; skip_bad_records=true leaves them out)")  # fmt: skip
        regions = prepare_regions(record, self.max_regions, where=where)
        if need_conf:
            regions.obj_conf = None
        return regions

    def __getitem__(self, index: int) -> CaptionExample:
        image_id, caption = self.captions[index]
        text_ids, segment_ids, word_ids = self.encode_text(caption)
        return CaptionExample(
            index=index,
            image_id=image_id,
            caption=caption,
            text_ids=text_ids,
            segment_ids=segment_ids,
            word_ids=word_ids,
            regions=self.regions(image_id),
        )

    @property
    def collate(self) -> partial:
        """``collate_fn`` for a ``DataLoader``: pads with this tokenizer's [PAD] id (picklable)."""
        return partial(collate_captions, pad_token_id=self.tokenizer.pad_id)

    def batch(self, indices: Sequence[int]) -> Batch:
        """Convenience: the padded batch of the given examples."""
        return self.collate([self[i] for i in indices])
