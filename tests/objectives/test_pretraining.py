"""Pretraining: each preset's default objective set, weighted sums, mismatch scoring, bad overrides."""

from __future__ import annotations

import pytest
import torch

from mmbert.models import MODELS, PretrainingModel, build_model
from mmbert.objectives import RECIPES, MaskedLM, PairMatch, Pretraining
from mmbert.objectives.mlm import IGNORE
from mmbert.train.pretrain_data import PretrainingBatch

TINY = [name for name in MODELS if name.endswith("_tiny")]


def full_batch(config, seed: int = 0) -> PretrainingBatch:
    """A batch carrying every target any objective reads (3 examples, the second mismatched)."""
    g = torch.Generator().manual_seed(seed)
    b, t = 3, 6
    ids = torch.randint(5, config.vocab_size, (b, t), generator=g)
    batch = PretrainingBatch(text_ids=ids, text_mask=torch.ones(b, t, dtype=torch.bool),
                             segment_ids=torch.zeros(b, t, dtype=torch.long))  # fmt: skip
    batch.mlm_labels = torch.full((b, t), IGNORE)
    batch.mlm_labels[:, 1:3] = ids[:, 1:3]
    batch.pair_labels = torch.tensor([1, 0, 1])
    feat_dim = getattr(config, "region_feat_dim", None)
    if feat_dim:
        r = 4
        xy = torch.rand(b, r, 2, generator=g) * 0.5
        batch.region_feats = torch.randn(b, r, feat_dim, generator=g)
        batch.region_boxes = torch.cat([xy, xy + 0.3], -1)
        batch.region_mask = torch.ones(b, r, dtype=torch.bool)
        batch.region_target_mask = torch.zeros(b, r, dtype=torch.bool)
        batch.region_target_mask[:, :2] = True
        batch.region_masked = batch.region_target_mask.clone()
        batch.region_targets = torch.randn(b, r, feat_dim, generator=g)
        classes = getattr(config, "num_region_classes", 0) or 11  # no region head: any class count
        batch.region_cls_prob = torch.softmax(torch.randn(b, r, classes, generator=g), -1)
        batch.region_labels = torch.randint(
            0, getattr(config, "num_object_labels", classes), (b, r), generator=g
        )
        batch.region_obj_conf = torch.rand(b, r, generator=g)
        batch.region_attr_labels = torch.randint(
            0, max(1, getattr(config, "num_attr_labels", 1)), (b, r), generator=g
        )
        batch.region_attr_conf = torch.rand(b, r, generator=g)
        batch.answer_targets = torch.rand(b, max(1, getattr(config, "num_qa_labels", 1)), generator=g)
    return batch


def test_every_model_type_has_one_recipe_and_the_papers_objectives():
    assert RECIPES["bert"].objectives == ("mlm", "nsp")
    assert RECIPES["visualbert"].objectives == ("mlm", "itm")
    assert RECIPES["unicoder_vl"].objectives == ("mlm", "moc", "itm")
    assert RECIPES["vl_bert"].objectives == ("mlm", "mvrc_soft")
    assert RECIPES["uniter"].objectives == ("itm_wra", "mlm", "mrfr", "mrckl")
    assert RECIPES["uniter"].mix_ratio == (2, 2, 1, 1) and RECIPES["uniter"].negative == "image"
    assert RECIPES["vilbert"].objectives == ("mlm", "mrc_kl", "itm")
    assert RECIPES["lxmert"].objectives == ("mlm", "obj", "attr", "feat", "itm", "qa")
    for name in TINY:
        assert MODELS[name]().model_type in RECIPES, name


