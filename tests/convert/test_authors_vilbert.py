"""The multi-task ViLBERT's SNLI-VE head (``vil_tri_prediction``) maps onto mmbert's SNLI-VE task head,
its rows reordered from vilbert-multi-task's LABEL_MAP (contradiction, neutral, entailment) to mmbert's
(entailment, neutral, contradiction); ``linguisic_logit``, which no task trains, is reported by name.

The fixture stores no SNLI-VE logits, so the expected values are recomputed from the file's own weights
on the fixture's pooled output, as VILBertForVLTasks does: ``vil_tri_prediction(pooled)``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from authors_fixtures import TOLERANCE, batch_of, fixture_dirs, plain_inputs, read_fixture

import mmbert
from mmbert.tasks.checkpoint_heads import heads_from_checkpoint
from mmbert.tasks.snli_ve import LABELS

pytestmark = pytest.mark.authors

THEIR_LABELS = ("contradiction", "neutral", "entailment")  # visual_entailment_dataset.py LABEL_MAP
def _has_snli_ve_head(folder) -> bool:
    fx = read_fixture(folder)
    return fx.meta["source"].startswith("vilbert") and "vil_tri_prediction.weight" in torch.load(
        fx.checkpoint, weights_only=True
    )


FIXTURES = [f for f in fixture_dirs() if _has_snli_ve_head(f)]


def test_a_fixture_has_the_heads():
    assert FIXTURES, "no ViLBERT fixture with vil_tri_prediction: the tests below would check nothing"


@pytest.fixture(params=FIXTURES, ids=lambda f: f.name)
def fx(request):
    return read_fixture(request.param)


@torch.no_grad()
def test_snli_ve_head_reproduces_the_authors_head(fx):
    state = torch.load(fx.checkpoint, weights_only=True)
    model = mmbert.load_pretraining(fx.checkpoint, config=fx.config)
    assert "snli-ve" in model.source_report.task_heads
    assert not any(k.startswith("vil_tri_prediction.") for k in model.source_report.ignored)
    x, o = fx.inputs, fx.outputs
    src = plain_inputs(x)
    enc = model.encoder(**src)
    assert (enc.pooled - o["pooled"]).abs().max() <= TOLERANCE
    theirs = F.linear(o["pooled"], state["vil_tri_prediction.weight"], state["vil_tri_prediction.bias"])
    ours = heads_from_checkpoint(model)["snli-ve"](enc, batch_of(src))
    order = [THEIR_LABELS.index(name) for name in LABELS]  # our column i = their column order[i]
    assert ours.shape == (x["text_ids"].shape[0], len(LABELS))
    assert (ours - theirs[:, order]).abs().max() <= TOLERANCE


def test_linguisic_logit_is_reported_by_name(fx):
    model = mmbert.load_pretraining(fx.checkpoint, config=fx.config)
    ignored = model.source_report.ignored
    assert {k for k in ignored if k.startswith("linguisic_logit.")} == {
        "linguisic_logit.weight",
        "linguisic_logit.bias",
    }
    assert "no vilbert-multi-task task trains" in ignored["linguisic_logit.weight"]
    assert "linguisic_logit.weight" in model.source_report.summary()


@torch.no_grad()
def test_snli_ve_head_survives_an_mmbert_directory(fx, tmp_path):
    model = mmbert.load_pretraining(fx.checkpoint, config=fx.config)
    model.save(tmp_path / "mm")
    back = mmbert.load_pretraining(tmp_path / "mm")
    assert sorted(back.task_heads) == sorted(model.task_heads)
    for k, v in model.task_heads["snli-ve"].state_dict().items():
        assert torch.equal(back.task_heads["snli-ve"].state_dict()[k], v), k
