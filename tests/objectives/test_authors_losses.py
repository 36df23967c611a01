"""The authors' pre-training losses. Every fixture folder (../shared/fixtures/authors/, found by listing)
with a losses.json holds one labelled batch (label_* tensors in mmbert's convention) and the losses the
authors' code computes on it. The batch goes as it is (no random masking) through the objectives of that
model's mmbert recipe; every loss must match within 1e-5.

    PYTHONPATH=src python tests/objectives/test_authors_losses.py    # fixture, loss, authors', mmbert's, diff
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared fixture reader
from authors_fixtures import ROOT, Fixture, fixture_dirs, load, read_fixture  # noqa: E402

from mmbert.data.batch import Batch  # noqa: E402
from mmbert.data.masking import box_iou, whole_image_feature  # noqa: E402
from mmbert.objectives import Pretraining  # noqa: E402
from mmbert.objectives.pair import PairMatch  # noqa: E402
from mmbert.objectives.registry import OBJECTIVES  # noqa: E402
from mmbert.train.pretrain_data import PretrainingBatch  # noqa: E402

pytestmark = pytest.mark.authors

TOLERANCE = 1e-5
PLAIN = ("text_ids", "text_mask", "segment_ids", "region_feats", "region_boxes", "region_mask")


def loss_folders() -> list[Path]:
    return [f for f in fixture_dirs() if (f / "losses.json").exists()]


def authors_losses(folder: Path) -> dict[str, float]:
    """The numeric entries of losses.json (the others describe reductions and inputs)."""
    data = json.loads((folder / "losses.json").read_text())
    return {k: float(v) for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def labelled(x: dict, **fields) -> PretrainingBatch:
    """The labelled batch: each input from its label_* tensor where the fixture has one, else the plain one."""
    return PretrainingBatch(**{n: x.get(f"label_{n}", x.get(n)) for n in PLAIN}, **fields)


def vilbert_whole_image(x: dict) -> torch.Tensor:
    """ViLBERT's / VOLTA's pre-training whole-image feature by mmbert's own rule (not the fixture's copy):
    the masked features' sum over the regions overlapping (IoU > 0.4, pixel boxes, +1) no target."""
    out = []
    for b in range(x["label_region_feats"].shape[0]):
        h, w = x["label_image_size"][b].float()
        boxes = x["label_region_boxes"][b] * torch.stack([w, h, w, h])
        targets, real = x["label_region_target_mask"][b], x["label_region_mask"][b]
        overlap = (box_iou(boxes, boxes, plus_one=True)[targets] > 0.4).any(0) & real
        out.append(whole_image_feature(x["label_region_feats"][b], real, overlap))
    return torch.stack(out)


def dual_stream(fx: Fixture, model) -> dict[str, float]:
    """vilbert-multi-task train_concap.py (objective 0) and VOLTA (kl_1601): mlm + mrc_kl + itm."""
    x = fx.inputs
    batch = labelled(x, mlm_labels=x["label_mlm_labels"], pair_labels=x["label_pair_labels"],
                     region_target_mask=x["label_region_target_mask"], region_cls_prob=x["label_region_cls_prob"],
                     region_targets=x["label_region_targets"], global_feats=vilbert_whole_image(x))  # fmt: skip
    m = Pretraining(model)(batch).metrics  # VOLTA's controlled models: its recipe (recipe_key "volta")
    return {"masked_lm_loss": m["mlm_loss"], "masked_img_loss": m["mrc_kl_loss"], "next_sentence_loss": m["itm_loss"],
            "total_loss_train_concap": m["loss"], "masked_loss_t": m["mlm_loss"], "masked_loss_v": m["mrc_kl_loss"],
            "pair_match_loss": m["itm_loss"], "total": m["loss"]}  # fmt: skip


