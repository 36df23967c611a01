"""The authors' own checkpoint files (ViLBERT, UNITER, VL-BERT, LXMERT, VisualBERT, VOLTA): container,
source detection and exact loading.

Each source is one module of this package (``authors_vilbert``, ``authors_uniter``, ...) with the same
small protocol:

* ``NAME`` (what ``--from`` takes), ``TITLE``, ``FILES`` (the file names the authors' scripts write),
  ``MATCH_ORDER`` (where the source's 2-way matching head puts "matches": 0 or 1, or None);
* ``detect(keys) -> bool``: the key names that identify the layout (prefixes already stripped);
* ``config_from(raw, state, source, options) -> ModelConfig``: the authors' config file (as a dict, or
  None), sizes it lacks inferred from the weight shapes;
* ``encoder_rules(config)``, ``head_rules(config)`` (``Rule``s onto ``PretrainingHeads``) and
  ``task_heads(config, state) -> {name: (module, its state, the file's keys used)}`` (the fine-tuning
  heads the file has, as the modules mmbert's task heads hold: the VQA / GQA / NLVR2 ``MLPClassifier``,
  the retrieval ``PairHead``, the referring-expression region ``Linear``; ``mmbert.tasks.
  heads_from_checkpoint`` wraps them into the tasks' heads);
* ``ignored(key) -> str | None``: why a key is deliberately not loaded (tied copy, dead weight, image
  backbone), so that it is reported by name, never dropped silently. A source whose ``config_from``
  returns a layout too (VOLTA) gets it as ``encoder_rules(config, layout)`` and ``ignored(key, layout)``.

Exact or nothing: every weight of the model is placed or the load fails naming the keys; every key of
the file is used or reported as ignored with its reason, else the load fails listing them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from mmbert.config import ModelConfig
from mmbert.convert.common import CheckpointError, Rule, import_state, load_state_strict, normalise_key
from mmbert.nn import MLPClassifier, PairHead

# Container keys under which the authors' training scripts put the weights.
STATE_KEYS = ("state_dict", "model_state_dict", "model")
# DataParallel / DDP wrappers.
WRAPPER_PREFIXES = ("module.",)
CHECKPOINT_SUFFIXES = (".bin", ".pt", ".pth", ".th", ".model", ".tar", ".ckpt")
CONFIG_SUFFIXES = (".json", ".yaml", ".yml")


@dataclass
class SourceReport:
    """What a load of an authors' file did: the detected source, the container, the heads it mapped,
    the keys it deliberately left out (with why) and the source's matching-head order."""

    source: str
    file: str
    container: str
    heads: list[str] = field(default_factory=list)
    task_heads: list[str] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)
    match_order: str = ""
    notes: list[str] = field(default_factory=list)  # settings the source needs, e.g. a compatibility option

    def summary(self) -> str:
        lines = [
            f"source: {self.source} ({self.file})",
            f"container: {self.container}",
            f"pre-training heads: {', '.join(self.heads) or 'none'}",
            f"task heads: {', '.join(self.task_heads) or 'none'}",
        ]
        if self.match_order:
            lines.append(f"matching head: {self.match_order}")
        lines += [f"note: {note}" for note in self.notes]
        if self.ignored:
            reasons: dict[str, list[str]] = {}
            for key, why in self.ignored.items():
                reasons.setdefault(why, []).append(key)
            for why, keys in reasons.items():
                shown = ", ".join(keys[:4]) + (f", ... ({len(keys)} keys)" if len(keys) > 4 else "")
                lines.append(f"not loaded ({why}): {shown}")
        return "\n".join(lines)


def sources() -> dict[str, ModuleType]:
    """``--from`` name -> source module, in detection order (most specific first)."""
    from mmbert.convert import (
        authors_lxmert,
        authors_uniter,
        authors_vilbert,
        authors_visualbert,
        authors_vl_bert,
        volta,
    )

    mods = [volta, authors_vilbert, authors_uniter, authors_vl_bert, authors_lxmert, authors_visualbert]
    return {m.NAME: m for m in mods}


# --- files and containers --------------------------------------------------------------------------


def is_authors_checkpoint(path: Path) -> bool:
    """A file with a checkpoint suffix, or a directory holding one and no mmbert / HF config.json."""
    if path.is_file():
        return path.suffix in CHECKPOINT_SUFFIXES
    return path.is_dir() and not (path / "config.json").exists() and bool(_checkpoints_in(path))


def _checkpoints_in(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES)


def find_checkpoint(path: Path) -> Path:
    if path.is_file():
        return path
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such file or directory")
    found = _checkpoints_in(path)
    if len(found) != 1:
        raise CheckpointError(
            f"{path}: expected exactly one checkpoint file ({', '.join(CHECKPOINT_SUFFIXES)}), found "
            f"{[p.name for p in found] or 'none'}; pass the file itself"
        )
    return found[0]


