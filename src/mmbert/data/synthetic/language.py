"""Language about scenes: noun phrases, captions, VQA questions with annotators, NLVR2 statements,
referring expressions and VCR-style multiple choice.

Everything is generated from structure and realised at the end, never by editing strings, so that
a changed number always agrees with its noun ("one circle", "two circles"): a hard negative made by
swapping a number word is exactly as grammatical as the true sentence, and text alone cannot spot it.

Answer balance: a question of a given type is made by first drawing the answer uniformly among those
the scene makes possible, then a question with that answer. The world is symmetric in colours and
shapes, so the question's words tell nothing about its answer beyond the type's prior.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from mmbert.data.synthetic.scenes import COLOURS, OPPOSITE, RELATIONS, SHAPES, SIZES, Scene

NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
QUESTION_TYPES = ("colour", "shape", "count", "exist", "relation")
ANSWER_TYPES = {
    "colour": "other",
    "shape": "other",
    "count": "number",
    "exist": "yes/no",
    "relation": "yes/no",
}
RELATION_WORDS = {
    "left of": ("left of", "to the left of", "on the left of"),
    "right of": ("right of", "to the right of", "on the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}


def plural(noun: str) -> str:
    return noun + "es" if noun.endswith(("s", "x", "ch", "sh")) else noun + "s"


def article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


@dataclass(frozen=True)
class Phrase:
    """A noun phrase as structure: ``count`` things (None = a definite "the ..."), described by any of
    size, colour and shape (no shape: "object(s)")."""

    count: int | None = 1
    shape: str | None = None
    colour: str | None = None
    size: str | None = None
    number_as_word: bool = False  # "one circle" rather than "a circle"

    def text(self) -> str:
        noun = self.shape or "object"
        words = [w for w in (self.size, self.colour) if w]
        if self.count is None:
            return " ".join(["the", *words, noun])
        if self.count == 1:
            head = "one" if self.number_as_word else article((words or [noun])[0])
            return " ".join([head, *words, noun])
        return " ".join([NUMBER_WORDS[self.count] if self.count < len(NUMBER_WORDS) else str(self.count),
                         *words, plural(noun)])  # fmt: skip

    def with_count(self, count: int) -> Phrase:
        return replace(self, count=count)


def join_list(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


# ---------------------------------------------------------------------------- unique descriptions --
def describe(scene: Scene, i: int, use: tuple[str, ...] = ("shape", "colour", "size")) -> Phrase | None:
    """The shortest definite description of object ``i`` among the scene's objects, using only the
    attributes in ``use`` (None when none is unique)."""
    obj = scene.objects[i]
    options = [("shape",), ("colour", "shape"), ("size", "shape"), ("colour",), ("size", "colour"),
               ("size", "colour", "shape")]  # fmt: skip
    for keys in options:
        if not set(keys) <= set(use):
            continue
        wanted = {k: getattr(obj, k) for k in keys}
        if sum(all(getattr(o, k) == v for k, v in wanted.items()) for o in scene.objects) == 1:
            return Phrase(
                None, shape=wanted.get("shape"), colour=wanted.get("colour"), size=wanted.get("size")
            )
    return None


def _choice(rng: np.random.Generator, items: list):
    return items[int(rng.integers(len(items)))]


def _relation_pairs(scene: Scene) -> list[tuple[int, str, int]]:
    n = len(scene.objects)
    return [
        (a, scene.relation(a, b), b) for a in range(n) for b in range(n) if a != b and scene.relation(a, b)
    ]


# ----------------------------------------------------------------------------------------- captions --
def inventory(scene: Scene) -> list[Phrase]:
    """Every object, grouped by colour and shape, in a fixed order."""
    groups = Counter((o.colour, o.shape) for o in scene.objects)
    order = sorted(groups.items(), key=lambda kv: (SHAPES.index(kv[0][1]), COLOURS.index(kv[0][0])))
    return [Phrase(n, shape=s, colour=c) for (c, s), n in order]


def caption_inventory(scene: Scene, rng: np.random.Generator, shuffle: bool = False) -> str:
    groups = inventory(scene)
    if shuffle:
        groups = [groups[k] for k in rng.permutation(len(groups))]
    items = join_list([p.text() for p in groups])
    template = _choice(rng, ["there are {x}.", "the picture shows {x}.", "an image with {x}.", "we can see {x}.",
                             "{x} on a plain background."])  # fmt: skip
    if template.startswith("there are") and len(scene.objects) == 1:
        template = "there is {x}."
    return capitalise(template.format(x=items))


def _rest(scene: Scene, exclude: tuple[int, ...]) -> str | None:
    """The objects other than ``exclude``, grouped like the inventory ("two red circles and a blue star")."""
    groups = Counter((o.colour, o.shape) for k, o in enumerate(scene.objects) if k not in exclude)
    if not groups:
        return None
    order = sorted(groups.items(), key=lambda kv: (SHAPES.index(kv[0][1]), COLOURS.index(kv[0][0])))
    return join_list([Phrase(n, shape=s, colour=c).text() for (c, s), n in order])


def caption_relation(scene: Scene, rng: np.random.Generator) -> str | None:
    """Two objects in a spatial relation, and the rest of the scene."""
    pairs = _relation_pairs(scene)
    if not pairs:
        return None
    a, rel, b = _choice(rng, pairs)
    oa, ob = scene.objects[a], scene.objects[b]
    pa = Phrase(1, shape=oa.shape, colour=oa.colour, size=oa.size if rng.random() < 0.3 else None)
    pb = Phrase(1, shape=ob.shape, colour=ob.colour, size=ob.size if rng.random() < 0.3 else None)
    words = _choice(rng, list(RELATION_WORDS[rel]))
    template = _choice(rng, ["{a} is {r} {b}", "there is {a} {r} {b}", "{b} with {a} {r} it",
                             "{a} can be seen {r} {b}"])  # fmt: skip
    text = template.format(a=pa.text(), b=pb.text(), r=words)
    rest = _rest(scene, (a, b))
    if rest:
        text += _choice(rng, [f", and there is also {rest}", f", next to {rest}", f"; the rest: {rest}"])
    return capitalise(text + ".")


def caption_count(scene: Scene, rng: np.random.Generator) -> str:
    """Exact counts of every kind of object, in number words ("exactly two red circles and one ...")."""
    items = join_list([replace(p, number_as_word=True).text() for p in inventory(scene)])
    plural_verb = len(scene.objects) > 1
    template = _choice(rng, ["there {v} exactly {x} in the image.", "the image contains exactly {x}.",
                             "{x} can be counted in this picture."])  # fmt: skip
    return capitalise(template.format(x=items, v="are" if plural_verb else "is"))


def caption_attribute(scene: Scene, rng: np.random.Generator) -> str | None:
    """The colour of an object picked out by shape (and size), and the rest of the scene."""
    options = [
        (i, d) for i in range(len(scene.objects)) if (d := describe(scene, i, ("shape", "size"))) is not None
    ]
    if not options:
        return None
    i, d = _choice(rng, options)
    text = f"{d.text()} is {scene.objects[i].colour}"
    rest = _rest(scene, (i,))
    if rest:
        text += _choice(rng, [f", and there are also {rest}", f"; we also see {rest}", f", beside {rest}"])
    return capitalise(text + ".")


def captions(scene: Scene, rng: np.random.Generator, n: int = 5) -> list[str]:
    """``n`` distinct captions. The first names every object (so a masked region's class can be told
    from the text); the others vary the form (a spatial relation, exact counts in number words, an
    object's colour, the inventory in another order) and name the rest of the scene too, so that every
    caption tells its image apart and every masked word has context."""
    out = [caption_inventory(scene, rng)]
    makers = [caption_relation, caption_count, caption_attribute, caption_relation,
              partial(caption_inventory, shuffle=True), caption_count, caption_attribute]  # fmt: skip
    attempts = 0
    while len(out) < n and attempts < 60:
        maker = makers[attempts % len(makers)] if attempts < len(makers) else _choice(rng, makers)
        attempts += 1
        text = maker(scene, rng)
        if text is not None and text not in out:
            out.append(text)
    while len(out) < n:  # tiny scenes: fall back to repeating wording variants
        out.append(caption_inventory(scene, rng))
    return out


# ------------------------------------------------------------------------------------- questions --
@dataclass
class Question:
    question: str
    answer: str
    qtype: str
    answers: list[str]  # 10 simulated annotators


def _candidates(scene: Scene, qtype: str) -> list[tuple[tuple, str]]:
    """(slot, answer) pairs for one question type: every question this scene can answer."""
    n = len(scene.objects)
    if qtype == "colour":
        return [(("colour", d), scene.objects[i].colour) for i in range(n)
                if (d := describe(scene, i, ("shape", "size"))) is not None]  # fmt: skip
    if qtype == "shape":
        return [(("shape", d), scene.objects[i].shape) for i in range(n)
                if (d := describe(scene, i, ("colour", "size"))) is not None and d.shape is None]  # fmt: skip
    if qtype == "count":
        return [(("count_shape", s), str(scene.count(shape=s))) for s in SHAPES] + [
            (("count_colour", c), str(scene.count(colour=c))) for c in COLOURS
        ]
    if qtype == "exist":
        return [
            (("exist", c, s), "yes" if scene.count(shape=s, colour=c) else "no")
            for c in COLOURS
            for s in SHAPES
        ]
    if qtype == "relation":
        out = []
        descs = [describe(scene, i) for i in range(n)]
        for a in range(n):
            for b in range(n):
                if a == b or descs[a] is None or descs[b] is None:
                    continue
                for rel in RELATIONS:
                    truth = scene.holds(a, rel, b)
                    if truth is not None:
                        out.append((("relation", descs[a], rel, descs[b]), "yes" if truth else "no"))
        return out
    raise ValueError(f"unknown question type {qtype!r}; choose from {QUESTION_TYPES}")


def _realise_question(slot: tuple, rng: np.random.Generator) -> str:
    kind = slot[0]
    if kind == "colour":
        d = slot[1].text()
        return _choice(rng, [f"what colour is {d}?", f"what color is {d}?", f"which colour does {d} have?"])
    if kind == "shape":
        d = slot[1].text()
        return _choice(
            rng, [f"what shape is {d}?", f"what is the shape of {d}?", f"which shape does {d} have?"]
        )
    if kind == "count_shape":
        p = plural(slot[1])
        return _choice(rng, [f"how many {p} are there?", f"how many {p} are in the image?",
                             f"how many {p} can you see?"])  # fmt: skip
    if kind == "count_colour":
        c = slot[1]
        return _choice(rng, [f"how many {c} objects are there?", f"how many {c} objects are in the image?",
                             f"how many {c} objects can you see?"])  # fmt: skip
    if kind == "exist":
        c, s = slot[1], slot[2]
        return _choice(rng, [f"is there {article(c)} {c} {s}?", f"are there any {c} {plural(s)}?",
                             f"does the image contain {article(c)} {c} {s}?"])  # fmt: skip
    if kind == "relation":
        a, rel, b = slot[1].text(), slot[2], slot[3].text()
        return f"is {a} {_choice(rng, list(RELATION_WORDS[rel]))} {b}?"
    raise ValueError(kind)


def _wrong_answer(qtype: str, answer: str, rng: np.random.Generator) -> str:
    if qtype == "colour":
        return _choice(rng, [c for c in COLOURS if c != answer])
    if qtype == "shape":
        return _choice(rng, [s for s in SHAPES if s != answer])
    if qtype == "count":
        k = int(answer)
        return str(k + 1) if k == 0 or rng.random() < 0.5 else str(k - 1)
    return "no" if answer == "yes" else "yes"


def annotate(qtype: str, answer: str, rng: np.random.Generator) -> list[str]:
    """Ten annotators: each errs with a per-question rate of up to 25 % (counts are harder)."""
    rate = float(rng.uniform(0.0, 0.25 if qtype == "count" else 0.15))
    return [(_wrong_answer(qtype, answer, rng) if rng.random() < rate else answer) for _ in range(10)]


def question(scene: Scene, qtype: str, rng: np.random.Generator) -> Question | None:
    """One balanced question of ``qtype``: the answer is drawn uniformly among the possible ones."""
    cands = _candidates(scene, qtype)
    if not cands:
        return None
    answers = sorted({a for _, a in cands})
    answer = _choice(rng, answers)
    slot = _choice(rng, [s for s, a in cands if a == answer])
    text = capitalise(_realise_question(slot, rng))
    return Question(text, answer, qtype, annotate(qtype, answer, rng))


def majority_answer(answers: list[str]) -> str:
    counts = Counter(answers)
    top = max(counts.values())
    return next(a for a in answers if counts[a] == top)  # ties: the first said


# ---------------------------------------------------------------------------------- NLVR2 statements --
@dataclass(frozen=True)
class Statement:
    """An NLVR2-style claim about a (left, right) image pair, as structure: ``kind`` and its slots."""

    kind: str  # "side_count" | "total_count" | "both" | "more"
    phrase: Phrase
    side: str = "left"

    def text(self) -> str:
        p = self.phrase.text()
        if self.kind == "side_count":
            return capitalise(f"the {self.side} image contains exactly {p}.")
        if self.kind == "total_count":
            verb = "is" if self.phrase.count == 1 else "are"
            return capitalise(f"there {verb} {p} in the two images together.")
        if self.kind == "both":
            return capitalise(f"both images contain {p}.")
        if self.kind == "more":
            other = "right" if self.side == "left" else "left"
            return capitalise(f"the {self.side} image has more {plural(self.phrase.shape or 'object')} "
                              f"than the {other} image.")  # fmt: skip
        raise ValueError(self.kind)

    def truth(self, left: Scene, right: Scene) -> bool:
        q = {"shape": self.phrase.shape, "colour": self.phrase.colour}
        nl, nr = left.count(**q), right.count(**q)
        if self.kind == "side_count":
            return (nl if self.side == "left" else nr) == self.phrase.count
        if self.kind == "total_count":
            return nl + nr == self.phrase.count
        if self.kind == "both":
            return nl > 0 and nr > 0
        if self.kind == "more":
            return nl > nr if self.side == "left" else nr > nl
        raise ValueError(self.kind)


def swap_number(statement: Statement, rng: np.random.Generator) -> Statement:
    """A hard negative: the same claim with another count, realised again (so "one circle" becomes
    "two circles", never "two circle")."""
    k = statement.phrase.count or 1
    new = k + 1 if k == 1 or rng.random() < 0.5 else k - 1
    return replace(statement, phrase=statement.phrase.with_count(new))


def statement(left: Scene, right: Scene, label: bool, rng: np.random.Generator) -> Statement:
    """A statement with the given truth value about the pair; false counting claims are usually hard
    negatives (a true claim with its number swapped)."""
    shapes = sorted({o.shape for o in (*left.objects, *right.objects)}, key=SHAPES.index)
    for _ in range(100):
        kind = _choice(rng, ["side_count", "total_count", "both", "more"])
        shape = _choice(rng, shapes if rng.random() < 0.8 else list(SHAPES))
        colour = (
            _choice(rng, list(COLOURS)) if kind in ("side_count", "both") and rng.random() < 0.5 else None
        )
        side = _choice(rng, ["left", "right"])
        q = {"shape": shape, "colour": colour}
        if kind == "side_count":
            true_count = (left if side == "left" else right).count(**q)
        elif kind == "total_count":
            true_count = left.count(**q) + right.count(**q)
        else:
            true_count = 1
        if kind in ("side_count", "total_count") and true_count == 0:
            continue
        counting = kind in ("side_count", "total_count")
        s = Statement(kind, Phrase(true_count, shape=shape, colour=colour, number_as_word=counting), side)
        if kind in ("side_count", "total_count") and not label:
            s = swap_number(s, rng)
        if s.truth(left, right) == label:
            return s
    raise RuntimeError("no statement with the wanted label")  # unreachable for scenes with objects


# ---------------------------------------------------------------------------- referring expressions --
def referring_expressions(scene: Scene, i: int, rng: np.random.Generator) -> list[str]:
    """One or two expressions that pick out object ``i`` (a plain description, and one anchored on a
    neighbour by a spatial relation)."""
    d = describe(scene, i)
    if d is None:
        return []
    out = [d.text()]
    anchors = [
        (b, scene.relation(i, b)) for b in range(len(scene.objects)) if b != i and scene.relation(i, b)
    ]
    anchors = [(b, rel, db) for b, rel in anchors if (db := describe(scene, b)) is not None]
    if anchors:
        b, rel, db = _choice(rng, anchors)
        full = Phrase(None, shape=scene.objects[i].shape, colour=scene.objects[i].colour)
        out.append(f"{full.text()} {_choice(rng, list(RELATION_WORDS[rel]))} {db.text()}")
    return out


# ------------------------------------------------------------------------------------------- VCR --
@dataclass
class VCRItem:
    question: list  # tokens; a list of ints refers to detections by index
    answer_choices: list[list]
    answer_label: int
    rationale_choices: list[list]
    rationale_label: int


def vcr_item(scene: Scene, region_object: np.ndarray, rng: np.random.Generator) -> VCRItem | None:
    """\"What colour is [i]?" with four colour answers, and four spatial rationales about [i] of which
    only one is true (choosing it needs the boxes, not the words)."""
    first = {}
    for r, o in enumerate(region_object.tolist()):
        if o >= 0 and o not in first:
            first[o] = r
    facts = [(a, rel, b) for a, rel, b in _relation_pairs(scene) if a in first and b in first]
    if not facts:
        return None
    a, rel, b = _choice(rng, facts)
    ra = first[a]
    colour = scene.objects[a].colour
    wrong = [c for c in COLOURS if c != colour]
    rng.shuffle(wrong)
    answers = [colour, *wrong[:3]]
    order = rng.permutation(4)
    answer_choices = [[[ra], "is", answers[k], "."] for k in order]
    answer_label = int(np.where(order == 0)[0][0])

    def fact(r: str, c: int) -> list:
        oc = scene.objects[c]
        return [[ra], "is", *RELATION_WORDS[r][0].split(), "the", oc.colour, oc.shape, [first[c]], "."]

    # false facts about [i]: the opposite relation to the same neighbour first, then any other
    false = [(OPPOSITE[rel], b)] + [
        (r, c) for c in first for r in RELATIONS if c != a and (r, c) != (OPPOSITE[rel], b)
    ]
    false = [(r, c) for r, c in false if scene.holds(a, r, c) is False]
    if len(false) < 3:
        return None
    picks = [false[0]] + [false[1:][k] for k in rng.choice(len(false) - 1, 2, replace=False)]
    rationales = [fact(rel, b), *(fact(r, c) for r, c in picks)]
    order_r = rng.permutation(4)
    return VCRItem(
        question=["What", "colour", "is", [ra], "?"],
        answer_choices=answer_choices,
        answer_label=answer_label,
        rationale_choices=[rationales[k] for k in order_r],
        rationale_label=int(np.where(order_r == 0)[0][0]),
    )


__all__ = [
    "ANSWER_TYPES",
    "NUMBER_WORDS",
    "QUESTION_TYPES",
    "SIZES",
    "Phrase",
    "Question",
    "Statement",
    "VCRItem",
    "annotate",
    "captions",
    "describe",
    "majority_answer",
    "question",
    "referring_expressions",
    "statement",
    "swap_number",
    "vcr_item",
]
