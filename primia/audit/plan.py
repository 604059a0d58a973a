"""The audit plan of a round from the federation's config: the threat model the coordinator can
reconstruct from what it knows (config, the round's hospitals and their pooled sample count), and the
canary training of the one-run DP check under the same DP settings."""

from __future__ import annotations

from dataclasses import dataclass

from primia.audit.canaries import CanaryTraining
from primia.audit.round_audit import AuditPlan
from primia.audit.threat import ThreatModel
from primia.config import FederationConfig
from primia.errors import ConfigError
from primia.privacy.accounting import plan_noise
from primia.privacy.client_dp import mechanism
from primia.privacy.dpsgd import sample_rate, steps_per_round


@dataclass(frozen=True)
class RoundFacts:
    """What the `primia.round.completed` event says of the round."""

    hospitals: int
    num_examples: int  # pooled training samples of the round's hospitals
    secure_aggregation: bool
    parameters: int  # the model's parameter count (client-level DP's plan depends on it)


def noise_multiplier(cfg: FederationConfig, per_hospital: int, parameters: int) -> float:
    """The federation's planned noise (a hospital with a stricter budget of its own adds more: the audit
    takes the least-protected case)."""
    p = cfg.privacy
    if p.mode == "off":
        return 0.0
    if p.mode == "client":
        return float(mechanism(cfg, parameters).noise_multiplier)
    if p.noise_multiplier:
        return float(p.noise_multiplier)
    b, rounds = cfg.training.batch_size, p.planned_rounds or cfg.rounds
    return plan_noise(p.target_epsilon, p.delta, sample_rate(per_hospital, b),
                      rounds * steps_per_round(per_hospital, b, cfg.training.local_epochs), p.accountant)


def audit_plan(cfg: FederationConfig, facts: RoundFacts, audit_images: int, seed: int) -> tuple[AuditPlan, list[str]]:
    """The plan, and what had to be cut from the real round to fit the coordinator's audit images."""
    per_hospital = max(1, facts.num_examples // max(facts.hospitals, 1))
    t, p = cfg.training, cfg.privacy
    batch = min(t.batch_size, per_hospital)
    secure = facts.hospitals if facts.secure_aggregation and facts.hospitals > 1 else 0
    real_steps = steps_per_round(per_hospital, batch, t.local_epochs)
    fit = max(1, audit_images // (batch * max(secure, 1)))
    steps = min(real_steps, fit)
    cut = [f"simulated {steps} of the {real_steps} local steps (the audit set holds {audit_images} images)"] \
        if steps < real_steps else []
    sigma = noise_multiplier(cfg, per_hospital, facts.parameters)
    clip = p.max_grad_norm if p.mode == "sample" else p.clip_norm / t.lr  # client: the update's bound, as a gradient
    threat = ThreatModel(batch_size=batch, local_steps=steps, lr=t.lr, dp=p.mode, clip=clip, noise_multiplier=sigma)
    a = cfg.audit
    canary = CanaryTraining(epochs=t.local_epochs, batch_size=batch, lr=t.lr, dp=p.mode != "off",
                            clip=p.max_grad_norm, noise_multiplier=sigma if p.mode == "sample" else 0.0,
                            delta=p.delta, accountant=p.accountant) if a.canaries else None
    if canary is not None and p.mode == "client":
        canary = None
        cut.append("one-run DP check skipped: client-level DP protects whole updates, not the canaries' samples")
    return AuditPlan(threat, secure, a.attack_images, steps=a.steps, restarts=a.restarts,
                     time_budget_s=a.time_budget_s, canaries=a.canaries, canary_training=canary, seed=seed), cut


def membership_hospitals(cfg: FederationConfig, round_hospitals: tuple[str, ...], known: set[str]
                         ) -> tuple[tuple[str, ...], list[str]]:
    """The hospitals asked for the membership audit this round (all of the round's, embedded or on their
    agents), and what was not run and why. `known`: the config's hospitals (embedded) or the signed
    roster's (distributed); a round naming another is an error, not a hospital to ask."""
    if not cfg.audit.membership:
        return (), ["membership audit: off in the federation's config"]
    unknown = sorted(set(round_hospitals) - known)
    if unknown:
        raise ConfigError(f"privacy audit: the round names hospitals the federation does not know: "
                          f"{', '.join(unknown)} (expected some of {', '.join(sorted(known))})")
    return round_hospitals, []
