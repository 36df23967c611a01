"""Initialise the text side of any model from a BERT checkpoint (ours or Hugging Face), as the V&L
papers do (``bert-base-uncased`` -> VisualBERT, ViLBERT, LXMERT, ...)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

from mmbert import models
from mmbert.convert.common import CheckpointError
from mmbert.convert.load import load_model
from mmbert.models.base import EncoderModel
from mmbert.models.bert import Bert


@dataclass
class InitReport:
    """Which parameters came from BERT, and which are new (initialised at random)."""

    source: str
    initialised: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"initialised {len(self.initialised)} tensors from {self.source}; "
            f"{len(self.new)} new: {', '.join(self.new) if self.new else 'none'}"
        )


def build_model(name: str, init_text_from: str | os.PathLike | None = None, **overrides: Any) -> EncoderModel:
    """``mmbert.build_model``: the preset ``name`` with config ``overrides``
    (:func:`mmbert.models.build_model`), its text side then copied from the BERT checkpoint
    ``init_text_from`` when given (the report lands on ``model.init_report``)."""
    model = models.build_model(name, **overrides)
    if init_text_from is not None:
        init_text_from_bert(model, init_text_from)
    return model


def init_text_from_bert(model: EncoderModel, path: str | os.PathLike) -> InitReport:
    """Copy BERT's embeddings and layers into ``model`` where ``model.text_init_map`` says, shape-checked.
    The report is stored on ``model.init_report`` and returned."""
    bert = load_model(path)
    if not isinstance(bert, Bert):
        raise CheckpointError(f"{path}: init_text_from needs a BERT checkpoint, got {type(bert).__name__}")
    pairs = model.text_init_map(bert.config.num_layers)
    source = bert.state_dict()
    target = model.state_dict()
    report = InitReport(str(path))
    with torch.no_grad():
        for ours, theirs in pairs:
            keys = [k for k in target if k == ours or k.startswith(ours + ".")]
            if not keys:
                raise CheckpointError(f"{type(model).__name__} has no parameters under {ours!r}")
            for key in keys:
                src_key = theirs + key[len(ours) :]
                if src_key not in source:
                    raise CheckpointError(f"{path}: BERT checkpoint has no {src_key!r} (for {key})")
                if source[src_key].shape != target[key].shape:
                    raise CheckpointError(
                        f"{path}: {src_key} has shape {tuple(source[src_key].shape)} but {key} needs "
                        f"{tuple(target[key].shape)}"
                    )
                target[key].copy_(source[src_key])
                report.initialised.append(key)
    partial_copy = getattr(model, "init_rows_from_bert", None)
    if partial_copy is not None:  # tables BERT fills only in part (VL-BERT's 3-type segment table)
        with torch.no_grad():
            report.initialised.extend(partial_copy(source))
    done = set(report.initialised)
    report.new = sorted({k.rsplit(".", 1)[0] for k in target if k not in done})
    model.init_report = report
    return report


def init_mlm_head_from_bert(model, path: str | os.PathLike) -> list[str]:
    """Copy a BERT checkpoint's MLM head (``cls.predictions`` transform + bias) into a
    ``PretrainingModel``'s ``heads.mlm`` when the checkpoint has one, as VL-BERT and UNITER (and every
    loader that reads a whole ``BertForPreTraining`` checkpoint) do. Returns the copied keys (empty when
    the checkpoint is encoder-only) and records them in ``model.encoder.init_report`` when there is one."""
    from mmbert.convert.load import load_pretraining  # noqa: PLC0415 (load imports this module's neighbours)

    if model.heads.mlm is None:
        return []
    try:
        bert = load_pretraining(path, allow_new_heads=True)
    except CheckpointError:
        return []
    if bert.heads.mlm is None or "mlm" in getattr(bert, "new_heads", []):
        return []
    source, target = bert.heads.mlm.state_dict(), model.heads.mlm.state_dict()
    copied = []
    with torch.no_grad():
        for key, value in target.items():
            if key not in source:
                raise CheckpointError(f"{path}: BERT's MLM head has no {key!r}")
            if source[key].shape != value.shape:
                raise CheckpointError(f"{path}: MLM head {key} has shape {tuple(source[key].shape)} but the model "
                                      f"needs {tuple(value.shape)}")  # fmt: skip
            value.copy_(source[key])
            copied.append(f"heads.mlm.{key}")
    report = getattr(model.encoder, "init_report", None)
    if report is not None:
        report.initialised.extend(copied)
        report.new = [n for n in report.new if not n.startswith("heads.mlm")]
    return copied
