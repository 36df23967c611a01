"""Objectives map (logits, batch targets) to a ``LossOutput``; losses never live in ``model.forward``."""

from mmbert.objectives.base import LossOutput
from mmbert.objectives.mlm import MaskedLM, mlm_positions
from mmbert.objectives.pair import PairMatch

__all__ = ["LossOutput", "MaskedLM", "PairMatch", "mlm_positions"]
