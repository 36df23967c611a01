"""LXMERT's fine-tuned files (airsplay/lxmert src/tasks: vqa.py / gqa.py / nlvr2.py save
``torch.save(self.model.state_dict())`` of VQAModel / GQAModel / NLVR2Model): ``lxrt_encoder.model.bert.*``
(``lxrt_encoder.model.module.bert.*`` under --multiGPU, which wraps only the encoder in DataParallel) and
the task head ``logit_fc.{0,2,3}``. Built here from the pre-training fixture's weights, renamed as that code
names them; the VQA head is the fixture's own answer head, so the fixture's QA logits are the expected
output, and NLVR2's two-image head is checked against its formula on the fixture's pooled outputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from authors_fixtures import TOLERANCE, batch_of, fixture_dirs, load_options, plain_inputs, read_fixture

import mmbert
from mmbert.cli import main
from mmbert.convert import CheckpointError
from mmbert.tasks.checkpoint_heads import heads_from_checkpoint

pytestmark = pytest.mark.authors

FIXTURES = [f for f in fixture_dirs() if read_fixture(f).meta["source"] == "lxmert"]
ENCODER = "module.bert."  # the pre-training file's encoder keys (DataParallel over the whole model)


def fine_tuned_state(fx, multi_gpu: bool, head: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The keys VQAModel / NLVR2Model.state_dict() has: the encoder under lxrt_encoder.model., then
    logit_fc."""
    state = torch.load(fx.checkpoint, weights_only=True)
    prefix = "lxrt_encoder.model." + ("module." if multi_gpu else "")
    out = {prefix + k[len("module.") :]: v for k, v in state.items() if k.startswith(ENCODER)}
    assert out, f"{fx.checkpoint}: no {ENCODER} keys"
    return {**out, **{f"logit_fc.{k}": v for k, v in head.items()}}


def vqa_head(fx) -> dict[str, torch.Tensor]:
    """The fixture's QA head (answer_head.logit_fc: Linear, GeLU, LayerNorm, Linear), VQAModel's layout."""
    state = torch.load(fx.checkpoint, weights_only=True)
    p = "module.answer_head.logit_fc."
    return {k[len(p) :]: v for k, v in state.items() if k.startswith(p)}


def nlvr2_head(dim: int) -> dict[str, torch.Tensor]:
    """NLVR2Model.logit_fc: Linear(2D, 2D), GeLU, LayerNorm(2D), Linear(2D, 2), seeded weights."""
    g = torch.Generator().manual_seed(7)
    w = lambda *s: torch.randn(*s, generator=g) * 0.2  # noqa: E731
    return {
        "0.weight": w(2 * dim, 2 * dim),
        "0.bias": w(2 * dim),
        "2.weight": 1 + w(2 * dim),
        "2.bias": w(2 * dim),
        "3.weight": w(2, 2 * dim),
        "3.bias": w(2),
    }


def nlvr2_reference(head: dict[str, torch.Tensor], pooled: torch.Tensor) -> torch.Tensor:
    """NLVR2Model.forward after the encoder: x.view(-1, 2D) (rows 2b, 2b+1 are one example's two images),
    then logit_fc with BERT's erf GeLU and LayerNorm eps 1e-12."""
    x = pooled.reshape(-1, 2 * pooled.shape[-1])
    x = F.linear(x, head["0.weight"], head["0.bias"])
    x = x * 0.5 * (1.0 + torch.erf(x / 2.0**0.5))
    x = F.layer_norm(x, x.shape[-1:], head["2.weight"], head["2.bias"], eps=1e-12)
    return F.linear(x, head["3.weight"], head["3.bias"])


@pytest.fixture(params=FIXTURES, ids=lambda f: f.name)
def fx(request):
    return read_fixture(request.param)


