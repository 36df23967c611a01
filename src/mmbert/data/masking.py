"""Pre-training corruption: token masking, region masking, image-text mismatches and NSP pairs.

Pure functions: every random draw comes from the ``torch.Generator`` passed in, so an example's
corruption is a function of its seed alone. ``example_generator(seed, epoch, index)`` builds that
generator, which is what makes resumed and multi-process runs reproduce a single unbroken run: the
masking of example ``index`` in ``epoch`` never depends on which worker or rank made it, or when.

Rules, each as its authors' code runs it (file named in each rule's comment below):

* tokens (BERT and all V&L models): 15 % of maskable tokens are targets; of those 80 % become
  [MASK], 10 % a random token, 10 % stay. Options: whole-word (all pieces of a chosen word; with
  ``word_action`` the 80/10/10 draw is made once per word, as VL-BERT does), ``force_one`` (UNITER: a
  sequence with no target gets its first maskable token masked) and ``random_range`` (the id range
  random replacements come from: UNITER draws from its tokenizer's ``v_range``, BERT from the vocabulary).
* regions, ``rule`` (``REGION_RULES``):
  ``"lxmert"``       15 % targets; 80 % zeroed, 10 % replaced by a random feature, 10 % kept.
  ``"vilbert"``      vilbert-multi-task: 15 % chosen as targets; 90 % of those zeroed, 10 % kept unchanged;
                     ``overlap`` flags every region whose IoU with a chosen one exceeds 0.4 (chosen ones
                     included). Overlapping regions are NOT zeroed: the overlap only sets the divisor of the
                     pre-training whole-image feature (``whole_image_feature``). VOLTA does the same.
  ``"vilbert_beta"`` jiasenlu/vilbert_beta: the same 90/10 draw, no IoU logic (the divisor is the number
                     of real regions).
  ``"vl_bert"``      VL-BERT: 15 % targets; 90 % replaced by the model's masked-region input (``masked``),
                     10 % kept; the features handed to the model are unchanged (the model swaps them).
  ``"uniter"``       UNITER: 15 % targets, features zeroed and flagged for the mask embedding; at least
                     one region per image (a random real one when the draw picks none).
  ``"unimo"``        UNIMO: the ViLBERT draw, and every region whose IoU with a target exceeds
                     ``overlap_iou`` (its ``overlap_ratio``) is zeroed too, so overlapping boxes cannot leak the
                     masked content; only the targets are scored.
  ``"zero"``         15 % targets, features zeroed and flagged (Unicoder-VL; no code released).
* image-text match: with probability 0.5 the caption is replaced by one of another image (or, UNITER,
  the image by another image: ``negative="image"`` in ``PretrainingDataset``). Whether the MLM / region
  targets of a mismatched pair are scored is the paper's choice (see
  ``mmbert.objectives.pretraining.RECIPES``); ``drop_targets_for_mismatch`` removes them.
* NSP (text-only BERT): 50 % the true next sentence, 50 % a sentence of another document.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

IGNORE = -100
REGION_RULES = ("lxmert", "vilbert", "vilbert_beta", "vl_bert", "uniter", "unimo", "zero")
SPECIAL_TOKENS = frozenset({"[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]"})


def example_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator seeded from (seed, epoch, index) through numpy's SeedSequence (well mixed, and the
    same in every process, unlike Python's salted ``hash``)."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(index)]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))


# --------------------------------------------------------------------------------------- tokens ---
def word_ids_from_tokens(tokens: Sequence[str]) -> list[int | None]:
    """Word index of each WordPiece token ('##' continues the previous word); None for special tokens."""
    out: list[int | None] = []
    word = -1
    for tok in tokens:
        if tok in SPECIAL_TOKENS:
            out.append(None)
            continue
        if not (tok.startswith("##") and word >= 0):
            word += 1
        out.append(word)
    return out


def mask_tokens(
    ids: Tensor,
    maskable: Tensor,
    mask_id: int,
    vocab_size: int,
    generator: torch.Generator,
    prob: float = 0.15,
    word_ids: Tensor | Sequence[int | None] | None = None,
    word_action: bool = False,
    force_one: bool = False,
    random_range: tuple[int, int] | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT's masked-LM corruption.

    ids (T,) or (B, T) integer; maskable bool, same shape (False for [CLS], [SEP], padding).
    ``word_ids`` (same shape; None or negative = not part of a word) switches on whole-word masking:
    the target draw is made once per word and applies to all of its pieces; ``word_action`` also makes
    the 80/10/10 choice once per word (VL-BERT's ``random_word_wwm``, pretrain/data/datasets/
    conceptual_captions.py). ``force_one``: a row with no target masks its first maskable token
    (UNITER data/mlm.py ``random_word``: "at least mask 1"). ``random_range`` (lo, hi): random
    replacements are drawn from ids lo..hi-1 (UNITER's ``v_range``), default the whole vocabulary.
    Returns (corrupted ids, labels): labels hold the original id at targets and -100 elsewhere.
    """
    if ids.shape != maskable.shape:
        raise ValueError(f"maskable has shape {tuple(maskable.shape)} but ids {tuple(ids.shape)}")
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"mask probability must be in [0, 1], got {prob}")
    lo, hi = (0, vocab_size) if random_range is None else random_range
    if not 0 <= lo < hi <= vocab_size:
        raise ValueError(f"random_range {random_range} must lie within the vocabulary 0..{vocab_size}")
    flat_ids, flat_ok = ids.reshape(-1), maskable.reshape(-1).bool()
    n = flat_ids.numel()
    width = ids.shape[-1] if ids.dim() else 1
    if word_ids is None:
        groups = torch.arange(n)
    else:
        words = _as_word_tensor(word_ids, ids.shape).reshape(-1)
        row = torch.arange(n) // width
        span = int(words.max().item()) + 2 if n else 1
        # one group per (row, word); tokens outside words get a unique group of their own
        groups = torch.where(words >= 0, row * span + words, -1 - torch.arange(n))
    _, inverse = torch.unique(groups, return_inverse=True)
    chosen = (torch.rand(int(inverse.max().item()) + 1 if n else 0, generator=generator)[inverse] < prob) & flat_ok
    action = torch.rand(n, generator=generator)
    random_ids = torch.randint(lo, hi, (n,), generator=generator, dtype=flat_ids.dtype)
    if word_action and word_ids is not None and n:
        first = torch.full((int(inverse.max()) + 1,), n, dtype=torch.long).scatter_reduce(
            0, inverse, torch.arange(n), "amin"
        )
        action = action[first[inverse]]  # every piece of a word takes its first piece's draw
    forced = torch.zeros(n, dtype=torch.bool)
    if force_one and n:
        rows_ok, rows_chosen = flat_ok.view(-1, width), chosen.view(-1, width)
        empty = rows_ok.any(1) & ~rows_chosen.any(1)
        first_ok = rows_ok.float().argmax(1)
        forced.view(-1, width)[empty.nonzero().squeeze(1), first_ok[empty]] = True
        chosen = chosen | forced
    out = flat_ids.clone()
    out[chosen & ((action < 0.8) | forced)] = mask_id
    replace = chosen & ~forced & (action >= 0.8) & (action < 0.9)
    out[replace] = random_ids[replace]
    labels = torch.where(chosen, flat_ids, torch.full_like(flat_ids, IGNORE))
    return out.view_as(ids), labels.view_as(ids)


