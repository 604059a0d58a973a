"""The privacy audit's core against known answers: the coordinator's view of an update, label recovery,
leakage metrics, membership figures, the one-run epsilon lower bound, the verdict failing closed, and
the inversion's sensitivity (it recovers an image from a leaky update, and not through DP noise)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from primia.audit.canaries import CanaryTraining, train_plain
from primia.audit.event import check_round, parse_round_event, round_event_payload
from primia.audit.figures import worst_membership
from primia.audit.inversion import InversionConfig, invert, parameter_gradients, recover_labels
from primia.audit.leakage import leakage, match
from primia.audit.membership import rmia_scores, roc_figures
from primia.audit.one_run import audit_canaries, epsilon_lower_bound, p_value
from primia.audit.round_audit import AuditPlan, hospital_membership, reconstruction_audit
from primia.audit.threat import ThreatModel, coordinator_view, per_sample_gradients
from primia.audit.verdict import AuditPolicy, judge, load_audit_policy
from primia.data.synthetic import make_synthetic
from primia.errors import ConfigError, IntegrityError
from primia.messages import CheckpointRef
from primia.models.factory import build_model


def _images(n: int, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    data = make_synthetic(n, 2, size, seed=seed, noise=0.1)
    return torch.as_tensor(data.images), torch.as_tensor(data.labels)


def _mlp(size: int = 32) -> nn.Module:
    torch.manual_seed(0)  # a first layer that sees the pixels: its update leaks them (DLG's setting)
    return nn.Sequential(nn.Flatten(), nn.Linear(size * size, 64), nn.ReLU(), nn.Linear(64, 2))


def test_one_step_batch_one_view_is_the_gradient() -> None:
    model, (x, y) = build_model("small_cnn", seed=0), _images(1)
    view = coordinator_view(model, x, y, ThreatModel(batch_size=1), torch.Generator().manual_seed(0))
    for v, g in zip(view, parameter_gradients(model, x, y), strict=True):
        torch.testing.assert_close(v, g, rtol=1e-3, atol=1e-5)  # through (w - (w - lr g)) / lr in float32


def test_secure_view_is_the_mean_of_the_hospitals_updates() -> None:
    model, (x, y) = _mlp(), _images(6)
    t = ThreatModel(batch_size=2)
    gen = torch.Generator().manual_seed(0)
    mean = coordinator_view(model, x, y, ThreatModel(batch_size=2, hospitals=3), gen)
    parts = [coordinator_view(model, x[2 * h:2 * h + 2], y[2 * h:2 * h + 2], t, gen) for h in range(3)]
    for m, *each in zip(mean, *parts, strict=True):
        torch.testing.assert_close(m, torch.stack(each).mean(0))


def test_dp_clips_each_sample_and_adds_noise_of_the_planned_scale() -> None:
    model, (x, y) = _mlp(), _images(4)
    g = per_sample_gradients(model, {k: v.detach() for k, v in model.named_parameters()}, x, y)
    assert g["1.weight"].shape == (4, 64, 32 * 32)
    clipped = coordinator_view(model, x, y, ThreatModel(batch_size=4, dp="sample", clip=1e-3, noise_multiplier=0.0),
                               torch.Generator())
    assert math.sqrt(sum(float((c ** 2).sum()) for c in clipped)) <= 1e-3 + 1e-9  # mean of 4 clipped gradients
    noisy = coordinator_view(model, x, y, ThreatModel(batch_size=4, dp="sample", clip=1.0, noise_multiplier=2.0),
                             torch.Generator().manual_seed(1))
    flat = torch.cat([n.flatten() for n in noisy])
    assert abs(float(flat.std()) - 2.0 / 4) < 0.02  # sigma * C / batch per coordinate


def test_label_recovery() -> None:
    model, (x, y) = build_model("small_cnn", seed=0), _images(8)
    for i in range(4):
        assert recover_labels(parameter_gradients(model, x[i:i + 1], y[i:i + 1])) == y[i]
    counts = torch.bincount(recover_labels(parameter_gradients(model, x, y), 8), minlength=2)
    assert int(counts.sum()) == 8 and abs(int(counts[1]) - int(y.sum())) <= 2


def test_leakage_known_answers() -> None:
    x, _ = _images(3)
    prior = x.mean(0, keepdim=True)
    same = leakage(x.flip(0), x, prior)  # order does not matter: matched first
    assert same["ssim"] > 0.999 and same["mse"] < 1e-10 and same["rdlv"] > 0
    noise = leakage(torch.rand_like(x), x, prior)
    assert noise["ssim"] < 0.2 and noise["rdlv"] < 0
    r, o = match(x[:1] + 0.01, x)
    torch.testing.assert_close(o, x[:1])


def test_inversion_recovers_a_leaky_update_and_the_audit_fails() -> None:
    """Sensitivity: an unprotected single-image update of a network whose first layer sees the pixels."""
    model, (x, y) = _mlp(), _images(4)
    plan = AuditPlan(ThreatModel(batch_size=1), objectives=("inverting",), steps=200, restarts=2)
    rec = reconstruction_audit(model, x, y, plan, budget_s=30)
    figures = rec.figures()
    assert figures["recon_ssim"] > 0.9, figures
    verdict = judge(AuditPolicy(membership={"required": False}), figures)
    assert verdict.verdict == "FAIL" and any("recon_ssim" in r for r in verdict.reasons)


def test_dp_noise_defeats_the_inversion_and_the_audit_passes() -> None:
    model, (x, y) = _mlp(), _images(4)
    plan = AuditPlan(ThreatModel(batch_size=1, dp="sample", clip=0.1, noise_multiplier=1.0),
                     objectives=("inverting",), steps=200, restarts=1)
    figures = reconstruction_audit(model, x, y, plan, budget_s=30).figures()
    assert figures["recon_ssim"] < 0.3, figures
    assert judge(AuditPolicy(membership={"required": False}), figures).passed


def test_inversion_respects_its_time_budget() -> None:
    model, (x, y) = build_model("small_cnn", seed=0), _images(1)
    target = parameter_gradients(model, x, y)
    rec = invert(model, target, tuple(x.shape), cfg=InversionConfig(steps=100_000, restarts=3, time_budget_s=0.5))
    assert "time budget" in rec.cut and rec.steps_run < 100_000


def test_membership_figures() -> None:
    sep = roc_figures(np.array([2.0, 3.0, 4.0]), np.array([0.0, 1.0]))
    assert sep["auc"] == 1.0 and sep["tpr_at_1pct_fpr"] == 1.0 and sep["members"] == 3.0
    assert sep["auc_lower95"] < 1.0  # 3 against 2 samples prove little
    big = roc_figures(np.arange(200.0) + 200, np.arange(200.0))
    assert big["auc"] == 1.0 and big["auc_lower95"] > 0.99
    rng = np.random.default_rng(0)
    same = roc_figures(rng.normal(size=4000), rng.normal(size=4000))
    assert abs(same["auc"] - 0.5) < 0.03 and same["tpr_at_1pct_fpr"] < 0.03
    with pytest.raises(ValueError, match="members and non-members"):
        roc_figures(np.array([]), np.array([1.0]))
    # RMIA: a sample the target fits better than the references do ranks above the population
    scores = rmia_scores(np.array([0.9, 0.5]), np.array([[0.5, 0.5]]), np.array([0.5, 0.5, 0.5]),
                         np.array([[0.5, 0.5, 0.5]]))
    assert scores.tolist() == [1.0, 0.0]


def test_membership_audit_sees_an_overfit_model() -> None:
    (x, y), (hx, hy) = _images(32, seed=1), _images(64, seed=2)
    model = build_model("small_cnn", seed=0)
    fresh = hospital_membership(model, (x, y), (hx, hy))
    train_plain(model, x, y, CanaryTraining(60, 8, 3e-3, dp=False), torch.Generator().manual_seed(0))
    over = hospital_membership(model, (x, y), (hx, hy))
    assert over["mia_auc"] > 0.8 and over["mia_auc"] > fresh["mia_auc"] + 0.2, (over, fresh)
    assert not judge(AuditPolicy(), _figures() | over).passed


def test_a_class_mix_difference_alone_is_not_membership() -> None:
    """A model that knows nothing of its members but favours class 1: members mostly of class 1 against
    non-members mostly of class 0 would look like leakage without matching them class by class."""
    torch.manual_seed(0)
    biased = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 2))
    with torch.no_grad():
        biased[1].weight.zero_()
        biased[1].bias.copy_(torch.tensor([0.0, 2.0]))
    x, _ = _images(200)
    members = (x[:100], torch.tensor([1] * 90 + [0] * 10))
    heldout = (x[100:], torch.tensor([0] * 90 + [1] * 10))
    figures = hospital_membership(biased, members, heldout)
    assert figures["mia_auc"] < 0.6, figures


def test_tpr_needs_enough_nonmembers_to_be_judged() -> None:
    few = judge(AuditPolicy(), _figures(mia_tpr_at_1pct_fpr=0.5, mia_nonmembers=30.0))
    assert few.passed and any("cannot resolve 1% FPR" in c for c in few.cut)
    assert not judge(AuditPolicy(), _figures(mia_tpr_at_1pct_fpr=0.5, mia_nonmembers=300.0)).passed
    lower = judge(AuditPolicy(), _figures(mia_auc=0.7, mia_auc_lower95=0.6))
    assert lower.passed  # the AUC's 95% lower bound is what the sample shows


def test_one_run_p_value_and_lower_bound() -> None:
    # eps = 0, delta = 0: the guesses are fair coins
    assert p_value(100, 50, 30, 0.0, 0.0) == pytest.approx(float(stats.binom.sf(29, 50, 0.5)))
    assert epsilon_lower_bound(100, 50, 25, 1e-5) == 0.0
    # every one of r guesses right: the bound solves q^r = alpha, q = e^eps / (1 + e^eps) (delta 0)
    q = 0.05 ** (1 / 50)
    assert epsilon_lower_bound(100, 50, 50, 0.0) == pytest.approx(math.log(q / (1 - q)), rel=1e-3)
    assert epsilon_lower_bound(100, 50, 50, 1e-3) < epsilon_lower_bound(100, 50, 50, 0.0)  # delta costs
    with pytest.raises(ValueError):
        p_value(10, 20, 5, 1.0, 0.0)


def test_canary_audit_sees_memorisation_and_not_chance() -> None:
    rng = np.random.default_rng(0)
    coins = rng.random(400) < 0.5
    perfect = audit_canaries(coins.astype(float) + rng.normal(0, 0.01, 400), coins, 1e-5)
    assert perfect.eps_lower_bound > 2.0 and perfect.correct == perfect.guesses
    chance = audit_canaries(rng.normal(size=400), coins, 1e-5)
    assert chance.eps_lower_bound < 0.5


def _figures(**over: float) -> dict[str, float]:
    return {"recon_ssim": 0.1, "recon_psnr": 10.0, "recon_rdlv": -0.5, "mia_auc": 0.52, "mia_tpr_at_1pct_fpr": 0.01,
            "eps_lower_bound": 0.5, "eps_accountant": 8.0} | over


def test_verdict_fails_closed() -> None:
    policy = AuditPolicy()
    assert judge(policy, _figures()).passed
    for over, why in (({"recon_ssim": 0.8}, "recon_ssim"), ({"recon_psnr": 30.0}, "recon_psnr"),
                      ({"recon_rdlv": 1.5}, "recon_rdlv"), ({"mia_auc": 0.9}, "membership AUC"),
                      ({"mia_tpr_at_1pct_fpr": 0.5}, "TPR at 1% FPR"), ({"eps_lower_bound": 9.0}, "DP bug"),
                      ({"recon_ssim": float("nan")}, "not measured")):
        v = judge(policy, _figures(**over))
        assert v.verdict == "FAIL" and why in v.summary(), (over, v.reasons)
    from primia.audit.figures import MEMBERSHIP_KEYS

    report = {k: 0.01 for k in MEMBERSHIP_KEYS} | {"mia_auc": 0.5, "mia_auc_lower95": 0.45, "mia_loss_auc": 0.5,
                                                   "mia_rmia_auc": 0.5, "mia_nonmembers": 40.0}
    silent = judge(policy, _figures() | worst_membership([report], asked=3))
    assert silent.verdict == "FAIL" and "2 of the round's hospitals did not report" in silent.summary()
    missing = {k: v for k, v in _figures().items() if not k.startswith("mia")}
    assert "membership attack not run" in judge(policy, missing).summary()
    assert not judge(policy, {}).passed


def test_audit_policy_file(tmp_path: object) -> None:
    policy = load_audit_policy()
    assert policy.reconstruction.max_rdlv == 1.0 and policy.membership.required
    from pathlib import Path

    bad = Path(str(tmp_path)) / "bad.yaml"
    bad.write_text("reconstruction: {max_ssim: 2}\n")
    with pytest.raises(ConfigError, match="reconstruction.max_ssim"):
        load_audit_policy(bad)


def test_round_event_round_trip_and_bad_fields() -> None:
    ref = CheckpointRef("b", "federations/f/rounds/1/global.safetensors", "ab" * 32, 1)
    payload = round_event_payload("f", 1, ref, "run", "fedavg", ["h1", "h2"], np.int64(120), True)
    rnd = parse_round_event(payload)
    assert rnd.checkpoint == ref and rnd.num_examples == 120 and rnd.hospitals == ("h1", "h2")
    for field, value in (("round", "1"), ("hospitals", []), ("mlflow_run_id", None), ("checkpoint", "x")):
        with pytest.raises(ConfigError, match=field):
            parse_round_event(payload | {field: value})
    with pytest.raises(ConfigError, match="JSON object"):
        parse_round_event("not a dict")


def test_an_event_naming_another_checkpoint_or_run_is_refused() -> None:
    ref = CheckpointRef("b", "federations/f/rounds/2/global.safetensors", "ab" * 32, 2)
    rnd = parse_round_event(round_event_payload("f", 2, ref, "run", "fedavg", ["h1"], 10, True))
    check_round(rnd, ref, {"primia.federation_id": "f"})
    earlier = CheckpointRef("b", "federations/f/rounds/1/global.safetensors", "cd" * 32, 1)
    with pytest.raises(IntegrityError, match="not that round's committed global model"):
        check_round(rnd, earlier, {"primia.federation_id": "f"})
    with pytest.raises(IntegrityError, match="not a training run of f"):
        check_round(rnd, ref, {"primia.federation_id": "other"})


def test_membership_asks_the_rounds_hospitals_and_names_a_stranger() -> None:
    from primia.audit.plan import membership_hospitals
    from primia.config import parse_federation_config

    raw = {"federation_id": "f", "hospitals": [{"name": "h1", "data": {"path": "/x"}}], "test_data": {"path": "/t"}}
    cfg = parse_federation_config(raw)
    assert membership_hospitals(cfg, ("h1",), {"h1", "h2"}) == (("h1",), [])
    with pytest.raises(ConfigError, match="does not know: h9"):
        membership_hospitals(cfg, ("h1", "h9"), {"h1"})
    off = parse_federation_config(raw | {"audit": {"membership": False}})
    assert membership_hospitals(off, ("h1",), {"h1"}) == ((), ["membership audit: off in the federation's config"])
    with pytest.raises(ConfigError, match="audit.canaries"):
        parse_federation_config(raw | {"audit": {"canaries": 1}})


@pytest.mark.slow
def test_inversion_recovers_an_mri_from_the_small_cnn_at_64px_and_the_audit_fails() -> None:
    """Sensitivity on primia's own model: one Br35H image, batch 1, one step, no DP, no secure aggregation.
    The smooth surrogate (ReLU -> sharpening Softplus) is what makes this work: without it, measured SSIM 0.06."""
    from primia.data.br35h import br35h_root
    from primia.data.readers import read_image_folder

    data = read_image_folder(br35h_root(), 64, ("no", "yes"))
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:200]
    x, y = torch.as_tensor(data.images)[order], torch.as_tensor(data.labels)[order]
    plan = AuditPlan(ThreatModel(batch_size=1), objectives=("inverting",), steps=3000, restarts=1)
    figures = reconstruction_audit(build_model("small_cnn", seed=0), x, y, plan, budget_s=180).figures()  # ~25 s idle
    assert figures["recon_ssim"] >= 0.6 and figures["recon_rdlv"] > 1.0, figures
    verdict = judge(AuditPolicy(membership={"required": False}), figures)
    assert verdict.verdict == "FAIL" and any("recon_ssim" in r for r in verdict.reasons)


def test_a_membership_report_is_exactly_finite_figures_in_range() -> None:
    from primia.audit.figures import MEMBERSHIP_KEYS, check_membership_report

    good = {k: 0.5 for k in MEMBERSHIP_KEYS} | {"mia_nonmembers": 40.0}
    assert check_membership_report(good) == good
    for bad, why in (({"mia_auc": float("nan")}, "finite"), ({"mia_auc": 1.5}, r"\[0, 1\]"),
                     ({"mia_nonmembers": 0.0}, "at least 1"), ({"recon_ssim": 0.0}, "exactly"),
                     ({"mia_tpr_at_1pct_fpr": "0.1"}, "finite number")):
        with pytest.raises(ValueError, match=why):
            check_membership_report(good | bad)
    with pytest.raises(ValueError, match="exactly"):
        check_membership_report({k: v for k, v in good.items() if k != "mia_auc"})
    nan_first = judge(AuditPolicy(), _figures(mia_auc=float("nan")))
    assert nan_first.verdict == "FAIL" and "membership AUC" in nan_first.summary()


def test_membership_figures_from_the_answers_name_who_did_not_report() -> None:
    from primia.audit.figures import MEMBERSHIP_KEYS, membership_from_answers
    from primia.federation.policy import ACCEPTED, DROPPED, Outcome
    from primia.messages import HospitalResult

    report = {k: 0.01 for k in MEMBERSHIP_KEYS} | {"mia_auc": 0.6, "mia_nonmembers": 40.0}
    answered = Outcome("a", ACCEPTED, result=HospitalResult("a", 1, 0, None, float("nan"), (), 0.1, report))
    figures, missing = membership_from_answers([answered, Outcome("b", DROPPED, "its agent is offline")], 2)
    assert figures["mia_auc"] == 0.6 and figures["mia_hospitals_missing"] == 1.0
    assert missing == ["membership audit: b did not report (its agent is offline)"]
    assert membership_from_answers([], 0) == ({}, [])
