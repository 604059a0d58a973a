"""`primia bench smpc`: encrypted inference with the three parties as separate processes on loopback TCP.

The model owner and the dealer run in their own (spawned) processes and serve one session per image; the
data owner is this process. Each session takes all of the dealer's material first (`total_s` counts it),
then times the online phase alone (`latency_s`). The parties authenticate with throwaway keys of a bench
roster (the service's keys from the federation's signed roster are not wired in yet). The weights are the
architecture's seeded initialisation with an input standardisation, and the images synthetic: `agreement`
compares the encrypted prediction with the plaintext model's on the same images.
"""

from __future__ import annotations

import multiprocessing as mp
import socket
import statistics
import time
from typing import Any

import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from primia.data.synthetic import make_synthetic
from primia.errors import ConfigError
from primia.models.factory import build_model, set_input_normalization
from primia.smpc import session as s
from primia.smpc.link import Identity, handshake

TIMEOUT_S = 120.0


def _model(name: str) -> torch.nn.Module:
    m = build_model(name, num_classes=2, in_channels=1, seed=0).eval()
    set_input_normalization(m, 0.35, 0.25)
    return m


def _identity(name: str, raw: bytes) -> Identity:
    return Identity(name, Ed25519PrivateKey.from_private_bytes(raw))


def _roster(public: dict[str, bytes]) -> dict[str, Ed25519PublicKey]:
    return {n: Ed25519PublicKey.from_public_bytes(k) for n, k in public.items()}


def _model_owner(spec: dict[str, Any], key: bytes, public: dict[str, bytes], ports: Any, sessions: int) -> None:
    torch.set_num_threads(1)
    me, roster, spec_ = _identity(s.MODEL_OWNER, key), _roster(public), s.Spec.from_dict(spec)
    model = _model(spec_.model)
    srv = socket.create_server(("127.0.0.1", 0))
    ports.put((s.MODEL_OWNER, srv.getsockname()[1]))
    dealer_port = ports.get()
    for _ in range(sessions):
        conn, _ = srv.accept()
        peer = handshake(conn, me, roster, s.DATA_OWNER, False, TIMEOUT_S)
        dealer = handshake(socket.create_connection(("127.0.0.1", dealer_port)), me, roster, s.DEALER, True,
                           TIMEOUT_S)
        s.run_model_owner(model, spec_, peer, dealer)


def _dealer(spec: dict[str, Any], key: bytes, public: dict[str, bytes], ports: Any, sessions: int) -> None:
    torch.set_num_threads(1)
    me, roster, spec_ = _identity(s.DEALER, key), _roster(public), s.Spec.from_dict(spec)
    srv = socket.create_server(("127.0.0.1", 0))
    ports.put((s.DEALER, srv.getsockname()[1]))
    for _ in range(sessions):
        links = {}
        for _ in range(2):
            conn, _ = srv.accept()
            link = handshake(conn, me, roster, frozenset({s.MODEL_OWNER, s.DATA_OWNER}), False, TIMEOUT_S)
            links[link.peer] = link
        s.run_dealer(spec_, links[s.MODEL_OWNER], links[s.DATA_OWNER])


def bench_smpc(model: str, size: int, images: int) -> dict[str, Any]:
    if model not in ("small_cnn", "resnet18"):  # else the model owner's process dies and this one waits it out
        raise ConfigError(f"bench smpc: --model must be small_cnn or resnet18, got {model!r}")
    keys = {n: Ed25519PrivateKey.generate() for n in (s.MODEL_OWNER, s.DATA_OWNER, s.DEALER)}
    raw = {n: k.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()) for n, k in keys.items()}
    public = {n: k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) for n, k in keys.items()}
    spec = s.Spec(model, 2, 1, (1, 1, size, size))
    data = torch.from_numpy(make_synthetic(images, 2, size, seed=5).images)
    ctx = mp.get_context("spawn")
    to_mo, from_servers = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_model_owner, args=(spec.to_dict(), raw[s.MODEL_OWNER], public, _Relay(
                 from_servers, to_mo), images), daemon=True),
             ctx.Process(target=_dealer, args=(spec.to_dict(), raw[s.DEALER], public, _Relay(from_servers, None),
                                               images), daemon=True)]
    for p in procs:
        p.start()
    ports = dict(from_servers.get(timeout=120) for _ in procs)
    to_mo.put(ports[s.DEALER])
    me, roster, plain_model = Identity(s.DATA_OWNER, keys[s.DATA_OWNER]), _roster(public), _model(model)
    rows = []
    try:
        for i in range(images):
            image = data[i:i + 1]
            start = time.perf_counter()
            with torch.no_grad():
                plain = plain_model(image).double()
            plain_s = time.perf_counter() - start
            peer = handshake(socket.create_connection(("127.0.0.1", ports[s.MODEL_OWNER])), me, roster,
                             s.MODEL_OWNER, True, TIMEOUT_S)
            dealer = handshake(socket.create_connection(("127.0.0.1", ports[s.DEALER])), me, roster, s.DEALER,
                               True, TIMEOUT_S)
            logits, info = s.run_data_owner(image, spec, peer, dealer, prefetch=True)
            rows.append({**info, "plain_s": plain_s, "agree": bool(logits.argmax() == plain.argmax()),
                         "max_logit_error": float((logits - plain).abs().max())})
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.terminate()
    med = statistics.median
    return {
        "model": model, "size": size, "images": images,
        "latency_s": med(r["online_s"] for r in rows), "total_s": med(r["total_s"] for r in rows),
        "plain_latency_s": med(r["plain_s"] for r in rows),
        "bytes_per_party": med(r["bytes_sent"] for r in rows),
        "rounds": rows[0]["rounds"], "dealer_bytes_per_party": med(r["dealer_bytes"] for r in rows),
        "agreement": sum(r["agree"] for r in rows) / len(rows),
        "max_logit_error": max(r["max_logit_error"] for r in rows),
        "latency_s_range": [min(r["online_s"] for r in rows), max(r["online_s"] for r in rows)],
        "machine": "2-core CPU", "weights": "seeded initialisation (not the registry's champion yet)",
        "images_from": "synthetic (primia.data.synthetic)",
    }


class _Relay:
    """Ports from the servers to this process, and the dealer's port on to the model owner (picklable)."""

    def __init__(self, up: Any, down: Any) -> None:
        self.up, self.down = up, down

    def put(self, item: Any) -> None:
        self.up.put(item)

    def get(self) -> Any:
        return self.down.get(timeout=120)
