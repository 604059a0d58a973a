"""`primia bench secagg`: what secure aggregation costs, against baselines measured in the same run.

In memory (all protocol steps, signatures and share boxes included):
  client_mask_s    median over clients of advertise + share + mask (key agreement, Shamir, PRG masks)
  prg_floor_s      the same client's mask expansions with the PRG alone (self mask + one per neighbour)
  server_unmask_s  the coordinator's sum of masked vectors, share reconstruction and mask removal
  plain_aggregate_s the coordinator's plain weighted FedAvg of the same float32 updates
Through the live object store (needs `primia stack up`), one round without training:
  plain_round_s    every client uploads its float32 update (encrypted store), the coordinator
                   downloads and averages them
  secure_round_s   every client runs the protocol through the store, the coordinator unmasks the sum
Scaling: client_mask_s for growing client counts (SecAgg+ graph) on a smaller vector.
"""

from __future__ import annotations

import functools
import statistics
import time
from typing import Any

import numpy as np

from primia.config import SecureAggregationConfig
from primia.federation.fedavg import weighted_average
from primia.secure import inmemory, prg
from primia.secure.fixedpoint import FixedPoint
from primia.secure.protocol import Client, Floors, Params
from primia.secure.transport import Channel, Coordinator, Deadlines, HospitalSide
from primia.threads import run_all


def _updates(clients: int, params: int, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 0.01, params).astype(np.float32)
    names = [f"c{i:03d}" for i in range(clients)]
    return {n: base + np.float32(i) * 1e-4 for i, n in enumerate(names)}, {n: 100 + i for i, n in enumerate(names)}


def _vectors(sa: SecureAggregationConfig, updates: dict[str, np.ndarray], counts: dict[str, int]
             ) -> dict[str, np.ndarray]:
    fp = FixedPoint(sa.bits, sa.frac_bits, sa.clip)
    return {n: np.concatenate([fp.encode(u, counts[n])[0], fp.encode_int(np.array([counts[n]]))])
            for n, u in updates.items()}


def _client_mask_s(run: inmemory.Run) -> list[float]:
    return [sum(t.get(k, 0.0) for k in ("advertise", "share", "mask")) for t in run.client_s.values()]


