"""FedProx (Li et al., MLSys 2020): FedAvg at the server; each hospital adds a proximal term
(mu/2)||w - w_global||^2 to its local loss, which keeps heterogeneous hospitals from drifting."""

from __future__ import annotations

from primia.errors import ConfigError
from primia.federation.strategy import FedAvg


class FedProx(FedAvg):
    name = "fedprox"

    def __init__(self, proximal_mu: float) -> None:
        if proximal_mu <= 0:
            raise ConfigError(f"FedProx needs proximal_mu > 0, got {proximal_mu}")
        self.proximal_mu = proximal_mu
