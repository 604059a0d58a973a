"""Known answers and properties of the secure-aggregation building blocks: PRG, fixed point, Shamir,
neighbour graph, share boxes."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from primia.errors import ConfigError
from primia.secure import graph, prg, shamir
from primia.secure.agreement import Context, TamperedShareError, open_share, pair_seed, raw_public, seal_share
from primia.secure.fixedpoint import FixedPoint, frac_bits_for, signed


def test_prg_is_aes256_ctr_known_answer() -> None:
    # FIPS-197 style known answer: AES-256 with the all-zero key encrypts the zero block to dc95c078...
    assert prg.expand(bytes(32), 4, 32).tobytes().hex() == "dc95c078a2408989ad48a21492842087"
    assert prg.expand(bytes(32), 2, 64).tobytes().hex() == "dc95c078a2408989ad48a21492842087"


def test_prg_is_deterministic_per_seed_and_scratch_gives_the_same_mask() -> None:
    a, b = prg.expand(b"a" * 32, 1000, 32), prg.expand(b"b" * 32, 1000, 32)
    assert np.array_equal(a, prg.expand(b"a" * 32, 1000, 32)) and not np.array_equal(a, b)
    assert np.array_equal(a, prg.expand(b"a" * 32, 1000, 32, prg.scratch_for(1000, 32)))
    with pytest.raises(ValueError, match="32 bytes"):
        prg.expand(b"short", 10, 32)
    with pytest.raises(ValueError, match="32 or 64"):
        prg.expand(b"a" * 32, 10, 16)


def test_masks_cancel_modulo_the_ring() -> None:
    acc = np.arange(100, dtype=np.uint32)
    prg.add_mask(acc, b"s" * 32, 1)
    assert not np.array_equal(acc, np.arange(100, dtype=np.uint32))
    prg.add_mask(acc, b"s" * 32, -1)
    assert np.array_equal(acc, np.arange(100, dtype=np.uint32))


@given(bits=st.sampled_from([32, 64]), hospitals=st.integers(1, 1000), examples=st.integers(1, 100_000),
       clip=st.floats(0.01, 100))
def test_frac_bits_keep_the_worst_sum_below_half_the_ring(bits: int, hospitals: int, examples: int,
                                                          clip: float) -> None:
    try:
        f = frac_bits_for(bits, hospitals, examples, clip)
    except ConfigError as exc:
        assert "use bits: 64" in str(exc)
        return
    assert hospitals * examples * clip * 2.0**f < 2.0 ** (bits - 1)


def test_ring_too_small_is_a_config_error_that_names_the_fix() -> None:
    with pytest.raises(ConfigError, match="use bits: 64"):
        frac_bits_for(32, 1000, 1_000_000, 10.0)


@given(values=st.lists(st.floats(-2, 2), min_size=1, max_size=50), weight=st.integers(1, 1000))
def test_fixed_point_round_trip_within_bound(values: list[float], weight: int) -> None:
    fp = FixedPoint(32, frac_bits_for(32, 4, 1000, 1.0), 1.0)
    ring, clipped = fp.encode(np.array(values), weight)
    expect = np.clip(values, -1, 1)
    assert clipped == sum(abs(v) > 1 for v in values)
    assert np.abs(fp.decode(ring, weight) - expect).max() <= fp.bound / weight + 1e-12


def test_negative_sums_wrap_and_come_back() -> None:
    fp = FixedPoint(32, 12, 1.0)
    total = fp.encode(np.array([-0.5]), 3)[0] + fp.encode(np.array([-0.25]), 1)[0]
    assert signed(total)[0] < 0 and fp.decode(total, 4)[0] == pytest.approx((-1.5 - 0.25) / 4, abs=fp.bound)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 9), data=st.data())
def test_shamir_any_t_shares_reconstruct_and_fewer_do_not(n: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(1, n))
    secret = data.draw(st.binary(min_size=32, max_size=32))
    shares = shamir.split(secret, list(range(1, n + 1)), t)
    for subset in itertools.islice(itertools.combinations(shares.values(), t), 10):
        assert shamir.combine(list(subset), t) == secret
    if t > 1:
        with pytest.raises(shamir.ShamirError, match=f"need {t} shares"):
            shamir.combine(list(shares.values())[: t - 1], t)


def test_shamir_known_answers() -> None:
    secret = bytes(range(32))
    one = shamir.split(secret, [1, 2, 3], 1)  # threshold 1: every share is the secret itself
    assert all(s.y == int.from_bytes(secret, "big") for s in one.values())
    # y = s + a*x over the field: two shares give the line back
    two = [shamir.Share(1, 10 + 7), shamir.Share(2, 10 + 14)]
    assert shamir.combine(two, 2) == (10).to_bytes(32, "big")
    assert shamir.Share.from_bytes(two[0].to_bytes()) == two[0]


def test_shamir_rejects_bad_arguments() -> None:
    with pytest.raises(shamir.ShamirError, match="distinct"):
        shamir.split(bytes(32), [1, 1], 1)
    with pytest.raises(shamir.ShamirError, match="threshold"):
        shamir.split(bytes(32), [1, 2], 3)


@pytest.mark.parametrize("n", [3, 9, 10, 40, 100])
def test_secagg_plus_graph_is_symmetric_regular_and_logarithmic(n: int) -> None:
    parties = [f"h{i:03d}" for i in range(n)]
    k = graph.auto_degree(n)
    g = graph.neighbours(parties, k, seed=7)
    assert all(len(v) == k and p not in v for p, v in g.items())
    assert all(p in g[q] for p, v in g.items() for q in v)
    assert k == n - 1 if n <= 8 else k <= 2 * math.ceil(math.log2(n)) + 1
    assert graph.neighbours(parties, k, seed=7) == g  # everyone recomputes the same graph


def test_threshold_is_a_majority_of_the_neighbourhood() -> None:
    assert graph.threshold(3, 0.5) == 2 and graph.threshold(9, 0.5) == 5 and graph.threshold(2, 0.5) == 2


def test_pairwise_seeds_agree_and_bind_round_and_pair() -> None:
    a, b = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    ctx = Context("fed", 3)
    ab = pair_seed(ctx, "a", a, "b", raw_public(b))
    assert ab == pair_seed(ctx, "b", b, "a", raw_public(a))
    assert ab != pair_seed(Context("fed", 4), "a", a, "b", raw_public(b))


def test_share_box_opens_only_untampered_for_its_recipient_and_round() -> None:
    a, b = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    ctx = Context("fed", 1)
    box = seal_share(ctx, "a", a, "b", raw_public(b), b"share")
    assert open_share(ctx, "a", raw_public(a), "b", b, box) == b"share"
    flipped = dict(box, ct=box["ct"][:-8] + ("AAAAAAAA" if box["ct"][-8:] != "AAAAAAAA" else "BBBBBBBB"))
    with pytest.raises(TamperedShareError, match="AES-GCM tag"):
        open_share(ctx, "a", raw_public(a), "b", b, flipped)
    with pytest.raises(TamperedShareError):
        open_share(Context("fed", 2), "a", raw_public(a), "b", b, box)  # replayed into another round
