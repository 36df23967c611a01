"""Objectives map (logits, batch targets) to a ``LossOutput``; losses never live in ``model.forward``."""

from mmbert.objectives.base import DetectorNeed, LossOutput, Objective, ScoringInputs
from mmbert.objectives.image_qa import ImageQA
from mmbert.objectives.mlm import MaskedLM, mlm_positions
from mmbert.objectives.pair import PairMatch
from mmbert.objectives.pretraining import (
    OBJECTIVE_NAMES,
    RECIPES,
    Pretraining,
    Recipe,
    recipe_for,
    recipe_key,
)
from mmbert.objectives.regions import (
    FeatureRegression,
    LxmertRegionLoss,
    RegionClassification,
    RegionDistribution,
)
from mmbert.objectives.registry import OBJECTIVES

__all__ = [
    "OBJECTIVES",
    "OBJECTIVE_NAMES",
    "RECIPES",
    "DetectorNeed",
    "FeatureRegression",
    "ImageQA",
    "LossOutput",
    "LxmertRegionLoss",
    "MaskedLM",
    "Objective",
    "PairMatch",
    "Pretraining",
    "Recipe",
    "RegionClassification",
    "RegionDistribution",
    "ScoringInputs",
    "mlm_positions",
    "recipe_for",
    "recipe_key",
]
