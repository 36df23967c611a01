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
    done = set(report.initialised)
    report.new = sorted({k.rsplit(".", 1)[0] for k in target if k not in done})
    model.init_report = report
    return report