def uniter(fx: Fixture, model) -> dict[str, float]:
    """UNITER: each task on its own conditionally masked batch, as pretrain.py runs one task per step."""
    x = fx.inputs
    plain = {n: x[n] for n in PLAIN}
    task = Pretraining(model, ["itm_wra", "mlm", "mrfr", "mrckl", "mrc"])
    mlm = task(PretrainingBatch(**dict(plain, text_ids=x["label_text_ids"]), mlm_labels=x["label_mlm_labels"],
                                task="mlm")).metrics  # fmt: skip
    ours = {"mlm": mlm["mlm_loss"]}
    for name in ("mrfr", "mrckl", "mrc"):
        regions = PretrainingBatch(**dict(plain, region_feats=x["label_region_feats"]),
                                   region_masked=x["label_region_target_mask"],
                                   region_target_mask=x["label_region_target_mask"],
                                   region_targets=x["label_region_targets"],
                                   region_cls_prob=x["label_region_cls_prob"], task=name)  # fmt: skip
        ours[name] = task(regions).metrics[f"{name}_loss"]
    itm = task(PretrainingBatch(**plain, pair_labels=x["label_pair_labels"], task="itm_wra")).metrics
    ours.update(
        {"itm": itm["itm_loss"], "itm_ot": itm["itm_ot_loss"], "itm_with_ot_lambda_0.1": itm["itm_wra_loss"]}
    )
    return ours


def lxmert(fx: Fixture, model) -> dict[str, float]:
    """LXRTPretraining.forward with the QA head; the model sees the masked features."""
    x = fx.inputs
    batch = labelled(x, mlm_labels=x["label_mlm_labels"], pair_labels=x["label_pair_labels"],
                     region_target_mask=x["label_region_target_mask"], region_targets=x["label_region_feats"],
                     region_labels=x["label_region_labels"], region_obj_conf=x["label_region_obj_conf"],
                     region_attr_labels=x["label_region_attr_labels"], region_attr_conf=x["label_region_attr_conf"],
                     answer_targets=x["label_answer"])  # fmt: skip
    batch.region_feats = x["ref_label_masked_feats"]  # the corrupted input; region_targets keep the originals
    m = Pretraining(model)(batch).metrics
    return {"Mask_LM": m["mlm_loss"], "Matched": m["itm_loss"], "Obj": m["obj_loss"], "Attr": m["attr_loss"],
            "Feat": m["feat_loss"], "QA": m["qa_loss"], "total_loss": m["loss"]}  # fmt: skip


def visualbert(fx: Fixture, model) -> dict[str, float]:
    """The original VisualBERT's 'pretraining' objective: MLM + matching, every given label scored (which
    pairs carry MLM labels is its data loader's choice; the batch is scored as it is)."""
    x = fx.inputs
    batch = labelled(x, mlm_labels=x["label_mlm_labels"], pair_labels=x["label_pair_labels"])
    m = Pretraining(model, score_mismatched=True)(batch).metrics
    return {"masked_lm_loss": m["mlm_loss"], "next_sentence_loss": m["itm_loss"], "loss": m["loss"]}


def vl_bert(fx: Fixture, model) -> dict[str, float]:
    """ResNetVLBERTForPretrainingMultitask: MLM with visual clues, soft-CE masked RoIs, and the text-only
    general-corpus batch (the authors' ref_label_aux_* tensors, -1 = no label) as the mixed-in stream."""
    x = fx.inputs
    aux_ids = x["ref_label_aux_text"]
    aux_labels = x["ref_label_aux_mlm_labels"].masked_fill(x["ref_label_aux_mlm_labels"] == -1, -100)
    text_only = Batch(aux_ids, aux_ids > 0, torch.zeros_like(aux_ids), mlm_labels=aux_labels)
    batch = labelled(x, mlm_labels=x["label_mlm_labels"], region_target_mask=x["label_region_target_mask"],
                     region_cls_prob=x["label_region_cls_prob"], region_masked=x["label_region_target_mask"],
                     image_size=x["image_size"], text_batch=text_only)  # fmt: skip
    m = Pretraining(model)(batch).metrics
    return {"mlm_loss_wvc": m["mlm_loss"], "mlm_loss_aux": m["mlm_text_loss"], "mvrc_loss": m["mvrc_soft_loss"],
            "total_loss": m["loss"]}  # fmt: skip


