"""What every mmbert model shares: input checks, weight init, parameter counts and saving."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar, get_args

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from mmbert.atomic import atomic_write, atomic_write_json
from mmbert.config import ModelConfig
from mmbert.models.heads import PretrainingHeads
from mmbert.models.outputs import Encoded as Encoded  # re-exported: models and tasks import it from here
from mmbert.nn.block import Block, set_gradient_checkpointing
from mmbert.nn.heads import MLMHead

# The text-side sizes every ``*_tiny`` preset shares (tests, quick experiments): DESIGN.md section 8.
TINY_SIZES: dict[str, int] = dict(
    dim=32, num_heads=2, num_layers=2, ffn_dim=64, vocab_size=100, max_positions=64
)
# ... and the region side of the V&L ones (5 regions of 16-d features in the test inputs).
TINY_REGION_FEAT_DIM = 16


def check_ids(name: str, ids: Tensor, size: int, what: str) -> None:
    """Every id in ``ids`` within ``0..size - 1``; else an error naming the first one outside."""
    bad = (ids < 0) | (ids >= size)
    if bool(bad.any()):
        where = tuple(bad.nonzero()[0].tolist())
        raise ValueError(f"{name}[{where[0]}, {where[1]}] = {int(ids[where])} is outside {what}")


def check_text_inputs(
    config: ModelConfig, text_ids: Tensor | None, text_mask: Tensor | None, segment_ids: Tensor | None
) -> None:
    """Clear errors for the classic input mistakes, before they turn into an index error deep inside."""
    if text_ids is None:
        raise ValueError(f"text_ids (batch, tokens) is required: {config.model_type} takes no image-only input")
    if text_ids.dim() != 2:
        raise ValueError(f"text_ids must be (batch, tokens), got shape {tuple(text_ids.shape)}")
    if text_ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"text_ids must be integer token ids, got dtype {text_ids.dtype}")
    check_ids("text_ids", text_ids, config.vocab_size, f"the vocabulary (size {config.vocab_size})")
    for name, t in (("text_mask", text_mask), ("segment_ids", segment_ids)):
        if t is not None and t.shape != text_ids.shape:
            raise ValueError(
                f"{name} has shape {tuple(t.shape)} but text_ids has shape {tuple(text_ids.shape)}"
            )
    if text_mask is not None and text_mask.dtype != torch.bool:
        raise TypeError(f"text_mask must be boolean (True = real token), got dtype {text_mask.dtype}")
    if segment_ids is not None:
        limit = config.type_vocab_size
        check_ids("segment_ids", segment_ids, limit, f"0..{limit - 1} (type_vocab_size)")


@dataclass
class ScoredRows:
    """The rows of the final states that the losses read (``Objective.reads``): the last layer computes
    its queries, output projection, residuals, norms and FFN only there (keys and values still at every
    real row), an exact saving in pre-training, where the losses read a few rows. Unread rows come out
    as zeros. A model given it (``scored_rows=``) adds the positions its pooler reads when ``pooled``."""

    text: Tensor | None = None  # bool (B, T): text positions read; None: none
    regions: Tensor | None = None  # bool (B, R) over the input regions (not a whole-image region); None: none
    pooled: bool = False  # the pooled output is read

    def union(self, other: ScoredRows) -> ScoredRows:
        """The rows either reads."""

        def either(a: Tensor | None, b: Tensor | None) -> Tensor | None:
            return a if b is None else b if a is None else a | b

        pooled = self.pooled or other.pooled
        return ScoredRows(either(self.text, other.text), either(self.regions, other.regions), pooled)

    def text_rows(self, shape: torch.Size, device: torch.device) -> Tensor:
        """The text positions to keep (B, T): those read, and [CLS] (position 0, every pooler's) if pooled."""
        keep = torch.zeros(shape, dtype=torch.bool, device=device)
        if self.text is not None:
            if self.text.shape != keep.shape:
                raise ValueError(f"scored_rows.text has shape {tuple(self.text.shape)}, the text {tuple(shape)}")
            keep |= self.text
        if self.pooled and keep.shape[1]:
            keep[:, 0] = True
        return keep

    def vision_rows(self, shape: torch.Size, device: torch.device, global_region: str, pools_vision: bool) -> Tensor:
        """The vision elements to keep (B, R'): the regions read, placed after a whole-image region that
        comes first (``global_region``), and the first element if ``pools_vision`` and pooled."""
        keep = torch.zeros(shape, dtype=torch.bool, device=device)
        if self.regions is not None:
            start = 1 if global_region == "first" else 0
            b, r = self.regions.shape
            if b != shape[0] or start + r > shape[1]:
                raise ValueError(f"scored_rows.regions has shape {(b, r)}, more than the {tuple(shape)} "
                                 f"vision elements hold (global region {global_region!r})")  # fmt: skip
            keep[:, start : start + r] = self.regions
        if self.pooled and pools_vision and keep.shape[1]:
            keep[:, 0] = True
        return keep


@dataclass
class ModelInputs:
    """The inputs every model takes (DESIGN.md section 5), as one value: ``EncoderModel.forward`` takes
    them once, with the one public signature, and hands them to the family's ``encode_inputs``."""

    text_ids: Tensor | None  # None: image-only input, which only UNIMO takes
    text_mask: Tensor | None
    segment_ids: Tensor | None
    region_feats: Tensor | None
    region_boxes: Tensor | None
    region_mask: Tensor | None
    scored_rows: ScoredRows | None = None  # None: every row of the last layer is computed

    def has_regions(self) -> bool:
        return self.region_feats is not None or self.region_boxes is not None or self.region_mask is not None


ConfigT = TypeVar("ConfigT", bound=ModelConfig)


class EncoderModel(nn.Module, Generic[ConfigT]):
    """Base class of every model: ``forward(...) -> Encoded``, BERT initialisation, ``save``.

    A model names its config class once, as the type argument (``class Bert(EncoderModel[BertConfig])``):
    that sets ``config_class`` (what loading a saved config builds) and the type of ``config``."""

    config_class: ClassVar[type[ModelConfig]]
    config: ConfigT

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in cls.__dict__.get("__orig_bases__", ()):
            for arg in get_args(base):
                if isinstance(arg, type) and issubclass(arg, ModelConfig):
                    cls.config_class = arg

    # Skip padded tokens / regions in every projection and FFN (the same real outputs, zeros at padding).
    # Off: the plain path that computes every position, as the reference implementations do.
    skip_padding: bool = True
    # Whether forward takes ``scored_rows`` (the families whose last layers can compute only the read rows).
    takes_scored_rows: bool = False

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config

    def forward(
        self,
        text_ids: Tensor | None = None,
        text_mask: Tensor | None = None,
        segment_ids: Tensor | None = None,
        region_feats: Tensor | None = None,
        region_boxes: Tensor | None = None,
        region_mask: Tensor | None = None,
        output_attentions: bool = False,
        scored_rows: ScoredRows | None = None,
        **extra: Any,
    ) -> Encoded:
        """``model(text_ids, text_mask, segment_ids, region_feats, region_boxes, region_mask)`` -> ``Encoded``
        for every model (masks boolean, True = real); ``output_attentions`` adds the attention maps;
        ``scored_rows`` (where ``takes_scored_rows``): the last layer computes only these rows (and the
        pooler's), the others come out as zeros; ``extra``: a model's own inputs (e.g. ``region_masked``),
        refused by name where it has none."""
        if scored_rows is not None:
            if not self.takes_scored_rows:
                raise TypeError(f"{type(self).__name__} takes no scored_rows: it computes every row")
            if output_attentions:
                raise ValueError("output_attentions reads every row: it cannot go with scored_rows")
        inputs = ModelInputs(text_ids, text_mask, segment_ids, region_feats, region_boxes, region_mask, scored_rows)
        return self.encode_inputs(inputs, output_attentions, **extra)

    def run_blocks(
        self,
        layers: Iterable[nn.Module],
        x: Tensor,
        mask: Tensor | None,
        bias: Tensor | None,
        maps: bool,
        keep: Tensor | None = None,
    ) -> tuple[Tensor, list[Tensor]]:
        """``x`` through self-attention ``Block``s under the key ``bias``; with padding (and ``skip_padding``)
        the projections and FFNs compute only the real positions of ``mask``; ``keep`` (bool (B, T)): the
        last layer computes only these rows (``ScoredRows``), zeros elsewhere. Returns the states and, when
        ``maps``, each layer's attention probabilities (else an empty list)."""
        rows = mask if bias is not None and self.skip_padding else None
        layers = list(layers)
        probs_per_layer: list[Tensor] = []
        for i, layer in enumerate(layers):
            last = keep if i == len(layers) - 1 else None
            x, probs = layer(x, bias, need_weights=maps, rows=rows, keep=last)
            if maps:
                probs_per_layer.append(probs)
        return x, probs_per_layer

    def encode_inputs(self, x: ModelInputs, output_attentions: bool = False, **extra: Any) -> Encoded:
        """The family's forward pass over checked inputs (each family implements it)."""
        raise NotImplementedError(f"{type(self).__name__} implements no encode_inputs")

    @property
    def word_embeddings(self) -> nn.Embedding:
        """The text vocabulary matrix the MLM decoder is tied to."""
        return self.embeddings.word  # type: ignore[attr-defined]

    def init_weights(self) -> None:
        """BERT's initialisation: N(0, init_std) for weights, zero biases, LayerNorm = identity."""
        std = self.config.init_std

        def init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, std)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

        self.apply(init)

    def build_pretraining_heads(self) -> PretrainingHeads:
        """The heads this model's paper pre-trains with (each model overrides)."""
        raise NotImplementedError(f"{type(self).__name__} defines no pre-training heads")

    def tied_heads(self, **heads: nn.Module | None) -> PretrainingHeads:
        """The masked-LM head tied to the word embeddings, plus ``heads`` (pair, region, answer), all
        BERT-initialised: what every model's ``build_pretraining_heads`` assembles."""
        c = self.config
        out = PretrainingHeads(mlm=MLMHead(c.dim, self.word_embeddings, c.layer_norm_eps), **heads)
        init_heads(out, c.init_std)
        return out

    def text_init_map(self, num_bert_layers: int) -> list[tuple[str, str]]:
        """(our prefix, BERT prefix) pairs saying where a BERT checkpoint's weights go
        (``build_model(..., init_text_from=DIR)``). Each model overrides."""
        raise NotImplementedError(f"{type(self).__name__} cannot be initialised from BERT")

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each Transformer layer in the backward pass instead of keeping its activations
        (``mmbert.nn.set_gradient_checkpointing``): for the large presets and long inputs."""
        set_gradient_checkpointing(self, enabled)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def layer_plan(self) -> list[str]:
        """Human-readable order in which the layers run (for ``mmbert inspect``)."""
        return [f"{name}: {type(m).__name__}" for name, m in self.named_children()]

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``config.json`` + ``model.safetensors`` into a directory, each file atomically."""
        return save_module(self, self.config, Path(path))


