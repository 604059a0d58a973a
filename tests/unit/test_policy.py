"""Round policy: roster per mode, reproducible sampling, quorum with a message naming who was missing."""

from __future__ import annotations

import pytest

from primia.config import FederationConfig, RoundPolicy
from primia.errors import ConfigError, RoundFailedError
from primia.federation.policy import ACCEPTED, DROPPED, REJECTED, Outcome, check_quorum, roster, sample
from primia.messages import HospitalResult


def _cfg(hospitals: list[dict[str, object]], **policy: object) -> FederationConfig:
    return FederationConfig.model_validate({"federation_id": "f", "hospitals": hospitals, "policy": policy,
                                            "test_data": {"path": "/t"}})


def test_embedded_needs_data_distributed_refuses_it() -> None:
    with_data = _cfg([{"name": "a", "data": {"path": "/x"}}, {"name": "b", "data": {"path": "/y"}}])
    assert roster(with_data, "embedded") == ("a", "b")
    with pytest.raises(ConfigError, match=r"hospitals\[0\] \(a\): in distributed mode data paths stay"):
        roster(with_data, "distributed", ["a", "b"])
    names_only = _cfg([{"name": "a"}])
    with pytest.raises(ConfigError, match=r"hospitals\[0\] \(a\): embedded mode needs data.path"):
        roster(names_only, "embedded")
    with pytest.raises(ConfigError, match="hospitals: embedded mode needs the hospitals"):
        roster(_cfg([]), "embedded")


def test_distributed_roster_is_the_registry_or_named_registered_hospitals() -> None:
    assert roster(_cfg([]), "distributed", ["c", "a", "b"]) == ("a", "b", "c")
    assert roster(_cfg([{"name": "b"}]), "distributed", ["a", "b"]) == ("b",)
    assert roster(_cfg([{"name": "a"}, {"name": "b"}]), "distributed", ["a"], revoked=["b"]) == ("a",)
    with pytest.raises(ConfigError, match="hospitals: z not active on the signed roster"):
        roster(_cfg([{"name": "z"}]), "distributed", ["a"])
    with pytest.raises(ConfigError, match="policy.min_hospitals is 3 but only 2 hospitals"):
        roster(_cfg([], min_hospitals=3), "distributed", ["a", "b"])


def test_sampling_is_reproducible_and_respects_the_quorum() -> None:
    names = [f"h{i}" for i in range(10)]
    policy = RoundPolicy(sample_fraction=0.3, min_hospitals=2)
    first = sample(names, policy, seed=7, server_round=3)
    assert len(first) == 3 and first == sample(names, policy, seed=7, server_round=3)
    assert len({tuple(sample(names, policy, 7, r)) for r in range(1, 20)}) > 5  # rounds draw different sets
    assert len(sample(names, RoundPolicy(sample_fraction=0.1, min_hospitals=4), 7, 1)) == 4
    assert sample(names, RoundPolicy(), 7, 1) == names


def _ok(name: str) -> Outcome:
    return Outcome(name, ACCEPTED, "ok", HospitalResult(name, 1, 10, None, 0.1, ((1, 0), (0, 1)), 0.5))


def test_quorum_message_names_the_missing_and_why() -> None:
    outcomes = [_ok("a"), _ok("b"), Outcome("c", DROPPED, "no answer within 20 s (policy.round_timeout_s)")]
    check_quorum(outcomes, RoundPolicy(min_hospitals=2), 4, 0)
    with pytest.raises(RoundFailedError) as info:
        check_quorum(outcomes + [Outcome("d", REJECTED, "replay")], RoundPolicy(min_hospitals=3, round_retries=2), 4, 1)
    msg = str(info.value)
    assert msg.startswith("round 4 (attempt 2 of 3): 2 of 4 hospitals answered with an accepted update, quorum is 3")
    assert "c: no answer within 20 s" in msg and "d: replay" in msg