def vl_bert_not_built(config: Path, objectives: Sequence[str]) -> set[str]:
    """The authors' relationship_loss is 0 only because their pre-training config builds no relationship
    head (NETWORK.WITH_REL_LOSS false); mmbert's VL-BERT recipe must then have no matching objective either.
    Either side changing fails here, instead of a constant row that could never fail."""
    import yaml

    network = yaml.safe_load(config.read_text())["NETWORK"]
    if network.get("WITH_REL_LOSS") is not False:
        raise AssertionError(f"{config}: NETWORK.WITH_REL_LOSS is {network.get('WITH_REL_LOSS')!r}, not false: "
                             "the authors' relationship_loss is a real loss to compare")  # fmt: skip
    matching = [o for o in objectives if isinstance(OBJECTIVES[o](), PairMatch)]
    if matching:
        raise AssertionError(
            f"mmbert's VL-BERT recipe has matching objectives {matching}; the authors' has none"
        )
    return {"relationship_loss"}


def not_built(fx: Fixture, model) -> set[str]:
    """The losses of the fixture's losses.json that the authors' own config does not build (checked)."""
    if model.source == "vl-bert":
        return vl_bert_not_built(fx.config, list(Pretraining(model).objectives))
    return set()


FAMILIES: dict[str, Callable[[Fixture, object], dict[str, float]]] = {
    "vilbert": dual_stream, "volta": dual_stream, "uniter": uniter, "lxmert": lxmert, "visualbert": visualbert,
    "vl-bert": vl_bert,
}  # fmt: skip


@torch.no_grad()
def loss_table(folder: Path) -> list[tuple[str, float, float]]:
    """(loss name, the authors' value, mmbert's) for every loss of the folder's losses.json."""
    fx = read_fixture(folder)
    model = load(fx).eval()
    ours = FAMILIES[model.source](fx, model)
    absent = not_built(fx, model)
    rows = []
    for name, theirs in authors_losses(folder).items():
        if name in absent:
            if theirs != 0.0:
                raise AssertionError(
                    f"{fx.name}: {name} is {theirs} though the authors' config builds no such head"
                )
            continue  # the total still counts it (as 0)
        if name not in ours:
            raise AssertionError(f"{fx.name}: mmbert computes no {name!r} (it has {sorted(ours)})")
        rows.append((name, theirs, float(ours[name])))
    return rows


FOLDERS = loss_folders()


CASES = [pytest.param(f, id=str(f.relative_to(ROOT))) for f in FOLDERS]


@pytest.mark.parametrize("folder", CASES)
def test_the_labelled_batch_gives_the_authors_losses(folder):
    rows = loss_table(folder)
    bad = {name: (theirs, ours) for name, theirs, ours in rows if abs(theirs - ours) > TOLERANCE}
    assert not bad, f"{folder.name}: losses beyond {TOLERANCE} (authors', mmbert's): {bad}"


def test_vl_bert_relationship_loss_is_absent_on_both_sides(tmp_path):
    """The check behind skipping relationship_loss fails when either side would build the head."""
    folder = next(f for f in FOLDERS if f.name == "vl-bert")
    fx = read_fixture(folder)
    assert vl_bert_not_built(fx.config, ["mlm", "mvrc_soft"]) == {"relationship_loss"}
    with pytest.raises(AssertionError, match="matching objectives"):
        vl_bert_not_built(fx.config, ["mlm", "mvrc_soft", "itm"])
    changed = tmp_path / "with_rel.yaml"
    changed.write_text(fx.config.read_text().replace("WITH_REL_LOSS: false", "WITH_REL_LOSS: true"))
    with pytest.raises(AssertionError, match="WITH_REL_LOSS"):
        vl_bert_not_built(changed, ["mlm", "mvrc_soft"])


def main() -> int:
    print(f"{'fixture':<26} {'loss':<24} {'authors':>12} {'mmbert':>12} {'abs diff':>9}")
    worst = 0.0
    for folder in FOLDERS:
        rows = loss_table(folder)
        for name, theirs, ours in rows:
            diff = abs(theirs - ours)
            worst = max(worst, diff)
            print(
                f"{str(folder.relative_to(ROOT)):<26} {name:<24} {theirs:>12.7f} {ours:>12.7f} {diff:>9.1e}"
            )
    print(f"worst: {worst:.1e} (tolerance {TOLERANCE:g})")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
