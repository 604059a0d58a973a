"""The model owner's model: a registered version from the MLflow registry (the champion, usually).

An alias is resolved to its version first, and that version is loaded: the card then names exactly what is
served, even if the alias moves while it loads.
"""

from __future__ import annotations

import re
from typing import Any

from primia.errors import PrimiaError
from primia.smpc.service import Card, Served

URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


def resolve(uri: str) -> str:
    """models:/NAME@ALIAS or models:/NAME/VERSION -> models:/NAME/VERSION."""
    from mlflow.exceptions import MlflowException

    client = _client()
    m = URI.match(uri)
    if not m:
        raise PrimiaError(f"--model {uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    if m["version"]:
        return uri
    try:
        version = client.get_model_version_by_alias(m["name"], m["alias"]).version
    except MlflowException:
        raise PrimiaError(f"--model {uri!r}: the registry has no model {m['name']!r} with alias "
                          f"{m['alias']!r}") from None
    return f"models:/{m['name']}/{version}"


def _client() -> Any:
    """The registry of this machine's settings (a spawned model owner reads them from the environment too)."""
    import mlflow
    from primia import runtime

    uri = runtime.tracker().tracking_uri  # also puts MLflow's login in the environment, where its client reads it
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(uri)


def load_served(uri: str) -> Served:
    import mlflow
    from primia.registry.pyfunc import ImageClassifier

    source = resolve(uri)
    impl = mlflow.pyfunc.load_model(source).unwrap_python_model()
    if not isinstance(impl, ImageClassifier):
        raise PrimiaError(f"{source} is not a primia image classifier")
    model = impl.spec["model"]
    card = Card(str(model["name"]), int(model["num_classes"]), int(model.get("in_channels", 1)), impl.image_size,
                tuple(impl.class_names), source)
    return Served(impl.model.eval(), card)
