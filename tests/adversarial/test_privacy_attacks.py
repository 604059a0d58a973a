"""A coordinator that lies about privacy: it asks a hospital that requires DP to train with DP off, or
hands it another hospital's (or a rolled-back) privacy account; each is refused at the hospital."""

from __future__ import annotations

from pathlib import Path

import pytest

from primia.config import AgentSettings
from primia.errors import ConfigError, PrivacyError
from primia.federation.agent import check_plan
from primia.privacy.accounting import SampleAccount
from primia.privacy.keeper import AccountKeeper, MemoryRecord
from primia.store.checkpoints import CheckpointStore
from tests.fakes import MemoryObjectStore
from tests.helpers import make_keyring


def test_a_plan_with_dp_off_is_refused_by_a_hospital_that_requires_it() -> None:
    agent = AgentSettings(name="h1", require_dp=True, require_secure_aggregation=False)
    with pytest.raises(ConfigError, match="requires differential privacy"):
        check_plan(agent, train=True, stats=False, secagg=None, privacy_mode="off")
    check_plan(agent, train=True, stats=False, secagg=None, privacy_mode="sample")  # DP on: taken


def test_an_account_swapped_in_from_another_hospital_is_refused(tmp_path: Path) -> None:
    objects = MemoryObjectStore()
    store = CheckpointStore(objects, "fed", make_keyring(tmp_path))
    fresh = SampleAccount.new("fed", "h2", "prv", 1e-5, 1.0, 0.1)  # h2's account, nearly unspent
    store.put_private_json("privacy/h1-account", fresh.state())  # written under h1's name
    with pytest.raises(PrivacyError, match="not this hospital's"):
        AccountKeeper(store, MemoryRecord(), "h1").load("fed", "prv")
