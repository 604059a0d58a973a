"""Tasks of the per-round privacy audit: open the round from its event, attack what the coordinator could
see, the hospitals' membership audit, the one-run DP check, and the verdict written to MLflow and Prefect."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from mlflow.tracking import MlflowClient
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from primia import progress, runtime
from primia.audit import record
from primia.audit.event import AuditRound, check_round, parse_round_event
from primia.audit.figures import membership_from_answers
from primia.audit.plan import audit_plan, membership_hospitals
from primia.audit.round_audit import canary_check, reconstruction_audit
from primia.audit.verdict import judge, load_audit_policy
from primia.config import FederationConfig
from primia.federation.checkpointing import GLOBAL
from primia.federation.coordinator import load_test_set
from primia.federation.hospital import derive_seed, model_from_weights
from primia.models.factory import count_parameters
from primia.registry.promotion import config_of_run
from primia.tracking.plots import reconstruction_figure
from tasks.model_registry import client as registry_client
from tasks.rounds import ask_hospitals

AUDIT_COMPLETED = "primia.audit.completed"


@dataclass(frozen=True)
class Inputs:
    model: torch.nn.Module
    x: torch.Tensor
    y: torch.Tensor


def _inputs(cfg: FederationConfig, rnd: AuditRound) -> Inputs:
    """The round's model (verified checkpoint) and the coordinator's own audit images, shuffled per round."""
    weights = runtime.checkpoints(rnd.federation_id).get_weights(rnd.checkpoint)
    test = load_test_set(cfg)
    order = np.random.default_rng(derive_seed(cfg.seed, "audit", rnd.server_round)).permutation(len(test))
    return Inputs(model_from_weights(cfg, weights), torch.as_tensor(test.images[order]),
                  torch.as_tensor(test.labels[order]))


@task(name="open-audit", cache_policy=NO_CACHE, persist_result=False)
def open_audit(event: dict[str, Any]) -> tuple[FederationConfig, AuditRound]:
    """The round the event names, and the federation config its training run logged."""
    rnd = parse_round_event(event)
    client = registry_client()
    committed = runtime.checkpoints(rnd.federation_id).load_round(rnd.server_round).ref(GLOBAL)
    check_round(rnd, committed, client.get_run(rnd.run_id).data.tags)
    return config_of_run(client, rnd.run_id, f"audit of {rnd.federation_id} round {rnd.server_round}"), rnd


@task(name="attack-updates", cache_policy=NO_CACHE, persist_result=False,
      task_run_name="attack-updates-round-{rnd.server_round}")
def attack_updates(cfg: FederationConfig, rnd: AuditRound, budget_s: float) -> dict[str, Any]:
    """Gradient inversion against one hospital's update and the securely aggregated mean, simulated on the
    coordinator's audit images; the reconstruction grid goes to the round's run."""
    inp = _inputs(cfg, rnd)
    facts = rnd.facts(count_parameters(inp.model))
    plan, cut = audit_plan(cfg, facts, len(inp.y), derive_seed(cfg.seed, "audit-noise", rnd.server_round))
    rec = reconstruction_audit(inp.model, inp.x, inp.y, plan, max(budget_s, 0.25 * cfg.audit.time_budget_s))
    rows = [(f"{a.view}/{a.objective}: SSIM {a.figures['ssim']:.2f}", a.original[i].numpy(), a.recon[i].numpy())
            for a in rec.attacks for i in range(min(1, len(a.recon)))]
    fig = reconstruction_figure(rows, rec.prior[0].numpy(), f"{rnd.federation_id}, round {rnd.server_round}")
    runtime.tracker(rnd.run_id).log_figure(fig, f"audit/round-{rnd.server_round:04d}/reconstructions.png")
    plt.close(fig)
    return {"figures": rec.figures(), "cut": cut + rec.cut, "threat": plan.threat.describe() + (
        f"; the coordinator sees the mean of {plan.secure_hospitals} updates" if plan.secure_hospitals else
        "; the coordinator sees each update")}


@task(name="membership-audit", cache_policy=NO_CACHE, persist_result=False,
      task_run_name="membership-audit-round-{rnd.server_round}")
def membership_audit(cfg: FederationConfig, rnd: AuditRound) -> tuple[dict[str, float], list[str]]:
    """Each of the round's hospitals attacks the round's model on its own training (members) and held-out
    (non-members) samples - on its agent in distributed mode, as a task here in embedded mode, through the
    rounds' one `ask` path - and answers with the figures only, signed and checked against the roster."""
    known = {h.name for h in cfg.hospitals} if runtime.settings().mode == "embedded" else \
        set(runtime.roster().active())
    hospitals, cut = membership_hospitals(cfg, rnd.hospitals, known)
    if not hospitals:
        return {}, cut
    answers = ask_hospitals(cfg, rnd.server_round, rnd.checkpoint, list(hospitals), train=False, stats=False,
                            audit=True)
    figures, missing = membership_from_answers(answers.outcomes, len(hospitals))
    return figures, cut + missing


