"""The SecAgg/SecAgg+ protocol: exact weighted FedAvg, masked inputs look uniform, dropout recovery,
clean aborts, tampering and forged messages caught, and the coordinator never holds an update."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from primia.config import SecureAggregationConfig
from primia.federation.fedavg import weighted_average
from primia.federation.secure_update import decode_mean, encode_update, fixed_point, vector_length
from primia.secure import inmemory
from primia.secure.protocol import Client, Floors, Params, ProtocolViolation, SecAggAbort, sign, verified
from primia.secure.transport import Channel, Coordinator, Deadlines, HospitalSide
from primia.store.checkpoints import CheckpointStore
from tests.fakes import MemoryObjectStore
from tests.helpers import make_keyring

SA = SecureAggregationConfig()


def _weights(rng: np.random.Generator, size: int) -> dict[str, np.ndarray]:
    return {"conv.weight": rng.normal(0, 1, (size, 2)).astype(np.float32),
            "bias": rng.normal(0, 1, 3).astype(np.float32)}


def _setup(n: int, size: int, seed: int) -> tuple[dict, dict, dict, dict[str, int]]:
    rng = np.random.default_rng(seed)
    start = _weights(rng, size)
    names = [f"h{i}" for i in range(n)]
    local = {h: {k: (v + rng.normal(0, 0.05, v.shape)).astype(np.float32) for k, v in start.items()} for h in names}
    counts = {h: int(rng.integers(1, 500)) for h in names}
    vectors = {h: encode_update(SA, local[h], start, counts[h])[0] for h in names}
    return start, local, vectors, counts


def _params(names: list[str], length: int, **kw: object) -> Params:
    return Params("fed", 1, "sess", tuple(sorted(names)), length, **kw)  # type: ignore[arg-type]


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 7), size=st.integers(1, 200), seed=st.integers(0, 10_000))
def test_unmasked_aggregate_is_weighted_fedavg_within_the_quantization_bound(n: int, size: int, seed: int) -> None:
    start, local, vectors, counts = _setup(n, size, seed)
    run = inmemory.run(_params(list(vectors), vector_length(start)), vectors)
    mean, total = decode_mean(SA, run.result.total, start)
    expect = weighted_average([local[h] for h in sorted(local)], [counts[h] for h in sorted(local)])
    assert total == sum(counts.values())
    bound = n * fixed_point(SA).bound / total + 1e-6  # + float32 storage of the result
    for k in start:
        assert np.abs(mean[k].astype(np.float64) - expect[k]).max() <= bound


def test_secagg_plus_graph_gives_the_same_sum_with_fewer_partners() -> None:
    start, local, vectors, counts = _setup(12, 50, 1)
    params = _params(list(vectors), vector_length(start))
    assert params.k < 11  # a sparse graph
    run = inmemory.run(params, vectors)
    mean, _ = decode_mean(SA, run.result.total, start)
    expect = weighted_average([local[h] for h in sorted(local)], [counts[h] for h in sorted(local)])
    assert np.abs(mean["bias"] - expect["bias"]).max() < 1e-4


def test_a_masked_update_is_uniform_and_uncorrelated_with_the_update() -> None:
    """The coordinator's view of one hospital: chi-square on residues, correlation with the update."""
    length = 200_000
    structured = np.zeros(length, dtype=np.uint32)  # the most recognisable update there is: all zero ...
    structured[::2] = 1000  # ... but for a stripe
    vectors = {"a": structured, "b": structured.copy(), "c": structured.copy()}
    run = inmemory.run(_params(["a", "b", "c"], length), vectors)
    y = run.masked["a"]
    for residues in (y & 0xFF, y >> 24):  # low and high byte: 256 bins, about 780 per bin
        counts = np.bincount(residues.astype(np.int64), minlength=256)
        assert stats.chisquare(counts).pvalue > 1e-4
    r = np.corrcoef(y.astype(np.float64), structured.astype(np.float64))[0, 1]
    assert abs(r) < 0.02
    assert np.array_equal(run.result.total, structured * 3)  # and yet the sum is exact


def test_dropouts_after_masking_are_recovered_and_before_masking_excluded() -> None:
    start, local, vectors, counts = _setup(5, 20, 2)
    params = _params(list(vectors), vector_length(start))
    faults = inmemory.Faults(before_mask={"h1"}, before_unmask={"h3"})
    run = inmemory.run(params, vectors, faults)
    assert run.result.included == ("h0", "h2", "h3", "h4") and run.result.recovered == ("h3",)
    assert run.result.excluded == ("h1",)
    mean, total = decode_mean(SA, run.result.total, start)
    sent = [h for h in sorted(local) if h != "h1"]  # h3 sent its vector, then dropped: it counts
    expect = weighted_average([local[h] for h in sent], [counts[h] for h in sent])
    assert total == sum(counts[h] for h in sent)
    assert np.abs(mean["conv.weight"] - expect["conv.weight"]).max() < 1e-4


