"""Typed configuration shared by every model: the Transformer sizes that all of them have."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal, TypeVar

C = TypeVar("C", bound="ModelConfig")

# Where a V&L model puts the whole-image region (mean of the real regions, box [0, 0, 1, 1]) among its
# vision elements. Every V&L config has a ``global_region`` field of this type; text-only BERT has none.
GlobalRegion = Literal["first", "last", "none"]
GLOBAL_REGION_CHOICES: tuple[str, ...] = ("first", "last", "none")


def check_global_region(config: ModelConfig, allowed: tuple[str, ...] = GLOBAL_REGION_CHOICES) -> None:
    """Refuse a ``global_region`` outside ``allowed`` (a model whose architecture fixes it allows one)."""
    where = config.global_region  # type: ignore[attr-defined]
    if where not in allowed:
        raise ValueError(f"{type(config).__name__}.global_region must be one of {allowed}, got {where!r}")


@dataclass
class ModelConfig:
    """Fields every mmbert model has (same names everywhere, see DESIGN.md section 7).

    Subclasses add their own fields and set ``model_type``, the key under which the model class is
    registered and which ``config.json`` records.
    """

    model_type: ClassVar[str] = ""

    dim: int = 768  # hidden size of the text stream
    num_heads: int = 12
    num_layers: int = 12
    ffn_dim: int = 3072
    dropout: float = 0.1  # hidden-state dropout
    attn_dropout: float = 0.1  # dropout on attention probabilities
    layer_norm_eps: float = 1e-12
    vocab_size: int = 30522
    max_positions: int = 512
    type_vocab_size: int = 2
    pad_token_id: int = 0
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(
                f"{type(self).__name__}: dim={self.dim} is not divisible by num_heads={self.num_heads}"
            )
        self.check_positive("dim", "num_heads", "ffn_dim", "vocab_size", "max_positions", "type_vocab_size")
        if self.num_layers < 0:
            raise ValueError(f"{type(self).__name__}.num_layers must be >= 0, got {self.num_layers}")

    def check_positive(self, *names: str) -> None:
        """Each field in ``names`` is > 0, else an error naming the config class, the field and its value."""
        for name in names:
            if getattr(self, name) <= 0:
                raise ValueError(f"{type(self).__name__}.{name} must be positive, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": self.model_type, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any], source: str = "config") -> C:
        """Build from a dict, refusing unknown keys and wrong types with a message naming them."""
        data = {k: v for k, v in data.items() if k != "model_type"}
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(
                f"{source}: unknown keys for {cls.__name__}: {unknown}; known keys: {sorted(known)}"
            )
        for key, value in data.items():
            expected = known[key].type
            if isinstance(expected, str):
                ok = _value_matches(value, expected)
                if not ok:
                    raise TypeError(f"{source}: key {key!r} expects {expected}, got {value!r}")
        converted = {
            k: tuple(v) if isinstance(v, list) and "tuple" in str(known[k].type) else v
            for k, v in data.items()
        }
        return cls(**converted)

    def replace(self: C, **overrides: Any) -> C:
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(
                f"unknown config keys for {type(self).__name__}: {unknown}; known keys: {sorted(known)}"
            )
        return dataclasses.replace(self, **overrides)


_SIMPLE = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}


def _value_matches(value: Any, annotation: str) -> bool:
    """A light check of JSON values against the string annotations of our dataclasses."""
    options = [a.strip() for a in annotation.split("|")]
    for option in options:
        if option == "None" and value is None:
            return True
        if option in _SIMPLE:
            if isinstance(value, bool) and option in ("int", "float"):
                continue
            if isinstance(value, _SIMPLE[option]):
                return True
        if option.startswith(("tuple", "list")) and isinstance(value, (list, tuple)):
            return True
        if option.startswith("dict") and isinstance(value, dict):
            return True
        if option not in _SIMPLE and not option.startswith(("tuple", "list", "dict")) and option != "None":
            return True  # an annotation we do not check (e.g. a Literal)
    return False
