"""VisualBERT pre-training step, mmbert vs Hugging Face ``transformers.VisualBertForPreTraining``, in one run.

Same config, same weights (the HF model is saved and loaded by ``mmbert.load_pretraining``), same batch:
captions of COCO length (7 to 20 tokens, padded to the batch's longest), 36 regions of 2048-d features,
15 % MLM targets, image-text match labels. Each side runs its library's public training path: mmbert's
``Pretraining`` (MLM + ITM; ``score_mismatched=True`` so that both sides score the masked tokens of every
pair, as HF does) and ``VisualBertForPreTraining(labels=..., sentence_image_labels=...)``; the same
optimizer (``mmbert.train.optim.build_optimizer``). Loss and hidden states are asserted equal (eval mode)
before anything is timed. Harness: ``benchmarks/common.py``.

    python benchmarks/bench_visualbert.py                                   # visualbert_base, batch 32
    python benchmarks/bench_visualbert.py --preset visualbert_tiny --batch 4 --repeats 2   # quick check
Prints a table, then one JSON object on the last line.
"""

from __future__ import annotations

from collections.abc import Mapping

import common
import torch

from mmbert.data.batch import Batch

COMPUTES = common.computes(
    {
        "entry": "mmbert.Pretraining(model, score_mismatched=True)(batch).loss: mlm + itm",
    },
    {
        "entry": "transformers.VisualBertForPreTraining(labels=, sentence_image_labels=).loss",
        "scored_positions": "MLM logits at all T + R joint positions, loss over the labelled tokens",
        "attention": "eager matmul + softmax (the only implementation HF VisualBERT has)",
    },
)


def make_batch(config, a, g: torch.Generator) -> Batch:
    batch, seq, regions = a.batch, a.seq, a.regions
    ids, mask, mlm_labels = common.padded_captions(config, batch, seq, g)
    xy = torch.rand(batch, regions, 2, generator=g) * 0.5
    return Batch(
        text_ids=ids,
        text_mask=mask,
        segment_ids=torch.zeros(batch, seq, dtype=torch.long),
        region_feats=torch.randn(batch, regions, config.region_feat_dim, generator=g).relu(),
        region_boxes=torch.cat([xy, xy + torch.rand(batch, regions, 2, generator=g) * 0.5], -1),
        region_mask=torch.ones(batch, regions, dtype=torch.bool),
        mlm_labels=mlm_labels,
        pair_labels=torch.randint(0, 2, (batch,), generator=g),  # 1 = matches
    )


def hf_inputs(x: Mapping) -> dict:
    """mmbert-named inputs -> ``VisualBertModel``'s."""
    return dict(
        **common.hf_text_inputs(x),
        visual_embeds=x["region_feats"],
        visual_attention_mask=x["region_mask"].long(),
    )


def hf_text(ref, x: Mapping) -> torch.Tensor:
    """The text part of the joint sequence's last hidden states."""
    return ref.visual_bert(**hf_inputs(x)).last_hidden_state[:, : x["text_ids"].shape[1]]


def hf_loss(ref, b: Batch) -> torch.Tensor:
    r = b.region_feats.shape[1]
    labels = torch.cat([b.mlm_labels, b.mlm_labels.new_full((b.size, r), -100)], 1)  # joint-sequence labels
    inputs = hf_inputs(b.model_inputs())
    return ref(**inputs, labels=labels, sentence_image_labels=1 - b.pair_labels).loss  # HF: 0 = matches


SPEC = common.PretrainingSpec(
    preset="visualbert_base",
    sizes={"batch": 32, "seq": 20, "regions": 36},
    hf_class_name="VisualBertForPreTraining",
    make_batch=make_batch,
    hf_loss=hf_loss,
    hf_text=hf_text,
    layers=lambda ours: ours.encoder.layers,
    hf_layers=lambda ref: ref.visual_bert.encoder.layer,
    parity_name="text_hidden_max_abs_diff_real_tokens",
    computes=COMPUTES,
    objective={"score_mismatched": True},
)

if __name__ == "__main__":
    common.pretraining_main(SPEC, __file__, __doc__.split("\n")[0])
