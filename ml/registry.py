"""The MLflow registry of veto models: register, promote (alias ``champion``), roll back, status.

Store: ``MLFLOW_TRACKING_URI`` when set (an MLflow server), else the embedded default
``sqlite:///<runtime>/mlflow/mlflow.db`` with artifacts under ``<runtime>/mlflow/artifacts``.
Each training run is an MLflow run of experiment ``pine/{strategy}``; its model becomes a
new version of ``{strategy}_{SYMBOL}``. Aliases only (registry stages are deprecated):
``champion`` is the version workers serve, ``previous_champion`` the one it replaced;
the registered model's tag ``pine.champion_history`` lists every champion in order, so a
rollback can be undone and repeated. mlflow is imported only inside these functions.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from ml.metrics import VetoMetrics
    from ml.serving import VetoModel
    from ml.training import TrainResult

log = logging.getLogger(__name__)

CHAMPION: Final = "champion"
PREVIOUS: Final = "previous_champion"
HISTORY_TAG: Final = "pine.champion_history"
# Key of Pine's block in the MLmodel ``metadata`` (feature list, threshold, windows): immutable with the artifact.
PINE_METADATA: Final = "pine"
HELDOUT_ARTIFACT: Final = "heldout.parquet"
TRADES_ARTIFACT: Final = "trades.parquet"


class RegistryError(RuntimeError):
    """A registry operation that cannot be done as asked; the message says why."""


def model_name(strategy: str, symbol: str) -> str:
    """Registered model name of a strategy's symbol: ``{strategy}_{SYMBOL}``."""
    return f"{strategy}_{symbol}"


