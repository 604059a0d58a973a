"""FedAvg: weighted mean with known answers and properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from primia.errors import PrimiaError
from primia.federation.fedavg import weighted_average
from primia.federation.strategy import ClientUpdate, FedAvg, StrategyState


def test_known_answer() -> None:
    a = {"w": np.array([1.0, 2.0], dtype=np.float32), "b": np.array([0.0], dtype=np.float32)}
    b = {"w": np.array([3.0, 6.0], dtype=np.float32), "b": np.array([4.0], dtype=np.float32)}
    out = weighted_average([a, b], [1, 3])
    np.testing.assert_allclose(out["w"], [2.5, 5.0])
    np.testing.assert_allclose(out["b"], [3.0])
    assert out["w"].dtype == np.float32


def test_sample_weighting_not_batch_weighting() -> None:
    # 10 samples vs 30 samples: a batch count (1 vs 1 at batch 32) would give 0.5; samples give 0.25
    out = weighted_average([{"x": np.array([1.0])}, {"x": np.array([0.0])}], [10, 30])
    assert out["x"][0] == pytest.approx(0.25)


def test_integer_buffers_round() -> None:
    out = weighted_average([{"n": np.array([1], dtype=np.int64)}, {"n": np.array([4], dtype=np.int64)}], [1, 1])
    assert out["n"].dtype == np.int64 and out["n"][0] == 2  # 2.5 rounds to even


@settings(max_examples=50, deadline=None)
@given(
    values=st.lists(st.lists(st.floats(-100, 100), min_size=3, max_size=3), min_size=1, max_size=8),
    data=st.data(),
)
def test_properties(values: list[list[float]], data: st.DataObject) -> None:
    counts = data.draw(st.lists(st.integers(1, 1000), min_size=len(values), max_size=len(values)))
    ups = [{"t": np.asarray(v, dtype=np.float64)} for v in values]
    out = weighted_average(ups, counts)["t"]
    arr = np.asarray(values)
    assert np.all(out >= arr.min(axis=0) - 1e-9) and np.all(out <= arr.max(axis=0) + 1e-9)
    np.testing.assert_allclose(out, np.average(arr, axis=0, weights=counts), atol=1e-9)
    same = weighted_average([ups[0]] * len(ups), counts)["t"]
    np.testing.assert_allclose(same, arr[0], atol=1e-9)


def test_errors() -> None:
    with pytest.raises(PrimiaError, match="zero updates"):
        weighted_average([], [])
    with pytest.raises(PrimiaError, match="positive num_examples"):
        weighted_average([{"x": np.zeros(1)}], [0])
    with pytest.raises(PrimiaError, match="different tensor names"):
        weighted_average([{"x": np.zeros(1)}, {"y": np.zeros(1)}], [1, 1])
    with pytest.raises(PrimiaError, match="shape"):
        weighted_average([{"x": np.zeros(1)}, {"x": np.zeros(2)}], [1, 1])


def test_strategy_interface() -> None:
    ups = [ClientUpdate("a", {"x": np.array([2.0])}, 1), ClientUpdate("b", {"x": np.array([4.0])}, 1)]
    new, state = FedAvg().aggregate(1, {"x": np.array([0.0])}, ups, StrategyState())
    assert new["x"][0] == 3.0 and state.step == 1
