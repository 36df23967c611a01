"""Pretraining: each preset's default objective set, weighted sums, mismatch scoring, bad overrides."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mmbert.models import MODELS, PretrainingModel, build_model
from mmbert.models.base import ScoredRows
from mmbert.nn.tied import TiedEmbedding, TiedGradient
from mmbert.objectives import OBJECTIVES, RECIPES, MaskedLM, PairMatch, Pretraining
from mmbert.objectives.mlm import IGNORE
from mmbert.objectives.pretraining import recipe_key
from mmbert.objectives.regions import LxmertRegionLoss, RegionDistribution
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


@pytest.mark.parametrize("name", ["bert_tiny", "unimo_tiny"])
def test_the_mlm_objective_pairs_the_tied_gradients_only_inside_its_forward(name):
    """During MLM pre-training the lookup's rows are added into the decoder's (V, D) gradient in place
    (mmbert.nn.tied): the parameter gets the decoder's own buffer, dense, equal to the plain gradient;
    the embedding is unpaired again afterwards."""
    model = PretrainingModel(build_model(name)).eval()  # eval: no dropout, so both runs agree
    task = Pretraining(model, ["mlm"])
    lookup = model.encoder.word_embeddings
    assert isinstance(lookup, TiedEmbedding)
    ids = torch.randint(5, 100, (2, 6))
    labels = torch.full_like(ids, -100)
    labels[:, 2] = ids[:, 2]
    mask = torch.ones_like(ids, dtype=torch.bool)
    batch = PretrainingBatch(text_ids=ids, text_mask=mask, segment_ids=torch.zeros_like(ids), mlm_labels=labels)
    held: list[int] = []
    hold = TiedGradient.hold

    def spy(self, grad):
        kept = hold(self, grad)
        held.extend([grad.data_ptr()] if kept else [])
        return kept

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TiedGradient, "hold", spy)
        task(batch).loss.backward()
    grad = lookup.weight.grad
    assert grad is not None and not grad.is_sparse and lookup.pairing is None
    assert held == [grad.data_ptr()]  # the decoder's buffer became the gradient
    dense = PretrainingModel(build_model(name)).eval()
    dense.load_state_dict(model.state_dict())
    out = dense(ids, mlm_positions=labels != -100)
    torch.nn.functional.cross_entropy(out.mlm_logits, labels[labels != -100]).backward()
    torch.testing.assert_close(grad, dense.encoder.word_embeddings.weight.grad)


# Presets that pre-train, plus the whole-image-region and fused-pooler layouts the tiny presets lack.
SCORED_ROW_MODELS = [
    *((name, {}) for name in TINY),
    ("visualbert_tiny", {"global_region": "first"}),
    ("visualbert_tiny", {"global_region": "last"}),
    ("visualbert_tiny", {"pooling": "volta", "global_region": "first", "pooled_dim": 48, "num_region_classes": 11}),
    ("vl_bert_tiny", {"with_pooler": False}),
    ("lxmert_tiny", {"pooling": "volta", "global_region": "first", "num_object_labels": 11}),
]


def padded_batch(config) -> PretrainingBatch:
    """``full_batch`` with a padded token and a padded region, and for VL-BERT a text-only stream mixed in
    (its general corpus)."""
    batch = full_batch(config, seed=1)
    batch.text_mask[2, -1] = False
    batch.text_ids[2, -1] = 0
    if batch.region_mask is not None:
        batch.region_mask[1, -1] = False
    if config.model_type == "vl_bert":
        ids = torch.randint(5, config.vocab_size, (2, 5), generator=torch.Generator().manual_seed(2))
        labels = torch.full_like(ids, IGNORE)
        labels[:, 2] = ids[:, 2]
        batch.text_batch = PretrainingBatch(text_ids=ids, text_mask=torch.ones_like(ids, dtype=torch.bool),
                                            segment_ids=torch.zeros_like(ids), mlm_labels=labels)  # fmt: skip
    return batch


def loss_and_grads(model, objectives, batch, scored_rows_only: bool):
    """The loss, every parameter's gradient (None where it gets none) and the encoder's first output."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)  # the same dropout draws (fusion dropout) on both sides in training mode
    seen = {}

    def keep_first(module, args, out) -> None:  # returns None: the output stays as it is
        seen.setdefault("encoded", out)

    hook = model.encoder.register_forward_hook(keep_first)
    try:
        out = Pretraining(model, objectives, scored_rows_only=scored_rows_only)(batch)
    finally:
        hook.remove()
    out.loss.backward()
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    return out.loss.detach(), grads, seen["encoded"]


