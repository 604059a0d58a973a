"""The two-party protocol's operations against known answers (plain int64 / float64 arithmetic)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from primia.smpc import adder
from primia.smpc.engine import Engine
from primia.smpc.local import run_local
from primia.smpc.ring import decode, encode
from tests.smpc_helpers import meta, share, uniform_words


def two(program, *values: torch.Tensor):  # type: ignore[no-untyped-def]
    """Run program(engine, shares...) on both parties; returns the opened result and the run's info."""
    shares = [share(v) for v in values]
    p0, p1, info = run_local(lambda e, xs: program(e, *xs), (tuple(s[0] for s in shares),
                                                            tuple(s[1] for s in shares)),
                             tuple(meta(v) for v in values))
    return p0 + p1, info


def test_products_of_shared_fixed_point_values() -> None:
    rng = np.random.default_rng(0)
    a, b = torch.from_numpy(rng.normal(size=(4, 5)) * 3), torch.from_numpy(rng.normal(size=(5, 3)))
    got, info = two(lambda e, x, y: e.truncate(e.bilinear(torch.matmul, x, y)), encode(a), encode(b))
    assert torch.allclose(decode(got), a @ b, atol=5 * 2**-16)
    img, w = torch.from_numpy(rng.normal(size=(1, 2, 6, 6))), torch.from_numpy(rng.normal(size=(3, 2, 3, 3)))

    def conv(e: Engine, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return e.truncate(e.bilinear(lambda p, q: F.conv2d(p, q, padding=1), x, k))

    got, _ = two(conv, encode(img), encode(w))
    assert torch.allclose(decode(got), F.conv2d(img, w, padding=1), atol=20 * 2**-16)
    assert info["rounds"] == 1 + 7 + 1  # Beaver, the adder, the shared bits


@pytest.mark.parametrize("f", [16, 12, 1, 40])
def test_the_adder_gives_the_carries_truncation_and_signs_need(f: int) -> None:
    """Known answers, from exact integer sums: the carry out of the low f bits and into bit 62 for any pair of
    addends; the wrap (carry out of bit 63) for pairs whose sum is below 2^63, as the offset makes it."""
    words = [0, 1, -1, 2**63 - 1, -(2**63), 2**62, 2**62 - 1, 2**f - 1, 12345]
    a0 = torch.tensor([x for x in words for _ in words], dtype=torch.int64)
    a1 = torch.tensor([y for _ in words for y in words], dtype=torch.int64)
    a0, a1 = torch.cat([a0, uniform_words((300,))]), torch.cat([a1, uniform_words((300,))])

    def program(e: Engine, a: torch.Tensor) -> Any:
        if e.dealer:  # the gates the parties will ask for, in their order (as Engine.truncate_sign does)
            return [e.source.and_triple(torch.Size((n,))) for n in adder.gate_sizes(a.numel(), f)]
        return adder.carries(a, f, int(e.role), e.and_)

    c0, c1, _ = run_local(program, (a0, a1), meta(a0))
    low, into62, wrap = (x ^ y for x, y in zip(c0, c1, strict=True))
    u0, u1 = (int(v) % 2**64 for v in a0), (int(v) % 2**64 for v in a1)
    for i, (x, y) in enumerate(zip(u0, u1, strict=True)):
        assert int(low[i]) == ((x % 2**f) + (y % 2**f)) >> f, f"carry out of the low {f} bits, pair {i}"
        assert int(into62[i]) == ((x % 2**62) + (y % 2**62)) >> 62, f"carry into bit 62, pair {i}"
        if (x + y) % 2**64 < 2**63:
            assert int(wrap[i]) == (x + y) >> 64, f"wrap, pair {i}"


@pytest.mark.parametrize("magnitude", [2**20, 2**40, 2**61])
def test_truncation_and_sign_are_exact_whatever_the_shares(magnitude: int) -> None:
    x = torch.cat([torch.tensor([0, 1, -1, 2**16, -(2**16), 2**16 - 1, -(2**16) - 1, magnitude - 1, -magnitude]),
                   uniform_words((3000,)) % (2 * magnitude) - magnitude])
    x0 = torch.cat([torch.tensor([2**63 - 1, -(2**63), -1, 0]), uniform_words((x.numel() - 4,))])  # shares at the wrap
    t0, t1, _ = run_local(lambda e, s: e.truncate_sign(s), (x0, x - x0), meta(x))
    t, s = t0[0] + t1[0], t0[1] + t1[1]
    assert torch.equal(t, torch.div(x, 2**16, rounding_mode="floor"))  # not one element off
    assert torch.equal(s, (x >= 0).to(torch.int64))


def test_relu_maximum_and_sign() -> None:
    x = encode(torch.tensor([-3.5, -1e-4, 0.0, 1e-4, 2.25, 1000.0]))
    y = encode(torch.tensor([1.0, -2.0, 0.0, 5.0, 2.25, -1000.0]))
    got, _ = two(lambda e, a: e.relu(a), x)
    assert torch.equal(got, torch.clamp(x, min=0))
    got, _ = two(lambda e, a, b: e.maximum(a, b), x, y)
    assert torch.equal(got, torch.maximum(x, y))
    prod = x * encode(torch.tensor([2.0, 2.0, 2.0, 2.0, -2.0, 0.5]))
    got, _ = two(lambda e, a: e.relu_truncate(a), prod)
    assert torch.equal(got, torch.clamp(torch.div(prod, 2**16, rounding_mode="floor"), min=0))


def test_fixed_point_refuses_what_does_not_fit() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        encode(torch.tensor([2.0**47]))
