"""How a verdict is written down: tags on the round's training run and on every model version from that
round, and the markdown a privacy officer reads. The promotion gate reads `primia.audit.verdict`."""

from __future__ import annotations

from typing import Any

from primia.audit.verdict import Verdict

VERDICT_TAG, SUMMARY_TAG, ROUND_TAG = "primia.audit.verdict", "primia.audit.summary", "primia.audit.round"
HALT_TAG = "primia.audit.halt"


def artifact_key(federation_id: str, server_round: int) -> str:
    """The Prefect artifact of a round's audit (the round's table names it)."""
    return f"{federation_id}-round-{server_round}-audit"[:60]


def run_tags(server_round: int, verdict: Verdict) -> dict[str, str]:
    """The round's verdict on the training run (one tag pair per round)."""
    return {f"primia.audit.round.{server_round}.verdict": verdict.verdict,
            f"primia.audit.round.{server_round}.summary": verdict.summary()[:4000]}


def round_verdict_tags(run_tags_: dict[str, str], server_round: int) -> dict[str, str]:
    """The version tags of a model selected at `server_round`, from its run's tags ({} if never audited)."""
    verdict = run_tags_.get(f"primia.audit.round.{server_round}.verdict")
    if verdict is None:
        return {}
    return {VERDICT_TAG: verdict, SUMMARY_TAG: run_tags_.get(f"primia.audit.round.{server_round}.summary", ""),
            ROUND_TAG: str(server_round)}


def version_tags(server_round: int, verdict: Verdict) -> dict[str, str]:
    return round_verdict_tags(run_tags(server_round, verdict), server_round)


def document(verdict: Verdict, threat: str) -> dict[str, Any]:
    """verdict.json: what a privacy officer signs off on."""
    return {"verdict": verdict.verdict, "reasons": verdict.reasons, "figures": verdict.figures, "cut": verdict.cut,
            "threat": threat}


def metrics(verdict: Verdict) -> dict[str, float]:
    """MLflow metrics (step = round): every figure, prefixed, and the verdict as 1 (PASS) / 0 (FAIL)."""
    return {f"audit_{k}": float(v) for k, v in verdict.figures.items()} | {"audit_pass": float(verdict.passed)}


def markdown(federation_id: str, server_round: int, verdict: Verdict, threat: str, extra: dict[str, Any]) -> str:
    main = [k for k in ("recon_ssim", "recon_psnr", "recon_rdlv", "mia_auc", "mia_tpr_at_1pct_fpr",
                        "eps_lower_bound", "eps_accountant") if k in verdict.figures]
    lines = [f"# {federation_id}, round {server_round}: privacy audit **{verdict.verdict}**", "",
             f"Threat model: {threat}.", "", verdict.summary(), "", "| figure | value |", "| --- | --- |",
             *[f"| {k} | {verdict.figures[k]:.4g} |" for k in main]]
    if verdict.cut:
        lines += ["", "Cut to fit the time budget or the audit set:", *[f"- {c}" for c in verdict.cut]]
    lines += ["", *[f"{k}: {v}" for k, v in extra.items()]]
    return "\n".join(lines)