def find_config(path: Path) -> Path | None:
    """In a checkpoint's directory, the one authors' model config there (a JSON / YAML file with a
    ``hidden_size``), if exactly one."""
    folder = path if path.is_dir() else path.parent
    hits = []
    for p in sorted(folder.iterdir()):
        if p.suffix in CONFIG_SUFFIXES and p.is_file() and p.stat().st_size < 1_000_000:
            try:
                raw = read_config_file(p)
            except CheckpointError:
                continue
            if "hidden_size" in raw or "hidden_size" in raw.get("NETWORK", {}).get("VLBERT", {}):
                hits.append(p)
    return hits[0] if len(hits) == 1 else None


def read_config_file(path: Path) -> dict[str, Any]:
    """An authors' config: JSON (ViLBERT, UNITER, LXMERT, VisualBERT, VOLTA; ``//`` comment lines, as in
    VisualBERT's files, are allowed) or YAML (VL-BERT)."""
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("//")]
            data = json.loads("\n".join(lines))
    except Exception as e:  # noqa: BLE001 - any parse error becomes one clear message
        raise CheckpointError(f"{path}: not a readable config file ({e})") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def read_container(file: Path) -> tuple[dict[str, Tensor], str]:
    """The state dict inside an authors' file, wrapper prefixes stripped, every float tensor float32
    (UNITER saves float16). Returns it and a description of the container."""
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{file}: cannot be read as a PyTorch checkpoint ({e})") from e
    where = "plain state_dict"
    if isinstance(obj, Mapping):
        inner = next((k for k in STATE_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is not None and not all(isinstance(v, Tensor) for v in obj.values()):
            others = sorted(k for k in obj if k != inner)
            where = f"dict holding '{inner}'" + (f" (also {others}, not loaded)" if others else "")
            obj = obj[inner]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(
            f"{file}: no state dict found (expected a dict of tensors or one under {STATE_KEYS})"
        )
    bad = sorted(k for k, v in obj.items() if not isinstance(v, Tensor))
    if bad:
        raise CheckpointError(f"{file}: entries that are not tensors: {bad[:10]}")
    state: dict[str, Tensor] = dict(obj)
    for prefix in WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
            where += f", '{prefix}' prefix (DataParallel/DDP) stripped"
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in state.values() if v.is_floating_point()})
    if dtypes != ["float32"]:
        where += f", {'/'.join(dtypes)} weights read as float32"
    state = {normalise_key(k): (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    return state, where


def detect(state: Mapping[str, Tensor], file: str, wanted: str = "auto") -> ModuleType:
    """The source whose layout these keys have; an error listing the layouts and the unfitting keys."""
    known = sources()
    keys = set(state)
    if wanted not in ("auto", None):
        if wanted not in known:
            raise CheckpointError(f"unknown source {wanted!r}; known: {', '.join(known)}")
        return known[wanted]
    for mod in known.values():
        if mod.detect(keys):
            return mod
    sample = sorted(keys)[:12]
    layouts = "; ".join(f"{m.NAME} ({m.TITLE}: {m.SIGNATURE})" for m in known.values())
    raise CheckpointError(
        f"{file}: matches no known checkpoint layout. Known layouts: {layouts}. "
        f"Keys in the file that fit none of them (first {len(sample)} of {len(keys)}): {sample}"
    )


# --- loading ---------------------------------------------------------------------------------------


def resolve_config(config: Any, path: Path) -> tuple[dict[str, Any] | ModelConfig | None, str]:
    """``config=`` as given (a file, a dict, an mmbert config) or the one config file next to the
    checkpoint."""
    if isinstance(config, (ModelConfig, dict)):
        return config, "config argument"
    if config is not None:
        cfile = Path(config)
        if not cfile.is_file():
            raise CheckpointError(f"{cfile}: config file not found")
        return read_config_file(cfile), str(cfile)
    found = find_config(path)
    if found is None:
        return None, "no config file"
    return read_config_file(found), str(found)


def _apply(rules: list[Rule], state: Mapping[str, Tensor], file: str) -> dict[str, Tensor]:
    ours, _ = import_state(rules, state, file)
    return ours


def load_authors(
    path: str | os.PathLike,
    config: Any = None,
    source: str = "auto",
    **options: Any,
) -> tuple[nn.Module, nn.Module, dict[str, nn.Module], SourceReport]:
    """Encoder, pre-training heads, task heads and the report, from an authors' file or directory.

    ``options`` are source settings the authors pass on the command line (LXMERT's ``llayers``,
    ``xlayers``, ``rlayers``), see each source module.
    """
    from mmbert.models import model_class

    path = Path(path)
    file = find_checkpoint(path)
    state, container = read_container(file)
    mod = detect(state, str(file), source)
    if hasattr(mod, "normalise"):
        state = mod.normalise(state)
    raw, config_name = resolve_config(config, path)
    if isinstance(raw, ModelConfig):
        cfg, layout = raw, None
    else:
        # a source may also return the layout its key map needs (VOLTA: which sublayer is which block)
        built = mod.config_from(raw, state, f"{file} / {config_name}", options)
        cfg, layout = built if isinstance(built, tuple) else (built, None)
    encoder = model_class(cfg)(cfg)
    name = str(file)
    used: set[str] = set()

    enc_rules = mod.encoder_rules(cfg) if layout is None else mod.encoder_rules(cfg, layout)
    load_state_strict(encoder, _apply(enc_rules, state, name), name)
    used |= {t for r in enc_rules for t in r.theirs}

    heads = encoder.build_pretraining_heads()
    head_rules = [r for r in mod.head_rules(cfg)]
    present = [r for r in head_rules if all(t in state for t in r.theirs)]
    head_state = _apply(present, state, name)
    expected = heads.state_dict()
    # A head is loaded whole or not at all; a head the file lacks is removed, never left random.
    head_names = sorted({k.split(".")[0] for k in expected})
    loaded = []
    for h in head_names:
        want = {k for k in expected if k.split(".")[0] == h}
        have = want & set(head_state)
        if have and have != want:
            raise CheckpointError(f"{name}: head {h!r} is incomplete: missing {sorted(want - have)}")
        if have:
            loaded.append(h)
        else:
            setattr(heads, h, None)
    load_state_strict(heads, head_state, name)
    used |= {t for r in present for t in r.theirs}

    task_heads: dict[str, nn.Module] = {}
    for tname, (module, tstate, tkeys) in mod.task_heads(cfg, state).items():
        load_state_strict(module, tstate, name)
        module.saved_form = task_head_spec(module)  # what PretrainingModel.save writes to config.json
        task_heads[tname] = module.eval()
        used |= set(tkeys)

    why_ignored = mod.ignored if layout is None else (lambda k: mod.ignored(k, layout))
    ignored = {k: why for k in sorted(state) if k not in used and (why := why_ignored(k)) is not None}
    unexpected = sorted(set(state) - used - set(ignored))
    if unexpected:
        raise CheckpointError(
            f"{name}: {len(unexpected)} keys of this {mod.NAME} checkpoint fit nothing in the model "
            f"(does the config match the weights?): {unexpected}"
        )
    order = {
        0: "the source puts 'matches' at index 0; rows swapped so index 1 = matches",
        1: "index 1 = matches, as mmbert",
    }
    report = SourceReport(
        source=mod.NAME,
        file=str(file),
        container=container,
        heads=loaded,
        task_heads=sorted(task_heads),
        ignored=ignored,
        match_order=order.get(mod.MATCH_ORDER, "") if "pair" in loaded else "",
        notes=mod.notes(cfg) if hasattr(mod, "notes") else [],
    )
    return encoder.eval(), heads.eval(), task_heads, report


SOURCE_NAMES = ("vilbert", "uniter", "vl-bert", "volta", "lxmert", "visualbert")


def task_head_spec(head: nn.Module) -> dict[str, Any]:
    """How to rebuild a task head's module (saved in config.json as ``mmbert_task_heads``)."""
    if isinstance(head, MLPClassifier):
        return {
            "kind": "mlp",
            "in_dim": head.fc1.in_features,
            "hidden_dim": head.fc1.out_features,
            "num_labels": head.fc2.out_features,
            "eps": head.norm.eps,
        }
    if isinstance(head, PairHead):
        return {"kind": "pair", "dim": head.proj.in_features}
    if isinstance(head, nn.Linear):
        return {"kind": "linear", "in_dim": head.in_features, "out_dim": head.out_features}
    raise TypeError(f"no saved form for task head {type(head).__name__}")


def build_task_head(spec: Mapping[str, Any], where: str) -> nn.Module:
    kind = spec.get("kind")
    if kind == "mlp":
        return MLPClassifier(spec["in_dim"], spec["hidden_dim"], spec["num_labels"], spec["eps"])
    if kind == "pair":
        return PairHead(spec["dim"])
    if kind == "linear":
        return nn.Linear(spec["in_dim"], spec["out_dim"])
    raise CheckpointError(f"{where}: unknown task head kind {kind!r} (known: mlp, pair, linear)")


def restore_task_heads(
    model: nn.Module, specs: Mapping[str, Any], state: Mapping[str, Tensor], file: str
) -> None:
    """Rebuild the task heads an mmbert directory lists in ``mmbert_task_heads`` and load them strictly."""
    for name, spec in specs.items():
        head = build_task_head(spec, file)
        prefix = f"task_heads.{name}."
        load_state_strict(head, {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}, file)
        head.saved_form = dict(spec)
        model.task_heads[name] = head.eval()
    stray = sorted({k.split(".")[1] for k in state if k.startswith("task_heads.")} - set(specs))
    if stray:
        raise CheckpointError(f"{file}: weights for task heads {stray} that config.json does not describe")