def test_fewer_than_threshold_survivors_abort_cleanly() -> None:
    _, _, vectors, _ = _setup(4, 5, 3)
    params = _params(list(vectors), vectors["h0"].size)
    assert params.threshold == 3
    with pytest.raises(SecAggAbort, match="2 of 4 hospitals remain, 3 are needed; no partial model is stored"):
        inmemory.run(params, vectors, inmemory.Faults(before_unmask={"h0", "h1"}))
    with pytest.raises(SecAggAbort, match="3 are needed"):
        inmemory.run(params, vectors, inmemory.Faults(before_mask={"h0", "h1"}))


def test_a_tampered_share_fails_its_tag_and_the_rest_still_unmask() -> None:
    _, _, vectors, _ = _setup(5, 5, 4)
    params = _params(list(vectors), vectors["h0"].size)
    seen: dict[str, dict] = {}
    run = inmemory.run(params, vectors, inmemory.Faults(tamper={("h0", "h2")}, before_unmask={"h0"}),
                       on_reveal=seen.__setitem__)
    assert "AES-GCM tag" in seen["h2"]["payload"]["bad"]["h0"]
    assert run.result.recovered == ("h0",)  # h0's self-mask rebuilt from the other, intact shares
    assert np.array_equal(run.result.total, sum(vectors.values()))  # type: ignore[arg-type]


def test_forged_replayed_and_foreign_messages_are_rejected() -> None:
    signers, verify = inmemory.identities(["a", "b", "c"])
    params = _params(["a", "b", "c"], 4)
    good = Client(params, "a", signers["a"], verify).advertise()
    assert verified(params, "advertise", good, verify)["hospital"] == "a"
    forged = sign(params, "advertise", "a", good["payload"] | {"c_pk": good["payload"]["s_pk"]}, signers["b"])
    with pytest.raises(ProtocolViolation, match="signature does not verify"):
        verified(params, "advertise", forged, verify)
    other_round = Params("fed", 2, "sess", ("a", "b", "c"), 4)
    with pytest.raises(ProtocolViolation, match="expected"):
        verified(other_round, "advertise", good, verify)
    with pytest.raises(ProtocolViolation, match="not a party"):
        Client(params, "mallory", signers["a"], verify)


def test_through_the_store_the_coordinator_never_holds_an_update_in_the_clear(tmp_path: Path) -> None:
    """Hospitals (threads) and the coordinator talk only through the encrypted store; afterwards every
    object there is opened and none holds a hospital's update or its encoding."""
    start, local, vectors, counts = _setup(3, 2000, 5)
    store = CheckpointStore(MemoryObjectStore(), "fed", make_keyring(tmp_path))
    params = _params(list(vectors), vector_length(start))
    signers, verify = inmemory.identities(params.parties)
    errors: list[BaseException] = []

    sign_c, check_c = inmemory.coordinator_identity()

    def hospital(h: str) -> None:
        try:
            client = Client(params, h, signers[h], verify, weights_digest="w")
            side = HospitalSide(Channel(store, lambda _: store, params, 0.01), client, 30.0, check_c)
            side.prepare()
            side.submit(vectors[h].copy(), SA.max_examples)  # masked in place: keep the clear one to search for
        except BaseException as exc:  # noqa: BLE001  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=hospital, args=(h,)) for h in params.parties]
    for t in threads:
        t.start()
    import time

    result = Coordinator(Channel(store, lambda _: store, params, 0.01), verify, sign_c,
                         Deadlines(30.0, time.monotonic() + 60), lambda: set()).serve()
    for t in threads:
        t.join()
    assert not errors
    mean, _ = decode_mean(SA, result.total, start)
    expect = weighted_average([local[h] for h in sorted(local)], [counts[h] for h in sorted(local)])
    assert np.abs(mean["conv.weight"] - expect["conv.weight"]).max() < 1e-4
    secrets_in_clear = [vectors[h].tobytes() for h in vectors] + [v.tobytes() for h in local for v in local[h].values()]
    for key in store.store.objects:  # type: ignore[attr-defined]
        name = key.removeprefix(store.round_prefix(1)).removesuffix(".enc")
        plain = store.find_object(1, name)
        assert plain is not None
        assert not any(s in plain for s in secrets_in_clear), f"{name} holds an update in the clear"


