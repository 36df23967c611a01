"""Related images of the image-only pool (UNIMO's CMCL positives): the ranking against a hand computation,
ties, exclusions, both relatedness measures, and the cache."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mmbert.data.batch import Regions
from mmbert.data.related_images import cached_related_images, related_images

LABELS = {"q": [1, 1, 2], "a": [1, 2], "b": [3], "c": [1, 1, 2], "d": [2, 2], "e": [1, 2]}
POOL = ["a", "b", "c", "d", "q", "e"]


def regions(labels: list[int], feats: torch.Tensor | None = None) -> Regions:
    n = len(labels)
    return Regions(feats=feats if feats is not None else torch.ones(n, 4), boxes=torch.zeros(n, 4),
                   image_size=(10, 10), labels=torch.tensor(labels))  # fmt: skip


def hand_cosine(x: list[int], y: list[int], pool: list[str]) -> float:
    """TF-IDF cosine as the module docstring writes it, idf over the pool's label sets."""
    def idf(c: int) -> float:
        df = sum(c in LABELS[p] for p in pool)
        return math.log((1 + len(pool)) / (1 + df)) + 1.0

    def vec(labels: list[int]) -> dict[int, float]:
        return {c: labels.count(c) * idf(c) for c in set(labels)}

    u, v = vec(x), vec(y)
    dot = sum(u[c] * v.get(c, 0.0) for c in u)
    return dot / (math.sqrt(sum(a * a for a in u.values())) * math.sqrt(sum(a * a for a in v.values())))


def test_label_tfidf_ranking_matches_the_hand_computation():
    found = related_images(lambda i: regions(LABELS[i]), ["q"], POOL, k=4)["q"]
    expected = sorted(((p, hand_cosine(LABELS["q"], LABELS[p], POOL)) for p in POOL if p != "q"),
                      key=lambda x: -x[1])  # fmt: skip
    expected = [(p, s) for p, s in expected if s > 0][:4]
    assert [p for p, _ in found] == [p for p, _ in expected] == ["c", "a", "e", "d"]
    for (_, s), (_, want) in zip(found, expected):
        assert s == pytest.approx(want, abs=1e-6)
    assert found[0][1] == pytest.approx(1.0)  # the same label bag
    assert found[1][1] == found[2][1]  # a and e tie: the earlier pool image first


def test_self_and_unrelated_images_are_left_out_and_k_caps_the_list():
    found = related_images(lambda i: regions(LABELS[i]), ["q", "b"], POOL, k=10)
    assert "q" not in [p for p, _ in found["q"]] and "b" not in [p for p, _ in found["q"]]
    assert found["b"] == []  # label 3 is in no other pool image: nothing related
    assert len(related_images(lambda i: regions(LABELS[i]), ["q"], POOL, k=2)["q"]) == 2
    with pytest.raises(ValueError, match=">= 1"):
        related_images(lambda i: regions(LABELS[i]), ["q"], POOL, k=0)
    with pytest.raises(ValueError, match="--image-corpus"):
        related_images(lambda i: regions(LABELS[i]), ["q"], [], k=1)


def test_cls_prob_stands_in_for_labels_and_no_labels_is_named():
    def probs(i: str) -> Regions:
        r = regions(LABELS[i])
        r.cls_prob = torch.nn.functional.one_hot(r.labels, 5).float() * 0.6 + 0.1
        r.cls_prob[:, 0] = 0.95  # background is never the label
        r.labels = None
        return r

    by_labels = related_images(lambda i: regions(LABELS[i]), ["q"], POOL, k=4)
    assert related_images(probs, ["q"], POOL, k=4) == by_labels
    bare = Regions(feats=torch.ones(2, 4), boxes=torch.zeros(2, 4), image_size=(10, 10))
    with pytest.raises(ValueError, match="image 'q' has no detector labels.*features"):
        related_images(lambda i: bare, ["q"], POOL, k=1)


