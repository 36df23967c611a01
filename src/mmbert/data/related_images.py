"""Related images for UNIMO's cross-modal contrastive learning: for each image of the image-text pairs, the
most related images of the image-only pool, found once per corpus and cached.

The paper (arXiv:2012.15409, section 2.2, "image/text retrieval") augments each image-text pair with
images retrieved from the image-only corpus: the other images are ordered by their visual similarity
and those whose objects overlap most with the pair's image become extra positives. It does not say
how the similarity is computed (which detector output, which weighting), whether there is a threshold,
or how ties are broken, and its pre-training code was never released. mmbert computes relatedness in
one of two ways (``method``), over the regions the data set keeps (its ``max_regions`` most confident):

- ``"labels"`` (default; the paper's "overlapped objects" as a number): the cosine of TF-IDF vectors over
  the detector's region class labels (``obj_id``; else the arg-max non-background column of
  ``cls_prob``). tf(c) = how many of the image's regions are labelled c; idf(c) = ln((1 + P) /
  (1 + df(c))) + 1 with df(c) the number of the P pool images having a region labelled c.
- ``"features"``: the cosine of the images' mean region features (what UNIMO's [IMG] token is fed).

The neighbours of a query image are the ``k`` pool images of highest cosine, leaving out the query image
itself and every image with cosine <= 0 (nothing in common). Cosines are rounded to 6 decimals before
ranking, so floating-point summation order cannot swap near ties; ties go to the earlier pool image.
The search is exact and brute force (queries x pool x width multiply-adds, in chunks): meant for pools up
to about 10^5 images on a CPU; a larger pool would want an approximate index, which is not built here.

The result is cached as JSON (written atomically) with a fingerprint: the method, k, max_regions, digests
of the query and pool ids, and the feature store's path and the size and modification time of each file
holding its records (a directory store's files, or LMDB's data.mdb: a directory's own stat misses in-place
writes). A cache whose fingerprint differs is rebuilt; a file that is not such a cache is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmbert.data.batch import Regions

METHODS = ("labels", "features")
FORMAT = "mmbert-related-images"
Neighbours = dict[str, list[tuple[str, float]]]


def region_labels(regions: Regions, image_id: str) -> np.ndarray:
    """The detector class of each region: ``labels`` (obj_id), else the best non-background class."""
    if regions.labels is not None:
        return regions.labels.numpy().astype(np.int64)
    if regions.cls_prob is not None and regions.cls_prob.dim() == 2:
        probs = regions.cls_prob.numpy()
        return (probs[:, 1:].argmax(1) + 1) if probs.shape[1] > 1 else probs.argmax(1)
    raise ValueError(
        f"image {image_id!r} has no detector labels (obj_id or cls_prob) to compare objects by; "
        "use the 'features' relatedness (cmcl_image_retrieval=features)"
    )


def image_vectors(
    regions_of: Callable[[str], Regions], query_ids: Sequence[str], pool_ids: Sequence[str], method: str
) -> tuple[np.ndarray, np.ndarray]:
    """(queries (Q, W), pool (P, W)) unit vectors whose dot products are the relatedness cosines."""
    if method not in METHODS:
        raise ValueError(f"image relatedness {method!r} is not one of {METHODS}")
    ids = list(dict.fromkeys([*query_ids, *pool_ids]))
    row = {i: n for n, i in enumerate(ids)}
    if method == "features":
        vecs = np.stack([regions_of(i).feats.double().mean(0).numpy() for i in ids])
    else:
        labels = [region_labels(regions_of(i), i) for i in ids]
        width = 1 + max((int(x.max()) for x in labels if x.size), default=0)
        vecs = np.stack([np.bincount(x, minlength=width).astype(np.float64) for x in labels])
        pool_rows = vecs[[row[i] for i in pool_ids]]
        df = (pool_rows > 0).sum(0)
        vecs = vecs * (np.log((1 + len(pool_ids)) / (1 + df)) + 1.0)
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    vecs = np.divide(vecs, norms, out=np.zeros_like(vecs), where=norms > 0)
    return vecs[[row[i] for i in query_ids]], vecs[[row[i] for i in pool_ids]]


def top_k(
    queries: np.ndarray, pool: np.ndarray, k: int, exclude: Sequence[int | None], chunk: int = 512
) -> list[list[tuple[int, float]]]:
    """For each query row, up to ``k`` (pool index, cosine) with cosine > 0, best first (module docstring);
    ``exclude[q]`` is a pool index the query must not return (itself), or None."""
    out: list[list[tuple[int, float]]] = []
    for start in range(0, len(queries), chunk):
        sims = np.round(queries[start : start + chunk] @ pool.T, 6)
        for r, scores in enumerate(sims):
            banned = exclude[start + r]
            if banned is not None:
                scores[banned] = -np.inf
            cand = np.flatnonzero(scores > 0)
            if len(cand) > k:
                kth = np.partition(scores[cand], len(cand) - k)[len(cand) - k]
                cand = cand[scores[cand] >= kth]
            order = np.lexsort((cand, -scores[cand]))[:k]
            out.append([(int(cand[o]), float(scores[cand[o]])) for o in order])
    return out


def related_images(
    regions_of: Callable[[str], Regions], query_ids: Sequence[str], pool_ids: Sequence[str], k: int,
    method: str = "labels",
) -> Neighbours:  # fmt: skip
    """query image id -> [(pool image id, cosine), ...], the ``k`` most related pool images."""
    if k < 1:
        raise ValueError(f"the number of related images must be >= 1, got {k}")
    if not pool_ids:
        raise ValueError("no image-only pool to retrieve related images from (pass --image-corpus)")
    query_ids, pool_ids = list(dict.fromkeys(query_ids)), list(dict.fromkeys(pool_ids))
    queries, pool = image_vectors(regions_of, query_ids, pool_ids, method)
    where = {p: n for n, p in enumerate(pool_ids)}
    found = top_k(queries, pool, k, [where.get(q) for q in query_ids])
    return {q: [(pool_ids[j], s) for j, s in hits] for q, hits in zip(query_ids, found)}


def _digest(ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()


def _store_files(root: Path) -> list[str]:
    """"name size mtime_ns" of each file holding the store's records: the file itself; of a directory
    (whose own stat does not change when a file inside is rewritten in place) LMDB's data.mdb, else every
    file under it (an npz store's records), leaving out LMDB's lock.mdb and unfinished ``.tmp`` writes."""
    if root.is_file():
        files = [root]
    elif (root / "data.mdb").is_file():
        files = [root / "data.mdb"]
    else:
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "lock.mdb" and p.suffix != ".tmp")
    out = []
    for f in files:
        st = f.stat()
        out.append(f"{f.relative_to(root) if f != root else f.name} {st.st_size} {st.st_mtime_ns}")
    return out


def fingerprint(
    query_ids: Sequence[str], pool_ids: Sequence[str], k: int, method: str, max_regions: int | None,
    store_path: str | os.PathLike | None,
) -> dict[str, Any]:  # fmt: skip
    """What the cached neighbours depend on (module docstring)."""
    store: dict[str, Any] = {"path": None}
    if store_path is not None and Path(store_path).exists():
        root = Path(store_path)
        store = {"path": str(root.resolve()), "files": _digest(_store_files(root))}
    return {"method": method, "k": k, "max_regions": max_regions, "queries": _digest(list(query_ids)),
            "pool": _digest(list(pool_ids)), "store": store}  # fmt: skip


def cached_related_images(
    path: str | os.PathLike, regions_of: Callable[[str], Regions], query_ids: Sequence[str],
    pool_ids: Sequence[str], k: int, method: str = "labels", max_regions: int | None = None,
    store_path: str | os.PathLike | None = None,
) -> Neighbours:  # fmt: skip
    """``related_images`` read from the cache at ``path`` when its fingerprint matches, else computed and
    written there atomically."""
    from mmbert.atomic import atomic_write_json

    path = Path(path)
    want = fingerprint(query_ids, pool_ids, k, method, max_regions, store_path)
    if path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a related-images cache ({e}); move it away or name another file") from e
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{path}: not a related-images cache (no \"format\": \"{FORMAT}\"); "
                             "move it away or name another file")  # fmt: skip
        if data.get("fingerprint") == want:
            return {q: [(str(p), float(s)) for p, s in hits] for q, hits in data["neighbours"].items()}
    found = related_images(regions_of, query_ids, pool_ids, k, method)
    path.parent.mkdir(parents=True, exist_ok=True)
    neighbours = {q: [[p, s] for p, s in hits] for q, hits in found.items()}
    atomic_write_json(path, {"format": FORMAT, "fingerprint": want, "neighbours": neighbours}, indent=None)
    return found
