"""Round reports: one table row per asked hospital, with status and reason for the ones left out."""

from __future__ import annotations

import numpy as np

from primia.federation.coordinator import Evaluation
from primia.federation.policy import ACCEPTED, DROPPED, REJECTED, Outcome
from primia.federation.report import failed_round_markdown, round_markdown, round_table
from primia.federation.rounds import Pooled
from primia.messages import HospitalResult


def _outcomes() -> list[Outcome]:
    ok = HospitalResult("a", 2, 30, None, 0.25, ((5, 1), (1, 5)), 1.5, {"val_samples": 12.0})
    return [Outcome("a", ACCEPTED, "ok", ok, 2.0),
            Outcome("b", REJECTED, "replay: signed for earlier round 1", None, 2.1),
            Outcome("c", DROPPED, "no answer within 20 s (policy.round_timeout_s)", None, 20.0)]


def test_table_rows_carry_status_and_reason() -> None:
    rows = round_table(_outcomes())
    assert [(r["hospital"], r["status"]) for r in rows] == [("a", "accepted"), ("b", "rejected"), ("c", "dropped")]
    assert rows[0]["samples"] == 30 and rows[0]["val_mcc_incoming"] == round((25 - 1) / 36, 4)
    assert rows[1]["samples"] is None and rows[1]["reason"] == "replay: signed for earlier round 1"


def test_markdown_lists_who_is_not_in_the_aggregate() -> None:
    ev = Evaluation({"mcc": 0.5, "roc_auc": 0.8, "balanced_accuracy": 0.7, "accuracy": 0.75}, np.zeros(1),
                    np.zeros((1, 2)), ("x", "y"))
    md = round_markdown("f", 2, _outcomes(), Pooled(30, 0.25), {"val_mcc": 0.4}, ev,
                        {"round_s": 3.0, "local_s_max": 1.5})
    assert "1 hospitals, 30 training samples" in md
    assert "| b | rejected | replay: signed for earlier round 1 |" in md and "| c | dropped |" in md
    failed = failed_round_markdown("f", 2, 0, _outcomes(), "round 2: quorum")
    assert "attempt 1 failed" in failed and "| a | accepted | ok |" in failed


def test_under_secure_aggregation_rows_hold_no_per_hospital_figures() -> None:
    masked = HospitalResult("a", 2, 0, None, float("nan"), (), 1.5, {"masked": 1.0})
    row = round_table([Outcome("a", ACCEPTED, "in the sum", masked, 2.0)])[0]
    assert row["samples"] is None and row["train_loss"] is None and row["val_mcc_incoming"] is None
    assert row["local_s"] == 1.5 and row["reason"] == "in the sum"