def test_the_coordinator_stops_early_when_the_quorum_can_no_longer_be_met(tmp_path: Path) -> None:
    import time

    store = CheckpointStore(MemoryObjectStore(), "fed", make_keyring(tmp_path))
    params = _params(["h0", "h1", "h2"], 4)
    signers, verify = inmemory.identities(params.parties)
    sign_c, check_c = inmemory.coordinator_identity()
    channel = Channel(store, lambda _: store, params, 0.01)
    for h in ("h0", "h1"):  # h2's run has ended without a word
        channel.post("advertise", h, Client(params, h, signers[h], verify).advertise())
    with pytest.raises(SecAggAbort, match=r"2 of 3 hospitals remain .* after stage advertise, quorum is 3 .*h2: "):
        Coordinator(channel, verify, sign_c, Deadlines(30.0, time.monotonic() + 60), lambda: {"h2"},
                    quorum=3).serve()
    with pytest.raises(SecAggAbort, match="quorum is 3"):  # the hospitals are told, and stop waiting
        channel.await_roster("advertise", time.monotonic() + 5, check_c)


def _masked_clients(n: int) -> tuple[Params, dict[str, Client], dict]:
    """n clients through advertise, share and mask with honest rosters; returns them ready to confirm,
    with their signed mask messages."""
    names = [f"h{i}" for i in range(n)]
    params = _params(names, 4)
    signers, verify = inmemory.identities(names)
    clients = {h: Client(params, h, signers[h], verify, weights_digest="w") for h in names}
    adverts = {h: c.advertise() for h, c in clients.items()}
    shares = {h: c.share(adverts) for h, c in clients.items()}
    masks = {}
    for h, c in clients.items():
        c.mask(shares, np.zeros(4, dtype=np.uint32))
        masks[h] = c.mask_message(f"digest-{h}", 10)
    return params, clients, masks


def test_a_coordinator_telling_hospitals_different_rosters_gets_no_shares() -> None:
    """The attack on a missing consistency check: tell each of the target's neighbours a different
    U3 so that each reveals both the target's self-mask share and its partners' key shares."""
    params, clients, masks = _masked_clients(5)
    views = {h: ["h0", h] + (["h4"] if h != "h4" else []) for h in ("h1", "h2", "h3")}
    confirms = {h: clients[h].confirm({m: masks[m] for m in set(v)}) for h, v in views.items() if len(set(v)) >= 3}
    for h in confirms:  # every relayed set disagrees with the receiver's own view, or is too small
        with pytest.raises((ProtocolViolation, SecAggAbort)):
            clients[h].unmask(confirms)
    with pytest.raises(SecAggAbort, match="a strict majority"):  # relaying only its own signature is not enough
        clients["h1"].unmask({"h1": confirms["h1"]})
    # members of h1's roster who were shown another one: only the consistency check can tell
    _, fresh, masks = _masked_clients(5)
    other = {h: fresh[h].confirm(masks) for h in ("h2", "h3")}
    mine = fresh["h1"].confirm({m: masks[m] for m in ("h0", "h1", "h2", "h3")})
    with pytest.raises(ProtocolViolation, match="was given other rosters"):
        fresh["h1"].unmask({"h1": mine, **other})


def test_a_share_claiming_another_holders_index_is_not_used() -> None:
    """A (faulty or malicious) hospital reveals a share under someone else's x: it is skipped and the
    honest shares still rebuild the seed, so the sum is exact."""
    from primia.secure import shamir

    names = [f"h{i}" for i in range(5)]
    params = _params(names, 6)
    signers, verify = inmemory.identities(names)
    vectors = {h: np.arange(6, dtype=np.uint32) * (i + 1) for i, h in enumerate(names)}

    def forge(hospital: str, message: dict) -> None:
        if hospital == "h1":
            payload = dict(message["payload"])
            shares = dict(payload["b_shares"])
            shares["h0"] = shamir.Share(params.index("h4"), 12345).to_bytes().hex()
            payload["b_shares"] = shares
            message["payload"] = {k: v for k, v in payload.items()
                                  if k not in ("stage", "hospital", "federation", "round", "session")}
            message.update(sign(params, "unmask", "h1", message["payload"], signers["h1"]))

    # h4 sends its vector and drops: its own share of h0's seed (x=5) is not revealed, so the forged
    # x=5 would be taken as genuine were indices not checked against their revealer
    run = inmemory.run(params, vectors, inmemory.Faults(before_unmask={"h4"}), keys=(signers, verify),
                       on_reveal=forge)
    assert run.result.recovered == ("h4",)
    assert np.array_equal(run.result.total, sum(vectors.values()))  # type: ignore[arg-type]


