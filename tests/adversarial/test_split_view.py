"""A malicious coordinator shows different rosters (U2/U3) to two groups of hospitals, relaying to each
only its own confirmations, to unmask one hospital's update: every time refused, nothing revealed.

Two independent defences stand in the way, and each alone stops the attack (each test below turns
the other off, so it fails when the one it names is removed; the first test turns both off and shows
that the attack is real, bit for bit):
- the mask binding: every vector in U3 carries its sender's signed U1/U2, and a hospital confirms
  only when each matches the rosters it holds itself;
- the quorum intersection: a hospital masks only if a strict majority of the parties shared (its U2
  floor), and reveals only when a strict majority of the parties confirmed its very (U1, U2, U3).
"""

from __future__ import annotations

import pytest

from primia.secure import graph, protocol
from tests.adversarial.secagg_attacker import split_view

SIZES = (10, 16, 50)


def _complete(n: int) -> int:  # a coordinator-chosen degree above the automatic one: the complete graph
    return n - 1


def _without_binding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "check_masks", lambda *args, **kwargs: None)


def _without_quorum_intersection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol.Floors, "check_u2", lambda self, params, me, u2: None)
    monkeypatch.setattr(protocol.Floors, "confirm_quorum", lambda self, parties: 1)  # the old per-neighbourhood rule


@pytest.mark.parametrize("n", SIZES)
def test_without_both_defences_the_split_view_recovers_the_update_bit_for_bit(
        n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    _without_binding(monkeypatch)
    _without_quorum_intersection(monkeypatch)
    attempt = split_view(n)
    assert attempt.leaked  # what f317d74 allowed: the target's raw update, no colluding hospital


@pytest.mark.parametrize("degree", [0, "complete"])
@pytest.mark.parametrize("n", SIZES)
def test_the_split_view_is_refused_and_nothing_of_the_target_is_revealed(n: int, degree: object) -> None:
    attempt = split_view(n, _complete(n) if degree == "complete" else 0)
    assert not attempt.leaked and attempt.recovered is None
    assert attempt.revealed == 0 and attempt.target_b_shares_revealed == 0
    assert "a strict majority" in attempt.refusals[attempt.target]  # it would not mask under a bare U2
    others = [why for h, why in attempt.refusals.items() if h != attempt.target]
    assert any("masked its update under another roster" in w for w in others)  # the target's neighbours see it


@pytest.mark.parametrize("n", SIZES)
def test_the_mask_binding_alone_stops_it(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    _without_quorum_intersection(monkeypatch)
    attempt = split_view(n)
    assert not attempt.leaked and attempt.target_b_shares_revealed == 0
    assert any("masked its update under another roster U1/U2" in why for why in attempt.refusals.values())


@pytest.mark.parametrize("n", SIZES)
def test_the_quorum_intersection_alone_stops_it(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    _without_binding(monkeypatch)
    quorum_refused = False
    for _ in range(20):  # in some graphs (their keys are random) too few neighbours mask: a refusal before it
        attempt = split_view(n)
        assert not attempt.leaked and attempt.revealed == 0
        assert "a strict majority" in attempt.refusals[attempt.target]
        if any("(a strict majority) must before anything is revealed" in why for why in attempt.refusals.values()):
            quorum_refused = True
            break
    assert quorum_refused, "the reveal quorum never came into play"


def test_a_coordinator_chosen_degree_below_the_automatic_one_is_refused() -> None:
    from primia.secure.inmemory import identities
    from primia.secure.protocol import Client, Floors, Params, ProtocolViolation

    names = tuple(f"h{i:02d}" for i in range(16))
    assert graph.auto_degree(16) == 8
    params = Params("fed", 1, "s", names, 8, degree=2)  # each hospital would mask with two others only
    signers, verify = identities(names)
    with pytest.raises(ProtocolViolation, match="degree 2 is below the automatic 8 for 16 parties: refused"):
        Client(params, "h00", signers["h00"], verify, Floors(members=frozenset(names)))
