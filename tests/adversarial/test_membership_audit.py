"""The privacy audit's membership dispatch over the real core (`ask`, the hospitals' `answer`, signatures):
each hospital attacks the round's committed model on its own samples and only signed figures come back;
an answer that lacks them, or is signed by a key the roster does not hold, is refused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from primia.audit.figures import MEMBERSHIP_KEYS
from primia.federation.policy import ACCEPTED, REJECTED
from primia.federation.rounds import Dispatch
from tests.adversarial.rounds_harness import Harness


def test_each_hospital_answers_with_figures_only_and_nothing_is_aggregated(tmp_path: Path) -> None:
    h = Harness.make(tmp_path)  # secure aggregation on: the audit dispatch still carries no plan
    answers = h.ask(["a", "b", "c"], audit=True, server_round=0)  # the audit of round 0's committed model
    assert answers.secure is None and not answers.aborted
    for o in answers.outcomes:
        assert o.status == ACCEPTED and o.result is not None, o
        assert set(o.result.metrics) == set(MEMBERSHIP_KEYS) and 0 <= o.result.metrics["mia_auc"] <= 1
        assert o.result.update is None and o.result.num_examples == 0 and not o.result.val_confusion


def test_an_answer_without_the_figures_or_with_a_forged_key_is_refused(tmp_path: Path) -> None:
    h = Harness.make(tmp_path)

    def validate_instead(_h: Harness, _name: str, d: Dispatch) -> Dispatch:  # answers, but not what was asked
        return replace(d, audit=False, train=False, validate=True)

    h.rogues["a"] = validate_instead
    h.forge_answer.add("b")
    answers = {o.hospital: o for o in h.ask(["a", "b", "c"], audit=True, server_round=0).outcomes}
    assert answers["a"].status == REJECTED and "not the figures asked for" in answers["a"].reason
    assert answers["b"].status == REJECTED
    assert answers["c"].status == ACCEPTED


def test_an_audit_of_another_rounds_model_is_refused_by_the_hospital(tmp_path: Path) -> None:
    """Round 2's audit naming round 0's committed model: any committed model could be attacked again and again."""
    h = Harness.make(tmp_path)
    answers = h.ask(["a", "b", "c"], audit=True, server_round=2)
    assert all(o.status != ACCEPTED for o in answers.outcomes), answers.outcomes
