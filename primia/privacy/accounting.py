"""A hospital's sample-level privacy account: one Opacus accountant for the whole federation.

DP-SGD with Poisson sampling (rate q = batch / N) and noise multiplier sigma composes over every step
the hospital ever takes in the federation: the account is never reset between rounds, its state is
stored (encrypted, in the hospital's own storage) after every round and restored on resume, and it is
bound to its federation and hospital so that a state cannot be swapped in from elsewhere.
PRV (Gopi et al. 2021) is the default accountant, RDP (Mironov 2017) selectable; both are Opacus'.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

from opacus.accountants import IAccountant, PRVAccountant, RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from primia.errors import ConfigError, PrivacyError

Kind = Literal["prv", "rdp"]
STATE_VERSION = 1


def make_accountant(kind: Kind) -> IAccountant:
    if kind == "prv":
        return PRVAccountant()
    if kind == "rdp":
        return RDPAccountant()
    raise ConfigError(f"privacy.accountant must be 'prv' or 'rdp', got {kind!r}")


def epsilon_of(accountant: IAccountant, delta: float) -> float:
    """The accountant's epsilon at `delta` (0 before any step)."""
    if not accountant.history:
        return 0.0
    with warnings.catch_warnings():  # Opacus warns about alpha ranges and log(0) inside PRV's grid
        warnings.simplefilter("ignore")
        return float(accountant.get_epsilon(delta))


def plan_noise(target_epsilon: float, delta: float, sample_rate: float, steps: int, kind: Kind) -> float:
    """The smallest noise multiplier (to 1%) whose `steps` DP-SGD steps at `sample_rate` stay within
    (target_epsilon, delta) - Opacus' own search, checked again here (it stops within a tolerance)."""
    check_budget(target_epsilon, delta)
    if not 0 < sample_rate <= 1 or steps < 1:
        raise ConfigError(f"cannot plan noise for sample rate {sample_rate} and {steps} steps")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sigma = float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta,
                                           sample_rate=sample_rate, steps=steps, accountant=kind,
                                           epsilon_tolerance=0.01))
    while _epsilon_for(kind, sigma, sample_rate, steps, delta) > target_epsilon:
        sigma *= 1.01
    return sigma


def _epsilon_for(kind: Kind, sigma: float, q: float, steps: int, delta: float) -> float:
    acc = make_accountant(kind)
    acc.history.append((sigma, q, steps))
    return epsilon_of(acc, delta)


def check_budget(target_epsilon: float, delta: float, population: int | None = None, what: str = "privacy") -> None:
    """A budget that means something: epsilon > 0 and 0 < delta < 1/N (N the records it protects)."""
    if not (math.isfinite(target_epsilon) and target_epsilon > 0):
        raise ConfigError(f"{what}.target_epsilon must be a positive number, got {target_epsilon}")
    if not 0 < delta < 1:
        raise ConfigError(f"{what}.delta must be in (0, 1), got {delta}")
    if population is not None and delta >= 1 / max(population, 1):
        raise ConfigError(f"{what}.delta {delta:g} must be below 1/N = {1 / max(population, 1):.3g} for the "
                          f"{population} records it protects (a larger delta allows releasing a record outright)")


@dataclass
class SampleAccount:
    """The DP-SGD account of one hospital in one federation."""

    federation: str
    hospital: str
    kind: Kind
    delta: float
    noise: float  # the noise multiplier planned at the first round and kept for the whole federation
    sample_rate: float
    accountant: IAccountant = field(repr=False, default_factory=PRVAccountant)
    rounds: int = 0  # rounds this account has trained (the local ledger keeps the largest seen)

    @staticmethod
    def new(federation: str, hospital: str, kind: Kind, delta: float, noise: float, sample_rate: float
            ) -> SampleAccount:
        if not (math.isfinite(noise) and noise > 0):
            raise ConfigError(f"privacy.noise_multiplier must be positive, got {noise} (noise 0 is no privacy)")
        return SampleAccount(federation, hospital, kind, delta, noise, sample_rate, make_accountant(kind))

    @property
    def steps(self) -> int:
        return sum(int(n) for _, _, n in self.accountant.history)

    def epsilon(self) -> float:
        return epsilon_of(self.accountant, self.delta)

    def epsilon_after(self, steps: int) -> float:
        """The epsilon this account would reach after `steps` more DP-SGD steps."""
        acc = copy.deepcopy(self.accountant)
        acc.history.append((self.noise, self.sample_rate, steps))
        return epsilon_of(acc, self.delta)

    def state(self) -> dict[str, Any]:
        sd = self.accountant.state_dict()
        return {"version": STATE_VERSION, "federation": self.federation, "hospital": self.hospital,
                "kind": self.kind, "delta": self.delta, "noise": self.noise, "sample_rate": self.sample_rate,
                "rounds": self.rounds, "history": [list(h) for h in sd["history"]], "mechanism": sd["mechanism"]}

    @staticmethod
    def restore(state: dict[str, Any], federation: str, hospital: str, kind: Kind) -> SampleAccount:
        """The account stored for (federation, hospital); a state of another federation, hospital or
        accountant kind is refused (it would spend another budget, or none)."""
        got = (state.get("version"), state.get("federation"), state.get("hospital"), state.get("kind"),
               state.get("mechanism"))
        if got != (STATE_VERSION, federation, hospital, kind, kind):
            raise PrivacyError(f"the stored privacy account is {got[1:]!r}, not ({federation!r}, {hospital!r}, "
                               f"{kind!r}): refusing to train on an account that is not this hospital's in this "
                               f"federation")
        account = SampleAccount.new(federation, hospital, kind, float(state["delta"]), float(state["noise"]),
                                    float(state["sample_rate"]))
        account.accountant.history = [(float(s), float(q), int(n)) for s, q, n in state["history"]]
        account.rounds = int(state["rounds"])
        return account
