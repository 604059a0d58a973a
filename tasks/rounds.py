"""Reach the round's hospitals in the configured mode and ask them (the core's one `ask` path)."""

from __future__ import annotations

from primia import runtime
from primia.config import FederationConfig
from primia.federation.liveness import Liveness
from primia.federation.roster import Roster, simulate
from primia.federation.rounds import Asking, Hospitals, RoundAnswers, ask
from primia.messages import CheckpointRef
from tasks import secagg_events
from tasks.dispatch import AgentHospitals
from tasks.hospital import EmbeddedHospitals


def ask_hospitals(cfg: FederationConfig, server_round: int, global_ref: CheckpointRef | None, chosen: list[str],
                  train: bool, stats: bool, absent: tuple[str, ...] = (), validate: bool = True,
                  audit: bool = False) -> RoundAnswers:
    """Embedded: the hospitals are tasks here, signing with keys made for this round; distributed: each
    hospital's agent, checked against the signed roster (re-read on every use: revocations count)."""
    store = runtime.checkpoints(cfg.federation_id)
    _, key = runtime.keyring().signer()
    hospitals: Hospitals
    if runtime.settings().mode == "embedded":
        keys, roster = simulate(chosen, runtime.keyring().public_key_b64(), store.store.bucket)
        hospitals = EmbeddedHospitals(cfg, keys, roster)
        how = Asking(store, lambda _: store, lambda: roster.hospitals, key.sign)
    else:
        roster = runtime.roster()
        secagg_events.listen(cfg.federation_id, "message")
        hospitals = AgentHospitals(cfg, roster, liveness(cfg, roster))
        boxes = {h: runtime.checkpoints(cfg.federation_id, e.bucket) for h, e in roster.hospitals.items()}
        how = Asking(store, boxes.__getitem__, lambda: runtime.roster().hospitals, key.sign,
                     runtime.settings().store.message_poll_s)
    return ask(hospitals, cfg, server_round, global_ref, chosen, train, stats, how, absent=absent, validate=validate,
               audit=audit)


def liveness(cfg: FederationConfig, roster: Roster) -> Liveness:
    buckets = {h: runtime.bucket_store(e.bucket) for h, e in roster.hospitals.items()}
    return Liveness(buckets, cfg.policy.liveness_s)


def reachable(cfg: FederationConfig, names: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """The hospitals whose agents are alive (distributed mode: a fresh heartbeat), and why not the others."""
    if runtime.settings().mode == "embedded":
        return list(names), {}
    live = liveness(cfg, runtime.roster())
    silent = live.silent(names)
    return [n for n in names if n not in silent], {n: live.silence(n) for n in names if n in silent}