def hf_inputs(x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The fixture's plain batch as Hugging Face LXMERT takes it (boxes are the authors' positions)."""
    return {
        "input_ids": x["text_ids"],
        "attention_mask": x["text_mask"].long(),
        "token_type_ids": x["segment_ids"],
        "visual_feats": x["region_feats"],
        "visual_pos": x["region_boxes"],
        "visual_attention_mask": x["region_mask"].long(),
    }


@torch.no_grad()
def test_pretraining_file_exports_to_hugging_face_with_the_authors_outputs(fx, tmp_path):
    transformers = pytest.importorskip("transformers")
    dst = tmp_path / "hf"
    assert main(["convert", str(fx.checkpoint), str(dst), "--config", str(fx.config), "--to", "hf"]) == 0
    out = transformers.LxmertForPreTraining.from_pretrained(dst).eval()(
        **hf_inputs(fx.inputs), output_hidden_states=True
    )
    x, o = fx.inputs, fx.outputs
    tm, rm = x["text_mask"], x["region_mask"]
    diffs = {
        "text_hidden": out.language_hidden_states[-1][tm] - o["text_hidden"][tm],
        "vision_hidden": out.vision_hidden_states[-1][rm] - o["vision_hidden"][rm],
        "mlm_logits": out.prediction_logits[tm] - o["mlm_logits"][tm],
        "itm_logits": out.cross_relationship_score - o["itm_logits"],  # index 1 = matches in both
        "qa_logits": out.question_answering_score - o["qa_logits"],
    }
    worst = {k: float(v.abs().max()) for k, v in diffs.items() if v.abs().max() > TOLERANCE}
    assert not worst, worst


def _write(tmp_path, state) -> str:
    f = tmp_path / "BEST.pth"  # the name vqa.py / gqa.py / nlvr2.py give the best epoch
    torch.save(state, f)
    return str(f)


@pytest.mark.parametrize("multi_gpu", [False, True], ids=["single-gpu", "multi-gpu"])
@torch.no_grad()
def test_vqa_file_loads_every_weight_and_reproduces_the_answer_logits(fx, tmp_path, multi_gpu):
    f = _write(tmp_path, fine_tuned_state(fx, multi_gpu, vqa_head(fx)))
    model = mmbert.load_pretraining(f, config=fx.config, **load_options(fx))
    assert model.source == "lxmert"
    report = model.source_report
    assert report.heads == [] and report.task_heads == ["vqa"] and report.ignored == {}
    # every encoder weight placed: identical to the encoder read from the pre-training file
    original = mmbert.load_model(fx.checkpoint, config=fx.config, **load_options(fx))
    ours = model.encoder.state_dict()
    assert ours.keys() == original.state_dict().keys()
    for k, v in original.state_dict().items():
        assert torch.equal(ours[k], v), k
    x, o = fx.inputs, fx.outputs
    src = plain_inputs(x)
    enc = model.encoder(**src)
    logits = heads_from_checkpoint(model)["vqa"](enc, batch_of(src))
    assert (enc.pooled - o["pooled"]).abs().max() <= TOLERANCE
    assert (logits - o["qa_logits"]).abs().max() <= TOLERANCE


@torch.no_grad()
def test_nlvr2_file_gets_the_two_image_head(fx, tmp_path):
    dim = fx.outputs["pooled"].shape[-1]
    head = nlvr2_head(dim)
    f = _write(tmp_path, fine_tuned_state(fx, True, head))
    model = mmbert.load_pretraining(f, config=fx.config, **load_options(fx))
    assert model.source_report.task_heads == ["nlvr2"]
    x, o = fx.inputs, fx.outputs
    src = plain_inputs(x)
    assert x["text_ids"].shape[0] % 2 == 0, "NLVR2 pairs rows 2b, 2b+1: the fixture batch must be even"
    logits = heads_from_checkpoint(model)["nlvr2"](model.encoder(**src), batch_of(src))
    expected = nlvr2_reference(head, o["pooled"])
    assert logits.shape == expected.shape == (x["text_ids"].shape[0] // 2, 2)
    assert (logits - expected).abs().max() <= TOLERANCE


def test_task_head_with_a_missing_weight_is_named(fx, tmp_path):
    head = vqa_head(fx)
    del head["2.bias"]
    f = _write(tmp_path, fine_tuned_state(fx, False, head))
    with pytest.raises(CheckpointError, match=r"logit_fc\.2\.bias"):
        mmbert.load_pretraining(f, config=fx.config)


@torch.no_grad()
def test_vqa_file_converts_to_mmbert_and_to_hugging_face(fx, tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    f = _write(tmp_path, fine_tuned_state(fx, False, vqa_head(fx)))
    x, o = fx.inputs, fx.outputs
    src = plain_inputs(x)
    assert main(["convert", f, str(tmp_path / "mm"), "--config", str(fx.config)]) == 0
    assert "task heads vqa" in capsys.readouterr().out
    back = mmbert.load_pretraining(tmp_path / "mm")
    logits = heads_from_checkpoint(back)["vqa"](back.encoder(**src), batch_of(src))
    assert (logits - o["qa_logits"]).abs().max() <= TOLERANCE
    # Hugging Face: LxmertForQuestionAnswering (the encoder and the answer head, no pre-training heads)
    assert main(["convert", f, str(tmp_path / "hf"), "--config", str(fx.config), "--to", "hf"]) == 0
    hf = transformers.LxmertForQuestionAnswering.from_pretrained(tmp_path / "hf").eval()
    out = hf(**hf_inputs(x))
    assert (out.question_answering_score - o["qa_logits"]).abs().max() <= TOLERANCE
    # the library call for pre-training classes says where the task class is written
    with pytest.raises(CheckpointError, match="LxmertForQuestionAnswering, written by .*export_question_answering"):
        mmbert.export_hf(back, tmp_path / "pre")


def test_nlvr2_file_is_refused_by_hugging_face_export(fx, tmp_path, capsys):
    f = _write(tmp_path, fine_tuned_state(fx, False, nlvr2_head(fx.outputs["pooled"].shape[-1])))
    assert main(["convert", f, str(tmp_path / "hf"), "--config", str(fx.config), "--to", "hf"]) == 1
    err = capsys.readouterr().err
    assert "task heads ['nlvr2']" in err and "no two-image (NLVR2) head" in err and "--encoder-only" in err
    assert not (tmp_path / "hf" / "model.safetensors").exists()
    # the encoder alone does export
    assert main(["convert", f, str(tmp_path / "enc"), "--config", str(fx.config), "--to", "hf", "--encoder-only"]) == 0
