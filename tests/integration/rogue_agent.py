"""A compromised hospital's local-training flow, deployed over an honest agent's deployment in tests.

Round 1 answers honestly (and keeps its signed answer); round 2 replays that answer; round 3 signs
an honest answer with a key the registry never saw; round 4 answers honestly after the hospital was
revoked during the round. The coordinator must reject rounds 2-4 with a reason and go on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prefect import flow

from primia import runtime
from primia.federation.agent import answer_dispatch, result_name
from primia.federation.signed import _result_from, sign_result, to_dict


@flow(name="local-training", persist_result=False)
def local_training(server_round: int, global_ref: dict[str, Any] | None, spec: dict[str, Any], nonce: str,
                   train: bool = True, secagg: dict[str, Any] | None = None, stats: bool = False) -> dict[str, Any]:
    agent, store = runtime.settings().hospital, runtime.checkpoints(spec["federation_id"])
    kept = Path(os.environ["PRIMIA_TEST_ROGUE_DIR"]) / "round-1.json"
    if server_round == 4:
        from tasks.registry import revoke

        revoke(str(agent.name))
    signed = answer_dispatch(agent, runtime.identity(), store, server_round, global_ref, spec, nonce, train,
                             stats=stats)
    if server_round == 1:
        kept.write_text(json.dumps(to_dict(signed)))
    elif server_round == 2:  # replay last round's signed answer into this dispatch
        store.put_json(server_round, result_name(str(agent.name), nonce), json.loads(kept.read_text()))
    elif server_round == 3:  # the same answer, signed by a key that is not registered
        forged = sign_result(Ed25519PrivateKey.generate(), spec["federation_id"], _result_from(signed.payload))
        store.put_json(server_round, result_name(str(agent.name), nonce), to_dict(forged))
    return {"round": server_round}
