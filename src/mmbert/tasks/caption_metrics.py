"""Caption metrics as the COCO caption evaluation computes them: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, SPICE.

The scores come from the maintained ``pycocoevalcap`` package (tylin/coco-caption), not a re-implementation:
this module reads the files, checks them, runs the package's PTB tokenizer and scorers in the order
``COCOEvalCap.evaluate`` does, and names the results ``bleu_1``..``bleu_4``, ``meteor``, ``rouge_l``,
``cider`` (coco-caption's ``Cider`` is CIDEr-D: clipped n-gram counts and the Gaussian length penalty,
sigma 6, x10) and ``spice``. Values are the package's (fractions; CIDEr-D on its x10 scale).

Java: the PTB tokenizer (Stanford CoreNLP 3.4.1), METEOR 1.5 and SPICE are Java programs. Without Java,
``tokenizer="simple"`` (a documented deviation: lower-case, punctuation split off and dropped; the PTB
tokenizer also splits contractions and normalises brackets) gives BLEU, ROUGE-L and CIDEr-D, which are pure
Python; METEOR and SPICE are then reported unavailable. SPICE needs Stanford CoreNLP 3.6.0, which the package
downloads on first use: when the jars are absent it is reported unavailable with the reason (unless
``spice_download=True`` lets the package try), and a failing SPICE never fails the other metrics.

Files: the COCO captions annotation file (``captions_val2014.json``: ``images`` + ``annotations`` with
``image_id`` and ``caption``) and the official results file (``[{"image_id", "caption"}]``). Image ids are
matched by their string form, so an id written ``9`` in one file and ``"9"`` in the other still pairs.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmbert.tasks.base import TaskDataError, read_json, require_fields

METRICS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider", "spice")
TOKENIZERS = ("ptb", "simple")
# pycocoevalcap's PTBTokenizer drops these tokens after tokenising (tokenizer/ptbtokenizer.py)
PTB_PUNCTUATION = {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
                   "...", ";"}  # fmt: skip
SPICE_CORENLP_JAR = "stanford-corenlp-3.6.0.jar"


class MetricUnavailable(RuntimeError):
    """A metric cannot run here (no Java, SPICE's CoreNLP models missing); the message says why."""


# --- files -----------------------------------------------------------------------------------------


def read_caption_annotations(path: str | os.PathLike) -> dict[str, list[str]]:
    """The COCO captions annotation file -> {image id (str): [reference captions]}, in the file's image
    order. Every listed image needs at least one caption (the official scorers assert so)."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict) or "annotations" not in data:
        raise TaskDataError(f"{path}: not a COCO captions file (no top-level 'annotations' list)")
    refs: dict[str, list[str]] = {}
    for i, img in enumerate(data.get("images", [])):
        require_fields(img, ("id",), f"{path}: images[{i}]")
        refs.setdefault(str(img["id"]), [])
    listed = bool(refs)
    for i, ann in enumerate(data["annotations"]):
        where = f"{path}: annotations[{i}]"
        require_fields(ann, ("image_id", "caption"), where)
        if not isinstance(ann["caption"], str):
            raise TaskDataError(f"{where}: 'caption' must be a string, got {type(ann['caption']).__name__}")
        key = str(ann["image_id"])
        if listed and key not in refs:
            raise TaskDataError(f"{where}: image_id {ann['image_id']!r} is not in the file's 'images'")
        refs.setdefault(key, []).append(ann["caption"])
    empty = [k for k, v in refs.items() if not v]
    if empty:
        raise TaskDataError(f"{path}: {len(empty)} images have no reference caption, e.g. {empty[:5]}")
    return refs


def read_caption_results(path: str | os.PathLike) -> dict[str, str]:
    """The official results file ``[{"image_id", "caption"}]`` -> {image id (str): caption}; one caption
    per image (a repeated image id is an error, as it makes the official scorers fail)."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, list):
        raise TaskDataError(f"{path}: a captioning results file is a JSON list of {{image_id, caption}}")
    out: dict[str, str] = {}
    for i, r in enumerate(data):
        where = f"{path}[{i}]"
        require_fields(r, ("image_id", "caption"), where)
        if not isinstance(r["caption"], str):
            raise TaskDataError(f"{where}: 'caption' must be a string, got {type(r['caption']).__name__}")
        key = str(r["image_id"])
        if key in out:
            raise TaskDataError(f"{where}: image_id {r['image_id']!r} has a second caption")
        out[key] = r["caption"]
    return out


# --- tokenisation ----------------------------------------------------------------------------------


def java_available() -> bool:
    return shutil.which("java") is not None


def simple_tokenize(text: str) -> str:
    """The Java-free tokenizer (``tokenizer="simple"``): lower-case words, punctuation split off and dropped
    as PTBTokenizer's punctuation list drops it. Not the official tokenisation (no contraction splitting)."""
    tokens = re.findall(r"[\w']+|[^\w\s]", text.lower().replace("\n", " "))
    return " ".join(t for t in tokens if t not in PTB_PUNCTUATION and t.strip("'"))


def tokenize(captions: Mapping[str, Sequence[str]], tokenizer: str) -> dict[str, list[str]]:
    """{id: [raw]} -> {id: [tokenised]} with the package's PTB tokenizer (Java) or ``simple_tokenize``."""
    if tokenizer == "simple":
        return {k: [simple_tokenize(c) for c in v] for k, v in captions.items()}
    if tokenizer != "ptb":
        raise ValueError(f"unknown caption tokenizer {tokenizer!r}; choose from {TOKENIZERS}")
    if not java_available():
        raise MetricUnavailable(
            "the official PTB tokenizer needs Java (no `java` on PATH); install a JRE, or pass "
            "tokenizer='simple' (--caption-tokenizer simple) for BLEU, ROUGE-L and CIDEr-D without Java"
        )
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    out = PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})
    lost = [k for k in captions if k not in out or len(out[k]) != len(captions[k])]
    if lost:
        # PTBTokenizer pairs its output lines with the input by position: a caption it returns no line for
        # (an empty last caption) shifts or drops the rest; refuse rather than score misaligned captions
        raise TaskDataError(
            f"the PTB tokenizer lost captions of images {lost[:5]} (empty captions at the end?)"
        )
    return out


