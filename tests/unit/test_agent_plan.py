"""A hospital agent's own privacy floor holds whatever the coordinator's dispatch asks."""

from __future__ import annotations

import pytest

from primia.config import AgentSettings
from primia.errors import ConfigError
from primia.federation.agent import check_plan
from primia.secure.protocol import Params


def _plan(fraction: float) -> dict:
    return {"params": Params("fed", 1, "s", ("h1", "h2", "h3"), 10, threshold_fraction=fraction).to_dict(),
            "wait_s": 10}


PLAN = _plan(0.5)


def test_a_plaintext_update_statistics_or_validation_request_is_refused_by_default() -> None:
    agent = AgentSettings(name="h1")
    for train, stats, what in ((True, False, "an update"), (False, True, "image statistics"),
                               (False, False, "a validation confusion matrix")):
        with pytest.raises(ConfigError, match=f"requires secure aggregation .* asked for {what} in the clear"):
            check_plan(agent, train, stats, None)
    check_plan(agent, True, False, PLAN)
    check_plan(agent, False, False, PLAN)


def test_a_weak_threshold_is_refused_and_the_floor_can_be_lowered_only_to_plaintext_by_choice() -> None:
    with pytest.raises(ConfigError, match="at least 0.5 and was offered 0.2"):
        check_plan(AgentSettings(name="h1"), True, False, _plan(0.2))
    check_plan(AgentSettings(name="h1", require_secure_aggregation=False), True, False, None)
    with pytest.raises(ValueError):
        AgentSettings(name="h1", min_threshold_fraction=0.3)


def test_a_malformed_plan_is_a_clear_refusal_not_a_traceback() -> None:
    for bad in ({"params": {"threshold_fraction": 0.5}}, {"params": "x"}, {}):
        with pytest.raises(ConfigError, match="secure-aggregation plan is malformed"):
            check_plan(AgentSettings(name="h1"), True, False, bad)


def test_a_membership_audit_is_figures_only_and_the_hospital_may_opt_out() -> None:
    agent = AgentSettings(name="h1")  # requires secure aggregation: figures only are still taken
    check_plan(agent, False, False, None, audit=True)
    for train, stats, plan in ((True, False, None), (False, True, None), (False, False, PLAN)):
        with pytest.raises(ConfigError, match="membership-audit dispatch neither trains"):
            check_plan(agent, train, stats, plan, audit=True)
    with pytest.raises(ConfigError, match="does not take part in membership audits"):
        check_plan(AgentSettings(name="h1", membership_audit=False), False, False, None, audit=True)
