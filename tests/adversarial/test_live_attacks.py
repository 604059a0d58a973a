"""Attacks through the live servers, on real pinned hospital agents: whoever holds the Prefect API
tries to run code at a hospital (job-variable overrides, a swapped deployment), a registry key is
swapped in the Prefect UI's blocks, and a roster not signed by the authority is published. Each ends in
a refusal with the reason, and nothing of the attacker's runs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from infra.agent import REPO
from primia import runtime
from tests.distributed_agents import NAMES, Agents, federation, final_state, round_tables, run_in_process

pytestmark = [pytest.mark.integration, pytest.mark.slow]


DUMMY = {"server_round": 1, "global_ref": None, "spec": {"federation_id": "pin"}, "nonce": "n", "stats": True}
EVIL_MARKER = Path("/tmp/primia-evil-ran")


def test_whoever_holds_the_prefect_api_cannot_run_code_at_a_hospital(agents: Agents, tmp_path: Path) -> None:
    """A job-variables override (command, environment) or a deployment swapped on the server is refused
    by the hospital's pinned worker: the run fails "Refused" with the reason and nothing is executed."""
    from prefect import Flow
    from prefect.deployments import run_deployment

    from infra.agent import LAUNCH_COMMAND, ensure_pool_and_deployment

    marker = tmp_path / "pwned"
    EVIL_MARKER.unlink(missing_ok=True)
    cases = {
        "command": ({"command": f"touch {marker}"}, "job-variable overrides are not accepted: ['command']"),
        "env": ({"env": {"PRIMIA_HOSPITAL__REQUIRE_SECURE_AGGREGATION": "false"}},
                "job-variable overrides are not accepted: ['env']"),
    }
    for name, (job_variables, reason) in cases.items():
        fr = run_deployment("local-training/hospital-dh1", parameters=DUMMY, job_variables=job_variables, timeout=0)
        state = final_state(fr.id)  # type: ignore[union-attr]
        assert (state.name, reason in str(state.message)) == ("Refused", True), (name, state)
    evil: Flow[..., Any] = Flow.from_source(str(REPO), "tests/adversarial/evil_flow.py:local_training")  # type: ignore[assignment]
    evil.to_deployment(name="hospital-dh1", work_pool_name="hospital-dh1",
                       job_variables={"command": LAUNCH_COMMAND, "working_dir": str(REPO)}).apply()
    try:
        fr = run_deployment("local-training/hospital-dh1", parameters=DUMMY, timeout=0)
        state = final_state(fr.id)  # type: ignore[union-attr]
        assert state.name == "Refused" and "entrypoint 'tests/adversarial/evil_flow.py:local_training' is not" in \
            str(state.message)
    finally:
        ensure_pool_and_deployment("hospital-dh1", "dh1")  # the hospital's own, as its agent applies it
    assert not marker.exists() and not EVIL_MARKER.exists()


def test_a_swapped_registry_key_changes_nothing_and_a_forged_roster_is_refused(agents: Agents) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from primia.errors import IntegrityError
    from primia.federation import roster as r
    from primia.federation import trust
    from tasks.registry import list_view

    view = {b.hospital: b for b in list_view()}["dh2"]
    view.signing_public_key = r.authority_public(Ed25519PrivateKey.generate())  # the UI's block: not trusted
    view.save("hospital-dh2", overwrite=True)
    fid = f"swap-{int(time.time())}"
    run_in_process(federation(agents, fid, rounds=1, min_hospitals=3))
    assert sorted(x["hospital"] for x in round_tables(fid)[1] if x["status"] == "accepted") == list(NAMES)
    genuine = trust.AuthorityFolder(agents.home / "authority").signed_doc()
    sybil = r.Roster.from_body(genuine["body"])
    forged = r.sign(sybil.with_hospital(r.PublicIdentity("sybil", sybil.coordinator_key, sybil.coordinator_key),
                                        "primia-h-dh1"), Ed25519PrivateKey.generate())
    trust.publish(runtime.object_store(), forged)  # what a coordinator could put there: not the authority's
    try:
        with pytest.raises(IntegrityError, match="does not verify against the pinned federation authority key"):
            run_in_process(federation(agents, f"{fid}-forged", rounds=1))
        from prefect.deployments import run_deployment

        from primia.secure.protocol import Params

        plan = {"params": Params("pin", 1, "s", NAMES, 3, bits=64, purpose="statistics").to_dict(), "wait_s": 5}
        fr = run_deployment("local-training/hospital-dh1", parameters=DUMMY | {"secagg": plan}, timeout=0)
        state = final_state(fr.id)  # type: ignore[union-attr]  # the hospital checks it too, on its own
        assert state.is_failed() and "does not verify against the pinned federation authority key" in \
            str(state.message)
    finally:
        trust.publish(runtime.object_store(), genuine)




def test_a_hospital_holding_the_prefect_login_cannot_run_code_on_the_coordinators_worker(
        agents: Agents, tmp_path: Path) -> None:
    """Every party holds the one Prefect login. The coordinator's worker is pinned too: it runs the
    deployments of prefect.yaml as registered (a real federation here), and refuses a job-variable
    override and a deployment a hospital put on the coordinator's pool."""
    import yaml
    from prefect import Flow
    from prefect.deployments import run_deployment

    from tests.distributed_agents import deploy_prefect_yaml, start_coordinator_worker
    from tests.integration.conftest import federation_raw

    deploy_prefect_yaml()
    worker = start_coordinator_worker(tmp_path / "worker.log")
    try:
        marker = tmp_path / "pwned"
        fr = run_deployment("federated-training-from-file/federated-training", timeout=0,
                            parameters={"config_path": "configs/demo.yaml"},
                            job_variables={"command": f"touch {marker}"})
        state = final_state(fr.id, 90)  # type: ignore[union-attr]
        assert state.name == "Refused" and "job-variable overrides are not accepted" in str(state.message)
        evil: Flow[..., Any] = Flow.from_source(str(REPO), "tests/adversarial/evil_flow.py:local_training")  # type: ignore[assignment]
        evil.to_deployment(name="evil", work_pool_name="primia-coordinator").apply()
        fr = run_deployment("local-training/evil", parameters={"server_round": 1, "global_ref": None, "spec": {},
                                                               "nonce": "n"}, timeout=0)
        state = final_state(fr.id, 90)  # type: ignore[union-attr]
        assert state.name == "Refused" and "not of a deployment this machine pinned" in str(state.message)
        data = agents.root.parent / "pinned-coordinator"
        from primia.data.synthetic import make_synthetic, write_image_folder

        for k, site in enumerate(("h1", "h2", "h3", "test")):
            write_image_folder(make_synthetic(32, 2, 32, seed=60 + k, noise=0.1), data / site)
        config = tmp_path / "fed.yaml"
        config.write_text(yaml.safe_dump(federation_raw(data, f"pinned-{int(time.time())}", rounds=1)))
        fr = run_deployment("federated-training-from-file/federated-training", timeout=0,
                            parameters={"config_path": str(config)})
        state = final_state(fr.id, 240)  # type: ignore[union-attr]
        assert state.is_completed(), (state, (tmp_path / "worker.log").read_text()[-3000:])
    finally:
        worker.terminate()
        worker.wait(30)
    assert not marker.exists()
