"""Encrypted inference as a service: the roster's services, the servers, and the checks each party makes of
the others (roles from the signed roster, the session id binding three links, the model asked for)."""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from primia.errors import ConfigError, IntegrityError
from primia.federation import roster as r
from primia.federation.identity import PublicIdentity
from primia.smpc.caller import served_is
from primia.smpc.link import Identity, LinkError, handshake
from primia.smpc.local_service import seeded_model
from primia.smpc.parties import DATA_OWNER, DEALER, MODEL_OWNER, Parties
from primia.smpc.service import Endpoints, Served, dealer_server, infer_batch, model_owner_server

NAMES = {"hospital-a": DATA_OWNER, "hospital-b": DATA_OWNER, "mo": MODEL_OWNER, "dealer-1": DEALER,
         "mo-2": MODEL_OWNER}
KEYS = {n: Ed25519PrivateKey.generate() for n in NAMES}


def _public(name: str) -> PublicIdentity:
    raw = base64.b64encode(KEYS[name].public_key().public_bytes_raw()).decode()
    return PublicIdentity(name, raw, base64.b64encode(bytes(32)).decode())


def _roster() -> r.Roster:
    roster = r.Roster("fed", 1, "coordinator-key", "bucket")
    for n, role in NAMES.items():
        roster = roster.with_hospital(_public(n)) if role == DATA_OWNER else roster.with_service(_public(n), role)
    return roster.without_hospital("mo-2")  # revoked: no longer a party


PARTIES = Parties.from_roster(_roster())
SERVED = seeded_model("small_cnn", 32)
TIMEOUT = 20.0


def _me(name: str) -> Identity:
    return Identity(name, KEYS[name])


@contextmanager
def _servers(timeout: float = TIMEOUT, served: Any = SERVED) -> Iterator[Endpoints]:
    dealer = dealer_server(("127.0.0.1", 0), _me("dealer-1"), PARTIES, timeout)
    mo = model_owner_server(("127.0.0.1", 0), _me("mo"), PARTIES, served, {"dealer-1": dealer.address}, timeout)
    threads = [threading.Thread(target=x.serve, daemon=True) for x in (dealer, mo)]
    for t in threads:
        t.start()
    try:
        yield Endpoints(("mo", mo.address), ("dealer-1", dealer.address))
    finally:
        dealer.stop()
        mo.stop()


def _images(n: int) -> torch.Tensor:
    return torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(n))