@task(name="canary-audit", cache_policy=NO_CACHE, persist_result=False)
def canary_audit(cfg: FederationConfig, rnd: AuditRound) -> dict[str, float]:
    """The one-run DP check with a simulated consenting hospital (audit.canaries canaries)."""
    if not cfg.audit.canaries:
        return {}
    inp = _inputs(cfg, rnd)
    plan, _ = audit_plan(cfg, rnd.facts(count_parameters(inp.model)), len(inp.y),
                         derive_seed(cfg.seed, "canaries", rnd.server_round))
    return canary_check(inp.model, inp.x, inp.y, cfg.model.num_classes, plan)


def _versions_from(client: MlflowClient, rnd: AuditRound) -> list[str]:
    found = client.search_model_versions(f"name = '{rnd.federation_id}' and run_id = '{rnd.run_id}'")
    return [str(v.version) for v in found if v.tags.get("primia.round") == str(rnd.server_round)]


@task(name="record-verdict", cache_policy=NO_CACHE, persist_result=False,
      task_run_name="verdict-round-{rnd.server_round}")
def record_verdict(cfg: FederationConfig, rnd: AuditRound, attacks: dict[str, Any],
                   membership: dict[str, float], canaries: dict[str, float], started: float,
                   cut: list[str]) -> dict[str, Any]:
    """Judge against the audit policy; metrics and tags on the round's run, the verdict on every version
    from the round, a Prefect artifact, and the `primia.audit.completed` event promotion starts from."""
    policy = load_audit_policy(runtime.settings().audit.policy)
    figures = attacks["figures"] | membership | canaries
    figures["audit_s"] = time.perf_counter() - started
    verdict = judge(policy, figures, attacks["cut"] + cut)
    tracker = runtime.tracker(rnd.run_id)
    tracker.log_metrics(record.metrics(verdict), step=rnd.server_round)
    tags = record.run_tags(rnd.server_round, verdict)
    if not verdict.passed and policy.halt_on_fail:
        tags[record.HALT_TAG] = f"round {rnd.server_round}: {verdict.summary()}"[:4000]
    tracker.set_tags(tags)
    tracker.log_dict(record.document(verdict, attacks["threat"]), f"audit/round-{rnd.server_round:04d}/verdict.json")
    client = registry_client()
    versions = _versions_from(client, rnd)
    for v in versions:
        for k, value in record.version_tags(rnd.server_round, verdict).items():
            client.set_model_version_tag(rnd.federation_id, v, k, value)
    extra = {"MLflow run": rnd.run_id, "versions tagged": ", ".join(versions) or "none"}
    create_markdown_artifact(record.markdown(rnd.federation_id, rnd.server_round, verdict, attacks["threat"], extra),
                             key=record.artifact_key(rnd.federation_id, rnd.server_round),
                             description=f"{rnd.federation_id} round {rnd.server_round}: audit {verdict.verdict}")
    for v in versions or [""]:
        resource = f"primia.model.{rnd.federation_id}" if v else f"primia.federation.{rnd.federation_id}"
        emit_event(event=AUDIT_COMPLETED, resource={"prefect.resource.id": resource,
                                                    "prefect.resource.name": rnd.federation_id},
                   payload={"model_name": rnd.federation_id, "version": v, "round": rnd.server_round,
                            "verdict": verdict.verdict, "run_id": rnd.run_id})
    progress.report("audit", round=rnd.server_round, verdict=verdict.verdict, figures=verdict.figures)
    return {"round": rnd.server_round, "verdict": verdict.verdict, "reasons": verdict.reasons,
            "figures": verdict.figures, "cut": verdict.cut, "versions": versions}


@task(name="audit-halt", cache_policy=NO_CACHE, persist_result=False)
def audit_halt_reason(run_id: str) -> str:
    """Set by a FAILed audit when the policy halts training ("" otherwise)."""
    return runtime.tracker().client.get_run(run_id).data.tags.get(record.HALT_TAG, "")