def block_stack(
    config: ModelConfig, count: int, dim: int | None = None, heads: int | None = None, ffn_dim: int | None = None
) -> nn.ModuleList:
    """``count`` post-LN self-attention ``Block``s at the text width (or the one given), with the config's
    dropouts and LayerNorm eps: every model's layer stacks."""
    c = config
    return nn.ModuleList(
        Block(dim or c.dim, heads or c.num_heads, ffn_dim or c.ffn_dim, c.dropout, c.attn_dropout, c.layer_norm_eps)
        for _ in range(count)
    )


def text_embeddings_plan(c: ModelConfig, name: str = "embeddings") -> str:
    """``layer_plan``'s line for BERT's text embeddings (``TextEmbeddings``) at ``name``."""
    return f"{name}: word {c.vocab_size}x{c.dim} + position {c.max_positions} + segment {c.type_vocab_size}, LN"


def init_heads(heads: nn.Module, std: float) -> None:
    """BERT's initialisation for freshly built heads (the tied MLM decoder is not among their parameters)."""
    for m in heads.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def save_module(module: nn.Module, config: ModelConfig, path: Path, extra_config: dict | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    config_dict = {"mmbert_version": 1, **config.to_dict(), **(extra_config or {})}
    # where the weights came from, when a loader converted them (``load_model`` sets ``source``)
    origin = getattr(module, "converted_from", None) or getattr(module, "source", None)
    if origin and origin != "mmbert":
        config_dict["mmbert_converted_from"] = origin
    atomic_write(path / "model.safetensors", lambda f: save_file(state, f, metadata={"format": "pt"}))
    atomic_write_json(path / "config.json", config_dict)
    return path
