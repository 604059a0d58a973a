"""Least privilege on the real servers: every credential against every operation gives exactly the
designed allow/deny, and Prefect and MLflow refuse requests without credentials."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from minio import Minio
from minio.error import S3Error

from infra import stack
from infra.enrol import enrol

pytestmark = pytest.mark.integration
COORD = "primia-checkpoints"
GLOBAL = "federations/lp/rounds/00001/global.safetensors.enc"


def _client(endpoint: str, creds: dict[str, str] | None) -> Minio:
    if creds is None:
        return Minio(endpoint, secure=False)  # anonymous
    return Minio(endpoint, access_key=creds["access_key"], secret_key=creds["secret_key"], secure=False)


def _allowed(op: Callable[[], object]) -> bool:
    try:
        op()
        return True
    except S3Error as exc:
        assert exc.code in ("AccessDenied", "AllAccessDisabled"), exc.code
        return False


def _put(c: Minio, bucket: str, key: str) -> Callable[[], object]:
    return lambda: c.put_object(bucket, key, io.BytesIO(b"x"), 1)


def _get(c: Minio, bucket: str, key: str) -> Callable[[], object]:
    return lambda: c.get_object(bucket, key).read()


def _delete_version(c: Minio, admin: Minio, bucket: str, key: str) -> Callable[[], object]:
    def op() -> None:
        versions = [o.version_id for o in admin.list_objects(bucket, prefix=key, include_version=True)]
        if not versions:  # an earlier identity was (wrongly) allowed to delete it: put it back
            versions = [admin.put_object(bucket, key, io.BytesIO(b"seed"), 4).version_id]
        c.remove_object(bucket, key, version_id=versions[0])
    return op


def test_every_credential_against_every_operation(live_stack: stack.StackState, tmp_path: Path) -> None:
    home = Path(live_stack.home)
    endpoint = f"127.0.0.1:{live_stack.ports['s3']}"
    keys = {h: tmp_path / h for h in ("lp-1", "lp-2")}
    for h, folder in keys.items():
        enrol(h, folder)
    admin = _client(endpoint, stack.admin_credentials(home))
    creds = {"coordinator": stack.credentials(home), "anonymous": None,
             **{h: json.loads((f / "s3.json").read_text()) for h, f in keys.items()}}
    mine = {h: f"primia-h-{h}" for h in keys}
    for bucket, key in ((COORD, GLOBAL), (mine["lp-1"], "box/a.enc"), (mine["lp-2"], "box/b.enc")):
        admin.put_object(bucket, key, io.BytesIO(b"seed"), 4)
    got: dict[str, dict[str, bool]] = {}
    for who, cred in creds.items():
        c = _client(endpoint, cred)
        got[who] = {
            "read a global model": _allowed(_get(c, COORD, GLOBAL)),
            "read lp-1's object": _allowed(_get(c, mine["lp-1"], "box/a.enc")),
            "read lp-2's object": _allowed(_get(c, mine["lp-2"], "box/b.enc")),
            "write a manifest": _allowed(_put(c, COORD, "federations/lp/rounds/00001/manifest.json")),
            "write a roster": _allowed(_put(c, COORD, "roster/roster.json.test")),
            "write into lp-1's bucket": _allowed(_put(c, mine["lp-1"], f"box/{who}.enc")),
            "delete in the coordinator's bucket": _allowed(lambda c=c: c.remove_object(COORD, "roster/x")),
            "delete a version in lp-1's bucket": _allowed(_delete_version(c, admin, mine["lp-1"], "box/a.enc")),
            "delete in lp-2's bucket": _allowed(lambda c=c: c.remove_object(mine["lp-2"], "box/b.enc")),
        }
    Y, N = True, False
    designed = {  # coordinator, lp-1, lp-2, anonymous
        "read a global model": (Y, Y, Y, N),
        "read lp-1's object": (Y, Y, N, N),
        "read lp-2's object": (Y, N, Y, N),
        "write a manifest": (Y, N, N, N),
        "write a roster": (Y, N, N, N),
        "write into lp-1's bucket": (N, Y, N, N),
        "delete in the coordinator's bucket": (Y, N, N, N),
        "delete a version in lp-1's bucket": (N, N, N, N),  # not even lp-1 itself: its bucket's policy
        "delete in lp-2's bucket": (N, N, N, N),
    }
    for op, expect in designed.items():
        assert tuple(got[w][op] for w in ("coordinator", "lp-1", "lp-2", "anonymous")) == expect, op
    assert len(list(admin.list_objects(mine["lp-1"], prefix="box/a.enc", include_version=True))) == 1  # kept


def test_prefect_and_mlflow_refuse_requests_without_credentials(live_stack: stack.StackState) -> None:
    for url, data in ((f"{live_stack.urls['prefect_api']}/flows/filter", b"{}"),
                      (f"{live_stack.urls['mlflow']}/api/2.0/mlflow/experiments/search?max_results=1", None)):
        request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=10)
        assert info.value.code == 401, url
    for url in (f"{live_stack.urls['prefect_api']}/health", f"{live_stack.urls['mlflow']}/health"):
        with urllib.request.urlopen(url, timeout=10) as resp:  # health checks stay open
            assert resp.status == 200
    creds = stack.credentials(Path(live_stack.home))
    import base64

    login = base64.b64encode(f"{creds['mlflow_username']}:{creds['mlflow_password']}".encode()).decode()
    request = urllib.request.Request(f"{live_stack.urls['mlflow']}/api/2.0/mlflow/experiments/search?max_results=1",
                                     headers={"Authorization": f"Basic {login}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200


def test_a_hospital_agent_holds_no_coordinator_secret(live_stack: stack.StackState, tmp_path: Path) -> None:
    """What a hospital is handed: its own S3 identity and the federation's data key, never the
    coordinator's signing key, S3 identity or MLflow login."""
    home = Path(live_stack.home)
    enrol("lp-3", tmp_path / "lp-3")
    handed = " ".join(p.read_text() for p in (tmp_path / "lp-3").glob("*.json"))
    coordinator = stack.credentials(home)
    ring = json.loads((home / "keys" / "keyring.json").read_text())
    for secret in (coordinator["secret_key"], coordinator["mlflow_password"], ring["signing"]["private"]):
        assert secret not in handed
    assert "signing" not in json.loads((tmp_path / "lp-3" / "keyring.json").read_text())


