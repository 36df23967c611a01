"""An encoder with its pre-training heads: what ``mmbert.load_pretraining`` returns."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from mmbert.models.base import EncoderModel, save_module
from mmbert.models.heads import PretrainingHeads
from mmbert.models.outputs import PretrainingOutput

__all__ = ["PretrainingHeads", "PretrainingModel", "PretrainingOutput"]


class PretrainingModel(nn.Module):
    """``encoder`` + ``heads``. Same inputs as the encoder, plus ``mlm_positions`` (bool (B, T)): when
    given, MLM logits are computed only there (training does this; the plain call scores every token).

    ``task_heads`` holds fine-tuned task heads that came with a checkpoint (e.g. the multi-task
    ViLBERT's VQA classifier), by task name; each maps ``(Encoded, Batch)`` to that task's logits."""

    def __init__(self, encoder: EncoderModel, heads: PretrainingHeads | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = heads if heads is not None else encoder.build_pretraining_heads()
        self.task_heads = nn.ModuleDict()

    @property
    def config(self):
        return self.encoder.config

    def forward(
        self, text_ids: Tensor | None, *inputs: Tensor | None, mlm_positions: Tensor | None = None, **named: Any
    ) -> PretrainingOutput:
        """The encoder's inputs as the encoder takes them (by position up to ``region_mask``, or by name,
        ``output_attentions`` and model-specific inputs included), then the heads."""
        if len(inputs) > 5:
            raise TypeError("PretrainingModel takes text_ids .. region_mask by position; name the rest")
        return self.heads(self.encoder(text_ids, *inputs, **named), mlm_positions)

    def save(self, path: str | os.PathLike) -> Path:
        """Encoder and heads in one directory (``encoder.*``, ``heads.*`` and ``task_heads.*`` keys)."""
        extra: dict = {"mmbert_heads": "pretraining"}
        absent = [n for n in ("mlm", "pair", "region", "answer") if getattr(self.heads, n) is None]
        if absent:
            extra["mmbert_absent_heads"] = absent
        if len(self.task_heads):
            # each task head carries how to rebuild it (``saved_form``, set by the loader that made it)
            undescribed = [n for n, h in self.task_heads.items() if not hasattr(h, "saved_form")]
            if undescribed:
                raise ValueError(f"task heads {undescribed} have no saved_form: cannot describe them in config.json")
            extra["mmbert_task_heads"] = {n: dict(h.saved_form) for n, h in self.task_heads.items()}
        return save_module(self, self.encoder.config, Path(path), extra_config=extra)
