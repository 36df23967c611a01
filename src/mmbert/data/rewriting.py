"""Text rewriting for UNIMO's cross-modal contrastive learning (CMCL): positives and hard negatives.

UNIMO (arXiv:2012.15409, section 2.2) contrasts an image with texts that are *rewritten* from its
caption: positives by back-translation and by retrieving related texts, hard negatives at three levels —
sentence (a similar caption of another image, by TF-IDF), phrase and word (swapping objects, attributes
or relations of the caption's scene graph). The pre-training code was never released; here:

- ``SceneGraphRewriter``: phrase / word negatives from a scene graph (the synthetic world's
  ``scenes.json``): a noun phrase's shape, colour or size is swapped, two phrases trade attributes, or
  a relation is reversed, and a rewrite is kept only when the scene graph says it is false.
- ``LexiconRewriter``: the same swaps for real captions, through a ``Lexicon`` of object / attribute
  words and opposite relations (a default one plus the user's JSON), without a truth check.
- ``TfidfIndex``: sentence-level negatives (the most similar captions of other images) and retrieval
  positives (texts of a text-only corpus similar beyond a threshold).
- ``read_rewrites``: user files for what needs a translation model (back-translated paraphrases) or
  a human (curated negatives): JSONL lines ``{"caption": ..., "paraphrases": [...]}`` /
  ``{"caption": ..., "negatives": [...]}``.

Every random choice comes from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


@dataclass
class Lexicon:
    """Swappable words by category; relations as opposite pairs. Plural object forms are matched too."""

    objects: set[str] = field(default_factory=set)
    attributes: dict[str, set[str]] = field(default_factory=dict)  # group -> words (colours, sizes, ...)
    relations: dict[str, str] = field(default_factory=dict)  # phrase -> its opposite

    @classmethod
    def default(cls) -> Lexicon:
        """The synthetic world's words plus common caption words (COCO-style objects, colours, sizes)."""
        from mmbert.data.synthetic.scenes import COLOURS, OPPOSITE, SHAPES, SIZES

        objects = {*SHAPES, "man", "woman", "boy", "girl", "dog", "cat", "horse", "car", "bus", "train",
                   "table", "chair", "bed", "bird", "plate", "pizza", "cake", "bench", "boat", "truck"}  # fmt: skip
        colours = {*COLOURS, "white", "black", "brown", "orange", "pink", "grey", "gray"}
        return cls(
            objects=objects,
            attributes={"colour": colours, "size": {*SIZES, "big", "little", "tall", "short"}},
            relations={
                **OPPOSITE,
                "on": "under",
                "under": "on",
                "in front of": "behind",
                "behind": "in front of",
            },
        )

    def extend(self, path: str | os.PathLike) -> Lexicon:
        """Add a user's JSON: ``{"objects": [...], "attributes": {"group": [...]}, "relations": [[a, b]]}``."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: cannot read a lexicon JSON ({e})") from e
        unknown = sorted(set(data) - {"objects", "attributes", "relations"})
        if unknown:
            raise ValueError(
                f"{path}: unknown lexicon keys {unknown} (known: objects, attributes, relations)"
            )
        self.objects |= {str(w).lower() for w in data.get("objects", [])}
        attributes = data.get("attributes", {})
        if not isinstance(attributes, dict):
            raise ValueError(f"{path}: 'attributes' must map a group name to a list of words")
        for group, ws in attributes.items():
            self.attributes.setdefault(group, set()).update(str(w).lower() for w in ws)
        for i, pair in enumerate(data.get("relations", [])):
            if not (isinstance(pair, list) and len(pair) == 2):
                raise ValueError(f"{path}: relations[{i}] must be a pair [phrase, opposite], got {pair!r}")
            a, b = (str(p).lower() for p in pair)
            self.relations[a], self.relations[b] = b, a
        return self

    def group_of(self, word: str) -> str | None:
        return next((g for g, ws in self.attributes.items() if word in ws), None)


def _singular(word: str, objects: set[str]) -> str | None:
    if word in objects:
        return word
    for cut in ("es", "s"):
        if word.endswith(cut) and word[: -len(cut)] in objects:
            return word[: -len(cut)]
    return None


def _replace_word(tokens: list[str], i: int, new: str) -> list[str]:
    return [*tokens[:i], new, *tokens[i + 1 :]]


def _relation_spans(tokens: list[str], relations: dict[str, str]) -> list[tuple[int, int, str]]:
    """(start, end, phrase) of every relation phrase, longest first where they overlap."""
    spans, taken = [], set()
    for phrase in sorted(relations, key=lambda p: -len(p.split())):
        n = len(phrase.split())
        for i in range(len(tokens) - n + 1):
            if " ".join(tokens[i : i + n]) == phrase and not taken & set(range(i, i + n)):
                spans.append((i, i + n, phrase))
                taken |= set(range(i, i + n))
    return sorted(spans)


class LexiconRewriter:
    """Word- and phrase-level hard negatives for any caption, through a ``Lexicon`` (no truth check)."""

    def __init__(self, lexicon: Lexicon | None = None) -> None:
        self.lexicon = lexicon or Lexicon.default()

    def candidates(self, caption: str) -> list[str]:
        """Every single swap: an object for another, an attribute for another of its group, a relation
        for its opposite; and two objects trading places (phrase level)."""
        lex, tokens = self.lexicon, words(caption)
        out: list[list[str]] = []
        objects = [(i, s) for i, w in enumerate(tokens) if (s := _singular(w, lex.objects))]
        for i, s in objects:
            plural = tokens[i] != s
            for other in sorted(lex.objects - {s}):
                out.append(_replace_word(tokens, i, tokens[i].replace(s, other, 1) if plural else other))
        for i, w in enumerate(tokens):
            group = lex.group_of(w)
            if group is not None:
                out += [_replace_word(tokens, i, o) for o in sorted(lex.attributes[group] - {w})]
        for start, end, phrase in _relation_spans(tokens, lex.relations):
            out.append([*tokens[:start], *lex.relations[phrase].split(), *tokens[end:]])
        for (i, a), (j, b) in zip(objects, objects[1:]):
            if a != b:
                swapped = list(tokens)
                swapped[i], swapped[j] = tokens[j], tokens[i]
                out.append(swapped)
        original = " ".join(tokens)
        return sorted({" ".join(t) for t in out} - {original})

    def negatives(self, caption: str, rng: np.random.Generator, n: int) -> list[str]:
        pool = self.candidates(caption)
        if len(pool) <= n:
            return pool
        return [pool[i] for i in sorted(rng.choice(len(pool), n, replace=False))]


@dataclass(frozen=True)
class _Thing:
    shape: str
    colour: str
    size: str


class SceneGraphRewriter:
    """Hard negatives that the scene graph proves false: noun phrases ``[size] [colour] shape`` of the
    caption are found, then one of them gets another shape / colour / size, or two trade their
    attributes, or a relation is reversed; a rewrite is kept only if a changed phrase describes no object
    of the scene (reversed relations are checked on the phrase pair they join)."""

    def __init__(self, scenes: dict[str, Sequence[dict]]) -> None:
        from mmbert.data.synthetic.scenes import COLOURS, OPPOSITE, SHAPES, SIZES

        self.scenes = {
            k: [_Thing(o["shape"], o["colour"], o["size"]) for o in objs] for k, objs in scenes.items()
        }
        self.shapes, self.colours, self.sizes, self.opposite = SHAPES, COLOURS, SIZES, OPPOSITE

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> SceneGraphRewriter:
        """The synthetic world's ``scenes.json`` (``images``: ``image_id`` and ``objects``)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls({str(im["image_id"]): im["objects"] for im in data["images"]})
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not the synthetic world's scenes.json ({e})") from e

    def _phrases(self, tokens: list[str]) -> list[tuple[int, int, dict[str, str]]]:
        """(start, end, {shape, colour?, size?}) of each noun phrase."""
        out = []
        for i, w in enumerate(tokens):
            shape = _singular(w, set(self.shapes))
            if shape is None:
                continue
            attrs, start = {"shape": shape}, i
            for j in (i - 1, i - 2):
                if j >= 0 and tokens[j] in self.colours and "colour" not in attrs and j == start - 1:
                    attrs["colour"], start = tokens[j], j
                elif j >= 0 and tokens[j] in self.sizes and "size" not in attrs and j == start - 1:
                    attrs["size"], start = tokens[j], j
            out.append((start, i + 1, attrs))
        return out

    def _exists(self, scene: list[_Thing], attrs: dict[str, str]) -> bool:
        return any(all(getattr(o, k) == v for k, v in attrs.items()) for o in scene)

    def _realise(self, tokens: list[str], start: int, end: int, attrs: dict[str, str]) -> list[str]:
        """The phrase at tokens[start:end] rewritten with ``attrs``, keeping its number."""
        from mmbert.data.synthetic.language import plural

        noun = attrs["shape"] if tokens[end - 1] in self.shapes else plural(attrs["shape"])
        words_ = [w for w in (attrs.get("size"), attrs.get("colour")) if w]
        return [*tokens[:start], *words_, noun, *tokens[end:]]

    def candidates(self, caption: str, image_id: str) -> list[str]:
        if image_id not in self.scenes:
            raise KeyError(f"image {image_id!r} has no scene graph")
        scene, tokens = self.scenes[image_id], words(caption)
        phrases = [p for p in self._phrases(tokens) if self._exists(scene, p[2])]  # the true ones
        out: list[list[str]] = []
        for start, end, attrs in phrases:
            for key, values in (("shape", self.shapes), ("colour", self.colours), ("size", self.sizes)):
                if key not in attrs:
                    continue
                for v in values:
                    new = {**attrs, key: v}
                    if v != attrs[key] and not self._exists(scene, new):
                        out.append(self._realise(tokens, start, end, new))
        for (s1, e1, a1), (s2, e2, a2) in zip(phrases, phrases[1:]):  # phrase level: trade attributes
            t1 = {**{k: v for k, v in a2.items() if k != "shape"}, "shape": a1["shape"]}
            t2 = {**{k: v for k, v in a1.items() if k != "shape"}, "shape": a2["shape"]}
            if set(a1) == set(a2) and (not self._exists(scene, t1) or not self._exists(scene, t2)):
                swapped = self._realise(tokens, s2, e2, t2)
                out.append(self._realise(swapped, s1, e1, t1))
        for start, end, phrase in _relation_spans(tokens, self.opposite):  # word level: reverse a relation
            out.append([*tokens[:start], *self.opposite[phrase].split(), *tokens[end:]])
        original = " ".join(tokens)
        return sorted({" ".join(t) for t in out} - {original})

    def negatives(self, caption: str, image_id: str, rng: np.random.Generator, n: int) -> list[str]:
        pool = self.candidates(caption, image_id)
        if len(pool) <= n:
            return pool
        return [pool[i] for i in sorted(rng.choice(len(pool), n, replace=False))]


