"""Objectives map (logits, batch targets) to a ``LossOutput``; losses never live in ``model.forward``."""

from mmbert.objectives.base import LossOutput
from mmbert.objectives.image_qa import ImageQA
from mmbert.objectives.mlm import MaskedLM, mlm_positions
from mmbert.objectives.pair import PairMatch
from mmbert.objectives.pretraining import OBJECTIVE_NAMES, RECIPES, Pretraining, Recipe, recipe_for
from mmbert.objectives.regions import (
    FeatureRegression,
    LxmertRegionLoss,
    RegionClassification,
    RegionDistribution,
)

__all__ = [
    "OBJECTIVE_NAMES",
    "RECIPES",
    "FeatureRegression",
    "ImageQA",
    "LossOutput",
    "LxmertRegionLoss",
    "MaskedLM",
    "PairMatch",
    "Pretraining",
    "Recipe",
    "RegionClassification",
    "RegionDistribution",
    "mlm_positions",
    "recipe_for",
]