def _prg_floor_s(params: Params, length: int) -> float:
    """The fastest expansion of the keystreams one client needs (its self mask and one mask per neighbour):
    chunk by chunk into one cache-sized buffer, as masking works, with nothing added. Expanding into a
    full-length buffer instead is slower than masking itself (client_over_floor 0.56: not a floor)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    total = length * np.dtype(prg.ring_dtype(params.bits)).itemsize
    zeros, out = memoryview(bytes(prg.CHUNK_BYTES)), bytearray(prg.CHUNK_BYTES + 16)
    start = time.perf_counter()
    for i in range(params.k + 1):
        enc = Cipher(algorithms.AES(bytes([i]) * 32), modes.CTR(bytes(16))).encryptor()
        for lo in range(0, total, prg.CHUNK_BYTES):
            enc.update_into(zeros[: min(prg.CHUNK_BYTES, total - lo)], out)
    return time.perf_counter() - start


def in_memory(clients: int, params: int, repeats: int) -> dict[str, Any]:
    sa = SecureAggregationConfig(max_hospitals=max(16, clients))
    updates, counts = _updates(clients, params)
    vectors = _vectors(sa, updates, counts)
    masks, unmasks, floors, plains = [], [], [], []
    p = Params("bench", 1, "s", tuple(sorted(vectors)), params + 1, sa.bits)
    for r in range(repeats):
        p = Params("bench", 1, f"s{r}", tuple(sorted(vectors)), params + 1, sa.bits)
        run = inmemory.run(p, vectors)
        masks.append(statistics.median(_client_mask_s(run)))
        unmasks.append(run.server_s)
        floors.append(_prg_floor_s(p, params + 1))
        start = time.perf_counter()
        weighted_average([{"w": u} for u in updates.values()], list(counts.values()))
        plains.append(time.perf_counter() - start)
    mask_s, floor_s = statistics.median(masks), statistics.median(floors)
    return {"clients": clients, "params": params, "neighbours": p.k, "threshold": p.threshold, "ring_bits": sa.bits,
            "client_mask_s": round(mask_s, 4), "client_mask_s_spread": [round(min(masks), 4), round(max(masks), 4)],
            "server_unmask_s": round(statistics.median(unmasks), 4), "bytes_per_client": (params + 1) * sa.bits // 8,
            "plain_bytes_per_client": params * 4, "plain_aggregate_s": round(statistics.median(plains), 4),
            "prg_floor_s": round(floor_s, 4), "client_over_floor": round(mask_s / floor_s, 3)}


def scaling(counts: tuple[int, ...], params: int) -> dict[str, float]:
    out = {}
    for n in counts:
        sa = SecureAggregationConfig(max_hospitals=max(16, n))
        updates, weights = _updates(n, params, seed=n)
        p = Params("bench", 1, f"scale{n}", tuple(sorted(updates)), params + 1, sa.bits)
        run = inmemory.run(p, _vectors(sa, updates, weights))
        out[str(n)] = round(statistics.median(_client_mask_s(run)), 4)
    return out


def _plain_round(store: Any, server_round: int, updates: dict[str, np.ndarray], counts: dict[str, int]) -> float:
    from primia.store import weights as wcodec

    start = time.perf_counter()
    refs: dict[str, Any] = {}

    def upload(n: str) -> None:
        refs[n] = store.put_weights(server_round, {"w": updates[n]}, hospital=n)

    run_all([functools.partial(upload, n) for n in updates])
    got = [wcodec.decode(store.get_object(refs[n]))["w"] for n in sorted(refs)]  # the coordinator's side
    store.put_weights(server_round, weighted_average([{"w": g} for g in got], [counts[n] for n in sorted(refs)]))
    return time.perf_counter() - start


def _secure_round(store: Any, p: Params, sa: SecureAggregationConfig, vectors: dict[str, np.ndarray],
                  keys: tuple[dict[str, Any], Any]) -> float:
    signers, verify = keys
    start = time.perf_counter()
    result: list[Any] = []

    sign_c, check_c = inmemory.coordinator_identity()

    def coordinator() -> None:
        channel = Channel(store, lambda _: store, p, 0.05)
        result.append(Coordinator(channel, verify, sign_c, Deadlines(120.0, time.monotonic() + 300), set).serve())

    def hospital(name: str) -> None:
        client = Client(p, name, signers[name], verify, Floors(min_parties=2, max_parties=len(p.parties)),
                        weights_digest="bench")
        side = HospitalSide(Channel(store, lambda _: store, p, 0.05), client, 120.0, check_c)
        side.prepare()
        side.submit(vectors[name].copy(), sa.max_examples)  # stands in for encoding the update (masked in place)

    run_all([coordinator, *[functools.partial(hospital, n) for n in p.parties]])
    total = result[0].total
    fp = FixedPoint(sa.bits, sa.frac_bits, sa.clip)
    store.put_weights(p.round, {"w": fp.decode(total[:-1], float(total[-1])).astype(np.float32)})
    return time.perf_counter() - start


def through_store(clients: int, params: int, repeats: int) -> dict[str, Any]:
    """One round without training, plain and secure, interleaved, through the live encrypted store."""
    from primia import runtime

    sa = SecureAggregationConfig(max_hospitals=max(16, clients))
    updates, counts = _updates(clients, params)
    vectors = _vectors(sa, updates, counts)
    store = runtime.checkpoints(f"bench-secagg-{int(time.time())}")
    keys = inmemory.identities(sorted(vectors))
    plain, secure = [], []
    for r in range(repeats):
        plain.append(_plain_round(store, 2 * r + 1, updates, counts))
        p = Params(store.federation_id, 2 * r + 2, f"s{r}", tuple(sorted(vectors)), params + 1, sa.bits)
        secure.append(_secure_round(store, p, sa, vectors, keys))
    return {"plain_round_s": round(statistics.median(plain), 3),
            "plain_round_s_spread": [round(min(plain), 3), round(max(plain), 3)],
            "secure_round_s": round(statistics.median(secure), 3),
            "secure_round_s_spread": [round(min(secure), 3), round(max(secure), 3)],
            "secure_over_plain_round": round(statistics.median(secure) / statistics.median(plain), 3)}


def bench_secagg(clients: int, params: int, repeats: int = 3, store_rounds: bool = True,
                 scale_counts: tuple[int, ...] = (10, 25, 50, 100), scale_params: int = 1_000_000) -> dict[str, Any]:
    out = in_memory(clients, params, repeats)
    if store_rounds:
        out |= through_store(clients, params, repeats)
    if scale_counts:
        out["client_mask_s_by_clients"] = scaling(scale_counts, scale_params)
        out["scaling_params"] = scale_params
    return out
