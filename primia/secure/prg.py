"""Mask expansion with a cryptographic PRG: AES-256 in counter mode over a 256-bit seed.

Flower's SecAgg+ folds its seeds to 32 bits and expands them with numpy's non-cryptographic
generator, so a mask can be brute-forced; here a seed is 32 random (or HKDF-derived) bytes and the
mask is the AES-CTR keystream. Each seed is used for exactly one mask, so a fixed counter block is safe.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SEED_BYTES = 32
_NONCE = bytes(16)  # one mask per key: the counter block never repeats under one key
_PAD_BYTES = 16  # one AES block
_DTYPES = {32: np.uint32, 64: np.uint64}


def ring_dtype(bits: int) -> type[np.unsignedinteger]:
    try:
        return _DTYPES[bits]  # type: ignore[return-value]
    except KeyError:
        raise ValueError(f"ring bits must be 32 or 64, got {bits}") from None


def expand(seed: bytes, count: int, bits: int, scratch: np.ndarray | None = None) -> np.ndarray:
    """`count` uniform elements of Z_2^bits from `seed` (deterministic: the same seed, the same mask).

    `scratch`, when given, is a reusable buffer from `scratch_for` (saves an allocation per mask)."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"PRG seed must be {SEED_BYTES} bytes, got {len(seed)}")
    dtype = np.dtype(ring_dtype(bits))
    buf = scratch_for(count, bits) if scratch is None else scratch
    nbytes = count * dtype.itemsize
    enc = Cipher(algorithms.AES(seed), modes.CTR(_NONCE)).encryptor()
    # keystream = AES-CTR of zeros, written straight into the array's buffer; cryptography wants
    # room for one block more than the input, hence the padded buffer
    enc.update_into(memoryview(bytes(nbytes)), memoryview(buf).cast("B"))  # type: ignore[arg-type]
    return buf[:count]


def scratch_for(count: int, bits: int) -> np.ndarray:
    dtype = np.dtype(ring_dtype(bits))
    return np.empty(count + _PAD_BYTES // dtype.itemsize, dtype=dtype)


def add_mask(acc: np.ndarray, seed: bytes, sign: int = 1, scratch: np.ndarray | None = None) -> None:
    """acc += sign * PRG(seed), in place, modulo 2^bits (numpy's unsigned arithmetic wraps)."""
    mask = expand(seed, acc.size, acc.dtype.itemsize * 8, scratch)
    if sign >= 0:
        np.add(acc, mask, out=acc)
    else:
        np.subtract(acc, mask, out=acc)
