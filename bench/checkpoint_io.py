"""`primia bench checkpoint`: the cost of encryption on a ResNet-18-sized checkpoint (about 45 MB).

Plain: put/get of the safetensors bytes through the same ObjectStore. Encrypted: the real path
(seal = AES-256-GCM + wrapped data key + BLAKE3 digest, put with the header; get, verify, decrypt, check).
Both against the live S3 server, interleaved in the same run; medians over `repeats`.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from primia import runtime
from primia.models.factory import build_model
from primia.store import weights as wcodec
from primia.store.checkpoints import CheckpointStore


def _timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def bench_checkpoint(repeats: int = 9) -> dict[str, Any]:
    payload = wcodec.encode(wcodec.state_to_numpy(build_model("resnet18", num_classes=3).state_dict()))
    store = runtime.checkpoints(f"bench-ckpt-{int(time.time())}")
    try:
        return _measured(payload, store, repeats)
    finally:  # each run wrote 2 x repeats x 45 MB: it would pile up in the local server's volume
        for key in {o.key for o in store.store.list(store.prefix, versions=True)}:
            store.store.remove_all_versions(key)


def _measured(payload: bytes, store: CheckpointStore, repeats: int) -> dict[str, Any]:
    s3 = store.store
    plain_put, plain_get, enc_put, enc_get, gcm = [], [], [], [], []
    key = AESGCM(AESGCM.generate_key(bit_length=256))
    for i in range(repeats):
        plain_key = f"{store.prefix}plain/{i}.safetensors"
        t, _ = _timed(lambda k=plain_key: s3.put(k, payload))
        plain_put.append(t)
        t, ref = _timed(lambda r=i: store.put_object(r, "global.safetensors", payload))
        enc_put.append(t)
        t, got = _timed(lambda k=plain_key: s3.get(k))
        plain_get.append(t)
        fresh = type(store)(s3, store.federation_id, store.ring)  # no cache: the real read path
        t, dec = _timed(lambda f=fresh, r=ref: f.get_object(r))
        enc_get.append(t)
        assert got == payload and dec == payload
        t, _ = _timed(lambda: key.encrypt(b"\0" * 12, payload, None))
        gcm.append(t)
    med = statistics.median
    size_mb = len(payload) / 1e6
    return {
        "size_mb": round(size_mb, 2),
        "repeats": repeats,
        "plain_put_s": med(plain_put),
        "encrypted_put_s": med(enc_put),
        "plain_get_s": med(plain_get),
        "encrypted_get_s": med(enc_get),
        "aes_gcm_mb_s": size_mb / med(gcm),
        "overhead_ratio": med(a + b for a, b in zip(enc_put, enc_get, strict=True))
        / med(a + b for a, b in zip(plain_put, plain_get, strict=True)),
        "plain_put_s_range": [min(plain_put), max(plain_put)],
        "encrypted_put_s_range": [min(enc_put), max(enc_put)],
        "plain_get_s_range": [min(plain_get), max(plain_get)],
        "encrypted_get_s_range": [min(enc_get), max(enc_get)],
    }