# --- scoring ---------------------------------------------------------------------------------------


def spice_status(download: bool = False) -> str | None:
    """None when SPICE can run, else why not (its CoreNLP jars are missing and may not be downloaded)."""
    if not java_available():
        return "SPICE needs Java (no `java` on PATH)"
    import pycocoevalcap.spice as spice_pkg

    jar = Path(spice_pkg.__file__).parent / "lib" / SPICE_CORENLP_JAR
    if jar.exists() or download:
        return None
    return (f"SPICE needs Stanford CoreNLP 3.6.0 ({jar} is absent); pycocoevalcap downloads it on first use, "
            "which needs network access: run once with spice_download=True (--spice-download) where there is "
            "network, or place the jar and its -models jar there")  # fmt: skip


def _run_spice(gts: dict, res: dict, download: bool) -> float:
    reason = spice_status(download)
    if reason is not None:
        raise MetricUnavailable(reason)
    from pycocoevalcap.spice.spice import Spice

    try:
        score, _ = Spice().compute_score(gts, res)
    except Exception as e:  # download, JVM memory (-Xmx8G) or parsing failures: SPICE only
        raise MetricUnavailable(f"SPICE failed: {type(e).__name__}: {e}") from e
    return float(score)


def require_pycocoevalcap() -> None:
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError:
        raise ImportError(
            "caption metrics need the pycocoevalcap package: pip install 'mmbert[captions]' (pycocoevalcap==1.2)"
        ) from None


