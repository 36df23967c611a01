"""mmbert: BERT and the vision-and-language BERT family in one fast, faithful PyTorch library."""

from mmbert.config import ModelConfig
from mmbert.convert import CheckpointError, export_hf, load_model, load_pretraining
from mmbert.convert.init_text import build_model
from mmbert.data.tokenizer import Tokenizer
from mmbert.models import (
    MODELS,
    Encoded,
    EncoderModel,
    PretrainingModel,
    PretrainingOutput,
    list_models,
)

__version__ = "0.1.0"

__all__ = [
    "MODELS",
    "CheckpointError",
    "Encoded",
    "EncoderModel",
    "ModelConfig",
    "PretrainingModel",
    "PretrainingOutput",
    "Tokenizer",
    "build_model",
    "export_hf",
    "list_models",
    "load_model",
    "load_pretraining",
]
