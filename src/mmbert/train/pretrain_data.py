"""Pre-training examples: a caption dataset's pairs, corrupted by a paper's recipe.

``PretrainingDataset(captions, region_rule=..., match=True)`` wraps a
:class:`~mmbert.data.datasets.CaptionDataset`. For example ``i`` of epoch ``e`` every random choice
comes from ``example_generator(seed, e, i)``: whether the caption is swapped for one of another image
(image-text match, 50 %), which tokens are masked (15 %, 80/10/10) and which regions (the recipe's
rule). Every pair is corrupted the same way, matching or not, so [MASK] never reveals the pair label;
``Pretraining`` decides per paper whether mismatched pairs' MLM / region targets are scored.

``collate_pretraining`` pads like ``collate_captions`` and adds ``region_masked`` (for the models with
a masked-region embedding) in a :class:`PretrainingBatch`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import partial

import torch
from torch import Tensor
from torch.utils.data import Dataset

from mmbert.data.batch import Batch, CaptionExample
from mmbert.data.collate import collate_captions
from mmbert.data.datasets import CaptionDataset
from mmbert.data.masking import REGION_RULES, choose_mismatch, example_generator, mask_regions, mask_tokens


@dataclass
class PretrainingExample(CaptionExample):
    """A corrupted caption example; ``region_masked`` (R,) bool marks regions whose input was replaced."""

    region_masked: Tensor | None = None


@dataclass
class PretrainingBatch(Batch):
    """A ``Batch`` plus ``region_masked`` (B, R), passed to models that take it (``masked_region_input``)."""

    region_masked: Tensor | None = None

    def to(self, device: torch.device | str) -> PretrainingBatch:
        return type(self)(**{f.name: _move(getattr(self, f.name), device) for f in fields(self)})

    def pin_memory(self) -> PretrainingBatch:
        pinned = {f.name: getattr(self, f.name) for f in fields(self)}
        return type(self)(**{k: v.pin_memory() if isinstance(v, Tensor) else v for k, v in pinned.items()})


def _move(value, device):
    return value.to(device) if isinstance(value, Tensor) else value


def collate_pretraining(examples: list[PretrainingExample], pad_token_id: int = 0) -> PretrainingBatch:
    batch = collate_captions(examples, pad_token_id)
    out = PretrainingBatch(**{f.name: getattr(batch, f.name) for f in fields(Batch)})
    if all(e.region_masked is not None for e in examples):
        flags = torch.zeros(batch.region_mask.shape, dtype=torch.bool)
        for i, e in enumerate(examples):
            flags[i, : e.region_masked.shape[0]] = e.region_masked
        out.region_masked = flags
    return out


class PretrainingDataset(Dataset):
    """Corrupted caption-image pairs for pre-training (see the module docstring).

    region_rule: "lxmert" | "vilbert" | "zero" | None (no region masking); match: build image-text
    match pairs (50 % mismatched); mlm_prob / region_prob: the masking rates; whole_word: whole-word MLM;
    dynamic: a fresh corruption every epoch (False: the same one every epoch, BERT's original static
    masking, and what an over-fitting check wants).
    """

    def __init__(
        self,
        captions: CaptionDataset,
        region_rule: str | None,
        match: bool,
        seed: int = 0,
        mlm_prob: float = 0.15,
        region_prob: float = 0.15,
        match_prob: float = 0.5,
        whole_word: bool = False,
        dynamic: bool = True,
    ) -> None:
        if region_rule is not None and region_rule not in REGION_RULES:
            raise ValueError(f"unknown region masking rule {region_rule!r}; choose from {REGION_RULES}")
        self.base = captions
        self.region_rule, self.match = region_rule, match
        self.seed, self.epoch = seed, 0
        self.mlm_prob, self.region_prob, self.match_prob = mlm_prob, region_prob, match_prob
        self.whole_word, self.dynamic = whole_word, dynamic
        tok = captions.tokenizer
        self.mask_id, self.vocab_size = tok.mask_id, tok.vocab_size
        self.special = torch.tensor(sorted(tok.special_ids), dtype=torch.long)
        self.image_ids = [c.image_id for c in captions.captions]
        if match and len(set(self.image_ids)) < 2:
            raise ValueError("image-text matching needs captions of at least two different images")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)

    @property
    def collate(self) -> partial:
        return partial(collate_pretraining, pad_token_id=self.base.tokenizer.pad_id)

    def __getitem__(self, index: int) -> PretrainingExample:
        g = example_generator(self.seed, self.epoch if self.dynamic else 0, index)
        item = self.base[index]
        pair_label = None
        text_ids, segment_ids, word_ids, caption = item.text_ids, item.segment_ids, item.word_ids, item.caption
        if self.match:
            other = choose_mismatch(index, self.image_ids, g, self.match_prob)
            pair_label = 1 if other is None else 0
            if other is not None:
                caption = self.base.captions[other].caption
                text_ids, segment_ids, word_ids = self.base.encode_text(caption)
        maskable = ~torch.isin(text_ids, self.special)
        text_ids, mlm_labels = mask_tokens(
            text_ids, maskable, self.mask_id, self.vocab_size, g, self.mlm_prob,
            word_ids=word_ids if self.whole_word else None,
        )
        regions = item.regions
        region_targets = region_target_mask = region_masked = None
        if self.region_rule is not None:
            def random_pool() -> Tensor:  # LXMERT: a feature of a random image
                j = int(torch.randint(0, len(self.image_ids), (), generator=g))
                return self.base.regions(self.image_ids[j]).feats

            m = mask_regions(regions.feats, g, self.region_rule, prob=self.region_prob, boxes=regions.boxes,
                             random_pool=random_pool)
            region_targets, region_target_mask, region_masked = regions.feats, m.targets, m.masked
            regions.feats = m.feats
        return PretrainingExample(
            index=index,
            image_id=item.image_id,
            caption=caption,
            text_ids=text_ids,
            segment_ids=segment_ids,
            word_ids=word_ids,
            regions=regions,
            mlm_labels=mlm_labels,
            pair_label=pair_label,
            region_targets=region_targets,
            region_target_mask=region_target_mask,
            region_masked=region_masked,
        )
