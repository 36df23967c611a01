"""VL-BERT: Pre-training of Generic Visual-Linguistic Representations (Su et al. 2020, arXiv:1908.08530).

Architecture (jackroos/VL-BERT common/visual_linguistic_bert.py, common/fast_rcnn.py): every input
element is the sum of four embeddings — token, visual feature, segment, sequence position — then one
LayerNorm and dropout, then 12 shared post-LN Transformer layers and a tanh pooler on [CLS].
* Sequence: [text tokens ; regions ; [END]]. Text tokens use WordPiece embeddings, every region the
  learned [IMG] token embedding (a masked region: its own learned token), [END] its own embedding.
* Visual feature embedding of a region: ``ReLU(Linear(Dropout([geometry ; appearance])))`` with the
  sinusoidal geometry of the box (4 x 2 x ``geometry_dim`` values) and the RoI feature (a masked region's
  feature is replaced by a learned vector, initialised to 0), then a LayerNorm whose gain starts at
  ``visual_scale_init`` (0 in the paper's configs). Text tokens get the WHOLE-IMAGE feature embedding
  through their own LayerNorm; [END] gets none.
* Segment: the text's A/B types, type 2 for regions and [END] (``type_vocab_size`` 3).
* Position: text 0..n-1 over the n real tokens; all regions share position n; [END] is at n + 1.
Pre-training heads: masked LM with visual clues (tied) and masked RoI classification over the detector's
1601 classes, whose transform is ``gelu(dense)`` with no LayerNorm (the authors' ``mvrc_head``); the
paper dropped sentence-image relation prediction, so there is no match head.

Inputs and deviations. Masked regions (MVRC) are signalled by the optional ``region_masked`` (B, R) bool
input. The whole-image feature is the mean of the real, unmasked regions (the precomputed-feature loaders of
the authors and VOLTA); its box is [0, 0, 1, 1], or, when the optional ``image_size`` (B, 2: height,
width in pixels) input is given, the authors' pixel box [0, 0, w-1, h-1], i.e. ((w-1)/w, (h-1)/h) as
its far corner, with the region boxes clamped to w-1 / h-1 as their loader clamps them. ``global_region``
says where it also sits among the regions ("first", as the original data put the image box first;
VOLTA's VL-BERT uses "last").
The original concatenates without padding; we keep text padding in place and mask it (same outputs), so
``Encoded.vision`` is [regions (with the global one) ; [END]] and ``vision_mask`` marks the input regions.
Initialising from BERT copies words, positions, the LayerNorm and BERT's two segment rows into the first
two of the 3-type table (the image type stays new), as the original's ``load_language_pretrained_model``.

VOLTA's controlled VL-BERT (e-bug/volta volta/embeddings.py ``VLBertEmbeddings``, config/ctrl_vl-
bert_base.json; preset ``ctrl_vl_bert``) is ``embeddings="volta"``: the vision slots are [whole image (first)
; regions], with no [END] element of its own: the LAST vision slot carries [END]'s token embedding (the others
[IMG]) at position n + 1 (the others at n), and ITS visual feature embedding is the one every text token gets
(a region, or a padding slot, where the original uses the whole image); a masked region keeps [IMG] (VOLTA
builds no masked-region token for its KL target) and any all-zero feature row (a padding slot, a region the
loader zeroed) takes the masked-region feature, as VOLTA detects masking by zero features. VOLTA's loaders pad
every image to a fixed count (max_region_num + the whole image), so which slot is last and the shift below
come from that count, not from the batch: ``forward_volta`` pads the slots to ``volta_region_slots`` (default
37: pre-training's 36 boxes + 1; zero features, key mask False; more slots are refused) and ``Encoded.vision``
has that many; the box geometry is on normalised boxes (no pixel box, no ``image_size``); there is no text-
only stream. With it come VOLTA's fused ReLU pooler (``pooling="volta"``) and a matching head on it (dropout
0.1, as VOLTA's ``BertPreTrainingHeads``). ``volta_position_shift=True`` (off by default; the VOLTA loader
sets it and reports it) reproduces VOLTA's text positions: it shifts the positions at or past the text end by
the number of vision slots (``volta_region_slots``) in place on an expanded ``arange``, whose rows share
memory, so in a batch of mixed text lengths every row's positions from the SHORTEST text length on are
shifted, real tokens of the longer texts included. mmbert's own positions (0..T-1 for every row) are right;
the option exists only to reproduce VOLTA's checkpoints exactly on the batches they were trained and evaluated
with.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmbert.config import GlobalRegion, ModelConfig, check_global_region
from mmbert.data.boxes import add_global_region, sinusoidal_box_embedding
from mmbert.models.base import TINY_REGION_FEAT_DIM, TINY_SIZES, ModelInputs
from mmbert.models.heads import PretrainingHeads
from mmbert.models.single_stream import SingleStreamModel
from mmbert.nn import RegionHeads, TextEmbeddings

IMAGE_SEGMENT = 2
# VOLTA's pre-training loader (volta/datasets/concept_cap_dataset.py) pads every image to 36 boxes
# (region_len) and puts the whole-image region in front: 37 vision slots
VOLTA_PRETRAINING_SLOTS = 37


@dataclass
class VLBertConfig(ModelConfig):
    model_type = "vl_bert"

    type_vocab_size: int = 3  # text A, text B, image
    region_feat_dim: int = 2048
    geometry_dim: int = 256  # sinusoidal box embedding: 4 coordinates x (sin, cos) x geometry_dim
    visual_dim: int = 768  # output of the visual feature embedding (`obj_downsample`); projected if != dim
    visual_scale_init: float = 0.0  # initial gain of the visual LayerNorms (VISUAL_SCALE_*_INIT)
    num_region_classes: int = 1601  # MVRC targets: the detector's class distribution
    global_region: GlobalRegion = "first"
    # False as in the authors' pre-training configs (VLBERT.with_pooler): no pooler; pooled = [CLS]'s state
    with_pooler: bool = True
    # VOLTA's controlled VL-BERT (see the module docstring), all off by default:
    embeddings: str = "vl_bert"  # "volta": VOLTA's VLBertEmbeddings (last vision slot = [END], ...)
    volta_position_shift: bool = False  # VOLTA's text positions from the batch's shortest text on (+ slots)
    # the vision slots VOLTA's loader pads every image to (max_region_num + the whole image): embeddings="volta"
    # pads to it, so the last slot and the shift do not depend on the batch's longest image
    volta_region_slots: int = VOLTA_PRETRAINING_SLOTS
    pooling: str = "cls"  # "volta": ReLU(Linear([CLS])) * ReLU(Linear(whole image)), pooled_dim wide
    pooled_dim: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_global_region(self)
        if self.embeddings not in ("vl_bert", "volta"):
            raise ValueError(f"VLBertConfig.embeddings must be 'vl_bert' or 'volta', got {self.embeddings!r}")
        if self.volta_position_shift and self.embeddings != "volta":
            raise ValueError("VLBertConfig.volta_position_shift reproduces VOLTA's embeddings: embeddings='volta'")
        if self.pooling not in ("cls", "volta"):
            raise ValueError(f"VLBertConfig.pooling must be 'cls' or 'volta', got {self.pooling!r}")
        if self.type_vocab_size < 3:
            raise ValueError("VLBertConfig.type_vocab_size must be >= 3 (regions use segment type 2)")
        self.check_positive("region_feat_dim", "geometry_dim", "visual_dim", "num_region_classes", "volta_region_slots")


def check_image_size(image_size: Tensor, batch: int) -> None:
    if image_size.shape != (batch, 2):
        raise ValueError(
            f"image_size must be (batch, 2) = (height, width), got shape {tuple(image_size.shape)}"
        )
    if bool((image_size <= 1).any()):
        i = int((image_size <= 1).any(1).nonzero()[0])
        raise ValueError(f"image_size[{i}] = {image_size[i].tolist()} is not a (height, width) in pixels")


def pixel_convention_boxes(boxes: Tensor, image_size: Tensor) -> Tensor:
    """The authors' pixel convention on normalised boxes (B, N, 4) whose last one is the whole image:
    VL-BERT's loader adds the image as [0, 0, w-1, h-1] and clamps every box to x <= w-1, y <= h-1, so
    in normalised form the far corner is (w-1)/w, (h-1)/h."""
    h, w = image_size[:, 0].to(boxes.dtype), image_size[:, 1].to(boxes.dtype)
    far = torch.stack([(w - 1) / w, (h - 1) / h, (w - 1) / w, (h - 1) / h], -1)[:, None]  # (B, 1, 4)
    boxes = torch.minimum(boxes, far)
    whole = torch.cat([torch.zeros_like(far[..., :2]), far[..., 2:]], -1)
    return torch.cat([boxes[:, :-1], whole], 1)


def pad_slots(slots: tuple[Tensor, ...], n: int) -> tuple[Tensor, ...]:
    """VOLTA's vision slots (feats, boxes, mask, masked or None; whole image placed) padded to ``n`` slots
    with zero features and boxes, mask False, as its loaders pad to max_region_num; more is refused."""
    feats = slots[0]
    have = feats.shape[1]
    if have > n:
        raise ValueError(
            f"VOLTA's VL-BERT: {have} vision slots (regions + the whole image) exceed volta_region_slots = {n} "
            "(VOLTA's max_region_num + 1); pass fewer regions or a model with more slots"
        )
    if have == n:
        return slots
    return tuple(None if s is None else F.pad(s, (0, 0) * (s.dim() - 2) + (0, n - have)) for s in slots)


class VLBertEmbeddings(nn.Module):
    """The four-way sum over [text ; regions ; [END]], then ``text.norm`` (one LayerNorm for all); VOLTA's
    form (``embeddings="volta"``) in ``forward_volta``."""

    def __init__(self, c: VLBertConfig) -> None:
        super().__init__()
        self.text = TextEmbeddings.from_config(c)
        self.geometry_dim = c.geometry_dim
        self.region_proj = nn.Linear(8 * c.geometry_dim + c.region_feat_dim, c.visual_dim)  # `obj_downsample`
        self.visual_text_proj = nn.Linear(c.visual_dim, c.dim) if c.visual_dim != c.dim else None
        self.visual_object_proj = nn.Linear(c.visual_dim, c.dim) if c.visual_dim != c.dim else None
        self.visual_text_norm = nn.LayerNorm(c.dim, eps=c.layer_norm_eps)
        self.visual_object_norm = nn.LayerNorm(c.dim, eps=c.layer_norm_eps)
        volta = c.embeddings == "volta"  # VOLTA has no masked-region token and no text-only stream
        self.image_token = nn.Parameter(torch.zeros(c.dim))  # [IMG]
        # token embedding of a masked region
        self.masked_token = None if volta else nn.Parameter(torch.zeros(c.dim))
        self.masked_feature = nn.Parameter(torch.zeros(c.region_feat_dim))  # its appearance feature
        self.end_token = nn.Parameter(torch.zeros(c.dim))  # [END]
        # the visual feature embedding of text-only examples (the authors' ``aux_text_visual_embedding``)
        self.text_only_visual = None if volta else nn.Parameter(torch.zeros(c.visual_dim))
        self.position_shift = c.volta_position_shift
        self.region_slots = c.volta_region_slots
        self.dropout = c.dropout

    def visual(self, feats: Tensor, boxes: Tensor) -> Tensor:
        """(B, N, F), (B, N, 4) -> visual feature embeddings before the LayerNorms (B, N, visual_dim)."""
        geometry = sinusoidal_box_embedding(boxes, self.geometry_dim).to(feats.dtype)
        x = torch.cat([geometry, feats], dim=-1)
        return F.relu(self.region_proj(F.dropout(x, self.dropout, self.training)))

    def forward(
        self,
        text_ids: Tensor,
        text_mask: Tensor,
        segment_ids: Tensor | None,
        feats: Tensor,
        boxes: Tensor,
        region_mask: Tensor,
        masked: Tensor | None,
        global_region: GlobalRegion,
        image_size: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Returns the joint embeddings (B, T + R' + 1, D) and their key mask."""
        b, r, _ = feats.shape
        # The whole-image region: mean of the real regions that are not masked (no peeking at masked ones).
        mean_mask = region_mask if masked is None else region_mask & ~masked
        feats_all, boxes_all, _ = add_global_region(feats, boxes, mean_mask, "last")  # (B, R + 1, ...)
        if image_size is not None:
            boxes_all = pixel_convention_boxes(boxes_all, image_size)
        if masked is not None:
            regions = torch.where(masked[..., None], self.masked_feature.to(feats.dtype), feats_all[:, :r])
            feats_all = torch.cat([regions, feats_all[:, r:]], 1)
        reps = self.visual(feats_all, boxes_all)
        whole, reps = reps[:, r:], reps[:, :r]  # (B, 1, V), (B, R, V)

        token = self.image_token.expand(b, r, -1)
        if masked is not None and self.masked_token is not None:
            token = torch.where(masked[..., None], self.masked_token, token)
        real = torch.ones(b, 1, dtype=torch.bool, device=feats.device)
        img = self.image_token.expand(b, 1, -1)
        if global_region == "first":
            reps, token, region_mask = (
                torch.cat([whole, reps], 1),
                torch.cat([img, token], 1),
                torch.cat([real, region_mask], 1),
            )
        elif global_region == "last":
            reps, token, region_mask = (
                torch.cat([reps, whole], 1),
                torch.cat([token, img], 1),
                torch.cat([region_mask, real], 1),
            )

        text_visual, region_visual = self.visual_norms(whole, reps)  # (B, 1, D), (B, R', D)

        n_text = text_mask.sum(1, keepdim=True)  # (B, 1): regions at position n, [END] at n + 1
        position = self.text.position
        image_segment = self.text.segment.weight[IMAGE_SEGMENT]
        text = self.text.summed(text_ids, segment_ids) + text_visual
        regions = token + region_visual + position(n_text) + image_segment
        end = self.end_token + position(n_text + 1) + image_segment  # (B, 1, D)
        joint = torch.cat([text, regions, end], 1)
        joint = F.dropout(self.text.norm(joint), self.dropout, self.training)
        return joint, torch.cat([text_mask, region_mask, real], 1)

    def visual_norms(self, text_visual: Tensor, region_visual: Tensor) -> tuple[Tensor, Tensor]:
        """The text tokens' and the vision elements' visual feature embeddings: projected to ``dim`` where
        ``visual_dim`` differs, then their own LayerNorms."""

        def project(proj: nn.Linear | None, x: Tensor) -> Tensor:
            return proj(x) if proj is not None else x

        return (
            self.visual_text_norm(project(self.visual_text_proj, text_visual)),
            self.visual_object_norm(project(self.visual_object_proj, region_visual)),
        )

    def forward_volta(
        self, text_ids: Tensor, text_mask: Tensor, segment_ids: Tensor | None, slots: tuple[Tensor, ...]
    ) -> tuple[Tensor, Tensor]:
        """VOLTA's VLBertEmbeddings (the module docstring): the joint embeddings (B, T + N, D) over [text ;
        N = ``volta_region_slots`` vision slots] and their key mask. ``slots``: feats (B, S, F), boxes
        (B, S, 4), mask (B, S) with the whole-image region placed, and the masked ones (B, S) or None; padded
        to N slots (zero features, mask False) as VOLTA's loaders pad, so the last slot and the shift are
        the same in every batch."""
        b, t = text_ids.shape
        feats, boxes, mask, masked = pad_slots(slots, self.region_slots)
        blank = (feats == 0).all(-1)  # VOLTA's masked-region signal: an all-zero feature row
        if masked is not None:
            blank = blank | masked
        feats = torch.where(blank[..., None], self.masked_feature.to(feats.dtype), feats)
        reps = self.visual(feats, boxes)  # (B, N, V)
        n = reps.shape[1]
        text_visual, region_visual = self.visual_norms(reps[:, -1:], reps)  # text tokens see the LAST slot
        token = torch.cat([self.image_token.expand(b, n - 1, -1), self.end_token.expand(b, 1, -1)], 1)
        n_text = text_mask.sum(1, keepdim=True)  # (B, 1)
        positions = torch.arange(t, device=text_ids.device).expand(b, t)
        if self.position_shift and t:  # VOLTA: every row shifted from the batch's shortest text on
            positions = positions + n * (positions >= n_text.min()).long()
        top = int(max(positions.max() if t else 0, n_text.max() + 1))
        if top >= self.text.position.num_embeddings:
            raise ValueError(
                f"VOLTA's VL-BERT needs position {top} ({t} tokens, {n} vision slots), the model has "
                f"{self.text.position.num_embeddings}"
            )
        slot_positions = n_text + (torch.arange(n, device=text_ids.device) == n - 1).long()  # (B, N)
        text = self.text.summed(text_ids, segment_ids, positions) + text_visual
        vision = token + region_visual + self.text.position(slot_positions) + self.text.segment.weight[IMAGE_SEGMENT]
        joint = F.dropout(self.text.norm(torch.cat([text, vision], 1)), self.dropout, self.training)
        return joint, torch.cat([text_mask, mask], 1)

    def text_only(self, text_ids: Tensor, text_mask: Tensor, segment_ids: Tensor | None) -> tuple[Tensor, Tensor]:
        """[text ; [END]] for a text-only example (the general-corpus stream): the text's visual feature
        embedding is ``text_only_visual``, there are no regions, [END] sits at position n + 1
        (pretrain/modules/resnet_vlbert_for_pretraining_multitask.py: ``aux_text_visual_embedding``,
        ``box_mask`` all False for the auxiliary rows)."""
        if self.text_only_visual is None:
            raise ValueError("VOLTA's VL-BERT (embeddings='volta') has no text-only input: pass regions")
        proj = self.visual_text_proj
        visual = self.text_only_visual.to(self.end_token.dtype)
        text_visual = self.visual_text_norm(proj(visual) if proj is not None else visual)  # (D,)
        n_text = text_mask.sum(1, keepdim=True)
        end = self.end_token + self.text.position(n_text + 1) + self.text.segment.weight[IMAGE_SEGMENT]
        joint = torch.cat([self.text.summed(text_ids, segment_ids) + text_visual, end], 1)
        joint = F.dropout(self.text.norm(joint), self.dropout, self.training)
        return joint, torch.cat([text_mask, torch.ones_like(text_mask[:, :1])], 1)


