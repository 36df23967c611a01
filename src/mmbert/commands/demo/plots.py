"""The demo's pictures: loss and accuracy curves, and the attention of a question word over the regions."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from mmbert.atomic import atomic_write


def plot_curves(out: Path, pre_curve: dict, vqa_curves: dict[str, list[dict]]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for k, v in pre_curve.items():
        if k.endswith("_loss") or k == "loss":
            if any(x is not None for x in v):
                axes[0].plot(pre_curve["step"], v, label=k)
    axes[0].set_title("pre-training losses")
    axes[0].set_xlabel("step")
    axes[0].legend(fontsize=8)
    for k in ("mlm_acc", "itm_acc"):
        if any(x is not None for x in pre_curve.get(k, [])):
            axes[1].plot(pre_curve["step"], pre_curve[k], label=k)
    axes[1].axhline(0.5, color="grey", lw=0.8, ls="--", label="ITM chance")
    axes[1].set_title("pre-training accuracies")
    axes[1].set_xlabel("step")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    atomic_write(out / "pretrain_curves.png", lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    written.append("pretrain_curves.png")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    colours = {"pretrained": "tab:blue", "from_scratch": "tab:orange", "text_only": "tab:grey"}
    for name, curves in vqa_curves.items():
        for i, c in enumerate(curves):
            label = name if i == 0 else None
            axes[0].plot(c["step"], c["loss"], color=colours.get(name), alpha=0.8, label=label)
            if any(x is not None for x in c.get("vqa_score", [])):
                axes[1].plot(c["step"], c["vqa_score"], color=colours.get(name), alpha=0.8, label=label)
    axes[0].set_ylim(0, 5)
    axes[0].set_title("VQA fine-tuning loss (each seed)")
    axes[1].set_title("VQA training-batch score (each seed)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(out / "vqa_curves.png", lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    written.append("vqa_curves.png")
    return written


@torch.no_grad()
def attention_picture(out: Path, world: Path, tok, model: nn.Module, max_questions: int = 200) -> dict | None:
    """Where a question's shape word looks. Over validation questions naming a shape, measure per layer
    how often the word's attention (mean over heads) peaks on a region showing an object of that shape
    (the grounding rate, against the chance of a random region); then draw, for the first colour question,
    the best layer's attention from the shape word to each region over the rendered image. Single-stream
    models return it as ``text_vision``; dual-stream models as their text->vision cross-attention."""
    from PIL import Image

    from mmbert.data import features
    from mmbert.data.boxes import normalise_boxes
    from mmbert.data.synthetic import SHAPES, draw_regions

    path = world / "vqa" / "v2_OpenEnded_synthetic_val_questions.json"
    questions = json.loads(path.read_text())["questions"]
    scenes = {s["image_id"]: s for s in json.loads((world / "scenes.json").read_text())["images"]}

    def shape_word(q: dict) -> str | None:
        return next((w for w in q["question"].lower().rstrip("?").split() if w in SHAPES), None)

    named = [q for q in questions if shape_word(q)][:max_questions]
    if not named:
        return None
    model.eval()
    hits: list[list[bool]] = []
    chance: list[float] = []
    per_question = []
    with features.open(world / "features.tsv") as store:
        for q in named:
            word, enc_text = shape_word(q), tok.encode(q["question"])
            rec = store[str(q["image_id"])]
            r = rec.num_regions
            enc = model.encoder(
                torch.tensor([enc_text.ids]), text_mask=torch.ones(1, len(enc_text.ids), dtype=torch.bool),
                segment_ids=torch.zeros(1, len(enc_text.ids), dtype=torch.long),
                region_feats=torch.from_numpy(rec.feats.copy())[None],
                region_boxes=normalise_boxes(torch.from_numpy(rec.boxes.copy()), rec.image_size)[None],
                region_mask=torch.ones(1, r, dtype=torch.bool), output_attentions=True,
            )  # fmt: skip
            maps = (enc.attentions or {}).get("text_vision")
            if not maps:
                return None
            pos = enc_text.tokens.index(word)
            layers = [m[0, :, pos].mean(0) for m in maps]  # each (R') over the vision positions
            if layers[0].shape[0] == r + 1:  # a whole-image region: leave it out
                first = model.encoder.config.global_region == "first"
                layers = [a[1:] if first else a[:-1] for a in layers]
            scene = scenes[q["image_id"]]
            shows = [o >= 0 and scene["objects"][o]["shape"] == word for o in scene["region_object"]]
            hits.append([shows[int(a.argmax())] for a in layers])
            chance.append(sum(shows) / r)
            per_question.append((q, word, rec, scene, layers))
    rates = [round(100.0 * sum(h[k] for h in hits) / len(hits), 1) for k in range(len(hits[0]))]
    best = max(range(len(rates)), key=lambda k: rates[k])
    q, word, rec, scene, layers = next((x for x in per_question if "colo" in x[0]["question"].lower()),
                                       per_question[0])  # fmt: skip
    weights = layers[best].tolist()
    with Image.open(world / "images" / scene["file_name"]) as im:
        picture = draw_regions(im.convert("RGB"), rec.boxes.tolist(), weights, [f"{w:.2f}" for w in weights])
    picture.save(out / "attention.png")
    owner = scene["region_object"][int(layers[best].argmax())]
    return {
        "question": q["question"], "word": word, "image_id": q["image_id"], "layer": best, "attention": weights,
        "most_attended_region_shows": scene["objects"][owner]["shape"] if owner >= 0 else "background",
        "grounding_rate_per_layer": rates, "grounding_chance": round(100.0 * sum(chance) / len(chance), 1),
        "questions_measured": len(hits), "file": "attention.png",
    }  # fmt: skip