def test_a_diverged_update_is_refused_before_it_is_masked() -> None:
    from primia.errors import PrimiaError

    start = {"w": np.zeros(3, dtype=np.float32)}
    with pytest.raises(PrimiaError, match="non-finite"):
        encode_update(SA, {"w": np.array([0.1, np.nan, 0.2], dtype=np.float32)}, start, 10)


def test_signed_but_malformed_messages_and_plans_are_rejected_with_a_reason() -> None:
    from primia.config import parse_federation_config
    from primia.errors import ConfigError
    from primia.secure.unmask import accept

    signers, verify = inmemory.identities(["a", "b"])
    params = _params(["a", "b"], 4)
    bad_key = sign(params, "advertise", "a", {"c_pk": "bm90IGEga2V5", "s_pk": "x", "plan": "p"}, signers["a"])
    no_boxes = sign(params, "share", "b", {"boxes": "none"}, signers["b"])
    good, why = accept(params, "advertise", {"a": bad_key}, verify, frozenset("ab"))
    assert not good and "not a base64 32-byte X25519 key" in why["a"]
    good, why = accept(params, "share", {"b": no_boxes}, verify, frozenset("ab"))
    assert not good and "needs 'boxes' as a dict" in why["b"]
    for data in ({"federation": "f"}, "x", {**params.to_dict(), "degree": 3, "parties": [f"h{i}" for i in range(9)]}):
        with pytest.raises(ProtocolViolation):
            Params.from_dict(data)
    with pytest.raises(ConfigError, match="neighbours: .*even number >= 2"):
        parse_federation_config({"federation_id": "f", "test_data": {"path": "/tmp"},
                                 "secure_aggregation": {"neighbours": 3}})


def test_a_share_that_does_not_match_its_commitment_is_not_used() -> None:
    """A revealer hands over a wrong share under its own index: it fails the owner's signed commitment
    and is skipped; the honest shares rebuild the seed and the sum stays exact (without the
    commitment, the wrong share would go into the interpolation and the sum would be garbage)."""
    from primia.secure import shamir

    names = [f"h{i}" for i in range(5)]
    params = _params(names, 6)
    signers, verify = inmemory.identities(names)
    vectors = {h: np.arange(6, dtype=np.uint32) * (i + 1) for i, h in enumerate(names)}

    def lie(hospital: str, message: dict) -> None:
        if hospital == "h0":  # h0 reveals a made-up share of h4's seed, at its own x
            payload = dict(message["payload"])
            shares = dict(payload["b_shares"])
            shares["h4"] = shamir.Share(params.index("h0"), 424242).to_bytes().hex()
            skip = ("stage", "hospital", "federation", "round", "session")
            body = {k: v for k, v in payload.items() if k not in skip}
            message.update(sign(params, "unmask", "h0", {**body, "b_shares": shares}, signers["h0"]))

    run = inmemory.run(params, vectors, inmemory.Faults(before_unmask={"h4"}), keys=(signers, verify), on_reveal=lie)
    assert run.result.bad_shares == {"h0": "h0 revealed a share of h4's secret that does not match its commitment"}
    assert np.array_equal(run.result.total, sum(vectors.values()))  # type: ignore[arg-type]


def test_hospitals_refuse_rosters_the_coordinator_did_not_sign_and_ignore_a_forged_abort(tmp_path: Path) -> None:
    import time

    store = CheckpointStore(MemoryObjectStore(), "fed", make_keyring(tmp_path))
    params = _params(["h0", "h1", "h2"], 4)
    channel = Channel(store, lambda _: store, params, 0.01)
    _, check = inmemory.coordinator_identity()
    forger, _ = inmemory.coordinator_identity()  # a party that is not the roster's coordinator
    channel.abort("stop, says a forger", forger)
    channel.publish("advertise", {"adverts": {}}, forger)
    with pytest.raises(ProtocolViolation, match="roster advertise of round 1 is not signed by the federation's "
                                                "coordinator key"):
        channel.await_roster("advertise", time.monotonic() + 1, check)
    with pytest.raises(SecAggAbort, match="no roster after stage share"):  # the forged abort did not stop it
        channel.await_roster("share", time.monotonic() + 0.2, check)


