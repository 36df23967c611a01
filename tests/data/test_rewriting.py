"""UNIMO's text rewriting: scene-graph negatives are false in their scene, lexicon swaps, TF-IDF, user files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mmbert.data.rewriting import Lexicon, LexiconRewriter, SceneGraphRewriter, TfidfIndex, read_rewrites

SCENE = [
    {"shape": "circle", "colour": "red", "size": "small"},
    {"shape": "square", "colour": "blue", "size": "large"},
]


def test_scene_graph_rewrites_are_false_in_the_scene_and_cover_each_level():
    r = SceneGraphRewriter({"7": SCENE})
    got = r.candidates("A small red circle left of a large blue square.", "7")
    assert "a small red square left of a large blue square" in got  # word: another shape
    assert "a small green circle left of a large blue square" in got  # word: another colour
    assert "a large blue circle left of a small red square" in got  # phrase: the two trade attributes
    assert "a small red circle right of a large blue square" in got  # relation reversed
    assert "a small red circle left of a large blue square" not in got
    # no rewrite names an object the scene has in place of the one it changes
    assert "a small red circle left of a small red circle" not in got
    assert "a large red circle left of a large blue square" in got and "a small blue circle" not in " ".join(
        t for t in got if t.startswith("a small red circle")
    )


def test_scene_graph_rewriter_keeps_the_number_and_needs_the_image():
    r = SceneGraphRewriter({"7": SCENE * 2})
    got = r.candidates("two small red circles", "7")
    assert "two small red squares" in got and "two small red square" not in got
    with pytest.raises(KeyError, match="no scene graph"):
        r.candidates("a circle", "8")
    picked = r.negatives("two small red circles", "7", np.random.default_rng(0), 2)
    assert len(picked) == 2 and set(picked) <= set(got)


def test_lexicon_swaps_objects_attributes_relations_and_extends(tmp_path):
    got = LexiconRewriter().candidates("A man on a red horse")
    for text in (
        "a woman on a red horse",
        "a man under a red horse",
        "a man on a blue horse",
        "a horse on a red man",
    ):
        assert text in got
    (tmp_path / "lex.json").write_text(
        json.dumps({"objects": ["zebra"], "relations": [["near", "far from"]]})
    )
    lex = Lexicon.default().extend(tmp_path / "lex.json")
    got = LexiconRewriter(lex).candidates("a dog near a zebra")
    assert "a dog far from a zebra" in got and "a zebra near a zebra" in got
    (tmp_path / "bad.json").write_text(json.dumps({"things": []}))
    with pytest.raises(ValueError, match=r"unknown lexicon keys \['things'\]"):
        Lexicon.default().extend(tmp_path / "bad.json")


def test_tfidf_cosine_by_hand():
    index = TfidfIndex(["a b", "a c", "d"])
    idf_a, idf_b = math.log(4 / 3) + 1, math.log(4 / 2) + 1
    (best, score), *rest = index.similar("b", 3)
    assert best == 0 and score == pytest.approx(idf_b / math.sqrt(idf_a**2 + idf_b**2))
    assert [i for i, _ in index.similar("a", 3)] == [0, 1]  # ties by index; "d" shares nothing
    assert index.similar("a", 3, exclude=[0])[0][0] == 1


def test_user_rewrite_files(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(
        '{"caption": "a dog", "paraphrases": ["one dog"]}\n\n{"caption": "a dog", "paraphrases": ["a pup"]}\n'
    )
    assert read_rewrites(f, "paraphrases") == {"a dog": ["one dog", "a pup"]}
    f.write_text('{"caption": "a dog", "negatives": "a cat"}\n')
    with pytest.raises(ValueError, match="line 1: expected"):
        read_rewrites(f, "negatives")