def span_groups(
    length: int, generator: torch.Generator, geometric_p: float = 0.2, max_span: int = 10
) -> list[int]:
    """Cut positions 0..length-1 into consecutive spans, lengths ~ Geometric(p) clipped to ``max_span``
    (SpanBERT's distribution, mean 3.8): span index per position. Passed to ``mask_tokens`` as
    ``word_ids`` it masks whole spans (UNIMO's span masking; the paper does not give the distribution)."""
    if not 0.0 < geometric_p <= 1.0 or max_span < 1:
        raise ValueError(f"span masking needs 0 < geometric_p <= 1 and max_span >= 1, got {geometric_p}, {max_span}")
    out: list[int] = []
    span = 0
    while len(out) < length:
        u = float(torch.rand((), generator=generator))
        n = min(max_span, 1 + int(np.floor(np.log1p(-u) / np.log1p(-geometric_p))) if geometric_p < 1 else 1)
        out += [span] * n
        span += 1
    return out[:length]


def _as_word_tensor(word_ids: Tensor | Sequence, shape: torch.Size) -> Tensor:
    if isinstance(word_ids, Tensor):
        words = word_ids.long()
    else:
        rows = word_ids if len(shape) == 2 else [word_ids]
        words = torch.tensor([[-1 if w is None else int(w) for w in r] for r in rows], dtype=torch.long)
    words = words.reshape(shape)
    return words