def tracking_uri(runtime_dir: Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the sqlite store in the runtime dir (created if needed)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    store = Path(runtime_dir).resolve() / "mlflow"
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


def registry_exists(runtime_dir: Path) -> bool:
    """Whether there is a registry to read: a configured server, or the embedded store's file."""
    return bool(os.environ.get("MLFLOW_TRACKING_URI")) or (Path(runtime_dir) / "mlflow" / "mlflow.db").exists()


def _artifact_location(runtime_dir: Path) -> str | None:
    # With a server, the server decides where artifacts go; the embedded store keeps them beside its DB.
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    return (Path(runtime_dir).resolve() / "mlflow" / "artifacts").as_uri()


@contextmanager
def _fluent_store(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (``log_model`` has no client form) at ``uri`` for the block only.

    ``mlflow.set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI`` into the environment, which
    ``tracking_uri`` honours: left set, the next runtime dir of this process would use this store.
    """
    import mlflow

    saved = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved)  # None unsets the variable again


def open_client(runtime_dir: Path) -> MlflowClient:
    """An MlflowClient on the tracking and registry store of ``runtime_dir``."""
    from mlflow import MlflowClient

    uri = tracking_uri(runtime_dir)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@dataclass(frozen=True)
class Registered:
    """A model version created by ``register``."""

    name: str
    version: str
    run_id: str


@dataclass(frozen=True)
class Promotion:
    """Outcome of ``promote``: whether the candidate became champion, and why (or why not)."""

    name: str
    promoted: bool
    reason: str
    candidate: str | None
    champion: str | None


@dataclass(frozen=True)
class ModelStatus:
    """What the registry holds for one model."""

    name: str
    versions: int
    latest: str | None
    champion: str | None
    previous: str | None
    history: list[str]
    champion_tags: dict[str, str]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _history(client: MlflowClient, name: str) -> list[str]:
    raw = client.get_registered_model(name).tags.get(HISTORY_TAG, "")
    return [v for v in raw.split(",") if v]


def _alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    return sorted(client.search_model_versions(f"name = '{name}'"), key=lambda mv: int(mv.version))


class Registry:
    """Registry operations on the store of one runtime dir."""

    def __init__(self, runtime_dir: Path) -> None:
        self.runtime_dir = Path(runtime_dir)
        self.uri = tracking_uri(runtime_dir)
        self.client = open_client(runtime_dir)

    # -- registering ---------------------------------------------------------------------
    def _experiment_id(self, strategy: str) -> str:
        name = f"pine/{strategy}"
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        return self.client.create_experiment(name, artifact_location=_artifact_location(self.runtime_dir))

    def register(self, result: TrainResult) -> Registered:
        """Log the training run (params, metrics, features, threshold, windows, held-out trades, model)
        and register its model as a new version of ``{strategy}_{SYMBOL}``."""
        import mlflow
        import pandas as pd
        import sklearn
        import skops
        from mlflow.models import infer_signature

        name = result.model_name
        features = result.features
        x = pd.DataFrame(result.heldout[features].to_numpy(dtype=float), columns=features)
        meta = {
            "strategy": result.strategy,
            "symbol": result.symbol,
            "features": features,
            "threshold": result.threshold,
            "train_start": result.params["train_start"],
            "train_end": result.params["train_end"],
            "train_label_end": result.params["train_label_end"],
            "heldout_start": result.params["heldout_start"],
            "heldout_end": result.params["heldout_end"],
        }
        experiment_id = self._experiment_id(result.strategy)
        with _fluent_store(self.uri), mlflow.start_run(experiment_id=experiment_id, run_name=f"{name} {_now()}") as run:
            mlflow.log_params({k: str(v) for k, v in result.params.items()})
            mlflow.log_metrics(result.metrics)
            mlflow.log_dict({"features": features, "definitions": result.feature_set.describe(),
                             "threshold": result.threshold, "missing_feeds": result.feature_set.missing_feeds},
                            "features.json")
            mlflow.log_dict({"folds": [
                {"fold": s.number, "train_trades": len(s.train), "test_trades": len(s.test), "dropped": s.dropped}
                for s in result.folds
            ]}, "walk_forward.json")
            with tempfile.TemporaryDirectory() as tmp:
                # The held-out trades are what promotion judges on; all trades (with their split) are for audit.
                for artifact, frame in ((HELDOUT_ARTIFACT, result.heldout), (TRADES_ARTIFACT, result.trades())):
                    path = Path(tmp) / artifact
                    frame.to_parquet(path, index=False)
                    mlflow.log_artifact(str(path))
            with warnings.catch_warnings():
                # The model is fitted on arrays in feature-list order (fast decisions); MLflow checks the
                # named input example against it, which sklearn flags as unnamed-vs-named columns.
                warnings.filterwarnings("ignore", message="X has feature names", category=UserWarning)
                info = mlflow.sklearn.log_model(
                    result.model,
                    name="model",
                    serialization_format="skops",
                    signature=infer_signature(x, result.model.predict_proba(x.to_numpy())[:, 1]),
                    input_example=x.head(2),
                    registered_model_name=name,
                    pyfunc_predict_fn="predict_proba",
                    metadata={PINE_METADATA: meta},
                    # Given, not inferred: inference imports the model in a subprocess (seconds per model).
                    pip_requirements=[f"scikit-learn=={sklearn.__version__}", f"skops=={skops.__version__}"],
                )
        version = str(info.registered_model_version)
        tags = {
            "strategy": result.strategy,
            "symbol": result.symbol,
            "threshold": f"{result.threshold:.6f}",
            "sklearn_version": sklearn.__version__,
            "train_window": f"{meta['train_start']} .. {meta['train_end']}",
            "heldout_window": f"{meta['heldout_start']} .. {meta['heldout_end']}",
            "heldout_pnl_kept": f"{result.heldout_metrics.pnl_kept:.2f}",
            "heldout_pnl_all": f"{result.heldout_metrics.pnl_all:.2f}",
            "heldout_kept": f"{result.heldout_metrics.kept}/{result.heldout_metrics.trades}",
        }
        for key, value in tags.items():
            self.client.set_model_version_tag(name, version, key, value)
        log.info("registered %s version %s (run %s)", name, version, run.info.run_id)
        return Registered(name, version, run.info.run_id)

    # -- promotion -----------------------------------------------------------------------
    def _heldout(self, run_id: str) -> pd.DataFrame:
        import pandas as pd

        with tempfile.TemporaryDirectory() as tmp:
            path = self.client.download_artifacts(run_id, HELDOUT_ARTIFACT, tmp)
            return pd.read_parquet(path)

    def evaluate(self, model: VetoModel, heldout: pd.DataFrame) -> VetoMetrics:
        """Metrics of ``model`` (its own threshold) on held-out trades."""
        from ml.metrics import veto_metrics

        missing = [f for f in model.features if f not in heldout.columns]
        if missing:
            raise RegistryError(f"{model.name} version {model.version} needs features the held-out data lacks: "
                                f"{', '.join(missing)}")
        s = model.scores(heldout[model.features].to_numpy(dtype=float))
        return veto_metrics(heldout["label"].to_numpy(), heldout["net_pnl"].to_numpy(), s >= model.threshold)

    def promote(self, strategy: str, symbol: str, metric: str = "pnl", margin: float = 0.0) -> Promotion:
        """Make the latest version champion if its held-out ``metric`` beats the champion's by more than ``margin``.

        Both models are judged on the candidate's held-out window (the most recent trades),
        each with its own threshold. The champion may have trained on part of that window,
        which only favours the champion: a candidate that still wins is better. Without a
        champion the candidate is promoted. The decision and its reason are logged and
        stored as tags of the candidate version.
        """
        from ml.serving import ModelLoadError, load_version

        name = model_name(strategy, symbol)
        versions = _versions(self.client, name) if self._exists(name) else []
        if not versions:
            return self._decided(Promotion(name, False, "no registered version", None, None))
        candidate = str(versions[-1].version)
        champ = _alias(self.client, name, CHAMPION)
        champion = str(champ.version) if champ is not None else None
        if champion == candidate:
            return self._decided(Promotion(name, False, f"version {candidate} is already champion", candidate,
                                           champion))
        try:
            cand_model = load_version(self.client, name, candidate)
            heldout = self._heldout(versions[-1].run_id)
            cand = self.evaluate(cand_model, heldout)
        except (ModelLoadError, RegistryError, OSError) as exc:
            return self._decided(Promotion(name, False, f"candidate version {candidate} unusable: {exc}", candidate,
                                           champion))
        got = cand.metric(metric)
        summary = (f"held-out {heldout['decision_time'].min():%Y-%m-%d}..{heldout['decision_time'].max():%Y-%m-%d}"
                   f" ({cand.trades} trades, {cand.pnl_all:.2f} without veto)")
        if champion is None:
            return self._promote(name, candidate, None,
                                 f"no champion yet; candidate v{candidate} {metric} {got:.4f}, {summary}")
        try:
            champ_metrics = self.evaluate(load_version(self.client, name, champion), heldout)
        except ModelLoadError as exc:
            return self._promote(name, candidate, champion, f"champion v{champion} cannot be loaded ({exc})")
        except RegistryError as exc:
            return self._decided(Promotion(name, False, f"cannot compare with champion: {exc}", candidate, champion))
        bar = champ_metrics.metric(metric)
        # NaN (an undefined ratio on either side) never beats; inf beats any finite value.
        gain = got - bar
        versus = f"candidate v{candidate} {metric} {got:.4f} vs champion v{champion} {bar:.4f} on {summary}"
        if gain > margin:
            return self._promote(name, candidate, champion, f"{versus}: beats it by more than {margin}")
        return self._decided(Promotion(name, False, f"{versus}: does not beat it by more than {margin}", candidate,
                                       champion))

    def _exists(self, name: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            return False
        return True

    def _decided(self, p: Promotion) -> Promotion:
        log.info("%s: %s%s", p.name, "promoted: " if p.promoted else "not promoted: ", p.reason)
        if p.candidate is not None:
            self.client.set_model_version_tag(p.name, p.candidate, "pine.promotion",
                                              json.dumps({"at": _now(), "promoted": p.promoted, "reason": p.reason}))
        return p

    def _promote(self, name: str, candidate: str, champion: str | None, reason: str) -> Promotion:
        history = _history(self.client, name)
        if champion is not None and (not history or history[-1] != champion):
            history.append(champion)  # the alias was set outside Pine: keep it in the history anyway
        history.append(candidate)
        self.client.set_registered_model_alias(name, CHAMPION, candidate)
        if champion is not None:
            self.client.set_registered_model_alias(name, PREVIOUS, champion)
        self.client.set_registered_model_tag(name, HISTORY_TAG, ",".join(history))
        return self._decided(Promotion(name, True, reason, candidate, champion))

    # -- rollback ------------------------------------------------------------------------
    def rollback(self, strategy: str, symbol: str) -> Promotion:
        """Make the previous champion champion again; RegistryError when there is none."""
        name = model_name(strategy, symbol)
        if not self._exists(name):
            raise RegistryError(f"{name}: no such registered model")
        champ = _alias(self.client, name, CHAMPION)
        if champ is None:
            raise RegistryError(f"{name}: has no champion to roll back")
        current = str(champ.version)
        history = _history(self.client, name)
        while history and history[-1] == current:
            history.pop()
        if not history:
            raise RegistryError(f"{name}: version {current} is the first champion; nothing to roll back to")
        target = history[-1]
        self.client.set_registered_model_alias(name, CHAMPION, target)
        if len(history) >= 2:
            self.client.set_registered_model_alias(name, PREVIOUS, history[-2])
        else:
            self.client.delete_registered_model_alias(name, PREVIOUS)
        self.client.set_registered_model_tag(name, HISTORY_TAG, ",".join(history))
        self.client.set_model_version_tag(name, current, "pine.rolled_back_at", _now())
        reason = f"rolled back from version {current} to version {target}"
        log.info("%s: %s", name, reason)
        return Promotion(name, True, reason, target, current)

    # -- status --------------------------------------------------------------------------
    def status(self, strategy: str, symbol: str) -> ModelStatus | None:
        """Versions, champion, previous champion and the champion's tags; None when not registered."""
        name = model_name(strategy, symbol)
        if not self._exists(name):
            return None
        versions = _versions(self.client, name)
        champ = _alias(self.client, name, CHAMPION)
        prev = _alias(self.client, name, PREVIOUS)
        return ModelStatus(
            name=name,
            versions=len(versions),
            latest=str(versions[-1].version) if versions else None,
            champion=str(champ.version) if champ else None,
            previous=str(prev.version) if prev else None,
            history=_history(self.client, name),
            champion_tags=dict(champ.tags) if champ else {},
        )