def _plain(x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return SERVED.model(x).double()


# ---------------------------------------------------------------------- the roster's services
def test_services_are_signed_with_their_roles_and_old_rosters_keep_their_bytes() -> None:
    authority = Ed25519PrivateKey.generate()
    key = r.authority_public(authority)
    plain = r.Roster("fed", 1, "coordinator-key", "bucket").with_hospital(_public("hospital-a"))
    assert "services" not in plain.body()  # a roster signed before services existed verifies as it did
    doc = r.sign(_roster(), authority)
    opened = r.open_signed(doc, key)
    assert {n: e.role for n, e in opened.services.items()} == {"mo": MODEL_OWNER, "dealer-1": DEALER,
                                                               "mo-2": MODEL_OWNER}
    assert opened.services["mo-2"].status == r.REVOKED
    doc["body"]["services"]["dealer-1"]["role"] = MODEL_OWNER  # the coordinator promotes the dealer
    with pytest.raises(IntegrityError, match="signature does not verify"):
        r.open_signed(doc, key)
    body = r.sign(_roster(), authority)["body"]
    body["services"]["dealer-1"]["role"] = "oracle"
    with pytest.raises(IntegrityError, match="role not in"):
        r.Roster.from_body(body)
    with pytest.raises(ConfigError, match="is a hospital on the roster"):
        _roster().with_service(_public("hospital-a"), DEALER)
    with pytest.raises(ConfigError, match="is a service on the roster"):
        _roster().without_hospital("hospital-a").with_hospital(_public("dealer-1"))


def test_parties_take_their_roles_from_the_roster_and_revoked_ones_are_gone() -> None:
    assert PARTIES.of_role(DATA_OWNER) == {"hospital-a", "hospital-b"}
    assert PARTIES.of_role(MODEL_OWNER) == {"mo"}
    assert PARTIES.check("dealer-1", DEALER) == "dealer-1"
    with pytest.raises(LinkError, match="'mo' is a model-owner on the federation's signed roster, not a dealer"):
        PARTIES.check("mo", DEALER)
    with pytest.raises(LinkError, match="'mo-2' is not a party"):
        PARTIES.check("mo-2", MODEL_OWNER)


# ---------------------------------------------------------------------- sessions through the servers
def test_a_hospital_gets_the_logits_of_a_batch_through_the_servers() -> None:
    x = _images(3)
    with _servers() as where:
        logits, card, info = infer_batch(lambda c: x, _me("hospital-a"), PARTIES, where, TIMEOUT)
    assert card == SERVED.card
    assert (logits - _plain(x)).abs().max() < 0.01
    assert info["rounds"] > 0 and info["bytes_sent"] > 0


def test_concurrent_sessions_are_paired_by_their_ids() -> None:
    xs = {"hospital-a": _images(2), "hospital-b": _images(1)}
    out: dict[str, torch.Tensor] = {}
    with _servers() as where:
        def one(h: str) -> None:
            out[h] = infer_batch(lambda c: xs[h], _me(h), PARTIES, where, TIMEOUT)[0]

        threads = [threading.Thread(target=one, args=(h,)) for h in xs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    for h, x in xs.items():
        assert (out[h] - _plain(x)).abs().max() < 0.01


def test_only_roster_parties_in_their_roles_are_served() -> None:
    stranger = Identity("hospital-a", Ed25519PrivateKey.generate())  # a hospital's name, not its key
    with _servers() as where:
        with pytest.raises(LinkError, match="did not prove its roster identity|ended the session"):
            infer_batch(lambda c: _images(1), stranger, PARTIES, where, TIMEOUT)
        with pytest.raises(LinkError, match="not a dealer"):  # a data owner naming the model owner as dealer
            infer_batch(lambda c: _images(1), _me("hospital-a"), PARTIES,
                        Endpoints(where.model_owner, ("mo", where.dealer[1])), TIMEOUT)
        with pytest.raises(LinkError, match="is a data-owner .* not a model-owner"):
            infer_batch(lambda c: _images(1), _me("hospital-a"), PARTIES,
                        Endpoints(("hospital-b", where.model_owner[1]), where.dealer), TIMEOUT)
        # the model owner checks the dealer's role itself, whatever the data owner checked
        link = handshake(socket.create_connection(where.model_owner[1]), _me("hospital-a"), PARTIES.public_keys(),
                         "mo", True, TIMEOUT)
        link.send("open", {"session": "ef" * 16, "dealer": "hospital-b"})
        with pytest.raises(LinkError, match="'hospital-b' is a data-owner .* not a dealer"):
            link.recv()


def _open_dealer(where: Endpoints, me: str, body: dict[str, Any]) -> Any:
    link = handshake(socket.create_connection(where.dealer[1]), _me(me), PARTIES.public_keys(), "dealer-1", True,
                     TIMEOUT)
    link.send("open", body)
    return link


def test_the_dealer_refuses_halves_that_name_other_partners() -> None:
    """A model owner that says its partner is hospital-b while hospital-a opened the session (links mixed up, or
    a party trying to splice itself into another's session) ends it for both."""
    with _servers() as where:
        session = "ab" * 16
        spec = SERVED.card.spec(1, session).to_dict()
        mo = _open_dealer(where, "mo", {"session": session, "role": MODEL_OWNER, "partner": "hospital-b",
                                        "spec": spec})
        do = _open_dealer(where, "hospital-a", {"session": session, "role": DATA_OWNER, "partner": "mo"})
        for link in (mo, do):
            with pytest.raises(LinkError, match="session partners disagree"):
                link.recv()


def test_a_half_whose_partner_never_comes_is_told_within_the_timeout() -> None:
    with _servers(timeout=1.5) as where:
        started = time.monotonic()
        do = _open_dealer(where, "hospital-a", {"session": "cd" * 16, "role": DATA_OWNER, "partner": "mo"})
        with pytest.raises(LinkError, match="did not reach the dealer within 1.5 s"):
            do.recv()
        assert time.monotonic() - started < 5


def test_a_model_owner_serving_another_model_is_refused_before_an_image_is_shared() -> None:
    shared: list[int] = []

    def images(c: Any) -> torch.Tensor:
        served_is(c.source, "models:/brain@champion")
        shared.append(1)
        return _images(1)

    with _servers() as where, pytest.raises(ConfigError, match="serves seeded:small_cnn, not models:/brain@champion"):
        infer_batch(images, _me("hospital-a"), PARTIES, where, TIMEOUT)
    assert not shared
    served_is("models:/brain/3", "models:/brain@champion")
    served_is("models:/brain/3", "models:/brain/3")
    with pytest.raises(ConfigError):
        served_is("models:/brain/3", "models:/brain/4")
    with pytest.raises(ConfigError):
        served_is("models:/brainx/3", "models:/brain@champion")


def test_a_server_survives_a_caller_that_fails() -> None:
    with _servers() as where:
        sock = socket.create_connection(where.model_owner[1])
        sock.sendall(b"\x00\x00\x00\x05hello")
        sock.close()
        x = _images(1)
        logits, _, _ = infer_batch(lambda c: x, _me("hospital-a"), PARTIES, where, TIMEOUT)
    assert (logits - _plain(x)).abs().max() < 0.01



def test_a_model_owner_at_its_session_limit_tells_a_caller_it_is_busy() -> None:
    dealer = dealer_server(("127.0.0.1", 0), _me("dealer-1"), PARTIES, TIMEOUT)
    mo = model_owner_server(("127.0.0.1", 0), _me("mo"), PARTIES, SERVED, {"dealer-1": dealer.address}, TIMEOUT,
                            max_sessions=1, busy_wait_s=0.5)
    for x in (dealer, mo):
        threading.Thread(target=x.serve, daemon=True).start()
    try:
        hold = handshake(socket.create_connection(mo.address), _me("hospital-b"), PARTIES.public_keys(), "mo", True,
                         TIMEOUT)  # takes the one slot, then never reaches the dealer
        hold.send("open", {"session": "12" * 16, "dealer": "dealer-1"})
        hold.recv("card")
        hold.send("go", {"images": 1})
        hold.recv("dealer-ready")
        with pytest.raises(LinkError, match="busy: 1 sessions running, none ended within 0.5 s"):
            infer_batch(lambda c: _images(1), _me("hospital-a"), PARTIES,
                        Endpoints(("mo", mo.address), ("dealer-1", dealer.address)), TIMEOUT)
        hold.close()
    finally:
        dealer.stop()
        mo.stop()


def test_a_servers_roster_follows_the_signed_file_and_refuses_a_bad_one(tmp_path: Any) -> None:
    import json
    import os

    from primia.smpc.caller import RosterWatch

    authority = Ed25519PrivateKey.generate()
    path, pin = tmp_path / "roster.json", r.Pin(tmp_path / "pin.json")
    pin.enrol(r.authority_public(authority))

    def write(roster: r.Roster, stamp: int) -> None:
        path.write_text(json.dumps(r.sign(roster, authority)))
        os.utime(path, ns=(stamp, stamp))  # a new stamp even within the file system's time resolution

    write(_roster(), 1)
    watch = RosterWatch(tmp_path / "pin.json", path)
    assert "hospital-a" in watch().of_role(DATA_OWNER)
    write(replace(_roster().without_hospital("hospital-a"), version=2), 2)
    assert "hospital-a" not in watch().of_role(DATA_OWNER)  # revoked: refused from the next session on
    path.write_text(path.read_text().replace('"version": 2', '"version": 3'))  # altered, not re-signed
    os.utime(path, ns=(3, 3))
    with pytest.raises(IntegrityError, match="signature does not verify"):
        watch()
    with pytest.raises(IntegrityError):  # and again: no caller gets in on the last roster meanwhile
        watch()
    write(_roster(), 4)  # version 1 again: a replay, older than what the pin saw
    with pytest.raises(IntegrityError, match="older than version 2"):
        watch()
    path.write_text(json.dumps(r.sign(replace(_roster(), version=5), authority, valid_days=1.5 / 86400)))
    os.utime(path, ns=(5, 5))
    assert "hospital-a" in watch().of_role(DATA_OWNER)
    time.sleep(2)  # nobody renewed it: a revocation could be hiding behind it
    with pytest.raises(IntegrityError, match="expired"):
        watch()


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["dealer", "model-owner"])
def test_a_party_process_killed_mid_inference_is_a_clear_error_within_the_timeout(victim: str) -> None:
    """The three parties as processes (what `primia infer --encrypted` starts): kill one while the data owner
    computes, and the data owner ends with an error naming it, well inside the timeout, instead of hanging."""
    import multiprocessing as mp

    from primia.smpc.local_service import Source, local_parties

    x = torch.rand(1, 1, 64, 64)
    with local_parties(Source(seeded="resnet18", size=64), timeout_s=15) as (me, parties, where):
        def kill() -> None:
            time.sleep(1.0)
            for p in mp.active_children():
                if p.name == f"primia-smpc-{victim}":
                    p.kill()

        threading.Thread(target=kill, daemon=True).start()
        started = time.monotonic()
        with pytest.raises(LinkError, match=f"{victim} (disconnected|ended the session)"):
            infer_batch(lambda c: x, me, parties, where, 15)
        assert time.monotonic() - started < 12


def test_infer_names_bad_input_in_one_line(tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from primia.cli import app
    from tests.helpers import assert_one_line_error

    image = tmp_path / "scan.png"
    image.write_bytes(b"not checked before a session")
    run = CliRunner()
    base = ["infer", "--encrypted", "--model", "models:/brain@champion"]
    assert_one_line_error(run.invoke(app, [*base, str(tmp_path / "missing.png")]), "images: no such file")
    assert_one_line_error(run.invoke(app, [*base, "--model-owner", "mo=127.0.0.1:1", str(image)]),
                          "needs a dealer (NAME=HOST:PORT) and the hospital")
    assert_one_line_error(run.invoke(app, [*base, "--model-owner", "mo=nowhere", "--dealer", "d=127.0.0.1:2",
                                           "--hospital", "h", "--keys-dir", str(tmp_path), str(image)]),
                          "no hospital identity at")


def _folder(tmp_path: Any, n: int) -> list[Any]:
    from primia.data.synthetic import make_synthetic, write_image_folder

    write_image_folder(make_synthetic(n, 2, 32, seed=3), tmp_path)
    return sorted(f for f in tmp_path.rglob("*.png"))


def test_sessions_follow_the_model_owners_batch_limit_and_stop_if_its_model_changes(tmp_path: Any) -> None:
    from dataclasses import replace as swap

    from primia.smpc import client

    files = _folder(tmp_path, 5)
    served = Served(SERVED.model, swap(SERVED.card, max_batch=2))
    with _servers(served=served) as where:
        preds, card, figures = client.encrypted(files, _me("hospital-a"), PARTIES, where, batch=16)
        assert len(figures) == 3 and card.max_batch == 2 and len(preds) == 5  # 2 + 2 + 1
        with pytest.raises(LinkError, match="takes 1 to 2"):
            infer_batch(lambda c: _images(3), _me("hospital-a"), PARTIES, where, TIMEOUT)

        def moved(n: int, info: Any) -> None:  # the alias moves after the first session
            served.card = swap(served.card, source="models:/other/9")

        with pytest.raises(Exception, match="now serves models:/other/9, not seeded:small_cnn as for the first 2"):
            client.encrypted(files, _me("hospital-a"), PARTIES, where, batch=16, on_batch=moved)


def test_a_server_closes_connections_beyond_its_caller_limit() -> None:
    from primia.smpc.server import Server

    server = Server(("127.0.0.1", 0), _me("mo"), PARTIES, lambda p: p.of_role(DATA_OWNER), lambda link: "done",
                    TIMEOUT, max_callers=2)
    threading.Thread(target=server.serve, daemon=True).start()
    try:
        idle = [socket.create_connection(server.address) for _ in range(2)]  # each holds a caller thread
        time.sleep(0.3)
        extra = socket.create_connection(server.address)
        extra.settimeout(5)
        assert extra.recv(1) == b""  # closed at once, not left waiting
        for sock in idle:
            sock.close()
    finally:
        server.stop()