def test_enrolling_again_keeps_a_known_identity_and_renews_what_the_stack_lost(live_stack: stack.StackState,
                                                                              tmp_path: Path) -> None:
    """A stack re-created under a kept authority folder knows neither the hospital's S3 identity nor has the
    roster in its store: enrolling again hands out a working identity and publishes the roster again."""
    from infra.enrol import S3_FILE
    from primia import runtime
    from primia.federation.roster import ROSTER_KEY

    home, folder = Path(live_stack.home), tmp_path / "lp-4"
    enrol("lp-4", folder)
    first = json.loads((folder / S3_FILE).read_text())
    enrol("lp-4", folder)
    assert json.loads((folder / S3_FILE).read_text())["access_key"] == first["access_key"]  # nothing renewed
    stack.revoke_hospital_storage(home, "lp-4")  # the stack forgets the identity...
    admin = stack.admin_settings(home)
    _client(admin.endpoint, {"access_key": admin.access_key.get_secret_value(),
                             "secret_key": admin.secret_key.get_secret_value()}).remove_object(COORD, ROSTER_KEY)
    assert not runtime.object_store().exists(ROSTER_KEY)  # ...and the roster is gone from its store
    enrol("lp-4", folder)
    renewed = json.loads((folder / S3_FILE).read_text())
    assert renewed["access_key"] != first["access_key"] and runtime.object_store().exists(ROSTER_KEY)
    assert _allowed(_get(_client(admin.endpoint, renewed), COORD, ROSTER_KEY))