# -------------------------------------------------------------------------------------- regions ---
@dataclass
class MaskedRegions:
    """feats (R, F) the corrupted input; targets bool (R,) scored by region objectives; masked bool (R,)
    whose input was replaced (for models with a masked-region embedding); overlap bool (R,) or None:
    regions whose IoU with a target exceeds the threshold, targets included ("vilbert" only)."""

    feats: Tensor
    targets: Tensor
    masked: Tensor
    overlap: Tensor | None = None


def box_iou(a: Tensor, b: Tensor, plus_one: bool = False) -> Tensor:
    """IoU of (N, 4) and (M, 4) boxes (x1, y1, x2, y2) -> (N, M); empty boxes give 0, not NaN.
    ``plus_one``: pixel boxes with the inclusive "+1" width convention (vilbert-multi-task's ``iou`` in
    vilbert/datasets/concept_cap_dataset.py, on the detector's pixel boxes)."""
    one = 1.0 if plus_one else 0.0
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt + one).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2] + one).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2] + one).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def mask_regions(
    feats: Tensor,
    generator: torch.Generator,
    rule: str,
    real: Tensor | None = None,
    prob: float = 0.15,
    boxes: Tensor | None = None,
    random_pool: Tensor | Callable[[], Tensor] | None = None,
    overlap_iou: float = 0.4,
    pixel_boxes: bool = True,
) -> MaskedRegions:
    """Mask one image's regions (feats (R, F); ``real`` bool (R,), default all) by a paper's ``rule``.

    ``boxes`` (R, 4) is needed by "vilbert" (overlaps; ``pixel_boxes``: in pixels, IoU with the +1
    convention as the authors compute it). ``random_pool`` (N, F) — or a function giving it, called only
    if needed — supplies LXMERT's random replacement features (in LXMERT, a feature of a random image);
    without one, a random real region of the same image is used.
    """
    if rule not in REGION_RULES:
        raise ValueError(f"unknown region masking rule {rule!r}; choose from {REGION_RULES}")
    r = feats.shape[0]
    real = torch.ones(r, dtype=torch.bool) if real is None else real.bool()
    chosen = (torch.rand(r, generator=generator) < prob) & real
    action = torch.rand(r, generator=generator)
    out = feats.clone()
    if rule in ("zero", "uniter"):
        # UNITER data/mrm.py _get_img_mask: "at least mask 1", a random one
        if rule == "uniter" and not bool(chosen.any()) and bool(real.any()):
            candidates = real.nonzero().squeeze(1)
            chosen[candidates[int(torch.randint(0, candidates.numel(), (), generator=generator))]] = True
        out[chosen] = 0.0
        return MaskedRegions(out, chosen, chosen.clone())
    if rule == "lxmert":
        zero = chosen & (action < 0.8)
        swap = chosen & (action >= 0.8) & (action < 0.9)
        out[zero] = 0.0
        if bool(swap.any()):
            pool = random_pool() if callable(random_pool) else random_pool
            if pool is None or pool.shape[0] == 0:
                pool = feats[real]
            pick = torch.randint(0, pool.shape[0], (int(swap.sum()),), generator=generator)
            out[swap] = pool[pick].to(out.dtype)
        return MaskedRegions(out, chosen, zero | swap)
    replaced = chosen & (action < 0.9)
    if rule == "vl_bert":  # pretrain/data/datasets/conceptual_captions.py random_mask_region: ops 1 / 0
        return MaskedRegions(out, chosen, replaced)
    out[replaced] = 0.0  # vilbert/datasets/concept_cap_dataset.py random_region (both repositories)
    if rule == "vilbert_beta":
        return MaskedRegions(out, chosen, replaced, torch.zeros_like(chosen))
    if boxes is None:
        raise ValueError(f"the {rule!r} region masking rule needs the region boxes (overlaps with IoU > {overlap_iou})")
    overlap = (box_iou(boxes, boxes, plus_one=pixel_boxes)[chosen] > overlap_iou).any(0) & real
    if rule == "unimo":
        zeroed = replaced | overlap
        out[zeroed] = 0.0
        return MaskedRegions(out, chosen, zeroed, overlap)
    return MaskedRegions(out, chosen, replaced, overlap)


