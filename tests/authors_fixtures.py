"""Reading the authors' fixtures (../shared/fixtures/authors/) and recomputing every stored output with
mmbert: one place, used by the fixture tests and by ``python tests/authors_fixtures.py`` (which
prints the max-abs-difference table).

Folders are found by listing (every folder with a meta.json), never by name. What each stored output
means is read from the fixture's own description (source and class in meta.json); an output this file
does not know makes the comparison fail, so a new fixture cannot pass unexamined.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

import mmbert
from mmbert.data.batch import Batch
from mmbert.tasks.checkpoint_heads import heads_from_checkpoint
from mmbert.tasks.retrieval import match_score

ROOT = (Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures" / "authors").resolve()
TOLERANCE = 1e-5


def fixture_dirs() -> list[Path]:
    if not ROOT.is_dir():
        raise FileNotFoundError(
            f"{ROOT}: the authors' fixtures are missing (expected ../shared/fixtures/authors)"
        )
    found = sorted(p.parent for p in ROOT.rglob("meta.json"))
    if not found:
        raise FileNotFoundError(f"{ROOT}: no fixture folder (no meta.json below it)")
    return found


@dataclass
class Fixture:
    folder: Path
    meta: dict
    inputs: dict[str, Tensor]
    outputs: dict[str, Tensor]

    @property
    def name(self) -> str:
        return str(self.folder.relative_to(ROOT))

    @property
    def checkpoint(self) -> Path:
        return self.folder / self.meta["checkpoint"]["file"]

    @property
    def config(self) -> Path:
        cfg = self.meta["config"]
        files = cfg.get("files") or [cfg["file"]]
        return self.folder / files[0].split(" (")[0]  # entries may carry a description in brackets


def read_fixture(folder: Path) -> Fixture:
    meta = json.loads((folder / "meta.json").read_text())
    return Fixture(
        folder,
        meta,
        load_file(str(folder / "inputs.safetensors")),
        load_file(str(folder / "outputs.safetensors")),
    )


def load_options(fx: Fixture) -> dict:
    """Source settings the authors pass on their command line, as recorded in meta.json."""
    hp = fx.meta.get("hyper_parameters", {})
    opts = {k: hp[k] for k in ("llayers", "xlayers", "rlayers") if k in hp}
    if fx.meta["source"].startswith("volta/") and "vl-bert" in fx.meta["source"]:
        # VOLTA's loaders pad every image to max_region_num + 1 slots; the authors' batch shows how many
        opts["volta_region_slots"] = int(fx.inputs["ref_image_feat"].shape[1])
    return opts


def plain_inputs(x: dict[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    names = ("text_ids", "text_mask", "segment_ids", "region_feats", "region_boxes", "region_mask")
    return {n: x[prefix + n] for n in names if prefix + n in x}


def batch_of(inputs: dict[str, Tensor]) -> Batch:
    return Batch(**{k: v for k, v in inputs.items() if k in Batch.__dataclass_fields__})


def masked(t: Tensor, mask: Tensor | None) -> Tensor:
    return t if mask is None else t[mask]


# --- per family: our value for each stored output name -----------------------------------------------


Computed = dict[str, tuple[Tensor, Tensor]]  # output name -> (ours, theirs), both at real positions only


def _dual_stream(fx: Fixture, model) -> Computed:
    """ViLBERT (both repositories) and VOLTA: global region first, matching index 0 = matches."""
    x, o = fx.inputs, fx.outputs
    src = plain_inputs(x)
    extra = {}
    if "image_size" in x and getattr(model.encoder, "takes_image_size", False):
        extra["image_size"] = x["image_size"]
    out = model(**src, **extra)
    enc = out.encoded
    tm, rm = x["text_mask"], x["region_mask"]
    vm = model.encoder.vision_mask(src) | _global_slot(model, src)
    res: Computed = {}
    ours = {
        "text_hidden": masked(enc.text, tm),
        "vision_hidden": masked(enc.vision, vm),
        "pooled": enc.pooled,
        "mlm_logits": masked(out.mlm_logits, tm),
        "itm_logits": out.pair_logits.flip(-1) if out.pair_logits is not None else None,
        "region_class_logits": masked(out.region_class_logits, vm)
        if out.region_class_logits is not None
        else None,
        "region_logits_0": masked(out.region_class_logits, vm)
        if out.region_class_logits is not None
        else None,
    }
    if hasattr(model.encoder, "text_pooler"):  # ViLBERT, and VOLTA's fused pooler on single-stream models
        ours["pooled_text"] = model.encoder.text_pooler(enc.text)
        ours["pooled_vision"] = model.encoder.vision_pooler(enc.vision)
    for name, value in ours.items():
        if name in o:
            theirs = o[name]
            if name in ("text_hidden", "mlm_logits"):
                theirs = theirs[tm]
            elif name in ("vision_hidden", "region_class_logits", "region_logits_0"):
                theirs = theirs[x["ref_image_mask"].bool()]
            res[name] = (value, theirs)
    if "vil_prediction" in o:
        batch = batch_of(src)
        heads = heads_from_checkpoint(model)
        res["vil_prediction"] = (heads["vqa"](enc, batch), o["vil_prediction"])
        res["vil_logit"] = (match_score(heads["retrieval"](enc, batch))[:, None], o["vil_logit"])
    if "label_mlm_logits" in o:
        lab = plain_inputs(x, "label_")
        lab["region_feats"] = x["label_region_feats"]
        lab["global_feats"] = x["ref_label_image_feat"][:, 0]  # the pre-training loader's whole-image feature
        out = model(**lab)
        ltm = x["label_text_mask"]
        res["label_mlm_logits"] = (out.mlm_logits[ltm], o["label_mlm_logits"][ltm])
        res["label_itm_logits"] = (out.pair_logits.flip(-1), o["label_itm_logits"])
    del rm
    return res


def _global_slot(model, src) -> Tensor:
    """True at the whole-image region (the authors compare it too)."""
    vm = model.encoder.vision_mask(src)
    slot = torch.zeros_like(vm)
    slot[:, 0] = True
    return slot


def _uniter(fx: Fixture, model) -> Computed:
    x, o = fx.inputs, fx.outputs
    src = plain_inputs(x)
    tm, rm = x["text_mask"], x["region_mask"]
    out = model(**src)
    enc = out.encoded
    res: Computed = {}
    if "sequence_output" in o:  # the authors' compact layout: real text, then real regions
        tl, nb = tm.sum(1), rm.sum(1)
        for b in range(tm.shape[0]):
            ours = torch.cat([enc.text[b, : tl[b]], enc.vision[b, : nb[b]]])
            res[f"sequence_output[{b}]"] = (ours, o["sequence_output"][b, : tl[b] + nb[b]])
    pairs = {
        "text_hidden": (masked(enc.text, tm), tm),
        "vision_hidden": (masked(enc.vision, rm), rm),
        "pooled": (enc.pooled, None),
        "itm_logits": (out.pair_logits, None),
        "mlm_logits": (masked(out.mlm_logits, tm) if out.mlm_logits is not None else None, tm),
        "region_class_logits": (
            masked(out.region_class_logits, rm) if out.region_class_logits is not None else None,
            rm,
        ),
        "region_feat_pred": (
            masked(out.region_feat_pred, rm) if out.region_feat_pred is not None else None,
            rm,
        ),
    }
    for name, (ours, mask) in pairs.items():
        if name in o:
            res[name] = (ours, masked(o[name], mask))
    if "answer_scores" in o:
        res["answer_scores"] = (heads_from_checkpoint(model)["vqa"](enc, batch_of(src)), o["answer_scores"])
    if "label_mlm_scores" in o:
        lab = dict(src, text_ids=x["label_text_ids"])
        positions = x["label_mlm_labels"] != -100
        res["label_mlm_scores"] = (model(**lab, mlm_positions=positions).mlm_logits, o["label_mlm_scores"])
        lab = dict(src, region_feats=x["label_region_feats"], region_masked=x["label_region_target_mask"])
        pred = model(**lab).region_feat_pred
        res["label_mrfr_pred"] = (pred[x["label_region_target_mask"]], o["label_mrfr_pred"])
    return res


def _lxmert(fx: Fixture, model) -> Computed:
    x, o = fx.inputs, fx.outputs
    src = plain_inputs(x)
    tm, rm = x["text_mask"], x["region_mask"]
    out = model(**src)
    enc = out.encoded
    pairs = {
        "text_hidden": (enc.text, tm),
        "vision_hidden": (enc.vision, rm),
        "pooled": (enc.pooled, None),
        "mlm_logits": (out.mlm_logits, tm),
        "itm_logits": (out.pair_logits, None),
        "region_obj_logits": (out.region_class_logits, rm),
        "region_attr_logits": (out.region_attr_logits, rm),
        "region_feat_pred": (out.region_feat_pred, rm),
        "qa_logits": (out.answer_logits, None),
    }
    res: Computed = {n: (masked(v, m), masked(o[n], m)) for n, (v, m) in pairs.items() if n in o}
    if "label_mlm_logits" in o:
        lab = plain_inputs(x, "label_")
        lab["region_feats"] = x["ref_label_masked_feats"]  # the model sees the masked features
        out = model(**lab)
        ltm = x["label_text_mask"]
        res["label_mlm_logits"] = (out.mlm_logits[ltm], o["label_mlm_logits"][ltm])
        res["label_itm_logits"] = (out.pair_logits, o["label_itm_logits"])
        res["label_qa_logits"] = (out.answer_logits, o["label_qa_logits"])
    return res


def _visualbert(fx: Fixture, model) -> Computed:
    """The original VisualBERT: its MLM head also scores the region positions (the same head on
    ``Encoded.vision``); sequence = [text (T, padded) ; regions (R)]."""
    x, o = fx.inputs, fx.outputs
    src = plain_inputs(x)
    tm, rm = x["text_mask"], x["region_mask"]
    t = tm.shape[1]
    res: Computed = {}
    for prefix in ("", "label_"):
        run = dict(src, text_ids=x[f"{prefix}text_ids"])
        out = model(**run)
        enc = out.encoded
        region_mlm = model.heads.mlm(enc.vision)
        theirs = o[f"{prefix}mlm_logits"]
        res[f"{prefix}mlm_logits"] = (
            torch.cat([out.mlm_logits[tm], region_mlm[rm]]),
            torch.cat([theirs[:, :t][tm], theirs[:, t:][rm]]),
        )
        res[f"{prefix}itm_logits"] = (out.pair_logits, o[f"{prefix}itm_logits"])
        if not prefix:
            res["text_hidden"] = (enc.text[tm], o["text_hidden"][tm])
            res["vision_hidden"] = (enc.vision[rm], o["vision_hidden"][rm])
            seq = o["sequence_output"]
            res["sequence_output"] = (
                torch.cat([enc.text[tm], enc.vision[rm]]),
                torch.cat([seq[:, :t][tm], seq[:, t:][rm]]),
            )
            res["pooled"] = (enc.pooled, o["pooled"])
    return res


def _vl_bert(fx: Fixture, model) -> Computed:
    """VL-BERT: vision = [whole image ; regions ; [END]]; the authors' joint sequence is compact (real
    text, the image box and real regions, [END], then padding)."""
    x, o = fx.inputs, fx.outputs
    src = dict(plain_inputs(x), image_size=x["image_size"])
    tm, rm = x["text_mask"], x["region_mask"]
    out = model(**src)
    enc = out.encoded
    objects = torch.cat([torch.ones_like(rm[:, :1]), rm], 1)  # image box + real regions
    r1 = objects.shape[1]
    res: Computed = {
        "text_hidden": (enc.text[tm], o["text_hidden"][tm]),
        "object_hidden": (enc.vision[:, :r1][objects], o["object_hidden"][objects]),
        "mlm_logits": (out.mlm_logits[tm], o["mlm_logits"][tm]),
        "mvrc_logits": (out.region_class_logits[:, :r1][objects], o["mvrc_logits"][objects]),
    }
    tl, nb = tm.sum(1), objects.sum(1)
    ours, theirs = [], []
    for b in range(tm.shape[0]):
        ours.append(torch.cat([enc.text[b, : tl[b]], enc.vision[b, :r1][objects[b]], enc.vision[b, -1:]]))
        theirs.append(o["joint_hidden"][b, : tl[b] + nb[b] + 1])
    res["joint_hidden"] = (torch.cat(ours), torch.cat(theirs))
    # obj_reps: the visual feature embedding of every box (whole image first) before its LayerNorm
    from mmbert.data.boxes import add_global_region
    from mmbert.models.vl_bert import pixel_convention_boxes

    feats, boxes, _ = add_global_region(x["region_feats"], x["region_boxes"], rm, "last")
    boxes = pixel_convention_boxes(boxes, x["image_size"])
    reps = model.encoder.embeddings.visual(feats, boxes)
    reps = torch.cat([reps[:, -1:], reps[:, :-1]], 1)  # the whole image first, as the authors
    res["obj_reps"] = (reps[objects], o["obj_reps"][objects])
    lab = dict(src, text_ids=x["label_text_ids"], region_masked=x["label_region_target_mask"])
    out = model(**lab)
    res["label_mlm_logits"] = (out.mlm_logits[tm], o["label_mlm_logits"][tm])
    return res


FAMILIES: dict[str, Callable[[Fixture, object], Computed]] = {
    "volta": _dual_stream,
    "visualbert": _visualbert,
    "vl-bert": _vl_bert,
    "vilbert": _dual_stream,
    "uniter": _uniter,
    "lxmert": _lxmert,
}


def load(fx: Fixture):
    return mmbert.load_pretraining(fx.checkpoint, config=fx.config, **load_options(fx))


@torch.no_grad()
def compare(fx: Fixture, model=None) -> dict[str, float]:
    """Output name -> max |ours - theirs| over real positions; every stored output must be covered."""
    model = load(fx) if model is None else model
    family = FAMILIES.get(getattr(model, "converted_from", None) or model.source)
    if family is None:
        raise KeyError(f"{fx.name}: no comparison for source {model.source!r}")
    computed = family(fx, model)
    diffs = {}
    for name, (ours, theirs) in computed.items():
        if ours is None:
            raise AssertionError(f"{fx.name}: mmbert produced no {name}")
        if ours.shape != theirs.shape:
            raise AssertionError(
                f"{fx.name}: {name} has shape {tuple(ours.shape)}, the authors' {tuple(theirs.shape)}"
            )
        diffs[name] = float((ours - theirs).abs().max())
    covered = {n.split("[")[0] for n in diffs}
    missing = sorted(set(fx.outputs) - covered)
    if missing:
        raise AssertionError(f"{fx.name}: stored outputs not compared: {missing}")
    return diffs


def main() -> int:
    worst = 0.0
    print(f"{'fixture':<32} {'output':<22} {'max abs diff':>12}")
    for folder in fixture_dirs():
        fx = read_fixture(folder)
        diffs = compare(fx)
        for name, d in diffs.items():
            worst = max(worst, d)
            print(f"{fx.name:<32} {name:<22} {d:>12.3e}")
    print(f"worst: {worst:.3e} (tolerance {TOLERANCE:g})")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
