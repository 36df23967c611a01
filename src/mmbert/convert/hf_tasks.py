"""Hugging Face task heads with their encoders: LXMERT's question answering
(``LxmertForQuestionAnswering``) and VisualBERT's task classifiers (``VisualBertForQuestionAnswering`` /
``ForVisualReasoning`` / ``ForMultipleChoice``). Not pre-training heads, so not part of the converter
protocol of ``convert/load.py``; they sit beside it because they load the encoder through ``load_model``.
"""

from __future__ import annotations

import os
from pathlib import Path

from safetensors.torch import save_file

from mmbert.atomic import atomic_write, atomic_write_json
from mmbert.convert import common, hf_lxmert, hf_visualbert
from mmbert.convert.common import (
    CheckpointError,
    export_state,
    import_state,
    load_state_strict,
    read_config,
    read_weights,
)
from mmbert.convert.load import load_model
from mmbert.models.lxmert import Lxmert
from mmbert.models.visualbert import VisualBert, VisualBertTaskHead
from mmbert.nn import MLPClassifier


def load_question_answering(path: str | os.PathLike) -> tuple[Lxmert, MLPClassifier]:
    """Encoder + answer head from a Hugging Face ``LxmertForQuestionAnswering`` (or
    ``LxmertForPreTraining``) directory; the head maps ``Encoded.pooled`` to answer logits."""
    path = Path(path)
    raw = read_config(path)
    if raw.get("model_type") != hf_lxmert.HF_MODEL_TYPE or "mmbert_version" in raw:
        raise CheckpointError(f"{path / 'config.json'}: not a Hugging Face LXMERT checkpoint")
    encoder = load_model(path)
    state, weights_file = read_weights(path)
    ours, _ = import_state(hf_lxmert.answer_head_rules(), state, weights_file)
    head_state = {k.removeprefix("answer."): v for k, v in ours.items()}
    num_labels = head_state["fc2.weight"].shape[0]
    head = encoder.build_answer_head(num_labels)
    load_state_strict(head, head_state, weights_file)
    return encoder, head.eval()


def export_question_answering(encoder: Lxmert, answer_head: MLPClassifier, path: str | os.PathLike) -> Path:
    """Write a Hugging Face ``LxmertForQuestionAnswering`` directory (config.json + model.safetensors)."""
    if not isinstance(encoder, Lxmert):
        raise CheckpointError(
            f"export_question_answering needs an Lxmert encoder, got {type(encoder).__name__}"
        )
    path = Path(path)
    num_labels = answer_head.fc2.out_features
    state = export_state(hf_lxmert.encoder_rules(encoder.config, "lxmert."), encoder.state_dict())
    state.update(
        export_state(hf_lxmert.answer_head_rules(), {f"answer.{k}": v for k, v in answer_head.state_dict().items()})
    )
    config = hf_lxmert.to_hf_config(encoder.config, with_heads=True, architecture="LxmertForQuestionAnswering")
    config.update(num_qa_labels=num_labels, task_qa=True)
    path.mkdir(parents=True, exist_ok=True)
    atomic_write(path / "model.safetensors", lambda f: save_file(state, f, metadata={"format": "pt"}))
    atomic_write_json(path / "config.json", config)
    return path


def load_task_head(path: str | os.PathLike) -> tuple[VisualBert, VisualBertTaskHead]:
    """The encoder and the task classifier of a Hugging Face ``VisualBertForQuestionAnswering``,
    ``...ForVisualReasoning`` or ``...ForMultipleChoice`` directory (which one: ``architectures`` in
    config.json). Both come back in eval mode."""
    path = Path(path)
    raw = read_config(path)
    source = str(path / "config.json")
    if raw.get("model_type") != hf_visualbert.HF_MODEL_TYPE:
        raise CheckpointError(
            f"{source}: not a Hugging Face VisualBERT checkpoint (model_type {raw.get('model_type')!r})"
        )
    archs = [a for a in raw.get("architectures") or [] if a in hf_visualbert.TASK_ARCHITECTURES]
    if not archs:
        raise CheckpointError(
            f"{source}: architectures {raw.get('architectures')} name no VisualBERT task head; expected one of "
            f"{sorted(hf_visualbert.TASK_ARCHITECTURES)}"
        )
    encoder = load_model(path)
    state, weights_file = read_weights(path)
    missing = [k for k in ("cls.weight", "cls.bias") if k not in state]
    if missing:
        raise CheckpointError(f"{weights_file}: no task-head weights {missing} for {archs[0]}")
    num_labels = state["cls.weight"].shape[0]
    head = VisualBertTaskHead(
        hf_visualbert.TASK_ARCHITECTURES[archs[0]], encoder.config.dim, num_labels, encoder.config.dropout
    )
    load_state_strict(
        head, {"proj.weight": state["cls.weight"], "proj.bias": state["cls.bias"]}, weights_file
    )
    return encoder, head.eval()


def export_task_head(encoder: VisualBert, head: VisualBertTaskHead, path: str | os.PathLike) -> Path:
    """Write encoder + task classifier as the Hugging Face class ``transformers`` loads for that task."""
    path = Path(path)
    arch = next(a for a, kind in hf_visualbert.TASK_ARCHITECTURES.items() if kind == head.kind)
    state = common.export_state(hf_visualbert.encoder_rules(encoder.config, "visual_bert."), encoder.state_dict())
    state["cls.weight"] = head.proj.weight.detach().clone().contiguous()
    state["cls.bias"] = head.proj.bias.detach().clone().contiguous()
    config = hf_visualbert.to_hf_config(encoder.config, with_heads=False, architecture=arch)
    labels = head.proj.out_features
    config["id2label"] = {str(i): f"LABEL_{i}" for i in range(labels)}
    config["label2id"] = {f"LABEL_{i}": i for i in range(labels)}
    path.mkdir(parents=True, exist_ok=True)
    atomic_write(path / "model.safetensors", lambda f: save_file(state, f, metadata={"format": "pt"}))
    atomic_write_json(path / "config.json", config)
    return path
