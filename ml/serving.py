"""Serving a veto model: load ``models:/{strategy}_{SYMBOL}@champion`` and decide on a signal.

The champion alias is resolved to a version first and that version is loaded, so the
version reported is the one whose artifact was read even if the alias moves meanwhile.
Only the skops format is accepted, loaded with skops' default trusted types (scikit-learn
and numpy); the model's own list of "trusted" types is not consulted, so a crafted
artifact cannot widen it. A symbol without a registered champion gets ``None``: the caller
trades without a veto and says so.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ml.registry import CHAMPION, PINE_METADATA, model_name, open_client, registry_exists

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """A registered model that cannot be served; the message names the model and version."""


class FeatureMismatchError(ModelLoadError):
    """The model needs features the worker does not compute."""


class FeaturesNotReadyError(ValueError):
    """A decision was asked for while some of the model's features had no value."""


@dataclass(frozen=True)
class Decision:
    """One veto decision: take the signal when ``score >= threshold``."""

    model: str
    version: str
    score: float
    threshold: float
    take: bool
    features: dict[str, float]


class VetoModel:
    """A loaded model version with its feature list and threshold."""

    def __init__(
        self, name: str, version: str, estimator: Any, features: list[str], threshold: float, *,
        trained_sklearn: str, run_id: str | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.estimator = estimator
        self.features = list(features)
        self.threshold = float(threshold)
        self.trained_sklearn = trained_sklearn
        self.run_id = run_id
        self.sklearn_mismatch = _sklearn_mismatch(name, version, trained_sklearn)

    def __repr__(self) -> str:
        return f"VetoModel({self.name} v{self.version}, {len(self.features)} features, threshold {self.threshold:.4f})"

    def verify_features(self, computed: Collection[str]) -> None:
        """Raise FeatureMismatchError unless every model feature is among ``computed``."""
        have = set(computed)
        missing = [f for f in self.features if f not in have]
        if missing:
            extra = sorted(have - set(self.features))
            raise FeatureMismatchError(
                f"model {self.name} version {self.version} needs feature(s) the worker does not compute: "
                f"{', '.join(missing)}" + (f" (the worker computes, unused by the model: {', '.join(extra)})"
                                            if extra else "")
            )

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Probability of a winning trade for rows of ``x`` (columns in ``features`` order)."""
        return self.estimator.predict_proba(x)[:, 1]

    def decide(self, values: Mapping[str, float | None]) -> Decision:
        """Score one signal from its feature values (extra keys are ignored).

        Raises FeaturesNotReadyError naming every model feature that is absent, None or not finite.
        """
        row = [values.get(f) for f in self.features]
        bad = [f for f, v in zip(self.features, row, strict=True) if v is None or not math.isfinite(v)]
        if bad:
            raise FeaturesNotReadyError(
                f"model {self.name} version {self.version}: features not ready: {', '.join(bad)}"
            )
        x = np.array(row, dtype=float).reshape(1, -1)
        score = float(self.estimator.predict_proba(x)[0, 1])
        return Decision(self.name, self.version, score, self.threshold, score >= self.threshold,
                        dict(zip(self.features, x[0].tolist(), strict=True)))


def _sklearn_mismatch(name: str, version: str, trained: str) -> str | None:
    import sklearn

    if trained == sklearn.__version__:
        return None
    message = (f"model {name} version {version} was trained with scikit-learn {trained}, "
               f"this process runs scikit-learn {sklearn.__version__}; retrain it to remove the risk")
    log.warning("%s", message)
    return message


def load_version(client: MlflowClient, name: str, version: str) -> VetoModel:
    """Load model ``name`` version ``version``; ModelLoadError names both and what is wrong."""
    import mlflow
    import skops.io
    import yaml
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    where = f"model {name} version {version}"
    try:
        mv = client.get_model_version(name, version)
        # Resolved through this client: mlflow 3.17 resolves ``models:/name/version`` URIs with the
        # process-wide registry, not the one passed to download_artifacts.
        local = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=client.get_model_version_download_uri(name, version), tracking_uri=client.tracking_uri
        ))
        meta = Model.load(local)
    except (MlflowException, OSError, ValueError, yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
        # A damaged MLmodel file surfaces as YAML, key, type or attribute errors from MLflow's parser.
        raise ModelLoadError(f"{where}: cannot read its artifact ({type(exc).__name__}: {exc})") from None
    flavor = meta.flavors.get("sklearn")
    if flavor is None:
        raise ModelLoadError(f"{where}: not a scikit-learn model (flavors: {', '.join(meta.flavors)})")
    if flavor.get("serialization_format") != "skops":
        raise ModelLoadError(f"{where}: serialised as {flavor.get('serialization_format')!r}; Pine loads skops only")
    info = (meta.metadata or {}).get(PINE_METADATA)
    if not info or "features" not in info or "threshold" not in info:
        raise ModelLoadError(f"{where}: no Pine metadata (feature list and threshold); was it registered by Pine?")
    features = list(info["features"])
    if meta.signature is not None and meta.signature.inputs.input_names() != features:
        raise ModelLoadError(f"{where}: its signature does not match its feature list")
    path = local / flavor["pickled_model"]
    try:
        estimator = skops.io.load(path)
    except Exception as exc:  # skops raises zip, type-trust and attribute errors alike for bad files
        raise ModelLoadError(
            f"{where}: {path.name} is not a loadable skops model ({type(exc).__name__}: {exc})"
        ) from None
    if not hasattr(estimator, "predict_proba") or getattr(estimator, "n_features_in_", None) != len(features):
        raise ModelLoadError(f"{where}: the estimator does not take the {len(features)} listed features")
    return VetoModel(name, str(version), estimator, features, float(info["threshold"]),
                     trained_sklearn=str(flavor.get("sklearn_version")), run_id=mv.run_id)


def _champion(
    client: MlflowClient, strategy: str, symbol: str, computed: Collection[str] | None
) -> VetoModel | None:
    from mlflow.exceptions import MlflowException

    name = model_name(strategy, symbol)
    try:
        mv = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            log.info("no champion for %s in %s: trading without veto", name, client.tracking_uri)
            return None
        raise ModelLoadError(f"model {name}@{CHAMPION}: {exc}") from None
    model = load_version(client, name, str(mv.version))
    if computed is not None:
        model.verify_features(computed)
    return model


def load_champion(
    strategy: str, symbol: str, runtime_dir: Path, computed: Collection[str] | None = None
) -> VetoModel | None:
    """The champion of ``{strategy}_{symbol}``, verified against the ``computed`` feature names.

    None when no version is registered or none is champion (trade without veto). Raises
    ModelLoadError / FeatureMismatchError naming the model and version otherwise.
    """
    return _champion(open_client(runtime_dir), strategy, symbol, computed)


def load_champions(
    strategy: str, computed: Mapping[str, Collection[str]], runtime_dir: Path
) -> dict[str, VetoModel | None]:
    """Champions of every symbol of ``computed`` (symbol → feature names the worker computes for it).

    For a worker's start and its ``reload_models``: None for a symbol without champion; one
    ModelLoadError listing every symbol whose model fails to load or verify.
    """
    if not registry_exists(runtime_dir):
        # Nothing was ever registered. Serving never creates the store: several workers starting
        # together would race MLflow's schema migrations on one new sqlite file.
        return dict.fromkeys(computed)
    client = open_client(runtime_dir)
    models: dict[str, VetoModel | None] = {}
    errors = []
    for symbol, names in computed.items():
        try:
            models[symbol] = _champion(client, strategy, symbol, names)
        except ModelLoadError as exc:
            errors.append(str(exc))
    if errors:
        raise ModelLoadError("\n".join(errors))
    return models
