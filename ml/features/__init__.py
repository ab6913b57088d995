"""The IBS strategy's ML features: one definition each, evaluated vectorised (training) or bar by bar (worker)."""

from ml.features.catalog import (
    CATALOG,
    OPTIONAL_REFERENCES,
    REQUIRED_REFERENCES,
    Feature,
    FeatureDef,
    FeatureSet,
    MissingFeedError,
    feature_set,
    feed_label,
    reference_roots,
)
from ml.features.frame import feature_frame
from ml.features.stream import FeatureStatus, StreamingFeatures

__all__ = [
    "CATALOG",
    "OPTIONAL_REFERENCES",
    "REQUIRED_REFERENCES",
    "Feature",
    "FeatureDef",
    "FeatureSet",
    "FeatureStatus",
    "MissingFeedError",
    "StreamingFeatures",
    "feature_frame",
    "feature_set",
    "feed_label",
    "reference_roots",
]
