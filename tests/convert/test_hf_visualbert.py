"""Parity with Hugging Face VisualBERT on shared weights (encoder, pre-training heads, task heads),
export back to Hugging Face, and checkpoint errors."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from convert.hf_helpers import assert_export_round_trip, hf_reference

import mmbert
from mmbert.cli import main
from mmbert.convert import CheckpointError
from mmbert.convert.hf_tasks import export_task_head, load_task_head

SHAPES = [
    dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        visual_embedding_dim=512,
    ),
    dict(
        hidden_size=36,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=50,
        visual_embedding_dim=1024,
        type_vocab_size=3,
    ),
    dict(
        hidden_size=24,
        num_hidden_layers=1,
        num_attention_heads=3,
        intermediate_size=40,
        visual_embedding_dim=2048,
    ),
]
SHAPE_IDS = [f"v{s['visual_embedding_dim']}-d{s['hidden_size']}" for s in SHAPES]
VOCAB = 97


def hf_model(cls, path, seed=0, **shape):
    return hf_reference(cls, transformers.VisualBertConfig(vocab_size=VOCAB, max_position_embeddings=40, **shape),
                        path, seed)  # fmt: skip


def inputs(visual_dim, types=2, batch=3, length=9, regions=6, seed=1):
    """Padded text and padded regions; an alignment with some regions aligned to no word."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[1, 6:] = False
    mask[2, 4:] = False
    ids[~mask] = 0
    seg = torch.randint(0, types, (batch, length), generator=g)
    feats = torch.randn(batch, regions, visual_dim, generator=g)
    rmask = torch.ones(batch, regions, dtype=torch.bool)
    rmask[0, 4:] = False
    rmask[2, 2:] = False
    align = torch.randint(-1, 4, (batch, regions, 3), generator=g)
    align[:, 1] = -1  # region 1 aligned to no word
    return ids, mask, seg, feats, rmask, align


def hf_kwargs(ids, mask, seg, feats, rmask, align=None):
    kw = dict(
        input_ids=ids,
        attention_mask=mask.long(),
        token_type_ids=seg,
        visual_embeds=feats,
        visual_attention_mask=rmask.long(),
    )
    if align is not None:
        kw["image_text_alignment"] = align
    return kw


