"""Sample-level DP federations against the live stack: a budget that allows two rounds stops after two,
a resumed federation counts on from the stored accounts and refuses a third, and a hospital with a
stricter budget of its own drops out while the others go on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from infra import stack
from primia import runtime
from primia.config import load_settings, parse_federation_config
from primia.federation.hospital import load_local_data
from primia.privacy.accounting import SampleAccount
from primia.privacy.dpsgd import sample_rate, steps_per_round
from tests.integration.conftest import federation_raw

pytestmark = pytest.mark.integration
SIGMA, DELTA = 1.5, 1e-5


def _dp_raw(root: Path, fid: str, rounds: int, target: float) -> dict[str, Any]:
    raw = federation_raw(root, fid, rounds=rounds)
    raw["privacy"] = {"mode": "sample", "target_epsilon": target, "delta": DELTA, "noise_multiplier": SIGMA,
                      "accountant": "rdp"}
    raw["policy"] = {"min_hospitals": 2, "round_retries": 0}
    return raw


def _epsilons(raw: dict[str, Any], rounds: int) -> dict[str, float]:
    """Each hospital's epsilon after `rounds` rounds, computed here from its own data's size."""
    cfg = parse_federation_config(raw)
    out = {}
    for h in cfg.hospitals:
        n = len(load_local_data(h, cfg).train)
        a = SampleAccount.new(cfg.federation_id, h.name, "rdp", DELTA, SIGMA, sample_rate(n, 16))
        out[h.name] = a.epsilon_after(rounds * steps_per_round(n, 16, 1))
    return out


def _between(raw: dict[str, Any], rounds: int) -> float:
    """A budget that `rounds` rounds fit at every hospital and `rounds + 1` at none."""
    fit, over = max(_epsilons(raw, rounds).values()), min(_epsilons(raw, rounds + 1).values())
    assert fit < over
    return (fit + over) / 2


@pytest.fixture(scope="module")
def two_rounds(live_stack: stack.StackState, federation_dirs: Path) -> tuple[dict[str, Any], float]:
    from flows.federated_training import federated_training

    target = _between(_dp_raw(federation_dirs, "it-dp", 4, 1.0), 2)
    raw = _dp_raw(federation_dirs, "it-dp", 4, target)
    return federated_training(parse_federation_config(raw)), target


def test_a_budget_for_two_rounds_stops_after_two_with_the_reason(two_rounds: tuple[dict[str, Any], float]) -> None:
    summary, target = two_rounds
    assert "privacy budget: the next round would take 3 of 3 hospitals past epsilon" in summary["stopped"]
    store = runtime.checkpoints("it-dp")
    assert store.committed_rounds() == [0, 1, 2]
    assert summary["selected_round"] in (0, 1, 2)
    client = MlflowClient(load_settings().mlflow.tracking_uri)
    run = client.get_run(summary["mlflow_run_id"])
    eps = client.get_metric_history(run.info.run_id, "epsilon")
    assert [m.step for m in eps] == [1, 2] and all(0 < m.value <= target for m in eps)
    assert eps[0].value < eps[1].value  # one account for the federation: never reset between rounds
    assert {m.step for m in client.get_metric_history(run.info.run_id, "epsilon_h1")} == {1, 2}
    assert "privacy budget" in run.data.tags["primia.stopped"]
    assert client.get_metric_history(run.info.run_id, "failed_round_attempts") == []  # round 3 was never asked
    manifest = json.loads(store.store.get(store.manifest_key(2)))["body"]
    privacy = manifest["privacy"]
    assert privacy["mode"] == "sample" and privacy["delta"] == DELTA and privacy["accountant"] == "rdp"
    assert privacy["epsilon"] == pytest.approx(eps[1].value) and privacy["max_grad_norm"] == 1.0
    assert {h["noise_multiplier"] for h in privacy["hospitals"].values()} == {SIGMA}


def test_resumed_it_counts_on_from_the_stored_accounts_and_refuses_a_third_round(
        two_rounds: tuple[dict[str, Any], float], federation_dirs: Path) -> None:
    from flows.federated_training import federated_training

    _, target = two_rounds
    again = federated_training(parse_federation_config(_dp_raw(federation_dirs, "it-dp", 4, target)))
    assert "declined round 3" in again["stopped"]
    store = runtime.checkpoints("it-dp")
    assert store.committed_rounds() == [0, 1, 2]  # nothing trained past the budget
    for h in ("h1", "h2", "h3"):
        state = store.find_private_json(f"privacy/{h}-account")
        assert state is not None and state["rounds"] == 2


def test_a_hospital_with_a_stricter_budget_drops_out_and_the_others_go_on(live_stack: stack.StackState,
                                                                         federation_dirs: Path) -> None:
    from flows.federated_training import federated_training

    raw = _dp_raw(federation_dirs, "it-dp-strict", 3, 1.0)
    raw["privacy"]["target_epsilon"] = _between(raw, 3)
    raw["hospitals"][2]["target_epsilon"] = _between(raw, 1)  # h3's own budget: one round
    summary = federated_training(parse_federation_config(raw))
    assert not summary.get("stopped")
    store = runtime.checkpoints("it-dp-strict")
    assert store.committed_rounds() == [0, 1, 2, 3]
    took_part = {r: sorted(x["hospital"] for x in store.get_json(store.load_round(r).ref("round.json"))["results"])
                 for r in (1, 2, 3)}
    assert took_part == {1: ["h1", "h2", "h3"], 2: ["h1", "h2"], 3: ["h1", "h2"]}
    h3 = store.find_private_json("privacy/h3-account")
    assert h3 is not None and h3["rounds"] == 1


def test_client_level_dp_adds_its_noise_under_secure_aggregation_and_stops_at_its_budget(
        live_stack: stack.StackState, federation_dirs: Path) -> None:
    from flows.federated_training import federated_training
    from primia.federation.secure_update import Layout
    from primia.models.factory import build_model
    from primia.privacy.client_dp import mechanism
    from primia.store.weights import state_to_numpy

    raw = federation_raw(federation_dirs, "it-dp-client", rounds=4)
    raw["privacy"] = {"mode": "client", "noise_multiplier": 0.8, "clip_norm": 1.0, "delta": DELTA,
                      "target_epsilon": 1.0}
    raw["policy"] = {"min_hospitals": 2, "round_retries": 0}
    cfg = parse_federation_config(raw)
    plan = mechanism(cfg, Layout.of(state_to_numpy(build_model(cfg.model).state_dict()), 0).params)
    target = (plan.epsilon(2, DELTA) + plan.epsilon(3, DELTA)) / 2
    raw["privacy"]["target_epsilon"] = target
    summary = federated_training(parse_federation_config(raw))
    assert "privacy budget: the next round would take 3 of 3 hospitals past epsilon" in summary["stopped"]
    store = runtime.checkpoints("it-dp-client")
    assert store.committed_rounds() == [0, 1, 2]
    privacy = json.loads(store.store.get(store.manifest_key(2)))["body"]["privacy"]
    assert privacy["mode"] == "client" and "Skellam" in privacy["mechanism"]
    assert privacy["epsilon"] == pytest.approx(plan.epsilon(2, DELTA)) and privacy["epsilon"] <= target
    assert [h["noise_multiplier"] for h in privacy["hospitals"].values()] == [pytest.approx(0.8)] * 3
    for h in ("h1", "h2", "h3"):
        state = store.find_private_json(f"privacy/{h}-account")
        assert state is not None and state["kind"] == "skellam" and state["rounds"] == 2
