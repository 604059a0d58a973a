"""The privacy model card of a registered version: markdown from mlflow/model_card.md, plus tags.

It is the version's description in the registry (the MLflow UI renders it) and an artifact of the
training run, so a privacy officer reads one page: what the model learned from, how well it works
(with 95% bootstrap intervals), how much privacy it spent, whether it resisted attack, and where
it came from.
"""

from __future__ import annotations

import math
from pathlib import Path
from string import Template
from typing import Any

from primia.config import SecureAggregationConfig
from primia.registry.gates import Gate

TEMPLATE = Path(__file__).resolve().parents[2] / "mlflow" / "model_card.md"
NOT_AUDITED = "not audited"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.4g}"
    return "n/a" if v is None else str(v)


def privacy_section(record: dict[str, Any] | None) -> str:
    if not record:
        return "**No privacy record**: the checkpoint's manifest states none."
    if record.get("mode") == "off":
        return "**Trained without differential privacy** (`privacy.mode: off`): no epsilon guarantee."
    rows = [f"| epsilon (largest hospital) | {_fmt(record.get('epsilon'))} |",
            f"| delta | {_fmt(record.get('delta'))} |",
            f"| target epsilon | {_fmt(record.get('target_epsilon'))} |",
            f"| mode | {record.get('mode')} |",
            f"| mechanism | {record.get('mechanism', '')} |",
            f"| accountant | {record.get('accountant', '')} |"]
    for k in ("max_grad_norm", "clip_norm"):
        if k in record:
            rows.append(f"| {k} | {_fmt(record[k])} |")
    out = ["| | |", "| --- | --- |", *rows, ""]
    hospitals = record.get("hospitals") or {}
    if hospitals:
        out += ["| hospital | epsilon | noise multiplier |", "| --- | --- | --- |",
                *[f"| {h} | {_fmt(r.get('epsilon'))} | {_fmt(r.get('noise_multiplier'))} |"
                  for h, r in sorted(hospitals.items())]]
    out.append("\nEpsilon is per hospital, as each hospital's own accountant reports it up to the selected round; "
               "the record is read from the coordinator-signed manifest of that round.")
    return "\n".join(out)


def metrics_section(ci: dict[str, tuple[float, float, float]], n: int) -> str:
    rows = [f"| {m} | {_fmt(est)} | [{_fmt(lo)}, {_fmt(hi)}] |" for m, (est, lo, hi) in ci.items()]
    return "\n".join([f"{n} images; 95% intervals from a paired percentile bootstrap (1,000 resamples).", "",
                      "| metric | estimate | 95% CI |", "| --- | --- | --- |", *rows])


def audit_section(verdict: str | None, figures: dict[str, Any] | None = None) -> str:
    if verdict is None:
        return f"**{NOT_AUDITED}**: no privacy audit of this version yet; the audit gate fails until one passes."
    rows = [f"| {k} | {_fmt(v)} |" for k, v in sorted((figures or {}).items())]
    return "\n".join([f"Latest audit: **{verdict}**", "", *(["| figure | value |", "| --- | --- |", *rows]
                                                           if rows else [])])


def gates_section(gates: list[Gate] | None) -> str:
    if not gates:
        return "Not evaluated yet: the version is a `challenger` until `promote-model` runs."
    return "\n".join(["| gate | verdict | reason |", "| --- | --- | --- |",
                      *[f"| {g.name} | {'PASS' if g.passed else 'FAIL'} | {g.reason} |" for g in gates]])


def render(fields: dict[str, Any], template: Path = TEMPLATE) -> str:
    """`fields`: the template's placeholders (sections already rendered to markdown)."""
    return Template(template.read_text()).safe_substitute({k: _fmt(v) if not isinstance(v, str) else v
                                                          for k, v in fields.items()})


def secure_section(sa: SecureAggregationConfig, rows: list[dict[str, float]]) -> str:
    """Secure aggregation's settings and how many hospitals were in each round's sum (the round table)."""
    if not sa.enabled:
        return "**Off**: the coordinator saw each hospital's update."
    counts = ", ".join(f"r{int(r['round'])}: {int(r.get('hospitals_accepted', 0))}" for r in rows) or "n/a"
    return (f"SecAgg+ over Z_2^{sa.bits}: the coordinator saw only the sums. Unmasking needs "
            f"floor({sa.threshold_fraction} x (k + 1)) + 1 shares of a neighbourhood of k "
            f"(neighbours: {sa.neighbours or 'complete graph up to 9'}), update clip {sa.clip}.\n\n"
            f"Hospitals in each round's sum: {counts}.")


def data_section(tags: dict[str, str]) -> str:
    """The run's `primia.data.*` fingerprint tags as a table (sums only under secure aggregation)."""
    data = {k[len("primia.data."):]: v for k, v in sorted(tags.items()) if k.startswith("primia.data.")}
    scope = data.pop("scope", "not reported")
    rows = [f"| {k} | {v} |" for k, v in data.items()]
    return "\n".join([f"As reported in the last round: {scope}.", "", "| figure | value |", "| --- | --- |", *rows])
