"""A coordinator holds the keys, so it can seal other weights under the very name, federation and round
of a model it already committed: the AES-GCM tag then checks out. What catches the swap is the
ciphertext's digest in the signed manifest, checked on the download as it lands (the real S3 server,
the read path that decrypts in place)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from infra import stack
from primia import runtime
from primia.errors import IntegrityError
from primia.store import envelope
from primia.store import weights as codec
from primia.store.checkpoints import CheckpointStore

pytestmark = pytest.mark.integration


def _weights(value: float) -> dict[str, np.ndarray]:
    return {"conv.weight": np.full(4096, value, dtype=np.float32)}


def test_weights_resealed_under_a_signed_manifest_are_refused(live_stack: stack.StackState) -> None:
    coordinator = runtime.checkpoints(f"swap-{time.time_ns()}")
    ref = coordinator.put_weights(1, _weights(1.0))
    coordinator.commit(1, {"global.safetensors": ref})
    where = envelope.Location(ref.bucket, ref.key, coordinator.federation_id, 1)
    forged = envelope.seal(codec.encode(_weights(9.0)), coordinator.ring, where)  # a valid tag, other weights
    coordinator.store.put(ref.key, bytes(forged.ciphertext), metadata=forged.header)

    reader = CheckpointStore(coordinator.store, coordinator.federation_id, coordinator.ring)  # nothing cached
    committed = reader.latest()
    assert committed is not None
    with pytest.raises(IntegrityError, match="ciphertext digest does not match"):
        reader.get_weights(committed.ref("global.safetensors"))
