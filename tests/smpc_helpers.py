"""Shares for the encrypted-inference tests: a cryptographic split of a tensor, and its dealer's stand-in."""

from __future__ import annotations

import torch

from primia.smpc.prg import Stream, new_seed

_GEN = Stream(new_seed())


def share(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x0 = _GEN.int64(x.shape)
    return x0, x - x0


def meta(x: torch.Tensor) -> torch.Tensor:
    """What the dealer runs the program on: the shape only."""
    return torch.empty(x.shape, dtype=torch.int64, device="meta")


def uniform_words(shape: tuple[int, ...]) -> torch.Tensor:
    return _GEN.int64(shape)