def whole_image_feature(feats: Tensor, real: Tensor, overlap: Tensor | None) -> Tensor:
    """ViLBERT's pre-training whole-image feature: the sum of the (masked) region features divided by the
    number of real regions that overlap no target (vilbert-multi-task ConceptCapLoaderTrain:
    ``sum(image_feat) / sum(masked_label == 0)``, at least 1). feats (..., R, F), real / overlap (..., R).
    Its fine-tuning readers (and mmbert's models by default) use the plain mean of the real regions."""
    keep = real if overlap is None else real & ~overlap
    total = (feats * real[..., None].to(feats.dtype)).sum(-2)
    return total / keep.sum(-1, keepdim=True).clamp(min=1).to(feats.dtype)


# ---------------------------------------------------------------------------------------- pairs ---
def choose_mismatch(
    index: int, image_ids: Sequence[str], generator: torch.Generator, prob: float = 0.5
) -> int | None:
    """With probability ``prob`` the index of a caption of a *different* image, else None (keep the
    matching caption). Raises when every caption describes the same image (no negative exists)."""
    if float(torch.rand((), generator=generator)) >= prob:
        return None
    n = len(image_ids)
    own = image_ids[index]
    for _ in range(16):  # rejection sampling: almost always the first draw
        j = int(torch.randint(0, n, (), generator=generator))
        if image_ids[j] != own:
            return j
    others = [j for j in range(n) if image_ids[j] != own]
    if not others:
        raise ValueError("image-text matching needs captions of at least two different images")
    return others[int(torch.randint(0, len(others), (), generator=generator))]


def drop_targets_for_mismatch(labels: Tensor, matches: bool) -> Tensor:
    """MLM labels (or a region target mask) with every target removed for a mismatched pair: the
    corruption stays (so it cannot reveal the pair label) but the loss is taken on matching pairs only."""
    if matches:
        return labels
    return torch.zeros_like(labels) if labels.dtype == torch.bool else torch.full_like(labels, IGNORE)


def choose_next_sentence(
    documents: Sequence[Sequence[str]], doc: int, sent: int, generator: torch.Generator, prob: float = 0.5
) -> tuple[str, int]:
    """BERT's NSP pair for sentence ``sent`` of document ``doc``: (second sentence, label), label 1 = the
    true next sentence, 0 = a random sentence of another document (always 0 after a document's last one)."""
    is_last = sent + 1 >= len(documents[doc])
    if not is_last and float(torch.rand((), generator=generator)) >= prob:
        return documents[doc][sent + 1], 1
    others = [d for d in range(len(documents)) if d != doc and len(documents[d]) > 0]
    if not others:
        raise ValueError("next-sentence prediction needs at least two non-empty documents")
    d = others[int(torch.randint(0, len(others), (), generator=generator))]
    s = int(torch.randint(0, len(documents[d]), (), generator=generator))
    return documents[d][s], 0