def test_a_sum_outside_the_signed_bounds_fails_closed() -> None:
    from primia.errors import PrimiaError
    from primia.federation.secure_update import Contribution, Layout, decode, encode

    start = {"w": np.zeros(4, dtype=np.float32)}
    layout = Layout.of(start, 2)
    vec, _ = encode(SA, layout, Contribution(10, 0.5, np.array([[3, 1], [0, 4]]), 8),
                    {"w": np.full(4, 0.1, dtype=np.float32)}, start)
    assert decode(SA, layout, vec, start, 1, SA.max_examples).num_examples == 10
    with pytest.raises(PrimiaError, match="sample count 10 is outside 11..110000"):  # 11 in the sum: >= 11 samples
        decode(SA, layout, vec, start, 11, 11 * SA.max_examples)
    corrupt = vec.copy()
    corrupt[0] += np.uint32(2**30)  # a coordinate far outside the clipping bound
    with pytest.raises(PrimiaError, match="leaves the clipping bound"):
        decode(SA, layout, corrupt, start, 1, SA.max_examples)
    corrupt = vec.copy()
    corrupt[-2] += np.uint32(1)  # the confusion matrix no longer adds up
    with pytest.raises(PrimiaError, match="does not add up to the validation samples"):
        decode(SA, layout, corrupt, start, 1, SA.max_examples)


def test_a_forged_advert_in_u1_is_caught_by_its_owner_and_its_neighbours() -> None:
    """Hospitals verify only their neighbours' adverts (log n signatures); a coordinator that forges a
    party's advert in U1 (to steer the graph or learn a share box) is caught by that party itself and by
    each of its neighbours."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from primia.secure.agreement import b64, raw_public

    names = [f"h{i:02d}" for i in range(12)]
    params = _params(names, 4)
    signers, verify = inmemory.identities(names)
    clients = {h: Client(params, h, signers[h], verify, Floors(members=frozenset(names))) for h in names}
    adverts = {h: c.advertise() for h, c in clients.items()}
    fake = X25519PrivateKey.generate()
    forged = {"payload": {**adverts["h03"]["payload"], "c_pk": b64(raw_public(fake))},
              "signature": adverts["h03"]["signature"]}
    u1 = {**adverts, "h03": forged}
    with pytest.raises(ProtocolViolation, match="h03: advertise message signature does not verify"):
        clients["h03"].share(u1)
    g = params.graph({h: m["payload"] for h, m in u1.items()})
    for h in g.nbrs["h03"]:
        with pytest.raises(ProtocolViolation, match="signature does not verify"):
            clients[h].share(u1)


def test_malformed_insides_of_signed_messages_are_rejected_with_a_reason() -> None:
    """A compromised hospital signs a share commitment that is a number, a share that is a number, or a
    weight bound that is not a positive count: each is a protocol violation naming it, not a crash."""
    from primia.secure.unmask import accept

    signers, verify = inmemory.identities(["a", "b", "c"])
    params = _params(["a", "b", "c"], 4)
    cases = {
        "share": {"boxes": {}, "commit": {"a": 7}, "u1": "x"},
        "unmask": {"b_shares": {"c": 5}, "s_shares": {}, "bad": {}},
        "mask": {"digest": "s", "weight_bound": True, "u1": "x", "u2": "y"},
    }
    for stage, body in cases.items():
        good, why = accept(params, stage, {"a": sign(params, stage, "a", body, signers["a"])}, verify,
                           frozenset("abc"))
        assert not good and "malformed inside" in why["a"], (stage, why)


def test_a_hospital_refuses_a_threshold_its_assumed_colluders_could_meet() -> None:
    """5 parties on a complete graph, t = 3: with 3 colluders assumed, they alone could rebuild its seeds."""
    names = [f"h{i}" for i in range(5)]
    params = _params(names, 4)
    signers, verify = inmemory.identities(names)
    clients = {h: Client(params, h, signers[h], verify, Floors(colluders=3)) for h in names}
    adverts = {h: c.advertise() for h, c in clients.items()}
    with pytest.raises(ProtocolViolation, match="threshold 3 is not above the 3 colluders this hospital assumes"):
        clients["h0"].share(adverts)


def test_an_advert_made_under_another_plan_is_refused() -> None:
    """The coordinator shows one hospital a plan with another party list: its advert names that plan."""
    names = ["h0", "h1", "h2", "h3"]
    params = _params(names, 4)
    other = Params("fed", 1, "sess", tuple(names), 4, threshold_fraction=0.75)
    signers, verify = inmemory.identities(names)
    clients = {h: Client(other if h == "h3" else params, h, signers[h], verify) for h in names}
    adverts = {h: c.advertise() for h, c in clients.items()}
    with pytest.raises(ProtocolViolation, match="h3 advertised under another plan: the coordinator is inconsistent"):
        clients["h0"].share(adverts)