class VLBert(SingleStreamModel[VLBertConfig]):
    embeddings_class = VLBertEmbeddings
    masked_region_input = True
    takes_image_size = True  # the optional (B, 2) pixel size: the authors' whole-image box and clamping
    text_only_input = True  # forward without regions: a text-only example (the general-corpus stream)
    num_trailing_elements = 1  # [END]
    # regions sit at position n after n real tokens: a task that grows the text step by step (captioning)
    # keeps the text at a fixed length so the regions' embeddings do not move between steps
    region_position_follows_text = True

    def __init__(self, config: VLBertConfig) -> None:
        super().__init__(config)
        if config.embeddings == "volta":  # [END] rides on the last vision slot; boxes stay normalised
            self.num_trailing_elements = 0
            self.takes_image_size = False
            self.text_only_input = False
        e = self.embeddings
        with torch.no_grad():
            for p in (e.image_token, e.masked_token, e.end_token, e.text_only_visual):
                if p is not None:
                    nn.init.normal_(p, 0.0, config.init_std)
            e.masked_feature.zero_()  # as the original: the masked-region feature starts at 0
            e.visual_text_norm.weight.fill_(config.visual_scale_init)
            e.visual_object_norm.weight.fill_(config.visual_scale_init)

    def embed_text_only(self, text_ids: Tensor, text_mask: Tensor, segment_ids: Tensor | None) -> tuple[Tensor, Tensor]:
        """A text-only example, the general-corpus stream of VL-BERT's pre-training: ``Encoded.vision`` is
        then [END]."""
        return self.embeddings.text_only(text_ids, text_mask, segment_ids)

    def embed(
        self,
        x: ModelInputs,
        region_masked: Tensor | None = None,
        image_size: Tensor | None = None,
        global_feats: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        if self.config.embeddings == "volta":
            if image_size is not None:
                raise ValueError("VOLTA's VL-BERT (embeddings='volta') takes normalised boxes only, no image_size")
            slots = self.with_global_region(x.region_feats, x.region_boxes, x.region_mask, global_feats)
            masked = self.align_to_global(region_masked, False)
            return self.embeddings.forward_volta(x.text_ids, x.text_mask, x.segment_ids, (*slots, masked))
        if global_feats is not None:
            raise ValueError("global_feats: VL-BERT computes its whole-image feature itself (embeddings='vl_bert')")
        text_mask = x.text_mask
        longest = int(text_mask.sum(1).max()) if text_mask.numel() else 0
        if longest + 2 > self.config.max_positions:
            raise ValueError(
                f"VL-BERT puts regions at position n and [END] at n + 1 after n real tokens: {longest} tokens need "
                f"{longest + 2} positions, the model has {self.config.max_positions}"
            )
        return self.embeddings(
            x.text_ids,
            text_mask,
            x.segment_ids,
            x.region_feats,
            x.region_boxes,
            x.region_mask,
            region_masked,
            self.config.global_region,
            image_size,
        )

    def vision_mask(self, inputs: dict[str, Tensor]) -> Tensor:
        """As the base class; with VOLTA's embeddings padded (False) to the ``volta_region_slots`` slots that
        ``Encoded.vision`` then has."""
        mask = super().vision_mask(inputs)
        if self.config.embeddings != "volta":
            return mask
        return F.pad(mask, (0, max(self.config.volta_region_slots - mask.shape[1], 0)))

    def check_extra_inputs(self, region_feats: Tensor, image_size: Tensor | None = None, **extra) -> None:
        super().check_extra_inputs(region_feats, **extra)
        if image_size is not None:
            check_image_size(image_size, region_feats.shape[0])

    def build_pretraining_heads(self) -> PretrainingHeads:
        """Masked LM (with visual clues) and masked RoI classification; no match head (the paper found
        sentence-image relation prediction unhelpful). VOLTA's pooler (``pooling="volta"``) comes with
        VOLTA's matching head on the fused vector (dropout 0.1 before it)."""
        c = self.config
        return self.tied_heads(
            pair=self.match_head() if c.pooling == "volta" else None,
            region=RegionHeads(c.dim, {"class": c.num_region_classes}, c.layer_norm_eps, norm=False),
        )

    def text_init_map(self, num_bert_layers: int) -> list[tuple[str, str]]:
        # The segment table has 3 types here and 2 in BERT: ``init_rows_from_bert`` copies its rows.
        text = [(f"embeddings.text.{part}", f"embeddings.{part}") for part in ("word", "position", "norm")]
        return text + super().text_init_map(num_bert_layers)[1:]

    def init_rows_from_bert(self, bert_state: dict[str, Tensor]) -> list[str]:
        """BERT's segment rows into the first rows of the 3-type table; the image type (row 2) stays new
        (common/visual_linguistic_bert.py ``load_language_pretrained_model``:
        ``token_type_embeddings.weight.data[:v.size(0)] = v``)."""
        rows = bert_state["embeddings.segment.weight"]
        table = self.embeddings.text.segment.weight
        if rows.shape[1] != table.shape[1] or rows.shape[0] > table.shape[0]:
            raise ValueError(f"BERT's segment table {tuple(rows.shape)} does not fit VL-BERT's {tuple(table.shape)}")
        table[: rows.shape[0]] = rows.to(table.dtype)
        return ["embeddings.text.segment.weight"]

    def layer_plan(self) -> list[str]:
        c = self.config
        return [
            f"embeddings.text: word {c.vocab_size}x{c.dim} + position {c.max_positions} (regions share one) + "
            f"segment {c.type_vocab_size} (2 = image)",
            f"embeddings.region_proj: ReLU(Linear(8*{c.geometry_dim} geometry + {c.region_feat_dim} feature, "
            f"{c.visual_dim})), LayerNorms for text (whole image) and regions",
            f"embeddings: [IMG] / masked-region / [END] tokens; global region: {c.global_region}"
            if c.embeddings == "vl_bert"
            else f"embeddings (VOLTA's): [IMG] tokens, [END] on the last vision slot, whose visual embedding the text "
            f"tokens get; global region: {c.global_region}; volta_position_shift={c.volta_position_shift}",
            "embeddings.text.norm: one LayerNorm over [text ; regions ; [END]]"
            if c.embeddings == "vl_bert"
            else "embeddings.text.norm: one LayerNorm over [text ; vision slots]",
            *self.block_plan(),
        ]


def vl_bert_base() -> VLBertConfig:
    """VL-BERT-base: BERT-base sizes, 2048-d RoI features, 256-d sinusoidal geometry, 1601 classes."""
    return VLBertConfig()


def vl_bert_large() -> VLBertConfig:
    """VL-BERT-large (cfgs/pretrain/large_e2e_*): BERT-large sizes (24 x 1024, 16 heads, FFN 4096), visual
    embeddings 1024 wide (IMAGE_FINAL_DIM)."""
    return VLBertConfig(dim=1024, num_heads=16, num_layers=24, ffn_dim=4096, visual_dim=1024)


def ctrl_vl_bert() -> VLBertConfig:
    """VOLTA's controlled VL-BERT (config/ctrl_vl-bert_base.json): BERT-base sizes, 256-d geometry, VOLTA's
    embeddings with the whole-image region first and its text-position shift (``volta_position_shift``),
    the fused ReLU pooler at 1024 and the 1601-class region head without LayerNorm (VOLTA's visual target 0)."""
    return VLBertConfig(
        global_region="first",
        embeddings="volta",
        volta_position_shift=True,
        pooling="volta",
        pooled_dim=1024,
    )


def vl_bert_tiny() -> VLBertConfig:
    """A tiny VL-BERT for tests. Its visual LayerNorm gains start at 0 as in the authors' configs (pre-training
    and VQA): a LayerNorm's output has norm sqrt(dim) at gain 1, which buried every text token's word,
    position and segment sum (norm ~0.3 at N(0, 0.02)) under the one whole-image vector, so the question
    was unreadable and VQA stayed at its prior. The gains learn from the first step either way."""
    return VLBertConfig(
        **TINY_SIZES,
        region_feat_dim=TINY_REGION_FEAT_DIM,
        geometry_dim=4,
        visual_dim=24,
        num_region_classes=11,
    )
