"""infra/compose.yaml: the production services are there, each agent sees only its own hospital's
data, every party has its own S3 user and only the logins its role needs, the servers ask for
credentials, and no secret is written into the file. (Docker Compose is not installed on these
machines, so the file is checked structurally, not started.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

INFRA = Path(__file__).resolve().parents[2] / "infra"
COMPOSE = INFRA / "compose.yaml"


def _services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_production_services() -> None:
    assert {"postgres", "minio", "iam", "prefect", "mlflow", "coordinator", "hospital-1", "hospital-2",
            "hospital-3"} <= set(_services())
    assert "postgresql+asyncpg://" in _services()["prefect"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert "--backend-store-uri postgresql://" in _services()["mlflow"]["command"]


def test_each_agent_mounts_only_its_own_data_and_keys_and_holds_only_its_own_credentials() -> None:
    for k in (1, 2, 3):
        agent = _services()[f"hospital-{k}"]
        assert agent["volumes"] == [f"hospital-{k}:/var/lib/primia", f"./data/hospital-{k}:/data:ro"]
        assert f"primia agent start --hospital hospital-{k} --data /data" in agent["command"]
        env = agent["environment"]
        assert env["PRIMIA_MODE"] == "distributed" and env["PRIMIA_S3__ACCESS_KEY"] == f"primia-hospital-{k}"
        assert env["PRIMIA_S3__SECRET_KEY"] == f"${{HOSPITAL_{k}_S3_SECRET:?set HOSPITAL_{k}_S3_SECRET}}"
        assert not any(key.startswith("MLFLOW_") for key in env)  # hospitals need no MLflow access
        assert "MINIO_ROOT" not in json.dumps(env) and agent["secrets"] == ["hospital-keyring"]
    assert not any("/data" in v for v in _services()["coordinator"].get("volumes", []) if ":/data" in v)
    roots = [n for n, s in _services().items() if "MINIO_ROOT_PASSWORD" in json.dumps(s.get("environment", {}))]
    assert sorted(roots) == ["iam", "minio"]  # only the operator's one-off and the server itself


def test_servers_ask_for_credentials() -> None:
    assert "PREFECT_SERVER_API_AUTH_STRING" in _services()["prefect"]["environment"]
    assert "--app-name basic-auth" in _services()["mlflow"]["command"]
    for name in ("coordinator", "hospital-1"):
        assert "PREFECT_API_AUTH_STRING" in _services()[name]["environment"]


def test_minio_policies_give_hospitals_no_delete_and_no_other_bucket() -> None:
    hospital = json.loads((INFRA / "minio" / "hospital.json.template").read_text().replace("HOSPITAL", "hospital-1"))
    actions = {a for st in hospital["Statement"] for a in st["Action"]}
    resources = {r for st in hospital["Statement"] for r in st["Resource"]}
    assert not any("Delete" in a or a == "s3:*" for a in actions)
    own_writes = [st for st in hospital["Statement"] if "s3:PutObject" in st["Action"]]
    assert [r for st in own_writes for r in st["Resource"]] == ["arn:aws:s3:::primia-h-hospital-1",
                                                                "arn:aws:s3:::primia-h-hospital-1/*"]
    assert resources <= {"arn:aws:s3:::primia-checkpoints", "arn:aws:s3:::primia-checkpoints/*",
                         "arn:aws:s3:::primia-h-hospital-1", "arn:aws:s3:::primia-h-hospital-1/*"}
    coordinator = json.loads((INFRA / "minio" / "coordinator.json").read_text())
    on_hospitals = [st for st in coordinator["Statement"] if "arn:aws:s3:::primia-h-*" in st["Resource"]]
    assert on_hospitals and all(set(st["Action"]) <= {"s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation"}
                                for st in on_hospitals)


def test_no_secret_is_inlined() -> None:
    for name, svc in _services().items():
        env = svc.get("environment") or {}
        for key, value in env.items():
            if any(word in key for word in ("PASSWORD", "SECRET", "AUTH_STRING", "AUTH_KEY")) or key.endswith("_AUTH"):
                assert str(value).startswith("${"), f"{name}.{key} must come from the environment"
