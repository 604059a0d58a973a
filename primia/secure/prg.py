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
CHUNK_BYTES = 1 << 18  # 256 KiB: a chunk of the vector and of the keystream stay in L2 together
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
    enc.update_into(_zeros(nbytes), memoryview(buf).cast("B"))  # type: ignore[arg-type]
    return buf[:count]


_ZERO = bytearray()


def _zeros(nbytes: int) -> memoryview:
    """A shared read-only run of zero bytes (allocating and faulting in fresh zeros costs as much as AES)."""
    global _ZERO
    if len(_ZERO) < nbytes:
        _ZERO = bytearray(nbytes)
    return memoryview(_ZERO)[:nbytes]


def scratch_for(count: int, bits: int) -> np.ndarray:
    dtype = np.dtype(ring_dtype(bits))
    return np.empty(count + _PAD_BYTES // dtype.itemsize, dtype=dtype)


def add_mask(acc: np.ndarray, seed: bytes, sign: int = 1) -> None:
    """acc += sign * PRG(seed), in place, modulo 2^bits (numpy's unsigned arithmetic wraps)."""
    apply_masks(acc, [(seed, sign)])


def apply_masks(acc: np.ndarray, masks: list[tuple[bytes, int]], chunk: int = CHUNK_BYTES) -> None:
    """acc += sum of sign * PRG(seed) over `masks`, in place, modulo 2^bits.

    Works chunk by chunk: each mask's keystream for a chunk is added while both sit in the CPU cache,
    so the vector is read and written once however many masks there are, and the cost is the PRG's."""
    if not acc.flags.c_contiguous or acc.ndim != 1:
        raise ValueError("masks apply to a contiguous 1-D ring vector")
    for seed, _ in masks:
        if len(seed) != SEED_BYTES:
            raise ValueError(f"PRG seed must be {SEED_BYTES} bytes, got {len(seed)}")
    itemsize = acc.dtype.itemsize
    step = max(1, chunk // itemsize)
    encs = [(Cipher(algorithms.AES(seed), modes.CTR(_NONCE)).encryptor(), sign) for seed, sign in masks]
    buf = np.empty(step + _PAD_BYTES // itemsize, dtype=acc.dtype)
    out = memoryview(buf).cast("B")  # type: ignore[arg-type]
    zeros = memoryview(bytes(step * itemsize))
    for lo in range(0, acc.size, step):
        part = acc[lo:lo + step]
        n = part.size
        for enc, sign in encs:  # each encryptor continues its own counter from the previous chunk
            enc.update_into(zeros[: n * itemsize], out)
            (np.add if sign >= 0 else np.subtract)(part, buf[:n], out=part)
