"""local-training: a hospital's part of one round, run by the hospital's own agent (distributed mode).

Deployed once per hospital work pool (`hospital-NAME`, see prefect.yaml and `primia agent start`);
the coordinator starts it with `run_deployment`, passing references only. Data path and keys come
from the agent's own settings and never leave the hospital.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from primia import runtime
from primia.federation.agent import answer_dispatch, check_plan
from primia.federation.secure_round import hospital_side
from primia.signing import verifier_for
from tasks.registry import list_hospitals


@flow(name="local-training", persist_result=False, log_prints=False)
def local_training(
    server_round: int, global_ref: dict[str, Any] | None, spec: dict[str, Any], nonce: str, train: bool = True,
    secagg: dict[str, Any] | None = None, stats: bool = False,
) -> dict[str, Any]:
    """Validate the incoming global model, train on local data, upload the update (or, with `secagg`,
    take part in secure aggregation: only a masked update leaves), store a signed answer. With `stats`
    (before round 1) it only contributes its image intensity moments for input normalisation."""
    agent, logger = runtime.settings().hospital, get_run_logger()
    check_plan(agent, train, stats, secagg)  # the hospital's privacy floor, before anything is read
    store, identity = runtime.checkpoints(spec["federation_id"]), runtime.identity()
    secure = None
    if secagg is not None and (train or stats):  # peers' keys: checked against the registry, not the coordinator
        keys = {r.hospital: r.signing_public_key for r in list_hospitals() if r.status == "active"}
        secure = hospital_side(store, secagg, str(agent.name), identity.signing.sign, verifier_for(keys))
    signed = answer_dispatch(agent, identity, store, server_round, global_ref, spec, nonce, train, secure,
                             stats)
    p = signed.payload
    logger.info("%s round %d: %d samples, loss %.4f, %.2f s local", p["hospital"], server_round, p["num_examples"],
                p["train_loss"], p["local_s"])
    return {"hospital": p["hospital"], "round": server_round, "digest": signed.digest}
