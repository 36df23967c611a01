"""UNIMO's pre-training data: image-text pairs, text-only sentences and image-only images, mixed.

``UnimoPretrainingData`` indexes the three corpora one after the other (pairs, then texts, then images),
so the trainer's shuffled sampler mixes them; ``collate_unimo`` groups a batch by kind into a
``UnimoBatch``. For example ``i`` of epoch ``e`` every random choice comes from
``example_generator(seed, e, i)``.

- pair: span-masked caption (MLM), regions masked with overlap zeroing (the recipe's "unimo" rule at
  ``overlap_iou``), the clean caption (the seq2seq captioning target), and its CMCL text variants:
  positives — the caption, user paraphrases, texts of the text corpus retrieved by TF-IDF cosine >=
  ``retrieve_threshold``; hard negatives — user negatives, rewrites (scene-graph or lexicon) and the
  most TF-IDF-similar caption of another image. All variants are normalised alike (lower case, no
  punctuation), so the text's surface cannot tell a positive from a rewrite.
  With ``related`` (``mmbert.data.related_images``: each pair image's most related images of the
  image-only pool) and ``image_positives`` > 0, also up to that many retrieved images, drawn without
  replacement from the pair image's neighbours by the example's generator and kept in rank order; the
  collated batch encodes each distinct one once and marks which pairs it is a positive of.
- text: span-masked MLM, and a seq2seq split (source = the first part, target = the rest).
- image: masked regions (region losses on image-only input).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from mmbert.data.batch import Regions
from mmbert.data.collate import collate_regions, pad_1d
from mmbert.data.datasets import CaptionDataset
from mmbert.data.masking import example_generator, mask_regions, mask_tokens, span_groups
from mmbert.data.rewriting import LexiconRewriter, SceneGraphRewriter, TfidfIndex, words
from mmbert.train.pretrain_data import PretrainingBatch, PretrainingExample, collate_pretraining


def normalise(text: str) -> str:
    return " ".join(words(text))


@dataclass
class UnimoExample:
    kind: str  # "pair" | "text" | "image"
    pretraining: PretrainingExample | None = None  # pair / image: masked text (pair) and regions
    text_ids: Tensor | None = None  # text: span-masked ids
    mlm_labels: Tensor | None = None
    source_ids: Tensor | None = None  # text: seq2seq source ([CLS] ... [SEP])
    target_ids: Tensor | None = None  # text / pair: seq2seq target ([CLS] ... [SEP]); pair: the caption
    variants: list[Tensor] | None = None  # pair: CMCL text variants, ids with [CLS] / [SEP]
    positive: list[bool] | None = None
    retrieved_ids: list[str] | None = None  # pair: images retrieved from the image-only pool (CMCL positives)
    retrieved: list[Regions] | None = None  # their regions, unmasked


@dataclass
class UnimoBatch:
    """A mixed batch: ``pairs`` / ``images`` are ``PretrainingBatch`` (images have empty text), the text-only
    part is ``text_ids`` / ``text_mask`` / ``mlm_labels``; seq2seq sources / targets; CMCL variants
    ``variant_ids`` (P, K, T) with ``variant_mask``, ``variant_valid`` (P, K) and ``variant_positive``; the
    M distinct retrieved images ``retrieved_feats`` / ``retrieved_boxes`` / ``retrieved_mask`` (M, R, ...)
    and ``image_positive`` (P + M, P): image r (the P pair images, then the retrieved ones) is a positive of
    pair i — its own image, another pair's copy of it, or one retrieved for it (``objectives.cmcl``)."""

    pairs: PretrainingBatch | None = None
    images: PretrainingBatch | None = None
    text_ids: Tensor | None = None
    text_mask: Tensor | None = None
    mlm_labels: Tensor | None = None
    source_ids: Tensor | None = None
    source_mask: Tensor | None = None
    target_ids: Tensor | None = None
    target_mask: Tensor | None = None
    caption_ids: Tensor | None = None
    caption_mask: Tensor | None = None
    variant_ids: Tensor | None = None
    variant_mask: Tensor | None = None
    variant_valid: Tensor | None = None
    variant_positive: Tensor | None = None
    retrieved_feats: Tensor | None = None
    retrieved_boxes: Tensor | None = None
    retrieved_mask: Tensor | None = None
    image_positive: Tensor | None = None

    def to(self, device: torch.device | str) -> UnimoBatch:
        return UnimoBatch(**{f.name: None if (v := getattr(self, f.name)) is None else v.to(device)
                             for f in fields(self)})  # fmt: skip

    @property
    def size(self) -> int:
        return sum(0 if t is None else int(t.shape[0]) for t in (
            self.pairs.text_ids if self.pairs is not None else None,
            self.images.region_feats if self.images is not None else None, self.text_ids))  # fmt: skip


