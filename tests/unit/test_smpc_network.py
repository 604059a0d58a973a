"""The small CNN on shares (in one process): the logits of the plaintext model, and transcripts that are
uniform noise whatever the image."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from scipy import stats

from primia.models.factory import build_model, set_input_normalization
from primia.smpc.local import run_local
from primia.smpc.network import forward, weights_of
from primia.smpc.ring import decode, encode
from tests.smpc_helpers import meta, share


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = build_model("small_cnn", num_classes=3).eval()
    set_input_normalization(m, 0.4, 0.25)
    return m


def _secure(model: torch.nn.Module, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
    w = {k: share(encode(v)) for k, v in weights_of(model).items()}
    x = share(encode(image))
    inputs = (({k: s[0] for k, s in w.items()}, x[0]), ({k: s[1] for k, s in w.items()}, x[1]))
    dealer = ({k: meta(s[0]) for k, s in w.items()}, meta(x[0]))
    o0, o1, info = run_local(lambda e, a: forward(e, model, a[0], a[1]), inputs, dealer, trace=True)
    return decode(o0 + o1), info


def _words(received: list[torch.Tensor]) -> np.ndarray:
    return torch.cat([t.reshape(-1) for t in received]).numpy().view(np.uint64)


def _uniform(words: np.ndarray) -> None:
    """Bytes uniform over 256 values, and every one of the 64 bit positions set half the time."""
    counts = np.bincount(words.view(np.uint8), minlength=256)
    assert stats.chisquare(counts).pvalue > 1e-4
    ones = np.array([((words >> np.uint64(i)) & np.uint64(1)).sum() for i in range(64)], dtype=np.float64)
    n = words.size
    assert np.all(np.abs(ones - n / 2) < 6 * np.sqrt(n / 4)), "a bit position is biased"


def test_encrypted_logits_match_the_plaintext_model(model: torch.nn.Module) -> None:
    image = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        plain = model(image).double()
    got, info = _secure(model, image)
    assert torch.allclose(got, plain, atol=0.01), (got, plain)
    assert torch.equal(got.argmax(1), plain.argmax(1))
    assert info["dealer_bytes"] > 0 and info["rounds"] > 100


def test_what_each_party_receives_is_uniform_and_the_same_for_two_images(model: torch.nn.Module) -> None:
    dark, bright = torch.zeros(1, 1, 32, 32), torch.ones(1, 1, 32, 32)
    transcripts = []
    for image in (dark, bright):
        _, info = _secure(model, image)
        for received, opened in zip(info["received"], info["opened"], strict=True):
            _uniform(_words(received))  # the peer's shares
            _uniform(_words(opened))  # and what they open with this party's: everything it learns
        transcripts.append(_words(info["received"][0]))  # what the model owner (party 0) saw
    a, b = (np.bincount(t.view(np.uint8), minlength=256) for t in transcripts)
    assert stats.chi2_contingency(np.stack([a, b])).pvalue > 1e-4  # the same distribution for both images
    plain = {encode(dark).reshape(-1)[0].item(), encode(bright).reshape(-1)[0].item()}
    for words in transcripts:  # no image pixel in the clear (the constant images' one value)
        assert not np.isin(words.view(np.int64), list(plain)).mean() > 1e-3
