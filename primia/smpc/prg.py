"""A cryptographic stream of int64 words from a 32-byte seed (AES-256 in counter mode).

The dealer and one party expand the same seed to the same words, so that party's share of the dealer's
randomness costs 32 bytes to hand over instead of the tensors themselves. torch's own generators are not
cryptographic and must not be used for shares.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SEED_BYTES = 32


def new_seed() -> bytes:
    return os.urandom(SEED_BYTES)


class Stream:
    """Successive words of one seed's keystream."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_BYTES:
            raise ValueError(f"PRG seed must be {SEED_BYTES} bytes, got {len(seed)}")
        self._enc = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
        self.words = 0  # how many words this stream has given out

    def int64(self, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
        n = int(np.prod(shape)) if len(shape) else 1
        raw = self._enc.update(bytes(8 * n))
        self.words += n
        return torch.from_numpy(np.frombuffer(raw, dtype=np.int64).copy()).reshape(shape)

    def bits(self, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
        """Uniform 0/1 int64 (one word of keystream per bit: simple, and bits are few)."""
        return self.int64(shape) & 1
