"""UNIMO's contrastive learning, measured: zero-shot retrieval R@1 without CMCL, with CMCL, and with CMCL plus
images retrieved from the image-only pool as extra positives, all at the same budget.

    PYTHONPATH=src python examples/unimo_cmcl.py --out /tmp/unimo_cmcl --steps 300

Generates the synthetic world and pre-trains ``unimo_tiny`` three times with ``mmbert pretrain`` (64 wide, 4
heads, 2 layers; lr 2e-3, CMCL temperature 0.1, batch 32): pairs from the train captions, the world's
validation captions as a text-only corpus, the train and validation images as the image-only corpus (the
test images are never seen), scene-graph rewrites as hard negatives. The runs:

- ``without_cmcl``: MLM + region losses;
- ``with_cmcl``: the same + CMCL;
- ``with_cmcl_retrieved``: the same + CMCL with ``--image-positives`` images per pair retrieved from the
  image-only pool (``--image-retrieval``: detector-label TF-IDF or mean features; ``data.related_images``).

Then scores the test split by the cosine of the image-only [IMG] and text-only [CLS] poolers (no
fine-tuning) and prints the recalls as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmbert.cli import main as mmbert


def run(out: Path, steps: int, images: int, seed: int, image_positives: int, retrieval: str) -> dict:
    world = out / "world"
    if not (world / "manifest.json").exists():
        mmbert(["synthetic", "generate", "--out", str(world), "--images", str(images), "--feat-dim", "64",
                "--no-images", "--quiet", "--seed", str(seed)])  # fmt: skip
    val = json.loads((world / "captions_val.json").read_text())
    (world / "text_corpus.txt").write_text("\n".join(a["caption"] for a in val["annotations"]) + "\n")
    seen = [im["id"] for split in ("train", "val")
            for im in json.loads((world / f"captions_{split}.json").read_text())["images"]]  # fmt: skip
    (world / "image_corpus.txt").write_text("\n".join(str(i) for i in seen) + "\n")
    vocab = len((world / "vocab.txt").read_text().splitlines())
    common = ["--captions", str(world / "captions_train.json"), "--features", str(world / "features.tsv"),
              "--tokenizer", str(world), "--max-steps", str(steps), "--batch-size", "32", "--lr", "2e-3",
              "--text-corpus", str(world / "text_corpus.txt"), "--image-corpus", str(world / "image_corpus.txt"),
              "--scenes", str(world / "scenes.json"), f"model.vocab_size={vocab}", "model.region_feat_dim=64",
              "model.num_region_classes=6", "model.dim=64", "model.num_heads=4", "model.ffn_dim=128",
              "cmcl_temperature=0.1", "warmup_steps=30", "progress=false", f"seed={seed}"]  # fmt: skip
    retrieved = ["--image-positives", str(image_positives), "--image-retrieval", retrieval]
    runs = {
        "without_cmcl": (["mlm", "mrfr", "mrc_kl"], []),
        "with_cmcl": (["mlm", "mrfr", "mrc_kl", "cmcl"], []),
        "with_cmcl_retrieved": (["mlm", "mrfr", "mrc_kl", "cmcl"], retrieved),
    }
    import mmbert as mm
    from mmbert.data import features
    from mmbert.data.datasets import CaptionDataset
    from mmbert.data.tokenizer import Tokenizer
    from mmbert.tasks.embedding_retrieval import embedding_retrieval

    tok = Tokenizer.from_pretrained(world)
    test = CaptionDataset(world / "captions_test.json", features.open(world / "features.tsv"), tok, 40, 36)
    result = {"steps": steps, "images": images, "image_positives": image_positives, "retrieval": retrieval,
              "test_images": len({c.image_id for c in test.captions}), "test_captions": len(test.captions)}  # fmt: skip
    for name, (objectives, extra) in runs.items():
        run_dir = out / name
        if not (run_dir / "final" / "config.json").exists():
            code = mmbert(["pretrain", "--model", "unimo_tiny", "--out", str(run_dir), *extra, *common,
                           "objectives=" + ",".join(objectives)])  # fmt: skip
            if code != 0:
                raise SystemExit(f"pretrain {name} failed ({code})")
        model = mm.load_model(run_dir / "final")
        r = embedding_retrieval(model, test)
        result[name] = {k: round(v, 2) for k, v in r.items() if k in ("ir_r@1", "ir_r@5", "tr_r@1", "tr_r@5")}
    return result


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-positives", type=int, default=2, help="retrieved images per pair (the third run)")
    p.add_argument("--image-retrieval", choices=("labels", "features"), default="labels")
    a = p.parse_args()
    print(json.dumps(run(Path(a.out), a.steps, a.images, a.seed, a.image_positives, a.image_retrieval)))
