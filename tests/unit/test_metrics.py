"""Metrics against scikit-learn on the same inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from primia.training.metrics import (
    balanced_accuracy_from_confusion,
    classification_metrics,
    confusion_matrix,
    mcc_from_confusion,
    per_class_rates,
    roc_auc_ovr,
)


@settings(max_examples=80, deadline=None)
@given(k=st.integers(2, 5), n=st.integers(5, 200), seed=st.integers(0, 10_000))
def test_against_sklearn(k: int, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    pred = np.where(rng.random(n) < 0.6, y, rng.integers(0, k, n))
    cm = confusion_matrix(y, pred, k)
    np.testing.assert_array_equal(cm, skm.confusion_matrix(y, pred, labels=list(range(k))))
    assert mcc_from_confusion(cm) == pytest.approx(skm.matthews_corrcoef(y, pred), abs=1e-12)
    present = np.unique(y)
    sens, spec = per_class_rates(cm)
    np.testing.assert_allclose(sens[present], skm.recall_score(y, pred, labels=present, average=None))
    if len(present) == k:
        assert balanced_accuracy_from_confusion(cm) == pytest.approx(skm.balanced_accuracy_score(y, pred))
    for c in range(k):
        tn = np.sum((y != c) & (pred != c))
        fp = np.sum((y != c) & (pred == c))
        if tn + fp:
            assert spec[c] == pytest.approx(tn / (tn + fp))


@settings(max_examples=40, deadline=None)
@given(k=st.integers(2, 4), n=st.integers(10, 150), seed=st.integers(0, 10_000))
def test_roc_auc_against_sklearn(k: int, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])
    logits = rng.normal(size=(n, k)) + np.eye(k)[y] * rng.random()
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    want = skm.roc_auc_score(y, probs[:, 1]) if k == 2 else skm.roc_auc_score(y, probs, multi_class="ovr",
                                                                                average="macro")
    assert roc_auc_ovr(y, probs) == pytest.approx(want, abs=1e-6)


def test_mcc_pools_exactly_by_summing_confusions() -> None:
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 3, 300), rng.integers(0, 3, 300)
    cms = [confusion_matrix(y[i : i + 100], p[i : i + 100], 3) for i in (0, 100, 200)]
    assert mcc_from_confusion(sum(cms)) == pytest.approx(skm.matthews_corrcoef(y, p))


def test_classification_metrics_keys_and_degenerate() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    out = classification_metrics(np.array([0, 1, 1]), probs, ("no", "yes"))
    assert set(out) >= {"accuracy", "balanced_accuracy", "mcc", "roc_auc", "sensitivity_yes", "specificity_no"}
    assert out["sensitivity_yes"] == pytest.approx(0.5)
    assert mcc_from_confusion(np.array([[5, 0], [0, 0]])) == 0.0  # undefined -> 0, as sklearn
    assert np.isnan(roc_auc_ovr(np.array([1, 1]), probs[:2]))
