"""Captioning: the captioning mask (decoding equals teacher forcing), both objectives, the readers, results."""

from __future__ import annotations

import json

import pytest
import torch
from tasks.task_fixtures import make_store, tiny_encoder, train_steps

from mmbert.generation import GenerationConfig
from mmbert.tasks import CaptionTask, TaskModel
from mmbert.tasks.base import TaskDataError, collate, loader

CAPTIONERS = ["visualbert_tiny", "uniter_tiny", "vl_bert_tiny", "unicoder_vl_tiny", "unimo_tiny"]
CAPTIONS = [
    "a red car next to a blue dog .",
    "the man is holding an umbrella",
    "two cats sitting on a bench .",
]


def coco_file(tmp_path, captions=CAPTIONS, images=(1, 2, 3)):
    anns = [{"id": 10 * i + j, "image_id": i, "caption": c} for i in images for j, c in enumerate(captions)]
    path = tmp_path / "captions_val.json"
    path.write_text(
        json.dumps({"images": [{"id": i, "file_name": f"{i}.jpg"} for i in images], "annotations": anns})
    )
    return path


def task_and_data(tmp_path, tokenizer, **options):
    task = CaptionTask(max_regions=None, caption_tokenizer="simple", metrics=["bleu_1", "cider"], **options)
    data = task.load({"captions": coco_file(tmp_path)}, tokenizer, make_store(["1", "2", "3"]))
    return task, data


@pytest.mark.parametrize("name", CAPTIONERS)
def test_decoding_step_equals_teacher_forcing(name, tmp_path, tokenizer):
    """Under the captioning mask, position i's logits depend on the regions and tokens <= i only: the
    decoder's step (the caption so far) gives exactly the teacher-forced logits, and later tokens change nothing."""
    task, data = task_and_data(tmp_path, tokenizer)
    model = TaskModel(tiny_encoder(name), None).eval()
    model.head = task.build_head(model.encoder)
    batch = collate([data[0], data[4]], tokenizer.pad_id)
    inputs = batch.model_inputs()
    with torch.no_grad():
        full = task.encode(model, inputs)
        t = 4
        prefix = {**inputs, "text_ids": inputs["text_ids"][:, :t], "text_mask": inputs["text_mask"][:, :t],
                  "segment_ids": inputs["segment_ids"][:, :t]}  # fmt: skip
        torch.testing.assert_close(task.encode(model, prefix), full[:, :t], atol=1e-5, rtol=1e-5)
        changed = inputs["text_ids"].clone()
        changed[:, t] = tokenizer.mask_id
        torch.testing.assert_close(task.encode(model, {**inputs, "text_ids": changed})[:, :t], full[:, :t])
        # the step function of generation feeds [CLS] + generated tokens: its logits are the teacher-forced ones
        logits = task.encode(model, {**prefix})[:, -1]
        torch.testing.assert_close(logits, full[:, t - 1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("objective", ["next_token", "masked"])
def test_training_lowers_the_loss_and_generates(objective, tmp_path, tokenizer):
    task, data = task_and_data(tmp_path, tokenizer, objective=objective, max_caption_len=12, beam_size=2)
    torch.manual_seed(0)
    model = TaskModel(tiny_encoder("uniter_tiny"), None)
    model.head = task.build_head(model.encoder)
    losses = train_steps(task, model, data, steps=40, batch_size=9, lr=1e-2)
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    metrics, predictions = task.evaluate(model, data, batch_size=2)
    assert sorted(p["image_id"] for p in predictions) == [1, 2, 3]  # one per image, ids as in the file
    assert all(isinstance(p["caption"], str) and "[" not in p["caption"] for p in predictions)
    assert metrics["num_images"] == 3 and metrics["bleu_1"] > 0.3
    out = task.write_predictions(predictions, tmp_path / "results.json")
    assert set(json.loads(out.read_text())[0]) == {"image_id", "caption"}


def test_beam_one_equals_greedy_on_a_model(tmp_path, tokenizer):
    task, data = task_and_data(tmp_path, tokenizer)
    model = TaskModel(tiny_encoder("visualbert_tiny", seed=3), None).eval()
    model.head = task.build_head(model.encoder)
    batch = next(iter(loader(task.evaluation_set(data), 3, pad_token_id=tokenizer.pad_id)))
    greedy = task.generate(model, batch, GenerationConfig(max_length=8, beam_size=1))
    from mmbert.generation import beam_search

    # the same batch through beam_search itself, with one beam
    config = GenerationConfig(max_length=8, beam_size=1)
    import mmbert.tasks.caption as caption_module

    saved = caption_module.generate
    caption_module.generate = lambda step, n, eos, cfg, device=None: beam_search(step, n, eos, cfg, device)
    try:
        assert task.generate(model, batch, config) == greedy
    finally:
        caption_module.generate = saved


def test_readers_and_refusals(tmp_path, tokenizer):
    task = CaptionTask(split="test")
    karpathy = tmp_path / "dataset_coco.json"
    images = [{"filename": f"{i}.jpg", "cocoid": i, "split": "test", "sentences": [{"raw": c} for c in CAPTIONS]}
              for i in (1, 2)]  # fmt: skip
    images.append({"filename": "3.jpg", "cocoid": 3, "split": "test", "sentences": [{"tokens": ["a"]}]})
    karpathy.write_text(json.dumps({"images": images, "dataset": "coco"}))
    with pytest.raises(TaskDataError, match=r"dataset_coco.json: images\[2\].sentences\[0\]: no 'raw'"):
        task.load({"karpathy": karpathy}, tokenizer, make_store(["1", "2", "3"]))
    karpathy.write_text(json.dumps({"images": images[:2], "dataset": "coco"}))
    data = task.load({"karpathy": karpathy}, tokenizer, make_store(["1"]))
    assert (
        len(data) == 3 and data.report.counts
    )  # image 2 is absent from the store: counted, not dropped silently
    bad = tmp_path / "captions.json"
    bad.write_text(
        json.dumps({"images": [{"id": 1}], "annotations": [{"image_id": 1, "caption": "a"}, {"image_id": 1}]})
    )
    with pytest.raises(TaskDataError, match=r"annotations\[1\]"):
        task.load({"captions": bad}, tokenizer, make_store(["1"]))
    with pytest.raises(ValueError, match="single-stream"):
        task.build_head(tiny_encoder("lxmert_tiny"))
    with pytest.raises(ValueError, match="objective"):
        CaptionTask(objective="gpt")
