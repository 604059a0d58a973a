"""The one ask-the-hospitals path against compromised hospitals and a coordinator that retries:
each ends in a refusal or abort with a reason naming it, and no sum over the wrong hospitals."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from primia.federation.policy import ACCEPTED
from primia.secure import protocol
from tests.adversarial.rounds_harness import Harness

pytestmark = pytest.mark.slow


def _statuses(answers) -> dict[str, tuple[str, str]]:  # type: ignore[no-untyped-def]
    return {o.hospital: (o.status, o.reason) for o in answers.outcomes}


def test_an_honest_round_sums_exactly_the_accepted_hospitals(tmp_path: Path) -> None:
    h = Harness.make(tmp_path)
    answers = h.ask(["a", "b", "c"])
    assert not answers.aborted and answers.secure is not None
    assert answers.secure.included == ("a", "b", "c")
    assert all(s == ACCEPTED for s, _ in _statuses(answers).values())
    assert answers.pooled.num_examples > 0 and answers.pooled.confusion is not None


def test_a_replayed_mask_message_keeps_its_hospital_out_of_the_sum(tmp_path: Path) -> None:
    """A compromised hospital answers with the nonce of another dispatch: its signed mask message is
    refused before its vector enters the sum; the round's sum is over the others."""
    h = Harness.make(tmp_path)
    h.rogues["c"] = lambda h_, name, d: replace(d, nonce="0" * 32)
    answers = h.ask(["a", "b", "c"])
    assert answers.secure is not None and answers.secure.included == ("a", "b")
    status, reason = _statuses(answers)["c"]
    assert status != ACCEPTED and "answers another dispatch (nonce mismatch): a replay" in reason


def test_a_hospital_revoked_during_the_round_is_not_in_the_sum(tmp_path: Path) -> None:
    h = Harness.make(tmp_path)

    def revoke_once_it_shared() -> None:  # the authority signs a new roster while c trains
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if any(k.endswith("/share/c.json.enc") for k in h.store.store.objects):  # type: ignore[attr-defined]
                h.revoke("c")
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=revoke_once_it_shared, daemon=True)
    watcher.start()
    answers = h.ask(["a", "b", "c"])
    watcher.join()
    assert answers.secure is not None and answers.secure.included == ("a", "b")
    assert "c is not an active hospital of the signed roster (revoked during the round)" in _statuses(answers)["c"][1]


def test_a_hospital_revoked_after_the_sum_voids_the_attempt(tmp_path: Path) -> None:
    h = Harness.make(tmp_path)
    h.after_finish = lambda: h.revoke("b")
    answers = h.ask(["a", "b", "c"])
    assert answers.secure is None
    assert answers.aborted == ("the attempt is void, nothing is committed: b is in the sum but its answer was "
                               "rejected (hospital is revoked)")


def test_a_rejected_hospital_inside_the_sum_voids_the_attempt(tmp_path: Path) -> None:
    """c's mask message passed, but its signed answer does not verify: the sum contains a hospital whose
    answer is rejected, so nothing of the attempt may be committed."""
    h = Harness.make(tmp_path)
    h.forge_answer.add("c")
    answers = h.ask(["a", "b", "c"])
    assert answers.secure is None and "c is in the sum but its answer was rejected" in answers.aborted
    assert _statuses(answers)["c"][0] == ACCEPTED  # in the sum: which is why the attempt is void


