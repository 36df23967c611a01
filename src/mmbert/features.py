"""``mmbert.features``: the region-feature store API (``mmbert.features.open(path)``), re-exported from
:mod:`mmbert.data.features`, plus the checker and converter behind ``mmbert features``."""

from mmbert.data.features import (
    FORMATS,
    OPTIONAL_FIELDS,
    FeatureStore,
    FeatureStoreError,
    MissingImageError,
    PickleRefusedError,
    RegionFeatures,
    StoreReader,
    StoreWriter,
    detect_format,
    open,
)
from mmbert.data.features.convert import ConvertReport, convert
from mmbert.data.features.validate import Problem, check_record, check_store

__all__ = [
    "FORMATS",
    "OPTIONAL_FIELDS",
    "ConvertReport",
    "FeatureStore",
    "FeatureStoreError",
    "MissingImageError",
    "PickleRefusedError",
    "Problem",
    "RegionFeatures",
    "StoreReader",
    "StoreWriter",
    "check_record",
    "check_store",
    "convert",
    "detect_format",
    "open",
]
