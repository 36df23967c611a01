"""``OBJECTIVES``: objective name -> a factory of the ``Objective`` that scores it. Explicit, no import
side effects: a new objective costs its class (declaring ``output``, ``batch_fields``, ``detector``
and implementing ``score``) plus one line here; ``tests/objectives/test_registry.py`` then runs it
through the same checks as the others."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from mmbert.objectives.alignment import MatchWithAlignment
from mmbert.objectives.base import Objective
from mmbert.objectives.image_qa import ImageQA
from mmbert.objectives.mlm import MaskedLM
from mmbert.objectives.pair import PairMatch
from mmbert.objectives.regions import (
    FeatureRegression,
    LxmertRegionLoss,
    RegionClassification,
    RegionDistribution,
)

OBJECTIVES: dict[str, Callable[[], Objective]] = {
    "mlm": MaskedLM,
    "nsp": partial(PairMatch, "nsp"),  # next-sentence prediction (BERT)
    "itm": partial(PairMatch, "itm"),  # image-text matching
    "itm_wra": MatchWithAlignment,  # UNITER's ITM task: matching + 0.1 x word-region alignment (OT)
    "moc": partial(RegionClassification, "moc"),  # Unicoder-VL: masked object classification
    "mvrc": partial(RegionClassification, "mvrc"),  # VL-BERT: masked RoI classification (hard label)
    "mrc": partial(RegionClassification, "mrc", background=False),  # UNITER hard MRC: background excluded
    "mvrc_soft": partial(RegionDistribution, "mvrc_soft", kind="soft_ce"),  # VL-BERT's original code
    "mrc_kl": partial(RegionDistribution, "mrc_kl", kind="kl"),  # ViLBERT, VOLTA: mean per region
    "mrckl": partial(RegionDistribution, "mrckl", kind="kl", average="region_class"),  # UNITER MRC-KL
    "mrfr": partial(FeatureRegression, "mrfr", kind="l2"),  # UNITER masked region feature regression
    "mrfr_smooth_l1": partial(FeatureRegression, "mrfr_smooth_l1", kind="smooth_l1"),
    "obj": partial(LxmertRegionLoss, "obj"),  # LXMERT masked object prediction: class
    "attr": partial(LxmertRegionLoss, "attr"),  # ... attribute
    "feat": partial(LxmertRegionLoss, "feat"),  # ... feature
    "qa": ImageQA,  # LXMERT image question answering
}