class TfidfIndex:
    """Cosine similarity of TF-IDF word vectors over a list of texts (an inverted index, no dense matrix)."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.texts = list(texts)
        docs = [Counter(words(t)) for t in self.texts]
        df = Counter(w for d in docs for w in d)
        n = max(len(docs), 1)
        self.idf = {w: math.log((1 + n) / (1 + c)) + 1.0 for w, c in df.items()}
        self.postings: dict[str, list[tuple[int, float]]] = {}
        for i, d in enumerate(docs):
            vec = self._vector(d)
            for w, v in vec.items():
                self.postings.setdefault(w, []).append((i, v))

    def _vector(self, counts: Counter) -> dict[str, float]:
        vec = {w: c * self.idf.get(w, 0.0) for w, c in counts.items() if w in self.idf}
        norm = math.sqrt(sum(v * v for v in vec.values())) or 1.0
        return {w: v / norm for w, v in vec.items()}

    def similar(self, text: str, k: int, exclude: Iterable[int] = ()) -> list[tuple[int, float]]:
        """The k most similar texts (index, cosine), best first; ties by index."""
        scores: dict[int, float] = {}
        for w, q in self._vector(Counter(words(text))).items():
            for i, v in self.postings.get(w, ()):
                scores[i] = scores.get(i, 0.0) + q * v
        banned = set(exclude)
        ranked = sorted(((i, s) for i, s in scores.items() if i not in banned), key=lambda x: (-x[1], x[0]))
        return ranked[:k]


def read_rewrites(path: str | os.PathLike, key: str) -> dict[str, list[str]]:
    """A user's JSONL of ``{"caption": ..., key: [...]}`` (key "paraphrases" or "negatives") -> caption -> texts."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    out: dict[str, list[str]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} line {n}: not JSON ({e})") from None
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("caption"), str)
            or not isinstance(row.get(key), list)
        ):
            raise ValueError(f'{path} line {n}: expected {{"caption": str, "{key}": [str, ...]}}')
        out.setdefault(row["caption"], []).extend(str(t) for t in row[key])
    return out