def scored_rows_differences(model, objectives, batch) -> tuple[list[str], bool]:
    """What differs (the loss, parameter names) between the step with ``scored_rows_only`` and without
    (fp32, rtol 1e-5), and whether the pruned step left some real text row out of the last layer."""
    if "mlm" not in objectives:  # the text-only stream is scored by MLM only
        batch = dataclasses.replace(batch, text_batch=None)
    full_loss, full_grads, _ = loss_and_grads(model, objectives, batch, False)
    loss, grads, encoded = loss_and_grads(model, objectives, batch, True)
    differ = [] if torch.allclose(loss, full_loss, rtol=1e-5, atol=1e-7) else ["loss"]
    for key, full in full_grads.items():
        got = grads[key]
        if full is None or got is None:
            if (full is not None and full.any()) or (got is not None and got.any()):
                differ.append(key)
        elif not torch.allclose(got, full, rtol=1e-5, atol=1e-7):
            differ.append(key)
    pruned = bool((~encoded.text.any(-1))[batch.text_mask].any())
    return differ, pruned


def objective_sets(model) -> list[tuple[str, ...]]:
    """The preset's recipe and every registered objective alone that the model can run."""
    sets = [tuple(RECIPES[recipe_key(model.config)].objectives)]
    for name in OBJECTIVES:
        try:
            Pretraining(model, [name])
        except ValueError:  # no head for it, or an objective that refuses this model
            continue
        sets.append((name,))
    return sets


@pytest.mark.parametrize(("name", "overrides"), SCORED_ROW_MODELS)
def test_scored_rows_give_the_same_loss_and_gradients(name, overrides):
    """Pruning the last layer to the rows the objectives declare changes no loss and no gradient: an
    objective that reads a row it does not declare would see zeros there and fail this."""
    torch.manual_seed(0)
    model = PretrainingModel(build_model(name, **overrides)).eval()  # dropout off
    batch = padded_batch(model.config)
    recipe, *alone = objective_sets(model)
    pruned_somewhere = False
    for objectives in (recipe, *alone):
        try:
            differ, pruned = scored_rows_differences(model, objectives, batch)
        except ValueError:  # a single objective whose targets this batch does not fit (class counts, heads)
            if objectives == recipe:
                raise
            continue
        assert not differ, (objectives, differ)
        pruned_somewhere |= pruned
    # the path is really taken: some objective set left real text rows out of the last layer
    assert pruned_somewhere == model.encoder.takes_scored_rows


@pytest.mark.parametrize("name", ["bert_tiny", "visualbert_tiny", "vilbert_tiny", "lxmert_tiny"])
def test_scored_rows_in_training_mode_with_checkpointing(name):
    """The same in training mode (dropouts at p = 0) with every layer checkpointed."""
    model = PretrainingModel(build_model(name, dropout=0.0, attn_dropout=0.0)).train()
    model.encoder.set_gradient_checkpointing(True)
    batch = padded_batch(model.config)
    differ, pruned = scored_rows_differences(model, RECIPES[model.config.model_type].objectives, batch)
    assert not differ and pruned


@pytest.mark.parametrize(("name", "objective", "method"), [
    ("bert_tiny", "mlm", MaskedLM),
    ("bert_tiny", "nsp", PairMatch),
    ("vilbert_tiny", "itm", PairMatch),
    ("vl_bert_tiny", "mvrc_soft", RegionDistribution),
    ("lxmert_tiny", "obj", LxmertRegionLoss),
])  # fmt: skip
def test_the_check_fails_for_an_objective_that_under_declares(name, objective, method, monkeypatch):
    """The check above can fail: a declaration that leaves out one row the objective reads (a labelled
    token, the pooled positions, a target region, a real region) shows up as a difference."""
    torch.manual_seed(0)
    model = PretrainingModel(build_model(name)).eval()
    batch = padded_batch(model.config)
    assert scored_rows_differences(model, [objective], batch)[0] == []
    declared = method.reads

    def under_declared(self, inputs):
        rows = declared(self, inputs)
        if rows.pooled:
            return dataclasses.replace(rows, pooled=False)
        field = "text" if rows.text is not None else "regions"
        mask = getattr(rows, field).clone()
        mask[tuple(mask.nonzero()[0])] = False
        return dataclasses.replace(rows, **{field: mask})

    monkeypatch.setattr(method, "reads", under_declared)
    assert scored_rows_differences(model, [objective], batch)[0]


def test_scored_rows_are_refused_with_attention_maps_and_by_models_without_them():
    model = build_model("bert_tiny").eval()
    ids = torch.randint(5, 100, (2, 4))
    with pytest.raises(ValueError, match="output_attentions reads every row"):
        model(ids, output_attentions=True, scored_rows=ScoredRows(pooled=True))
    unimo = build_model("unimo_tiny")
    with pytest.raises(TypeError, match="takes no scored_rows"):
        unimo(ids, scored_rows=ScoredRows(pooled=True))
