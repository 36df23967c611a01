"""LXMERT pre-training step, mmbert vs Hugging Face ``transformers.LxmertForPreTraining``, in one run.

Same config, same weights (the HF model is saved and loaded by ``mmbert.load_pretraining``), same batch:
captions of 7 to 20 tokens padded to the batch's longest, 36 regions of 2048-d features, 15 % of tokens
and regions masked, every LXMERT objective: masked LM, cross-modality matching, object prediction as
LXMERT's code scores it (object and attribute CE x confidence at every region, feature SmoothL1 at the
masked ones; x 1 / 0.15 on both sides, averaged over all B x R regions) and image QA (dropped for
mismatched pairs on both sides). Each side runs its library's public training path: mmbert's
``Pretraining`` (recipe "lxmert") and ``LxmertForPreTraining(labels=,
obj_labels=, matched_label=, ans=)``; the same optimizer (``mmbert.train.optim.build_optimizer``). Loss
and hidden states are asserted equal (eval mode) before anything is timed. ViLBERT (no Hugging Face
counterpart) is timed alone on the same batch through ``Pretraining`` (MLM + ITM + KL to the detector's
class distribution). Harness: ``benchmarks/common.py``.

    python benchmarks/bench_lxmert.py                                   # lxmert_base, batch 8, 36 regions
    python benchmarks/bench_lxmert.py --preset lxmert_tiny --vilbert vilbert_tiny --repeats 2  # quick check
Prints a table, then one JSON object on the last line.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping

import common
import torch

import mmbert
from mmbert.data.batch import Batch
from mmbert.objectives import Pretraining
from mmbert.objectives.regions import LXMERT_VISUAL_LOSS_NORMALIZER
from mmbert.train.optim import build_optimizer

COMPUTES = common.computes(
    {
        "entry": "mmbert.Pretraining(load_pretraining(dir))(batch).loss; recipe lxmert: mlm obj attr feat itm qa",
        "scored_positions": "MLM transform + vocabulary projection only at the labelled tokens; region heads "
        "at every region (as HF); the text side of the last cross layer's self-attention and FFN only at the "
        "labelled tokens and [CLS]",
    },
    {
        "entry": "transformers.LxmertForPreTraining(labels=, obj_labels=, matched_label=, ans=).loss",
        "scored_positions": "MLM logits at every token, region heads at every region, losses weighted",
        "attention": "eager matmul + softmax (the only implementation HF LXMERT has)",
    },
)


def make_batch(config, a, g: torch.Generator) -> Batch:
    batch, seq, regions = a.batch, a.seq, a.regions
    ids, mask, mlm_labels = common.padded_captions(config, batch, seq, g)
    feats = torch.rand(batch, regions, config.region_feat_dim, generator=g) * 2  # ReLU-like detector features
    xy = torch.rand(batch, regions, 2, generator=g) * 0.7
    region_sel = torch.rand(batch, regions, generator=g) < 0.15
    region_sel[:, 0] = True
    pair = torch.randint(0, 2, (batch,), generator=g)
    num_obj = getattr(config, "num_object_labels", 1600)
    num_attr = getattr(config, "num_attr_labels", 400)
    num_qa = getattr(config, "num_qa_labels", 0) or 1
    num_cls = getattr(config, "num_region_classes", num_obj)
    return Batch(
        text_ids=ids,
        text_mask=mask,
        segment_ids=torch.zeros(batch, seq, dtype=torch.long),
        region_feats=feats,
        region_boxes=torch.cat([xy, xy + torch.rand(batch, regions, 2, generator=g) * 0.3], -1),
        region_mask=torch.ones(batch, regions, dtype=torch.bool),
        mlm_labels=mlm_labels,
        pair_labels=pair,
        region_labels=torch.randint(0, num_obj, (batch, regions), generator=g),
        region_obj_conf=torch.rand(batch, regions, generator=g),
        region_attr_labels=torch.randint(0, num_attr, (batch, regions), generator=g),
        region_attr_conf=torch.rand(batch, regions, generator=g),
        region_targets=feats,
        region_target_mask=region_sel,
        region_cls_prob=torch.randn(batch, regions, num_cls, generator=g).softmax(-1),
        answer_targets=torch.randint(0, num_qa, (batch,), generator=g),
    )


def hf_inputs(x: Mapping) -> dict:
    """mmbert-named inputs -> ``LxmertModel``'s."""
    return dict(
        **common.hf_text_inputs(x),
        visual_feats=x["region_feats"],
        visual_pos=x["region_boxes"],
        visual_attention_mask=x["region_mask"].long(),
    )


def hf_text(ref, x: Mapping) -> torch.Tensor:
    return ref.lxmert(**hf_inputs(x)).language_output


def hf_loss(ref, b: Batch) -> torch.Tensor:
    sel = b.region_target_mask.float()
    return ref(
        **hf_inputs(b.model_inputs()),
        labels=b.mlm_labels,
        matched_label=b.pair_labels,  # HF LXMERT: 1 = matches, as mmbert
        ans=b.answer_targets.masked_fill(b.pair_labels == 0, -100),  # no QA on mismatched pairs (LXMERT)
        obj_labels={  # as lxmert_pretrain.py: object / attribute labels at every region, features at masked ones
            "obj": (b.region_labels, b.region_obj_conf),
            "attr": (b.region_attr_labels, b.region_attr_conf),
            "feat": (b.region_targets, sel),
        },
    ).loss


def time_vilbert(args) -> dict:
    """ViLBERT's pre-training step through ``Pretraining`` (no reference implementation to compare)."""
    torch.manual_seed(0)
    model = mmbert.PretrainingModel(mmbert.build_model(args.vilbert)).to(args.device).train()
    c = model.config
    b = common.make_batch(SPEC, c, args)
    b.region_feats = b.region_feats[..., : c.region_feat_dim]
    objective = Pretraining(model)
    opt = build_optimizer(model, lr=1e-5)
    times = common.alternate(
        {"vilbert": lambda: common.train_step(lambda: objective(b).loss, opt, args.device, args.dtype)}, args.repeats
    )
    return {
        "preset": args.vilbert,
        "objectives": list(objective.objective_names),
        "parameters": model.encoder.num_parameters(),
        "step_s_median": statistics.median(times["vilbert"]),
    }


def add_args(p) -> None:
    p.add_argument("--vilbert", default="vilbert_base", help="ViLBERT preset timed alone ('none' to skip)")


SPEC = common.PretrainingSpec(
    preset="lxmert_base",
    sizes={"batch": 8, "seq": 20, "regions": 36},
    hf_class_name="LxmertForPreTraining",
    make_batch=make_batch,
    hf_loss=hf_loss,
    hf_text=hf_text,
    layers=lambda ours: [*ours.encoder.text_layers, *ours.encoder.vision_layers, *ours.encoder.cross_layers],
    hf_layers=lambda ref: [*ref.lxmert.encoder.layer, *ref.lxmert.encoder.r_layers, *ref.lxmert.encoder.x_layers],
    parity_name="language_output_max_abs_diff_real_tokens",
    computes=COMPUTES,
    # the same region-loss scale on both sides: mmbert's 1 / 0.15 (Hugging Face rounds it to 6.67)
    hf_settings={"visual_loss_normalizer": LXMERT_VISUAL_LOSS_NORMALIZER},
    add_args=add_args,
    extra=lambda a: {"vilbert_alone": None if a.vilbert == "none" else time_vilbert(a)},
)

if __name__ == "__main__":
    common.pretraining_main(SPEC, __file__, __doc__.split("\n")[0])
