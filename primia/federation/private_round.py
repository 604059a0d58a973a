"""A hospital's differentially private part of a round: the budget that binds it, DP-SGD on its
federation-long account (sample level) and its noisy release (client level).

Both check the budget before anything is trained and store the spent account before anything of the
update leaves the hospital; a round past the budget is declined (PrivacyError naming the budget).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from primia.config import HospitalConfig, LocalSpec
from primia.data.imageset import ImageSet
from primia.errors import PrivacyError
from primia.federation.secure_update import Layout
from primia.privacy.accounting import SampleAccount, check_budget, plan_noise
from primia.privacy.client_dp import ClientAccount, mechanism, privatize
from primia.privacy.dpsgd import grad_sample_mode, sample_rate, steps_per_round, train_private
from primia.privacy.keeper import AccountKeeper
from primia.privacy.skellam import SkellamPlan
from primia.store.weights import Weights
from primia.training.loops import Augmented, make_optimizer


def binding_budget(cfg: LocalSpec, hospital: HospitalConfig, records: int | None) -> tuple[float, float, str]:
    """(epsilon, delta, whose): the federation's budget, or the hospital's own where that is stricter."""
    p = cfg.privacy
    own = hospital.target_epsilon is not None and hospital.target_epsilon < p.target_epsilon
    target = hospital.target_epsilon if own and hospital.target_epsilon is not None else p.target_epsilon
    delta = min(p.delta, hospital.delta or p.delta)
    check_budget(target, delta, records, "privacy" if not own else f"hospital {hospital.name}'s privacy")
    return target, delta, "its own budget" if own else "the federation's budget"


def train_sample_dp(model: torch.nn.Module, data: ImageSet, cfg: LocalSpec, hospital: HospitalConfig,
                    keeper: AccountKeeper | None, seed: int) -> tuple[float, dict[str, float]]:
    """One round of DP-SGD on the hospital's federation-long account: opened (or planned), checked
    against the budget, trained, stored before anything of the update leaves."""
    if keeper is None:
        raise PrivacyError(f"hospital {hospital.name}: privacy.mode sample needs the hospital's privacy account "
                           f"store; refusing to train without one")
    budget = open_budget(keeper, cfg, hospital, len(data))
    account = budget.account
    steps = steps_per_round(len(data), cfg.training.batch_size, cfg.training.local_epochs)
    after = account.epsilon_after(steps)
    if after > budget.target:
        raise PrivacyError(f"hospital {hospital.name}: this round would take its privacy budget to epsilon "
                           f"{after:.3g} > {budget.target:g} (delta {account.delta:g}, {budget.source}); it declines")
    dataset = Augmented(data, cfg.data.augment, seed)
    run = train_private(model, dataset, cfg.training, cfg.privacy, account, make_optimizer(model, cfg.training),
                        grad_sample_mode(cfg.privacy, cfg.model.name), cfg.training.local_epochs)
    account.rounds += 1
    keeper.save(account)  # spent before the update can leave
    return run.loss, {"epsilon": account.epsilon(), "epsilon_next": account.epsilon_after(steps),
                      "delta": account.delta, "noise_multiplier": account.noise}


@dataclass
class ClientRelease:
    """One round's client-level release: the plan, the hospital's account, its budget."""

    plan: SkellamPlan
    account: ClientAccount
    keeper: AccountKeeper
    target: float
    delta: float

    def privatize(self, delta: np.ndarray) -> tuple[np.ndarray, bool]:
        return privatize(self.plan, delta, np.random.default_rng())  # OS entropy: the seed is public

    def spend(self) -> dict[str, float]:
        self.account.rounds += 1
        self.keeper.save(self.account)
        return {"epsilon": self.plan.epsilon(self.account.rounds, self.delta),
                "epsilon_next": self.plan.epsilon(self.account.rounds + 1, self.delta),
                "delta": self.delta, "noise_multiplier": self.plan.noise_multiplier}


def open_client_release(keeper: AccountKeeper | None, cfg: LocalSpec, hospital: HospitalConfig, start: Weights,
                        secure: object | None) -> ClientRelease:
    """Before training: client-level DP needs secure aggregation (its noise is shared) and a budget the
    round does not pass, the hospital's own if stricter."""
    if secure is None:
        raise PrivacyError(f"hospital {hospital.name}: privacy.mode client adds only a share of the noise and was "
                           f"asked for an update in the clear; refusing")
    if keeper is None:
        raise PrivacyError(f"hospital {hospital.name}: privacy.mode client needs the hospital's privacy account "
                           f"store; refusing to train without one")
    target, delta, _ = binding_budget(cfg, hospital, None)
    plan = mechanism(cfg, Layout.of(start, 0).params)
    account = keeper.load_client(cfg.federation_id)
    after = plan.epsilon(account.rounds + 1, delta)
    if after > target:
        raise PrivacyError(f"hospital {hospital.name}: this round would take its privacy budget to epsilon "
                           f"{after:.3g} > {target:g} (delta {delta:g}, client level); it declines")
    return ClientRelease(plan, account, keeper, target, delta)


@dataclass(frozen=True)
class Budget:
    account: SampleAccount
    target: float
    source: str  # whose budget binds: the federation's or the hospital's own


def open_budget(keeper: AccountKeeper, cfg: LocalSpec, hospital: HospitalConfig, n: int) -> Budget:
    """The hospital's account in this federation (stored, or new with its planned noise) and the budget
    that binds it: the federation's, or the hospital's own when that is stricter."""
    p = cfg.privacy
    target, delta, source = binding_budget(cfg, hospital, n)
    account = keeper.load(cfg.federation_id, p.accountant)
    if account is None:
        q = sample_rate(n, cfg.training.batch_size)
        rounds = p.planned_rounds or cfg.rounds
        noise = p.noise_multiplier or plan_noise(p.target_epsilon, delta, q, rounds * steps_per_round(
            n, cfg.training.batch_size, cfg.training.local_epochs), p.accountant)
        account = SampleAccount.new(cfg.federation_id, hospital.name, p.accountant, delta, noise, q)
    elif abs(account.sample_rate - sample_rate(n, cfg.training.batch_size)) > 1e-12 or account.delta != delta:
        raise PrivacyError(f"hospital {hospital.name}: its data or privacy.delta changed since its account began "
                           f"(sample rate {account.sample_rate:.4g}, delta {account.delta:g}); the account would no "
                           f"longer describe its training: refusing")
    return Budget(account, target, source)
