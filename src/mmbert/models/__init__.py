"""The model registry: preset name -> config factory, and model_type -> model class. Explicit dicts,
no import side effects: a new model costs one file plus its lines here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmbert.config import ModelConfig
from mmbert.models import bert, lxmert, unicoder_vl, unimo, uniter, vilbert, visualbert, vl_bert
from mmbert.models.base import EncoderModel
from mmbert.models.heads import PretrainingHeads
from mmbert.models.outputs import Encoded, PretrainingOutput
from mmbert.models.pretraining import PretrainingModel

MODELS: dict[str, Callable[[], ModelConfig]] = {
    "bert_base": bert.bert_base,
    "bert_large": bert.bert_large,
    "bert_tiny": bert.bert_tiny,
    "vilbert_base": vilbert.vilbert_base,
    "vilbert_2layer": vilbert.vilbert_2layer,
    "vilbert_4layer": vilbert.vilbert_4layer,
    "vilbert_8layer": vilbert.vilbert_8layer,
    "vilbert_large": vilbert.vilbert_large,
    "ctrl_vilbert": vilbert.ctrl_vilbert,
    "vilbert_tiny": vilbert.vilbert_tiny,
    "lxmert_base": lxmert.lxmert_base,
    "ctrl_lxmert": lxmert.ctrl_lxmert,
    "lxmert_tiny": lxmert.lxmert_tiny,
    "visualbert_base": visualbert.visualbert_base,
    "ctrl_visualbert": visualbert.ctrl_visualbert,
    "visualbert_tiny": visualbert.visualbert_tiny,
    "unicoder_vl_base": unicoder_vl.unicoder_vl_base,
    "unicoder_vl_tiny": unicoder_vl.unicoder_vl_tiny,
    "vl_bert_base": vl_bert.vl_bert_base,
    "vl_bert_large": vl_bert.vl_bert_large,
    "ctrl_vl_bert": vl_bert.ctrl_vl_bert,
    "vl_bert_tiny": vl_bert.vl_bert_tiny,
    "uniter_base": uniter.uniter_base,
    "uniter_large": uniter.uniter_large,
    "ctrl_uniter": uniter.ctrl_uniter,
    "uniter_tiny": uniter.uniter_tiny,
    "unimo_base": unimo.unimo_base,
    "unimo_large": unimo.unimo_large,
    "unimo_tiny": unimo.unimo_tiny,
}

MODEL_CLASSES: dict[str, type[EncoderModel]] = {
    "bert": bert.Bert,
    "vilbert": vilbert.ViLBert,
    "lxmert": lxmert.Lxmert,
    "visualbert": visualbert.VisualBert,
    "unicoder_vl": unicoder_vl.UnicoderVL,
    "vl_bert": vl_bert.VLBert,
    "uniter": uniter.Uniter,
    "unimo": unimo.Unimo,
}


def list_models() -> list[str]:
    return list(MODELS)


def model_class(config: ModelConfig) -> type[EncoderModel]:
    return MODEL_CLASSES[config.model_type]


def build_model(name: str, **overrides: Any) -> EncoderModel:
    """Build a preset by name, with any config field overridden (``build_model("bert_base", num_layers=6)``).
    Starting the text side from a BERT checkpoint is ``mmbert.build_model(..., init_text_from=DIR)``
    (:func:`mmbert.convert.init_text.build_model`): checkpoints are convert's business, not the registry's."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
    if "init_text_from" in overrides:
        raise TypeError(
            "init_text_from is taken by mmbert.build_model (mmbert.convert.init_text.build_model), "
            "not by mmbert.models.build_model"
        )
    config = MODELS[name]().replace(**overrides)
    return model_class(config)(config)


def config_from_dict(data: dict[str, Any], source: str = "config.json") -> ModelConfig:
    model_type = data.get("model_type")
    if model_type not in MODEL_CLASSES:
        raise ValueError(
            f"{source}: unknown mmbert model_type {model_type!r}; known: {sorted(MODEL_CLASSES)}"
        )
    return MODEL_CLASSES[model_type].config_class.from_dict(data, source)


__all__ = [
    "MODELS",
    "MODEL_CLASSES",
    "Encoded",
    "EncoderModel",
    "PretrainingHeads",
    "PretrainingModel",
    "PretrainingOutput",
    "build_model",
    "config_from_dict",
    "list_models",
]
