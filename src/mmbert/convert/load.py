"""``load_model`` / ``load_pretraining`` / ``export_hf``: mmbert directories, Hugging Face ones (detected
from config.json) and the authors' own checkpoint files (detected from their container and key names,
see ``convert/authors.py``), converted through tested key maps, never left half-random."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import NoReturn

from safetensors.torch import save_file

from mmbert.atomic import atomic_write, atomic_write_json
from mmbert.convert import authors, common, hf_bert, hf_lxmert, hf_visualbert, paddle_unimo
from mmbert.convert.common import CheckpointError, load_state_strict, read_config, read_weights
from mmbert.models import EncoderModel, PretrainingModel, config_from_dict, model_class

SOURCE_CHOICES = ("auto", "hf", "mmbert", *authors.SOURCE_NAMES, paddle_unimo.SOURCE)

# Hugging Face model_type -> converter module (config_from_hf, encoder_prefix, encoder_rules,
# head_rules, ignorable, to_hf_config).
HF_CONVERTERS: dict[str, ModuleType] = {
    hf_bert.HF_MODEL_TYPE: hf_bert,
    hf_lxmert.HF_MODEL_TYPE: hf_lxmert,
    hf_visualbert.HF_MODEL_TYPE: hf_visualbert,
}


def _converter_for(config: dict, path: Path) -> ModuleType | None:
    if "mmbert_version" in config:
        return None
    model_type = config.get("model_type")
    if model_type in HF_CONVERTERS:
        return HF_CONVERTERS[model_type]
    raise CheckpointError(
        f"{path / 'config.json'}: not an mmbert checkpoint (no 'mmbert_version') and model_type "
        f"{model_type!r} is not one mmbert converts (supported: {sorted(HF_CONVERTERS)})"
    )


def _our_config(raw: dict, path: Path):
    return config_from_dict(
        {k: v for k, v in raw.items() if not k.startswith("mmbert_")}, str(path / "config.json")
    )


def _is_paddle(path: Path, source: str) -> bool:
    return source == paddle_unimo.SOURCE or (source == "auto" and paddle_unimo.is_persistables_dir(path))


def _is_authors(path: Path, source: str) -> bool:
    if source in ("hf", "mmbert", paddle_unimo.SOURCE):
        return False
    if source != "auto":
        return True
    return authors.is_authors_checkpoint(path)


def _mark(model, report: authors.SourceReport):
    model.source = report.source
    model.source_report = report
    model.match_order = report.match_order
    return model


def load_model(path: str | os.PathLike, config=None, source: str = "auto", **options) -> EncoderModel:
    """An encoder from an mmbert directory, a Hugging Face BERT / VisualBERT / LXMERT directory, or an
    authors' checkpoint (a file, or a directory holding one): ViLBERT, UNITER, VL-BERT, LXMERT,
    VisualBERT, VOLTA. ``config``: the authors' model config file (or dict) where the checkpoint
    carries none; ``source`` forces a layout (``--from``); ``options`` are source settings (see the
    source modules). Heads in the checkpoint are ignored; every encoder weight must be there.
    ``model.source`` names the detected source."""
    path = Path(path)
    if _is_paddle(path, source):
        _no_options(options, path)
        return paddle_unimo.load_unimo_paddle(path, paddle_unimo.resolve_config(path, config))
    if _is_authors(path, source):
        encoder, _, _, report = authors.load_authors(path, config, source, **options)
        return _mark(encoder, report)
    raw = read_config(path)
    conv = _converter_for(raw, path)
    state, weights_file = read_weights(path)
    if conv is None:
        config = _our_config(raw, path)
        model = model_class(config)(config)
        if any(k.startswith("encoder.") for k in state):  # a saved PretrainingModel: take its encoder
            state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
        load_state_strict(model, state, weights_file)
        model.source = "mmbert"
        model.converted_from = raw.get("mmbert_converted_from")
        return model.eval()
    config = conv.config_from_hf(raw, str(path / "config.json"))
    model = model_class(config)(config)
    prefix = conv.encoder_prefix(set(state))
    ours, used = common.import_state(conv.encoder_rules(config, prefix), state, weights_file)
    leftover = sorted(
        k for k in state if k not in used and not conv.ignorable(k) and not k.startswith(conv.HEAD_PREFIXES)
    )
    if leftover:
        raise CheckpointError(
            f"{weights_file}: unexpected encoder keys {leftover} (does config.json match the weights?)"
        )
    load_state_strict(model, ours, weights_file)
    model.source = f"hf:{raw.get('model_type')}"
    return model.eval()


def load_pretraining(
    path: str | os.PathLike,
    config=None,
    allow_new_heads: bool = False,
    source: str = "auto",
    **options,
) -> PretrainingModel:
    """Encoder + its pre-training heads (and, for authors' files, their task heads in
    ``model.task_heads``). A checkpoint without (some of) the heads is refused unless
    ``allow_new_heads``, in which case the missing heads keep their fresh initialisation and are listed
    in ``model.new_heads``. ``config`` / ``source`` / ``options``: as in ``load_model``."""
    path = Path(path)
    if _is_paddle(path, source):
        _no_options(options, path)
        config = paddle_unimo.resolve_config(path, config)
        return paddle_unimo.load_unimo_paddle_pretraining(path, config, allow_new_heads)
    if _is_authors(path, source):
        return _load_authors_pretraining(path, config, allow_new_heads, source, options)
    raw = read_config(path)
    conv = _converter_for(raw, path)
    encoder = load_model(path).train()
    model = PretrainingModel(encoder)
    for name in raw.get("mmbert_absent_heads", []) if conv is None else []:
        setattr(model.heads, name, None)  # saved without it (a fine-tuned authors' file had none)
    state, weights_file = read_weights(path)
    if conv is None:
        heads_state = {k[len("heads.") :]: v for k, v in state.items() if k.startswith("heads.")}
    else:
        rules = conv.head_rules(encoder.config)
        present = [r for r in rules if all(t in state for t in r.theirs)]
        heads_state, _ = common.import_state(present, state, weights_file)
    expected = model.heads.state_dict()
    absent = sorted(set(expected) - set(heads_state))
    model.new_heads = sorted({k.split(".")[0] for k in absent})
    if absent and not allow_new_heads:
        raise CheckpointError(
            f"{weights_file}: no pre-training head weights for {model.new_heads} (missing {absent}); "
            "this looks like an encoder-only checkpoint: use load_model, or load_pretraining(..., "
            "allow_new_heads=True) to start those heads from scratch"
        )
    heads_state = {**{k: v for k, v in expected.items() if k in absent}, **heads_state}
    load_state_strict(model.heads, heads_state, weights_file)
    if conv is None:
        authors.restore_task_heads(model, raw.get("mmbert_task_heads", {}), state, weights_file)
    model.source = getattr(encoder, "source", "mmbert")
    model.converted_from = getattr(encoder, "converted_from", None)
    return model.eval()


def _no_options(options: dict, path: Path) -> None:
    if any(v is not None for v in options.values()):
        raise CheckpointError(
            f"{path}: UNIMO's Paddle parameters take no source options, got {sorted(options)}"
        )


def _load_authors_pretraining(
    path: Path, config, allow_new_heads: bool, source: str, options: dict
) -> PretrainingModel:
    encoder, heads, task_heads, report = authors.load_authors(path, config, source, **options)
    fresh = encoder.build_pretraining_heads()
    absent = [
        name
        for name in ("mlm", "pair", "region", "answer")
        if getattr(fresh, name) is not None and getattr(heads, name) is None
    ]
    if absent and not allow_new_heads and task_heads:
        # a fine-tuned file: its task heads, and only the pre-training heads it really has
        model = PretrainingModel(encoder, heads)
        model.new_heads = []
        for name, head in task_heads.items():
            model.task_heads[name] = head
        _mark(encoder, report)
        return _mark(model, report).eval()
    if absent and not allow_new_heads:
        raise CheckpointError(
            f"{report.file}: no pre-training head weights for {absent} (the file has "
            f"{report.heads or 'none'}{'; task heads ' + str(report.task_heads) if report.task_heads else ''}); "
            "use load_model for the encoder, or load_pretraining(..., allow_new_heads=True) to start those "
            "heads from scratch"
        )
    for name in absent:
        setattr(heads, name, getattr(fresh, name))
    model = PretrainingModel(encoder, heads)
    model.new_heads = absent
    for name, head in task_heads.items():
        model.task_heads[name] = head
    _mark(encoder, report)
    return _mark(model, report).eval()


def export_hf(model: EncoderModel | PretrainingModel, path: str | os.PathLike) -> Path:
    """Write a Hugging Face directory (config.json + model.safetensors) that ``transformers`` loads: the
    encoder (``...Model``) or the encoder with every pre-training head (``...ForPreTraining``). Anything
    that class cannot hold (a model Hugging Face lacks, some pre-training heads only, task heads) is
    refused with the reason, never dropped. (A fine-tuned LXMERT's VQA / GQA head alone goes to
    ``hf_tasks.export_question_answering``.)"""
    path = Path(path)
    encoder = model.encoder if isinstance(model, PretrainingModel) else model
    hf_type = next((t for t, c in HF_CONVERTERS.items() if c.config_class_matches(encoder.config)), None)
    if hf_type is None:
        raise CheckpointError(
            f"{type(encoder).__name__} has no Hugging Face counterpart to export to "
            f"(supported: {sorted(HF_CONVERTERS)})"
        )
    conv = HF_CONVERTERS[hf_type]
    with_heads = isinstance(model, PretrainingModel)
    config = conv.to_hf_config(encoder.config, with_heads)  # refuses a configuration HF cannot express
    if with_heads:
        present = set(_present_heads(model))
        if len(model.task_heads):
            _refuse_task_heads(model)
        theirs = {r.ours.split(".")[0] for r in conv.head_rules(encoder.config)}
        arch = config["architectures"][0]
        if theirs - present:
            raise CheckpointError(
                f"the model lacks the pre-training heads {sorted(theirs - present)} that Hugging Face's {arch} "
                "holds; export the encoder alone (`mmbert convert --encoder-only`)"
            )
        if present - theirs:
            raise CheckpointError(
                f"Hugging Face's {arch} has no place for the pre-training heads {sorted(present - theirs)}; "
                "export the encoder alone (`mmbert convert --encoder-only`)"
            )
    prefix = conv.export_prefix(with_heads)
    state = common.export_state(conv.encoder_rules(encoder.config, prefix), encoder.state_dict())
    if with_heads:
        state.update(common.export_state(conv.head_rules(encoder.config), model.heads.state_dict()))
    path.mkdir(parents=True, exist_ok=True)
    atomic_write(path / "model.safetensors", lambda f: save_file(state, f, metadata={"format": "pt"}))
    atomic_write_json(path / "config.json", config)
    return path


def _present_heads(model: PretrainingModel) -> list[str]:
    return [n for n in ("mlm", "pair", "region", "answer") if getattr(model.heads, n) is not None]


def _refuse_task_heads(model: PretrainingModel) -> NoReturn:
    """A model with task heads has no Hugging Face pre-training class; why, for each case. The one Hugging
    Face task class an authors' file fits, LXMERT's VQA / GQA head alone (``LxmertForQuestionAnswering``),
    is written by ``hf_tasks.export_question_answering`` (``mmbert convert --to hf`` calls it)."""
    names, present = sorted(model.task_heads), _present_heads(model)
    if is_lxmert_question_answering(model):
        why = "its class is LxmertForQuestionAnswering, written by mmbert.convert.hf_tasks.export_question_answering"
    elif names == ["nlvr2"]:
        why = "Hugging Face has no two-image (NLVR2) head"
    elif present:
        why = "a Hugging Face class holds pre-training heads or one task head, not both"
    else:
        why = "Hugging Face has no class for them"
    raise CheckpointError(
        f"{type(model.encoder).__name__} with task heads {names}"
        f"{' and pre-training heads ' + str(present) if present else ''} does not export to Hugging Face "
        f"as a pre-training model: {why}; write the encoder alone (`mmbert convert --encoder-only`) or an "
        "mmbert directory (`--to mmbert`)"
    )


def is_lxmert_question_answering(model: EncoderModel | PretrainingModel) -> bool:
    """A fine-tuned LXMERT with only its VQA / GQA answer head: Hugging Face's ``LxmertForQuestionAnswering``."""
    if not isinstance(model, PretrainingModel) or not hf_lxmert.config_class_matches(model.encoder.config):
        return False
    return not _present_heads(model) and sorted(model.task_heads) in (["vqa"], ["gqa"])