def test_feature_relatedness_is_the_cosine_of_mean_region_features():
    feats = {"q": [[1.0, 0.0], [1.0, 2.0]], "a": [[0.0, 1.0]], "b": [[1.0, 1.0], [3.0, 1.0]], "c": [[-1.0, 0.0]]}

    def of(i: str) -> Regions:
        return regions([1] * len(feats[i]), torch.tensor(feats[i]))

    found = related_images(of, ["q"], ["a", "b", "c"], k=3, method="features")["q"]
    q = torch.tensor(feats["q"]).mean(0)
    want = {p: float(torch.cosine_similarity(q, torch.tensor(feats[p]).mean(0), 0)) for p in ("a", "b")}
    assert [p for p, _ in found] == ["b", "a"]  # c points away (cosine < 0): left out
    assert dict(found) == pytest.approx(want, abs=1e-6)
    with pytest.raises(ValueError, match="not one of"):
        related_images(of, ["q"], ["a"], k=1, method="pixels")


def test_the_cache_is_reused_rebuilt_when_its_fingerprint_changes_and_foreign_files_refused(tmp_path):
    calls: list[str] = []

    def of(i: str) -> Regions:
        calls.append(i)
        return regions(LABELS[i])

    path = tmp_path / "idx" / "related.json"
    first = cached_related_images(path, of, ["q"], POOL, 3)
    assert calls and json.loads(path.read_text())["format"] == "mmbert-related-images"
    calls.clear()
    assert cached_related_images(path, of, ["q"], POOL, 3) == first and calls == []
    again = cached_related_images(path, of, ["q"], POOL, 2)  # another k: recomputed and rewritten
    assert calls and again == {"q": first["q"][:2]}
    assert json.loads(path.read_text())["fingerprint"]["k"] == 2
    other = tmp_path / "notes.json"
    other.write_text('{"mine": 1}')
    with pytest.raises(ValueError, match="notes.json: not a related-images cache"):
        cached_related_images(other, of, ["q"], POOL, 3)
    assert json.loads(other.read_text()) == {"mine": 1}


def test_an_in_place_write_inside_a_directory_store_invalidates_the_cache(tmp_path):
    """A directory store's own stat does not change when a file inside is rewritten in place: the
    fingerprint covers every file of an npz store and LMDB's data.mdb (not its lock.mdb, which reads touch)."""
    calls: list[str] = []

    def of(i: str) -> Regions:
        calls.append(i)
        return regions(LABELS[i])

    store = tmp_path / "feats"
    store.mkdir()
    for i in POOL:
        np.savez(store / f"{i}.npz", features=np.ones((len(LABELS[i]), 4), dtype=np.float32))
    path = tmp_path / "related.json"
    cached_related_images(path, of, ["q"], POOL, 3, store_path=store)
    calls.clear()
    cached_related_images(path, of, ["q"], POOL, 3, store_path=store)
    assert calls == []
    before = store.stat().st_mtime_ns
    with open(store / "a.npz", "r+b") as f:  # the record rewritten in place: same name, new contents
        f.truncate(0)
        np.savez(f, features=np.zeros((5, 4), dtype=np.float32))
    assert store.stat().st_mtime_ns == before  # the directory itself looks unchanged
    cached_related_images(path, of, ["q"], POOL, 3, store_path=store)
    assert calls  # recomputed

    lmdb = tmp_path / "feats.lmdb"
    lmdb.mkdir()
    (lmdb / "data.mdb").write_bytes(b"x" * 10)
    (lmdb / "lock.mdb").write_bytes(b"l")
    calls.clear()
    cached_related_images(path, of, ["q"], POOL, 3, store_path=lmdb)
    calls.clear()
    (lmdb / "lock.mdb").write_bytes(b"ll")  # a reader's lock: not the data
    cached_related_images(path, of, ["q"], POOL, 3, store_path=lmdb)
    assert calls == []
    with open(lmdb / "data.mdb", "r+b") as f:
        f.seek(0, 2)
        f.write(b"y")
    cached_related_images(path, of, ["q"], POOL, 3, store_path=lmdb)
    assert calls
