"""VQA answer normalisation and soft answer scores: shared by the VQA task (its metric and targets)
and by LXMERT's image-QA pre-training data, so that neither depends on the other.

The official evaluator's normalisation (punctuation, number words, articles, contractions;
GT-Vision-Lab/VQA ``vqaEval.py``) and the leave-one-out soft score over the human answers.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

# The official evaluator's tables (facts of the metric, so they are reproduced exactly, quirks included:
# e.g. "somebody'd" -> "somebodyd").
_CONTRACTION_PAIRS = """
aint ain't|arent aren't|cant can't|couldve could've|couldnt couldn't|couldn'tve couldn't've|couldnt've couldn't've
didnt didn't|doesnt doesn't|dont don't|hadnt hadn't|hadnt've hadn't've|hadn'tve hadn't've|hasnt hasn't
havent haven't|hed he'd|hed've he'd've|he'dve he'd've|hes he's|howd how'd|howll how'll|hows how's|Id've I'd've
I'dve I'd've|Im I'm|Ive I've|isnt isn't|itd it'd|itd've it'd've|it'dve it'd've|itll it'll|let's let's|maam ma'am
mightnt mightn't|mightnt've mightn't've|mightn'tve mightn't've|mightve might've|mustnt mustn't|mustve must've
neednt needn't|notve not've|oclock o'clock|oughtnt oughtn't|ow's'at 'ow's'at|'ows'at 'ow's'at|'ow'sat 'ow's'at
shant shan't|shed've she'd've|she'dve she'd've|she's she's|shouldve should've|shouldnt shouldn't
shouldnt've shouldn't've|shouldn'tve shouldn't've|somebody'd somebodyd|somebodyd've somebody'd've
somebody'dve somebody'd've|somebodyll somebody'll|somebodys somebody's|someoned someone'd
someoned've someone'd've|someone'dve someone'd've|someonell someone'll|someones someone's|somethingd something'd
somethingd've something'd've|something'dve something'd've|somethingll something'll|thats that's|thered there'd
thered've there'd've|there'dve there'd've|therere there're|theres there's|theyd they'd|theyd've they'd've
they'dve they'd've|theyll they'll|theyre they're|theyve they've|twas 'twas|wasnt wasn't|wed've we'd've
we'dve we'd've|weve we've|werent weren't|whatll what'll|whatre what're|whats what's|whatve what've|whens when's
whered where'd|wheres where's|whereve where've|whod who'd|whod've who'd've|who'dve who'd've|wholl who'll
whos who's|whove who've|whyll why'll|whyre why're|whys why's|wont won't|wouldve would've|wouldnt wouldn't
wouldnt've wouldn't've|wouldn'tve wouldn't've|yall y'all|yall'll y'all'll|y'allll y'all'll|yall'd've y'all'd've
y'alld've y'all'd've|y'all'dve y'all'd've|youd you'd|youd've you'd've|you'dve you'd've|youll you'll|youre you're
youve you've"""
CONTRACTIONS: dict[str, str] = dict(
    pair.split(" ") for pair in _CONTRACTION_PAIRS.replace("\n", "|").split("|") if pair.strip()
)
NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = {"a", "an", "the"}
PUNCTUATION = [
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
]
# The official pattern is written "(?!<=\d)(\.)(?!\d)": a (mis-typed) look-behind that acts as a no-op
# look-ahead, so in effect every period not followed by a digit is removed. Reproduced as written.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
# The official call is ``periodStrip.sub("", text, re.UNICODE)``: re.UNICODE lands in ``count``, so at
# most 32 periods are removed. Reproduced for bit-identical scores.
_PERIOD_COUNT = int(re.UNICODE)


def clean_answer(text: str) -> str:
    """Newlines and tabs to spaces, outer whitespace stripped (the evaluator's first step)."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str) -> str:
    """The official ``processPunctuation``: a mark touching a space (or any text with a digit,digit
    comma) is deleted, otherwise replaced by a space; then periods not followed by a digit go."""
    out = text
    for p in PUNCTUATION:
        if (p + " " in text or " " + p in text) or _COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, count=_PERIOD_COUNT)


def process_digit_article(text: str) -> str:
    """The official ``processDigitArticle``: lower-case, number words -> digits, drop a/an/the,
    expand missing-apostrophe contractions ("dont" -> "don't")."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize_answer(text: str) -> str:
    """Full normalisation of one answer string (punctuation, then digits/articles/contractions)."""
    return process_digit_article(process_punctuation(clean_answer(text)))


def vqa_soft_scores(human_answers: Sequence[str]) -> dict[str, float]:
    """Soft training targets: every distinct normalised human answer with its leave-one-out score
    (the same formula as the metric, so training optimises what is measured)."""
    normed = [normalize_answer(a) for a in human_answers]
    if not normed:
        return {}
    counts = Counter(normed)
    n = len(normed)
    return {a: (c * min(1.0, (c - 1) / 3.0) + (n - c) * min(1.0, c / 3.0)) / n for a, c in counts.items()}
