"""infra/compose.yaml: the production services are there, each agent sees only its own hospital's
data, and no secret is written into the file. (Docker Compose is not installed on these machines,
so the file is checked structurally, not started.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "infra" / "compose.yaml"


def _services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_production_services() -> None:
    assert {"postgres", "minio", "buckets", "prefect", "mlflow", "coordinator", "hospital-1", "hospital-2",
            "hospital-3"} <= set(_services())
    assert "postgresql+asyncpg://" in _services()["prefect"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert "--backend-store-uri postgresql://" in _services()["mlflow"]["command"]


def test_each_agent_mounts_only_its_own_data_and_keys() -> None:
    for k in (1, 2, 3):
        agent = _services()[f"hospital-{k}"]
        assert agent["volumes"] == [f"hospital-{k}:/var/lib/primia", f"./data/hospital-{k}:/data:ro"]
        assert f"primia agent start --hospital hospital-{k} --data /data" in agent["command"]
        assert agent["environment"]["PRIMIA_MODE"] == "distributed"
    assert not any("/data" in v for v in _services()["coordinator"].get("volumes", []) if ":/data" in v)


def test_no_secret_is_inlined() -> None:
    for name, svc in _services().items():
        env = svc.get("environment") or {}
        for key, value in env.items():
            if any(word in key for word in ("PASSWORD", "SECRET", "ACCESS_KEY")):
                assert str(value).startswith("${"), f"{name}.{key} must come from the environment"