@pytest.mark.parametrize("aligned", [False, True], ids=["no-alignment", "alignment"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_pretraining_parity(tmp_path, shape, aligned):
    ref = hf_model(transformers.VisualBertForPreTraining, tmp_path, **shape)
    ours = mmbert.load_pretraining(tmp_path)
    ids, mask, seg, feats, rmask, align = inputs(
        shape["visual_embedding_dim"], shape.get("type_vocab_size", 2)
    )
    align = align if aligned else None
    extra = {"image_text_alignment": align} if aligned else {}
    t = ids.shape[1]
    with torch.no_grad():
        r = ref(**hf_kwargs(ids, mask, seg, feats, rmask, align), output_hidden_states=True)
        rb = ref.visual_bert(**hf_kwargs(ids, mask, seg, feats, rmask, align))
        o = ours(ids, mask, seg, region_feats=feats, region_mask=rmask, **extra)
    hidden = r.hidden_states[-1]
    torch.testing.assert_close(o.encoded.text[mask], hidden[:, :t][mask], atol=1e-5, rtol=0)
    torch.testing.assert_close(o.encoded.vision[rmask], hidden[:, t:][rmask], atol=1e-5, rtol=0)
    torch.testing.assert_close(o.encoded.pooled, rb.pooler_output, atol=1e-5, rtol=0)
    torch.testing.assert_close(o.mlm_logits[mask], r.prediction_logits[:, :t][mask], atol=1e-5, rtol=0)
    # HF: index 0 = "matches"; ours: index 1.
    torch.testing.assert_close(o.pair_logits, r.seq_relationship_logits.flip(-1), atol=1e-5, rtol=0)
    # load_model gives the same encoder; boxes, when given, change nothing.
    boxes = torch.tensor([0.1, 0.2, 0.5, 0.6]).expand(*feats.shape[:2], 4)
    with torch.no_grad():
        enc = mmbert.load_model(tmp_path)(ids, mask, seg, feats, boxes, rmask, **extra)
    torch.testing.assert_close(enc.text, o.encoded.text, atol=0, rtol=0)


def test_encoder_only_checkpoint_and_gathered_mlm(tmp_path):
    ref = hf_model(transformers.VisualBertModel, tmp_path, **SHAPES[0])
    model = mmbert.load_model(tmp_path)
    ids, mask, seg, feats, rmask, _ = inputs(512)
    with torch.no_grad():
        r = ref(**hf_kwargs(ids, mask, seg, feats, rmask))
        o = model(ids, mask, seg, region_feats=feats, region_mask=rmask)
    torch.testing.assert_close(o.text[mask], r.last_hidden_state[:, :9][mask], atol=1e-5, rtol=0)
    torch.testing.assert_close(o.pooled, r.pooler_output, atol=1e-5, rtol=0)
    with pytest.raises(CheckpointError, match="no pre-training head weights"):
        mmbert.load_pretraining(tmp_path)
    pt = mmbert.load_pretraining(tmp_path, allow_new_heads=True)
    assert pt.new_heads == ["mlm", "pair"]
    pos = torch.rand(ids.shape, generator=torch.Generator().manual_seed(3)) < 0.4
    with torch.no_grad():
        full = pt(ids, mask, seg, region_feats=feats, region_mask=rmask).mlm_logits
        gathered = pt(ids, mask, seg, region_feats=feats, region_mask=rmask, mlm_positions=pos).mlm_logits
    torch.testing.assert_close(gathered, full[pos])


TASKS = [
    (transformers.VisualBertForQuestionAnswering, 7),
    (transformers.VisualBertForVisualReasoning, 2),
    (transformers.VisualBertForMultipleChoice, 1),
]


@pytest.mark.parametrize("cls,labels", TASKS, ids=lambda x: getattr(x, "__name__", str(x)))
def test_task_heads_parity_and_round_trip(tmp_path, cls, labels):
    shape = dict(SHAPES[1], num_labels=labels) if labels != 1 else SHAPES[1]
    ref = hf_model(cls, tmp_path / "src", **shape)
    encoder, head = load_task_head(tmp_path / "src")
    mc = cls is transformers.VisualBertForMultipleChoice
    ids, mask, seg, feats, rmask, _ = inputs(1024, 3, batch=6 if mc else 3)
    with torch.no_grad():
        ours = head(
            encoder(ids, mask, seg, region_feats=feats, region_mask=rmask),
            mask,
            num_choices=2 if mc else None,
        )
        if mc:  # 3 examples x 2 choices, flattened example-major
            logits = ref(
                input_ids=ids.view(3, 2, -1),
                attention_mask=mask.long().view(3, 2, -1),
                token_type_ids=seg.view(3, 2, -1),
                visual_embeds=feats.view(3, 2, 6, -1),
                visual_attention_mask=rmask.long().view(3, 2, -1),
            ).logits
        else:
            logits = ref(**hf_kwargs(ids, mask, seg, feats, rmask)).logits
    assert ours.shape == logits.shape
    torch.testing.assert_close(ours, logits, atol=1e-5, rtol=0)
    # and back: transformers loads the export with identical weights
    export_task_head(encoder, head, tmp_path / "hf")
    again = cls.from_pretrained(tmp_path / "hf").eval()
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(again.state_dict()[k], v, atol=0, rtol=0, msg=k)


def test_question_answering_head_reads_the_token_before_sep(tmp_path):
    hf_model(transformers.VisualBertForQuestionAnswering, tmp_path, **dict(SHAPES[0], num_labels=3))
    encoder, head = load_task_head(tmp_path)
    ids, mask, seg, feats, rmask, _ = inputs(512)
    with torch.no_grad():
        enc = encoder(ids, mask, seg, region_feats=feats, region_mask=rmask)
        expected = head.proj(enc.text[torch.arange(3), torch.tensor([7, 4, 2])])
        torch.testing.assert_close(head(enc, mask), expected)
    with pytest.raises(ValueError, match=">= 2 tokens"):
        head(enc, torch.zeros_like(mask))


def test_export_to_hf_and_back_is_exact(tmp_path, capsys):
    ref = hf_model(transformers.VisualBertForPreTraining, tmp_path / "src", **SHAPES[2])
    ours, again = assert_export_round_trip(ref, tmp_path / "src", tmp_path)
    # the command line does the same, and encoder-only export loads as VisualBertModel
    assert main(["convert", str(tmp_path / "src"), str(tmp_path / "mm")]) == 0
    assert main(["convert", str(tmp_path / "mm"), str(tmp_path / "cli"), "--to", "hf"]) == 0
    assert main(["convert", str(tmp_path / "mm"), str(tmp_path / "enc"), "--to", "hf", "--encoder-only"]) == 0
    capsys.readouterr()
    cli = transformers.VisualBertForPreTraining.from_pretrained(tmp_path / "cli").eval()
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(cli.state_dict()[k], v, atol=0, rtol=0, msg=k)
    enc = transformers.VisualBertModel.from_pretrained(tmp_path / "enc").eval()
    ids, mask, seg, feats, rmask, _ = inputs(2048)
    with torch.no_grad():
        torch.testing.assert_close(
            enc(**hf_kwargs(ids, mask, seg, feats, rmask)).pooler_output,
            ours.encoder(ids, mask, seg, region_feats=feats, region_mask=rmask).pooled,
            atol=1e-5,
            rtol=0,
        )


def test_base_preset_has_the_reference_parameter_count():
    cfg = transformers.VisualBertConfig(visual_embedding_dim=2048)
    with torch.device("meta"):
        ref = transformers.VisualBertModel(cfg)
        ours = mmbert.build_model("visualbert_base", pad_token_id=1)
    assert ours.num_parameters() == sum(p.numel() for p in ref.parameters())


def test_unsupported_checkpoints_are_refused(tmp_path):
    hf_model(transformers.VisualBertForPreTraining, tmp_path, **SHAPES[0])
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(cfg, bypass_transformer=True)))
    with pytest.raises(CheckpointError, match="bypass_transformer=True is not supported"):
        mmbert.load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="name no VisualBERT task head"):
        load_task_head(tmp_path)
    model = mmbert.build_model("visualbert_tiny", global_region="first")
    with pytest.raises(CheckpointError, match="no Hugging Face counterpart"):
        mmbert.export_hf(model, tmp_path / "out")