def test_a_foreign_key_never_gets_into_the_protocol(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    h = Harness.make(tmp_path)
    h.keys["c"] = Ed25519PrivateKey.generate()  # c signs with a key the roster does not hold
    answers = h.ask(["a", "b", "c"])
    assert answers.secure is not None and answers.secure.included == ("a", "b")
    assert "signature does not verify against the roster's key" in answers.secure.reasons["c"]


@pytest.mark.parametrize("ledger", [True, False])
def test_a_retried_round_with_another_sample_gets_no_second_sum(tmp_path: Path, ledger: bool,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The differencing attack: two sums from the same global model over {a, b, c} and {a, b, d} give
    c - d. The hospitals that helped unmask the first refuse the second (with the ledger removed, the
    second sum exists and the difference of the two sums is exactly the difference of two updates)."""
    if not ledger:
        monkeypatch.setattr(protocol.MemoryLedger, "claim", lambda self, key, members, session: None)
    h = Harness.make(tmp_path, ("a", "b", "c", "d"))
    first = h.ask(["a", "b", "c"])
    assert first.secure is not None
    second = h.ask(["a", "b", "d"])
    if ledger:
        assert second.secure is None and "at stage unmask" in second.aborted
        for name in ("a", "b"):  # the hospitals say why they would not reveal
            assert "already helped unmask a sum over a, b, c from this global model" in _statuses(second)[name][1]
    else:
        assert second.secure is not None  # what the ledger prevents
        assert not np.isnan(second.pooled.train_loss)


def test_a_validation_pass_on_weights_the_coordinator_did_not_commit_is_refused(tmp_path: Path) -> None:
    """The oracle: ask hospitals to score arbitrary weights. They validate only a committed, signed
    global model, and even then only through secure aggregation."""
    h = Harness.make(tmp_path)
    probe = h.store.put_weights(0, {k: v * 0 for k, v in h.store.get_weights(h.global_ref()).items()})
    h.global_ref = lambda: probe  # type: ignore[method-assign]
    answers = h.ask(["a", "b", "c"], train=False)
    assert answers.secure is None and answers.aborted
    for status, reason in _statuses(answers).values():
        assert status != ACCEPTED and "is not the committed global.safetensors of round 0" in reason


def _refused_second(second, first_set: str) -> None:  # type: ignore[no-untyped-def]
    assert second.secure is None and second.aborted
    reasons = " ".join(r for _, r in _statuses(second).values())
    assert f"already helped unmask a sum over {first_set} from this global model" in reasons


@pytest.mark.parametrize("train", [False, True])
def test_the_same_weights_committed_again_get_no_second_sum(tmp_path: Path, train: bool) -> None:
    """Re-committing the same weights gives a new ciphertext digest and a new round number; the ledger
    keys on the weights themselves, so a's update or confusion matrix cannot be had as the difference of
    two sums."""
    h = Harness.make(tmp_path, ("a", "b", "c", "d"))
    first = h.ask(["a", "b", "c", "d"], train=train, server_round=1)
    assert first.secure is not None
    again = h.store.put_weights(1, h.store.get_weights(h.global_ref()))
    h.store.commit(1, {"global.safetensors": again})
    assert again.digest != h.global_ref().digest
    again_ref = h.store.load_round(1).ref("global.safetensors")
    second = h.ask(["b", "c", "d"], train=train, server_round=2, global_ref=again_ref, absent=("a",),
                   validate=not train)  # training: the update alone, so only the update's ledger key applies
    _refused_second(second, "a, b, c, d")


def test_a_second_sum_of_updates_under_another_purpose_is_refused(tmp_path: Path) -> None:
    """train+validate over {a, b, c, d}, then train over {b, c, d} from the same model: the difference
    would be a's update and count."""
    h = Harness.make(tmp_path, ("a", "b", "c", "d"))
    assert h.ask(["a", "b", "c", "d"]).secure is not None
    _refused_second(h.ask(["b", "c", "d"], validate=False, absent=("a",)), "a, b, c, d")


def test_a_second_statistics_pass_is_refused(tmp_path: Path) -> None:
    h = Harness.make(tmp_path, ("a", "b", "c", "d"))
    assert h.ask(["a", "b", "c", "d"], train=False, stats=True, server_round=0).secure is not None
    second = h.ask(["b", "c", "d"], train=False, stats=True, server_round=7, absent=("a",))
    assert second.secure is None
    assert "already helped unmask a sum over a, b, c, d" in " ".join(r for _, r in _statuses(second).values())


def test_a_hospital_signing_an_oversized_weight_bound_is_kept_out_of_the_sum(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A weight bound above max_examples would let one hospital take the ring's headroom while every
    count check still passed."""
    from primia.secure import transport

    h = Harness.make(tmp_path)
    honest = transport.HospitalSide.submit

    def greedy(self, vector, weight_bound, extra=None):  # type: ignore[no-untyped-def]
        bound = weight_bound * 100 if self.client.me == "c" else weight_bound
        return honest(self, vector, bound, extra)

    monkeypatch.setattr(transport.HospitalSide, "submit", greedy)
    answers = h.ask(["a", "b", "c"])
    assert answers.secure is not None and answers.secure.included == ("a", "b")
    assert "signed a weight bound above secure_aggregation.max_examples" in answers.secure.reasons["c"]


def test_a_confirmation_over_other_rosters_is_not_relayed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A compromised hospital confirms rosters nobody published: relayed, it would make every honest
    hospital refuse as if the coordinator lied; the coordinator drops it and the round goes on."""
    from primia.secure import protocol

    h = Harness.make(tmp_path)
    honest = protocol.Client.confirm

    def lie(self, masks):  # type: ignore[no-untyped-def]
        message = honest(self, masks)
        if self.me == "c":
            body = {k: message["payload"][k] for k in ("u1", "u2", "u3")} | {"u1": "0" * 64}
            message = protocol.sign(self.params, "confirm", self.me, body, self.signer)
        return message

    monkeypatch.setattr(protocol.Client, "confirm", lie)
    answers = h.ask(["a", "b", "c"])
    assert answers.secure is not None and answers.secure.included == ("a", "b", "c")
    assert "c confirmed rosters the coordinator did not publish" in answers.secure.reasons["c"]