def score_captions(
    predictions: Mapping[Any, str],
    references: Mapping[Any, Sequence[str]],
    metrics: Sequence[str] = METRICS,
    tokenizer: str = "ptb",
    allow_missing: bool = False,
    spice_download: bool = False,
) -> dict[str, Any]:
    """Score {image id: caption} against {image id: [references]} with pycocoevalcap.

    Every referenced image needs a prediction unless ``allow_missing`` (then only the predicted images are
    scored, as ``COCOEvalCap.params['image_id']`` restricted to them); predictions for images without
    references are always an error. Returns the requested metrics (None where unavailable), the reasons
    under ``unavailable``, ``num_images`` and the tokenizer used.
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown caption metrics {unknown}; choose from {METRICS}")
    require_pycocoevalcap()
    preds = {str(k): v for k, v in predictions.items()}
    refs = {str(k): list(v) for k, v in references.items()}
    extra = [k for k in preds if k not in refs]
    if extra:
        raise TaskDataError(f"{len(extra)} predicted images have no reference captions, e.g. {extra[:5]}")
    missing = [k for k in refs if k not in preds]
    if missing and not allow_missing:
        raise TaskDataError(
            f"{len(missing)} of {len(refs)} images have no predicted caption, e.g. {missing[:5]} "
            "(allow_missing / --allow-missing scores the predicted ones only)"
        )
    ids = [k for k in refs if k in preds]  # the annotation file's order, as COCOEvalCap
    if not ids:
        raise TaskDataError("no image has both a prediction and references")
    empty_refs = [k for k in ids if not refs[k]]
    if empty_refs:
        raise TaskDataError(f"images {empty_refs[:5]} have an empty reference list")
    gts = tokenize({k: refs[k] for k in ids}, tokenizer)
    res = tokenize({k: [preds[k]] for k in ids}, tokenizer)
    out: dict[str, Any] = {}
    unavailable: dict[str, str] = {}
    wanted = set(metrics)
    if wanted & {"bleu_1", "bleu_2", "bleu_3", "bleu_4"}:
        from pycocoevalcap.bleu.bleu import Bleu

        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        for n in range(4):
            if f"bleu_{n + 1}" in wanted:
                out[f"bleu_{n + 1}"] = float(bleu[n])
    if "meteor" in wanted:
        try:
            out["meteor"] = _run_meteor(gts, res)
        except MetricUnavailable as e:
            out["meteor"], unavailable["meteor"] = None, str(e)
    if "rouge_l" in wanted:
        from pycocoevalcap.rouge.rouge import Rouge

        out["rouge_l"] = float(Rouge().compute_score(gts, res)[0])
    if "cider" in wanted:
        from pycocoevalcap.cider.cider import Cider

        out["cider"] = float(Cider().compute_score(gts, res)[0])
    if "spice" in wanted:
        try:
            out["spice"] = _run_spice(gts, res, spice_download)
        except MetricUnavailable as e:
            out["spice"], unavailable["spice"] = None, str(e)
    out = {m: out[m] for m in METRICS if m in out}
    out.update({"num_images": len(ids), "num_missing": len(missing), "tokenizer": tokenizer})
    if unavailable:
        out["unavailable"] = unavailable
    return out


_METEOR: list = []  # one METEOR JVM per process, started on first use (loading its tables takes seconds)


def meteor_scorer():
    """pycocoevalcap's ``Meteor`` (a JVM speaking over pipes), started once and stopped at exit."""
    if not java_available():
        raise MetricUnavailable("METEOR 1.5 needs Java (no `java` on PATH)")
    if _METEOR and _METEOR[0].meteor_p.poll() is None:
        return _METEOR[0]
    from pycocoevalcap.meteor.meteor import Meteor

    _METEOR[:] = [Meteor()]
    if len(_METEOR) == 1 and not getattr(meteor_scorer, "_registered", False):
        atexit.register(_stop_meteor)
        meteor_scorer._registered = True  # type: ignore[attr-defined]
    return _METEOR[0]


def _stop_meteor() -> None:
    """Stop the JVM now (the package would leave it to garbage collection)."""
    for scorer in _METEOR:
        proc = scorer.meteor_p
        if proc.poll() is None:
            proc.stdin.close()
            proc.kill()
            proc.wait()
        scorer.meteor_p = _Stopped()
    _METEOR.clear()


def _run_meteor(gts: dict, res: dict) -> float:
    score, _ = meteor_scorer().compute_score(gts, res)
    return float(score)


class _Stopped:
    """Stands in for Meteor's stopped process so its ``__del__`` has nothing left to stop."""

    class _Pipe:
        def close(self) -> None:
            pass

    stdin = _Pipe()

    def poll(self) -> int:
        return 0

    def kill(self) -> None:
        pass

    def wait(self) -> int:
        return 0


def score_caption_files(
    predictions: str | os.PathLike, annotations: str | os.PathLike, **options: Any
) -> dict[str, Any]:
    """``score_captions`` over a results file and a COCO captions annotation file."""
    return score_captions(read_caption_results(predictions), read_caption_annotations(annotations), **options)