@pytest.mark.parametrize("name", TINY)
def test_default_objectives_run_and_sum_with_weights(name):
    torch.manual_seed(0)
    model = PretrainingModel(build_model(name)).eval()
    task = Pretraining(model)
    batch = full_batch(model.config)
    out = task(batch)
    recipe = RECIPES[model.config.model_type]
    assert task.objective_names == recipe.objectives
    per_objective = sum(out.metrics[f"{o}_loss"] for o in recipe.objectives)
    assert out.metrics["loss"] == pytest.approx(per_objective, rel=1e-5)
    weights = {recipe.objectives[0]: 0.5, recipe.objectives[-1]: 2.0}
    weighted = Pretraining(model, weights=weights)(batch)
    expected = sum(out.metrics[f"{o}_loss"] * weights.get(o, 1.0) for o in recipe.objectives)
    assert weighted.loss.item() == pytest.approx(expected, rel=1e-5)
    out.loss.backward()


def test_mlm_is_scored_on_matching_pairs_only_where_the_paper_says_so():
    torch.manual_seed(0)
    model = PretrainingModel(build_model("bert_tiny")).eval()
    batch = full_batch(model.config)
    matched_only = Pretraining(model, ["mlm", "nsp"], score_mismatched=False)(batch)
    every_pair = Pretraining(model, ["mlm", "nsp"], score_mismatched=True)(batch)
    assert matched_only.metrics["mlm_count"] == 4 and every_pair.metrics["mlm_count"] == 6
    # by hand: the matching rows' logits through the model's own MLM head
    logits = model(batch.text_ids, batch.text_mask, batch.segment_ids).mlm_logits
    keep = batch.mlm_labels.clone()
    keep[1] = IGNORE
    assert matched_only.metrics["mlm_loss"] == pytest.approx(
        MaskedLM()(logits, keep).metrics["mlm_loss"], rel=1e-5
    )
    pair = PairMatch("nsp")(model(batch.text_ids).pair_logits, batch.pair_labels)
    assert matched_only.metrics["nsp_loss"] == pytest.approx(pair.metrics["nsp_loss"], rel=1e-5)


def test_overrides_are_checked_by_name():
    model = PretrainingModel(build_model("bert_tiny"))
    with pytest.raises(KeyError, match="unknown objectives"):
        Pretraining(model, ["mlm", "bogus"])
    with pytest.raises(KeyError, match="not in use"):
        Pretraining(model, ["mlm"], weights={"nsp": 1.0})
    with pytest.raises(ValueError, match="heads"):
        Pretraining(model, ["mlm", "mrc_kl"])
    only_nsp = Pretraining(model, ["nsp"])
    assert not only_nsp.uses_every_head  # the MLM head is idle: DDP must look for unused parameters
    with pytest.raises(ValueError, match="needs batch.pair_labels"):
        batch = full_batch(model.config)
        batch.pair_labels = None
        only_nsp(batch)


def test_the_mlm_lookup_gradient_is_sparse_only_inside_the_objective():
    """The tied embedding's lookup gradient is sparse during MLM pre-training (the decoder's dense
    gradient joins it, so the parameter's gradient is dense), and the model stays dense afterwards."""
    model = PretrainingModel(build_model("bert_tiny")).eval()  # eval: no dropout, so both runs agree
    task = Pretraining(model, ["mlm"])
    ids = torch.randint(5, 100, (2, 6))
    labels = torch.full_like(ids, -100)
    labels[:, 2] = ids[:, 2]
    mask = torch.ones_like(ids, dtype=torch.bool)
    batch = PretrainingBatch(text_ids=ids, text_mask=mask, segment_ids=torch.zeros_like(ids), mlm_labels=labels)
    task(batch).loss.backward()
    grad = model.encoder.word_embeddings.weight.grad
    assert grad is not None and not grad.is_sparse and model.encoder.word_embeddings.sparse is False
    dense = PretrainingModel(build_model("bert_tiny")).eval()
    dense.load_state_dict(model.state_dict())
    out = dense(ids, mlm_positions=labels != -100)
    torch.nn.functional.cross_entropy(out.mlm_logits, labels[labels != -100]).backward()
    torch.testing.assert_close(grad, dense.encoder.word_embeddings.weight.grad)
