"""A whole encrypted inference session: three parties on loopback TCP, authenticated links, the dealer's
material streamed; and what the others see when a party disappears mid-inference."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from primia.models.factory import build_model, set_input_normalization
from primia.smpc import session as s
from primia.smpc.link import Identity, Link, LinkError, handshake

KEYS = {n: Ed25519PrivateKey.generate() for n in (s.MODEL_OWNER, s.DATA_OWNER, s.DEALER)}
ROSTER = {n: k.public_key() for n, k in KEYS.items()}


def _links(timeout_s: float) -> dict[str, Link]:
    """model-owner <-> data-owner, dealer <-> each, over 127.0.0.1 (the dealer and model owner listen)."""
    out: dict[str, Link] = {}

    def listener() -> tuple[socket.socket, int]:
        srv = socket.create_server(("127.0.0.1", 0))
        return srv, srv.getsockname()[1]

    pairs = [(s.MODEL_OWNER, s.DATA_OWNER), (s.DEALER, s.MODEL_OWNER), (s.DEALER, s.DATA_OWNER)]
    for server, client in pairs:
        srv, port = listener()
        done: dict[str, Any] = {}

        def accept(srv: socket.socket = srv, server: str = server, client: str = client,
                   done: dict[str, Any] = done) -> None:
            conn, _ = srv.accept()
            done["s"] = handshake(conn, Identity(server, KEYS[server]), ROSTER, client, False, timeout_s)

        t = threading.Thread(target=accept)
        t.start()
        c = handshake(socket.create_connection(("127.0.0.1", port)), Identity(client, KEYS[client]), ROSTER,
                      server, True, timeout_s)
        t.join()
        srv.close()
        out[f"{server}>{client}"], out[f"{client}>{server}"] = done["s"], c
    return out


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(1)
    m = build_model("small_cnn", num_classes=2).eval()
    set_input_normalization(m, 0.45, 0.2)
    return m


def _run(model: torch.nn.Module, images: torch.Tensor, dealer: Callable[..., Any] = s.run_dealer,
         timeout_s: float = 20.0) -> dict[str, Any]:
    spec = s.Spec("small_cnn", 2, 1, tuple(images.shape))
    links = _links(timeout_s)
    results: dict[str, Any] = {}

    def party(name: str, fn: Callable[[], Any]) -> None:
        try:
            results[name] = fn()
        except LinkError as exc:
            results[name] = exc
            results[f"{name}-at"] = time.monotonic()

    threads = [threading.Thread(target=party, args=(s.DEALER, lambda: dealer(
                   spec, links[f"{s.DEALER}>{s.MODEL_OWNER}"], links[f"{s.DEALER}>{s.DATA_OWNER}"]))),
               threading.Thread(target=party, args=(s.MODEL_OWNER, lambda: s.run_model_owner(
                   model, spec, links[f"{s.MODEL_OWNER}>{s.DATA_OWNER}"], links[f"{s.MODEL_OWNER}>{s.DEALER}"])))]
    for t in threads:
        t.start()
    party(s.DATA_OWNER, lambda: s.run_data_owner(images, spec, links[f"{s.DATA_OWNER}>{s.MODEL_OWNER}"],
                                                 links[f"{s.DATA_OWNER}>{s.DEALER}"]))
    for t in threads:
        t.join(timeout_s * 3)
    return results


def test_three_parties_over_tcp_give_the_data_owner_the_plaintext_logits(model: torch.nn.Module) -> None:
    images = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        plain = model(images).double()
    out = _run(model, images)
    logits, info = out[s.DATA_OWNER]
    assert torch.allclose(logits, plain, atol=0.01) and info["rounds"] > 100
    assert out[s.DEALER]["dealer_bytes"] > 0 and out[s.MODEL_OWNER]["rounds"] == info["rounds"]


def test_a_dealer_that_disappears_mid_inference_is_a_clear_error_for_both_parties(model: torch.nn.Module) -> None:
    def dying_dealer(spec: s.Spec, mo: Link, do: Link) -> None:
        s.agree(mo, spec)
        s.agree(do, spec)
        mo.send("seed", {"seed": "00" * 32})
        do.send("seed", {"seed": "11" * 32})
        time.sleep(0.5)  # the parties have started; then the dealer is gone
        mo.close()
        do.close()

    started = time.monotonic()
    out = _run(model, torch.rand(1, 1, 32, 32), dealer=dying_dealer, timeout_s=5.0)
    assert isinstance(out[s.DATA_OWNER], LinkError) and "dealer" in str(out[s.DATA_OWNER])
    assert isinstance(out[s.MODEL_OWNER], LinkError)
    assert "data-owner ended the session" in str(out[s.MODEL_OWNER]) or "dealer" in str(out[s.MODEL_OWNER])
    assert time.monotonic() - started < 15  # within the timeout, no hang


def test_a_data_owner_that_disappears_ends_the_model_owners_side(model: torch.nn.Module) -> None:
    spec = s.Spec("small_cnn", 2, 1, (1, 1, 32, 32))
    links = _links(3.0)
    threading.Thread(target=lambda: _swallow(lambda: s.run_dealer(spec, links[f"{s.DEALER}>{s.MODEL_OWNER}"],
                                                                  links[f"{s.DEALER}>{s.DATA_OWNER}"]))).start()
    links[f"{s.DATA_OWNER}>{s.MODEL_OWNER}"].close()  # the data owner is gone before its first message
    started = time.monotonic()
    with pytest.raises(LinkError, match="data-owner"):
        s.run_model_owner(model, spec, links[f"{s.MODEL_OWNER}>{s.DATA_OWNER}"], links[f"{s.MODEL_OWNER}>{s.DEALER}"])
    assert time.monotonic() - started < 10


def _swallow(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except LinkError:
        pass


def test_bench_smpc_runs_the_three_parties_as_processes() -> None:
    import json

    from typer.testing import CliRunner

    from primia.cli import app

    result = CliRunner().invoke(app, ["bench", "smpc", "--model", "small_cnn", "--size", "32", "--images", "2",
                                      "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    assert {"model", "size", "latency_s", "total_s", "plain_latency_s", "bytes_per_party", "rounds",
            "dealer_bytes_per_party", "agreement"} <= set(out)
    assert out["agreement"] == 1.0 and out["max_logit_error"] < 0.01 and out["bytes_per_party"] > 0
    assert out["total_s"] >= out["latency_s"] > 0


def test_links_over_tcp_send_small_messages_at_once() -> None:
    """Nagle's algorithm with delayed ACKs cost 40 ms per protocol round on loopback."""
    links = _links(5.0)
    for link in links.values():
        assert link.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        link.close()
