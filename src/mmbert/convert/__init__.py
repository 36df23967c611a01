"""Checkpoint loading, conversion from and export to Hugging Face formats."""

from mmbert.convert.common import CheckpointError
from mmbert.convert.load import HF_CONVERTERS, export_hf, load_model, load_pretraining

__all__ = ["HF_CONVERTERS", "CheckpointError", "export_hf", "load_model", "load_pretraining"]