class UnimoPretrainingData(Dataset):
    """Pairs (a ``CaptionDataset``), optional text-only sentences and image-only image ids of the same
    store, corrupted as UNIMO pre-trains (module docstring)."""

    def __init__(
        self,
        captions: CaptionDataset,
        texts: Sequence[str] = (),
        image_ids: Sequence[str] = (),
        seed: int = 0,
        mlm_prob: float = 0.15,
        region_prob: float = 0.15,
        overlap_iou: float = 0.4,
        rewriter: SceneGraphRewriter | LexiconRewriter | None = None,
        paraphrases: dict[str, list[str]] | None = None,
        negatives: dict[str, list[str]] | None = None,
        num_negatives: int = 4,
        num_positives: int = 1,
        retrieve_threshold: float = 0.9,
        max_text_length: int = 40,
        related: Mapping[str, Sequence[tuple[str, float]]] | None = None,
        image_positives: int = 0,
    ) -> None:
        self.base, self.seed, self.epoch = captions, seed, 0
        self.texts, self.image_ids = [t for t in texts if t.strip()], list(image_ids)
        missing = [i for i in self.image_ids if i not in set(captions.store.keys())]
        if missing:
            raise ValueError(f"image-only ids not in the feature store: {missing[:5]}")
        self.mlm_prob, self.region_prob, self.overlap_iou = mlm_prob, region_prob, overlap_iou
        self.rewriter = rewriter if rewriter is not None else LexiconRewriter()
        self.paraphrases = {normalise(k): v for k, v in (paraphrases or {}).items()}
        self.negatives = {normalise(k): v for k, v in (negatives or {}).items()}
        self.num_negatives, self.num_positives = num_negatives, num_positives
        self.retrieve_threshold, self.max_text_length = retrieve_threshold, max_text_length
        tok = captions.tokenizer
        self.tok = tok
        self.special = torch.tensor(sorted(tok.special_ids), dtype=torch.long)
        self.caption_texts = [normalise(c.caption) for c in captions.captions]
        self.caption_images = [c.image_id for c in captions.captions]
        self.caption_index = TfidfIndex(self.caption_texts)
        self.text_index = TfidfIndex([normalise(t) for t in self.texts]) if self.texts else None
        if image_positives < 0:
            raise ValueError(f"image_positives must be >= 0, got {image_positives}")
        if image_positives and related is None:
            raise ValueError("image_positives needs the related images of the image-only pool (related=...)")
        self.related = {k: [str(i) for i, _ in v] for k, v in (related or {}).items()}
        self.image_positives = image_positives

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base) + len(self.texts) + len(self.image_ids)

    @property
    def collate(self):
        return lambda examples: collate_unimo(examples, self.tok.pad_id)

    # ----------------------------------------------------------------------------------------------
    def _ids(self, text: str) -> Tensor:
        return torch.tensor(self.tok.encode(text, max_length=self.max_text_length).ids, dtype=torch.long)

    def _span_mask(self, ids: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        maskable = ~torch.isin(ids, self.special)
        spans = span_groups(int(ids.shape[0]), g)
        return mask_tokens(
            ids, maskable, self.tok.mask_id, self.tok.vocab_size, g, self.mlm_prob, word_ids=spans
        )

    def _regions(self, regions: Regions, g: torch.Generator) -> tuple[Regions, Tensor, Tensor, Tensor]:
        m = mask_regions(regions.feats, g, "unimo", prob=self.region_prob, boxes=regions.boxes,
                         overlap_iou=self.overlap_iou, pixel_boxes=False)  # fmt: skip
        original = regions.feats
        regions.feats = m.feats
        return regions, original, m.targets, m.masked

    def variants(self, index: int, rng: np.random.Generator) -> tuple[list[str], list[bool]]:
        """The CMCL texts of pair ``index``: positives first, then hard negatives."""
        caption, image_id = self.caption_texts[index], self.caption_images[index]
        pos = [caption]
        extra = [normalise(t) for t in self.paraphrases.get(caption, [])]
        if self.text_index is not None:
            extra += [self.text_index.texts[i] for i, s in self.text_index.similar(caption, 3)
                      if s >= self.retrieve_threshold]  # fmt: skip
        extra = [t for t in dict.fromkeys(extra) if t != caption]
        if extra:
            picks = rng.choice(len(extra), min(self.num_positives, len(extra)), replace=False)
            pos += [extra[i] for i in sorted(picks)]
        neg = [normalise(t) for t in self.negatives.get(caption, [])]
        if isinstance(self.rewriter, SceneGraphRewriter):
            neg += self.rewriter.negatives(caption, image_id, rng, self.num_negatives)
        else:
            neg += self.rewriter.negatives(caption, rng, self.num_negatives)
        other = [i for i, _ in self.caption_index.similar(caption, 8) if self.caption_images[i] != image_id]
        if other:  # sentence level: the most similar caption of another image
            neg.append(self.caption_texts[other[0]])
        neg = [t for t in dict.fromkeys(neg) if t not in pos][: self.num_negatives + 1]
        return pos + neg, [True] * len(pos) + [False] * len(neg)

    def retrieved_for(self, index: int, rng: np.random.Generator) -> list[str]:
        """Pair ``index``'s retrieved images: up to ``image_positives`` of its image's neighbours, rank order."""
        hits = self.related.get(self.caption_images[index], []) if self.image_positives else []
        if len(hits) <= self.image_positives:
            return list(hits)
        return [hits[i] for i in sorted(rng.choice(len(hits), self.image_positives, replace=False))]

    def __getitem__(self, index: int) -> UnimoExample:
        g = example_generator(self.seed, self.epoch, index)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        n_pairs, n_texts = len(self.base), len(self.texts)
        if index < n_pairs:
            item = self.base[index]
            text_ids, mlm_labels = self._span_mask(item.text_ids, g)
            regions, original, targets, masked = self._regions(item.regions, g)
            ex = PretrainingExample(index=index, image_id=item.image_id, caption=item.caption, text_ids=text_ids,
                                    segment_ids=item.segment_ids, word_ids=item.word_ids, regions=regions,
                                    mlm_labels=mlm_labels, region_targets=original, region_target_mask=targets,
                                    region_masked=masked)  # fmt: skip
            texts, positive = self.variants(index, rng)
            retrieved = self.retrieved_for(index, rng)
            return UnimoExample("pair", pretraining=ex, target_ids=item.text_ids,
                                variants=[self._ids(t) for t in texts], positive=positive, retrieved_ids=retrieved,
                                retrieved=[self.base.regions(i) for i in retrieved])  # fmt: skip
        if index < n_pairs + n_texts:
            text = self.texts[index - n_pairs]
            ids = self._ids(text)
            masked_ids, labels = self._span_mask(ids, g)
            body = ids[1:-1]
            cut = (
                int(torch.randint(1, max(2, int(body.shape[0])), (), generator=g)) if body.shape[0] > 1 else 1
            )
            cls, sep = ids[:1], ids[-1:]
            return UnimoExample("text", text_ids=masked_ids, mlm_labels=labels,
                                source_ids=torch.cat([cls, body[:cut], sep]),
                                target_ids=torch.cat([cls, body[cut:], sep]))  # fmt: skip
        image_id = self.image_ids[index - n_pairs - n_texts]
        regions, original, targets, masked = self._regions(self.base.regions(image_id), g)
        empty = torch.zeros(0, dtype=torch.long)
        ex = PretrainingExample(index=index, image_id=image_id, caption="", text_ids=empty, segment_ids=empty,
                                word_ids=[], regions=regions, mlm_labels=empty, region_targets=original,
                                region_target_mask=targets, region_masked=masked)  # fmt: skip
        return UnimoExample("image", pretraining=ex)


def collate_unimo(examples: list[UnimoExample], pad_token_id: int) -> UnimoBatch:
    out = UnimoBatch()
    pairs = [e for e in examples if e.kind == "pair"]
    texts = [e for e in examples if e.kind == "text"]
    images = [e for e in examples if e.kind == "image"]
    if pairs:
        out.pairs = collate_pretraining([e.pretraining for e in pairs], pad_token_id)
        out.caption_ids, out.caption_mask = pad_1d([e.target_ids for e in pairs], pad_token_id)
        k = max(len(e.variants) for e in pairs)
        t = max(int(v.shape[0]) for e in pairs for v in e.variants)
        out.variant_ids = torch.full((len(pairs), k, t), pad_token_id, dtype=torch.long)
        out.variant_mask = torch.zeros(len(pairs), k, t, dtype=torch.bool)
        out.variant_valid = torch.zeros(len(pairs), k, dtype=torch.bool)
        out.variant_positive = torch.zeros(len(pairs), k, dtype=torch.bool)
        for i, e in enumerate(pairs):
            for j, (v, p) in enumerate(zip(e.variants, e.positive)):
                out.variant_ids[i, j, : v.shape[0]] = v
                out.variant_mask[i, j, : v.shape[0]] = True
                out.variant_valid[i, j], out.variant_positive[i, j] = True, p
        _collate_retrieved(out, pairs)
    if texts:
        out.text_ids, out.text_mask = pad_1d([e.text_ids for e in texts], pad_token_id)
        out.mlm_labels, _ = pad_1d([e.mlm_labels for e in texts], -100)
        out.source_ids, out.source_mask = pad_1d([e.source_ids for e in texts], pad_token_id)
        out.target_ids, out.target_mask = pad_1d([e.target_ids for e in texts], pad_token_id)
    if images:
        out.images = collate_pretraining([e.pretraining for e in images], pad_token_id)
    return out


def _collate_retrieved(out: UnimoBatch, pairs: list[UnimoExample]) -> None:
    """The distinct retrieved images that are not already pair images of the batch, and ``image_positive``."""
    pair_ids = [e.pretraining.image_id for e in pairs]
    regions: dict[str, Regions] = {}
    for e in pairs:
        for image_id, r in zip(e.retrieved_ids or [], e.retrieved or []):
            if image_id not in pair_ids:
                regions.setdefault(image_id, r)
    columns = pair_ids + list(regions)
    out.image_positive = torch.tensor(
        [[c == own or c in (e.retrieved_ids or []) for own, e in zip(pair_ids, pairs)] for c in columns],
        dtype=torch.bool,
    )
    if regions:
        r = collate_regions(list(regions.values()))
        out.retrieved_feats, out.retrieved_boxes, out.retrieved_mask = (
            r["region_feats"], r["region_boxes"], r["region_mask"]
        )


def read_unimo_corpora(
    captions: CaptionDataset, args, data, seed: int, overlap_iou: float, corpora: bool = True
):
    """``mmbert pretrain``'s UNIMO data: the pairs of ``captions`` plus, when ``corpora``, the text-only
    sentences of ``args.text_corpus`` and the image-only images of ``args.image_corpus`` (ids, or "all");
    rewrites from ``args.scenes`` (scene graphs) or the lexicon (``args.lexicon`` extends it); user
    ``args.paraphrases`` / ``args.negatives``; with ``data.cmcl_image_positives`` > 0 the related images of
    the image-only pool, cached at ``args.image_index`` (default ``<args.out>/cmcl_related_images.json``).
    ``data`` is the command's ``DataConfig``."""
    from pathlib import Path

    from mmbert.data.rewriting import Lexicon, read_rewrites

    if args.scenes:
        rewriter = SceneGraphRewriter.from_file(args.scenes)
    else:
        lexicon = Lexicon.default()
        rewriter = LexiconRewriter(lexicon.extend(args.lexicon) if args.lexicon else lexicon)
    texts: list[str] = []
    image_ids: list[str] = []
    if corpora and args.text_corpus:
        texts = [
            line for line in Path(args.text_corpus).read_text(encoding="utf-8").splitlines() if line.strip()
        ]
    if corpora and args.image_corpus:
        if args.image_corpus == "all":
            image_ids = [str(k) for k in captions.store.keys()]
        else:
            image_ids = [ln.strip() for ln in Path(args.image_corpus).read_text().splitlines() if ln.strip()]
    related = None
    if corpora and data.cmcl_image_positives:
        from mmbert.data.related_images import cached_related_images

        if not image_ids:
            raise ValueError("--image-positives / cmcl_image_positives retrieve from the image-only pool: pass "
                             "--image-corpus")  # fmt: skip
        depth = max(data.cmcl_image_neighbours, data.cmcl_image_positives)
        index = getattr(args, "image_index", None) or Path(args.out) / "cmcl_related_images.json"
        related = cached_related_images(
            index, captions.regions, [c.image_id for c in captions.captions], image_ids, depth,
            data.cmcl_image_retrieval, captions.max_regions, getattr(captions.store, "path", None),
        )  # fmt: skip
    return UnimoPretrainingData(
        captions, texts, image_ids, seed, data.mlm_prob, data.region_prob, overlap_iou, rewriter,
        read_rewrites(args.paraphrases, "paraphrases") if args.paraphrases else None,
        read_rewrites(args.negatives, "negatives") if args.negatives else None,
        num_negatives=data.cmcl_negatives, max_text_length=data.max_text_length, related=related,
        image_positives=data.cmcl_image_positives if corpora else 0,
    )  # fmt: skip
