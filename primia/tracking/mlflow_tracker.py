"""MLflow tracking for a training run: params without secrets, per-round metrics, plots.

Metrics are sent asynchronously (MLflow's own async logging queue) so a round does not wait for
the tracking server; `finish` flushes before the run is closed.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

import mlflow
from primia.config import MlflowSettings
from primia.errors import ConfigError


class Tracker:
    def __init__(self, settings: MlflowSettings, secrets: Iterable[str] = ()) -> None:
        if not settings.tracking_uri:
            raise ConfigError("MLflow tracking URI is not set: start the stack or set PRIMIA_MLFLOW__TRACKING_URI")
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # we print our own links
        self.client = MlflowClient(settings.tracking_uri)
        self.experiment = settings.experiment
        self._secrets = [s for s in secrets if s]
        self.run_id: str | None = None
        self.tracking_uri = settings.tracking_uri

    def experiment_name(self, federation_id: str) -> str:
        return f"{self.experiment}/{federation_id}"

    def _experiment_id(self, name: str, tags: dict[str, str]) -> str:
        """The federation's experiment, created on first use with the server's default artifact location
        (proxied `mlflow-artifacts:`: clients never hold the artifact store's credentials)."""
        exp = self.client.get_experiment_by_name(name)
        if exp:
            return str(exp.experiment_id)
        try:
            return str(self.client.create_experiment(name, tags=tags))
        except mlflow.exceptions.MlflowException:  # created meanwhile by another run of the federation
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return str(exp.experiment_id)

    def _clean(self, value: str) -> str:
        for secret in self._secrets:
            if secret in value:
                raise ValueError("refusing to log a value that contains a secret")
        return value

    def start(self, run_name: str, params: dict[str, str], tags: dict[str, str], federation_id: str) -> str:
        # the "Model training" workspace of MLflow 3's UI, not the GenAI one
        kind = {"primia.federation_id": federation_id, "mlflow.experimentKind": "custom_model_development"}
        experiment = self._experiment_id(self.experiment_name(federation_id), kind)
        run = self.client.create_run(experiment, run_name=run_name,
                                     tags={k: self._clean(v) for k, v in tags.items()})
        self.run_id = run.info.run_id
        batch = [Param(k, self._clean(str(v))[:6000]) for k, v in params.items()]
        for i in range(0, len(batch), 100):
            self.client.log_batch(self.run_id, params=batch[i : i + 100])
        return self.run_id

    def resume(self, run_id: str) -> str:
        """Continue an earlier run (a federation resumed after a crash)."""
        self.client.update_run(run_id, status="RUNNING")
        self.run_id = run_id
        return run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        ts = int(time.time() * 1000)
        batch = [Metric(k, float(v), ts, step) for k, v in metrics.items() if not math.isnan(float(v))]
        if batch and self.run_id:
            self.client.log_batch(self.run_id, metrics=batch, synchronous=False)

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.run_id:
            self.client.log_batch(self.run_id, tags=[RunTag(k, self._clean(v)) for k, v in tags.items()])

    def log_figure(self, figure: Any, path: str) -> None:
        if self.run_id:
            self.client.log_figure(self.run_id, figure, path)

    def log_dict(self, data: dict[str, Any], path: str) -> None:
        if self.run_id:
            self.client.log_dict(self.run_id, data, path)

    def log_text(self, text: str, path: str) -> None:
        if self.run_id:
            self.client.log_text(self.run_id, self._clean(text), path)

    def finish(self, status: str = "FINISHED") -> None:
        if self.run_id:
            mlflow.flush_async_logging()
            self.client.set_terminated(self.run_id, status=status)

    def url(self) -> str:
        if not self.run_id:
            return self.tracking_uri
        exp = self.client.get_run(self.run_id).info.experiment_id
        return f"{self.tracking_uri}/#/experiments/{exp}/runs/{self.run_id}"
