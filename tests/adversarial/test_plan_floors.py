"""A hospital's own floors hold whatever the coordinator plans: a sybil, a 2-party plan, more parties
than the ring's bound, a weak threshold, a plan for another model, and a sum too small for the
colluders it assumes are all refused before it sends anything."""

from __future__ import annotations

import numpy as np
import pytest

from primia.federation.secure_round import hospital_side
from primia.secure import inmemory
from primia.secure.protocol import Client, Floors, MemoryLedger, Params, ProtocolViolation, SecAggAbort
from primia.store.checkpoints import CheckpointStore
from tests.fakes import MemoryObjectStore

ROSTER = frozenset({"h1", "h2", "h3", "h4"})


def _client(parties: tuple[str, ...], floors: Floors, **kw: object) -> Client:
    params = Params("fed", 1, "s", parties, 8, **kw)  # type: ignore[arg-type]
    signers, verify = inmemory.identities(parties)
    return Client(params, "h1", signers["h1"], verify, floors)


def test_a_sybil_in_the_plan_is_refused() -> None:
    with pytest.raises(ProtocolViolation, match="mallory in the plan are not active hospitals of the signed roster"):
        _client(("h1", "h2", "mallory"), Floors(members=ROSTER))


def test_a_two_party_plan_is_refused() -> None:
    with pytest.raises(ProtocolViolation, match="the plan has 2 parties, fewer than this hospital's floor of 3"):
        _client(("h1", "h2"), Floors(members=ROSTER))


def test_more_parties_than_the_ring_holds_and_a_weak_threshold_are_refused() -> None:
    with pytest.raises(ProtocolViolation, match="more than the 3 the ring's overflow bound holds"):
        _client(("h1", "h2", "h3", "h4"), Floors(members=ROSTER, max_parties=3))
    with pytest.raises(ProtocolViolation, match="threshold fraction 0.3 is below this hospital's floor of 0.5"):
        _client(("h1", "h2", "h3"), Floors(members=ROSTER), threshold_fraction=0.3)


def test_a_plan_for_another_federation_round_model_or_purpose_than_the_dispatch_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from primia.federation.secure_round import Expected
    from tests.helpers import make_keyring

    store = CheckpointStore(MemoryObjectStore(), "fed", make_keyring(tmp_path))
    plan = {"params": Params("fed", 1, "s", ("h1", "h2", "h3"), 8, model="a" * 64).to_dict(), "wait_s": 5}
    signers, verify = inmemory.identities(["h1", "h2", "h3"])
    args = (store, store, plan, "h1", signers["h1"], verify, lambda m, s: True, Floors(members=ROSTER), MemoryLedger())
    hospital_side(*args, Expected("fed", 1, "a" * 64, "train+validate"))  # what it was dispatched for
    for other in (Expected("fed", 1, "b" * 64, "train+validate"), Expected("fed", 1, "a" * 64, "validate"),
                  Expected("fed", 2, "a" * 64, "train+validate"), Expected("fed-b", 1, "a" * 64, "train+validate")):
        with pytest.raises(ProtocolViolation, match="the plan is for fed round 1, model aaaaaaaaaaaa .train.validate.; "
                                                    "the dispatch asks for"):
            hospital_side(*args, other)


def test_a_hospital_that_assumes_a_colluder_refuses_a_sum_of_two() -> None:
    """With one colluding hospital assumed, a sum over two would hand the other's update to the colluder."""
    parties = ("h1", "h2", "h3")
    params = Params("fed", 1, "s", parties, 4)
    signers, verify = inmemory.identities(parties)
    floors = Floors(members=frozenset(parties), colluders=1)
    clients = {h: Client(params, h, signers[h], verify, floors) for h in parties}
    adverts = {h: c.advertise() for h, c in clients.items()}
    shares = {h: c.share(adverts) for h, c in clients.items()}
    masks = {}
    for h in ("h1", "h2"):  # h3 drops before masking
        clients[h].mask(shares, np.zeros(4, dtype=np.uint32))
        masks[h] = clients[h].mask_message(h, 1)
    with pytest.raises(SecAggAbort, match="smallest sum 3"):
        clients["h1"].confirm(masks)
    assert floors.confirm_quorum(3) == 3  # and with a colluder assumed, all three must confirm
