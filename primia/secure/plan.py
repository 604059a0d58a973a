"""What a run of secure aggregation is: its public parameters (fixed by the coordinator), the graph its
U1 fixes, and the floors each hospital holds whatever the coordinator plans; the protocol's two outcomes
as exceptions."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from primia.secure import graph
from primia.secure.agreement import Context
from primia.secure.prg import ring_dtype
from primia.signing import canonical_json

Signer = Callable[[bytes], bytes]
PURPOSES = ("train", "train+validate", "validate", "statistics")


class SecAggAbort(RuntimeError):  # noqa: N818  # an outcome of the protocol, not a programming error
    """The round cannot be unmasked safely (too few hospitals or shares); nothing partial is used."""


class ProtocolViolation(ValueError):  # noqa: N818
    """A message, roster or plan breaks the protocol (bad signature, wrong round, inconsistent roster)."""


@dataclass(frozen=True)
class Params:
    """Public parameters of one secure aggregation, fixed by the coordinator before stage 1."""

    federation: str
    round: int
    session: str  # fresh per attempt: binds every message and key to this one run of the protocol
    parties: tuple[str, ...]
    length: int  # ring elements per vector
    bits: int = 32
    degree: int = 0  # 0: automatic (complete graph up to 9 parties, then 2*ceil(log2 n))
    threshold_fraction: float = 0.5
    model: str = ""  # digest of the global model the round starts from ("" for the statistics pass)
    purpose: str = "train+validate"  # what the sum is of: train, train+validate, validate or statistics

    def __post_init__(self) -> None:
        ring_dtype(self.bits)
        if self.purpose not in PURPOSES:
            raise ProtocolViolation(f"purpose must be one of {', '.join(PURPOSES)}, got {self.purpose!r}")
        if self.degree and self.degree < len(self.parties) - 1 and (self.degree < 2 or self.degree % 2):
            raise ProtocolViolation(f"SecAgg+ degree must be 0, even and >= 2, or >= parties-1, got {self.degree}")
        if not 0 < self.threshold_fraction < 1:
            raise ProtocolViolation(f"threshold_fraction must be in (0, 1), got {self.threshold_fraction}")
        if len(self.parties) < 2:
            raise ProtocolViolation(f"secure aggregation needs at least 2 hospitals, got {list(self.parties)}")
        if tuple(sorted(set(self.parties))) != self.parties:
            raise ProtocolViolation("parties must be sorted and distinct")

    @property
    def ctx(self) -> Context:
        return Context(f"{self.federation}/{self.session}", self.round)

    @property
    def k(self) -> int:
        """The graph degree if every party advertises."""
        return self.degree_for(len(self.parties))

    @property
    def threshold(self) -> int:
        """Shares needed per neighbourhood if every party advertises."""
        return graph.threshold(self.k + 1, self.threshold_fraction)

    def degree_for(self, members: int) -> int:
        return min(self.degree, members - 1) if self.degree else graph.auto_degree(members)

    def graph(self, adverts: Mapping[str, Mapping[str, Any]]) -> Graph:
        """The SecAgg+ graph over the hospitals of U1, seeded by the hash of their signed adverts: every
        party recomputes it, and no single party (the coordinator least) chooses it."""
        members = tuple(sorted(adverts))
        body = {"federation": self.federation, "round": self.round, "session": self.session,
                "adverts": {h: [adverts[h]["c_pk"], adverts[h]["s_pk"]] for h in members}}
        digest = hashlib.sha256(canonical_json(body)).hexdigest()
        k = self.degree_for(len(members))
        nbrs = graph.neighbours(list(members), k, int(digest[:16], 16)) if len(members) > 1 else \
            {m: frozenset() for m in members}
        return Graph(members, k, graph.threshold(k + 1, self.threshold_fraction), digest, nbrs)

    def index(self, party: str) -> int:
        return self.parties.index(party) + 1  # Shamir x-coordinate: never 0

    def to_dict(self) -> dict[str, Any]:
        return {"federation": self.federation, "round": self.round, "session": self.session,
                "parties": list(self.parties), "length": self.length, "bits": self.bits, "degree": self.degree,
                "threshold_fraction": self.threshold_fraction, "model": self.model, "purpose": self.purpose}

    @staticmethod
    def from_dict(data: Any) -> Params:
        """Parameters as received (a dispatch's `secagg.params`); anything malformed is a ProtocolViolation."""
        try:
            return Params(**{**data, "parties": tuple(data["parties"])})
        except (TypeError, KeyError, ValueError) as exc:
            if isinstance(exc, ProtocolViolation):
                raise
            raise ProtocolViolation(f"secure-aggregation parameters are malformed ({type(exc).__name__}: {exc}); "
                                    f"expected {sorted(Params.__dataclass_fields__)}") from None


@dataclass(frozen=True)
class Graph:
    """Who masks with whom in this run, fixed by U1."""

    members: tuple[str, ...]  # U1
    k: int
    threshold: int
    digest: str  # hash of U1's adverts: seeds the graph and binds every later message to this U1
    nbrs: dict[str, frozenset[str]]


@dataclass(frozen=True)
class Floors:
    """A hospital's own limits on what it takes part in, whatever the coordinator plans.

    `colluders`: how many other hospitals it assumes may collude with a malicious coordinator. Two
    different rosters can both gather `confirm_quorum` confirmations only if more than `colluders`
    parties confirmed both, which no honest hospital does; a sum needs more than `colluders` + 1
    parties, or the colluders would learn the remaining hospital's update from it."""

    members: frozenset[str] | None = None  # who may be a party: the signed roster's active hospitals
    min_parties: int = 3
    max_parties: int = 10_000  # the ring's overflow bound holds for at most this many
    min_threshold_fraction: float = 0.5
    colluders: int = 0

    def check_plan(self, params: Params, me: str) -> None:
        n = len(params.parties)
        if me not in params.parties:
            raise ProtocolViolation(f"{me} is not a party of round {params.round}")
        if n < self.min_parties:
            raise ProtocolViolation(f"{me}: the plan has {n} parties, fewer than this hospital's floor of "
                                    f"{self.min_parties}: refused")
        if n > self.max_parties:
            raise ProtocolViolation(f"{me}: the plan has {n} parties, more than the {self.max_parties} the ring's "
                                    f"overflow bound holds (secure_aggregation.max_hospitals): refused")
        strangers = sorted(set(params.parties) - self.members) if self.members is not None else []
        if strangers:
            raise ProtocolViolation(f"{me}: {', '.join(strangers)} in the plan are not active hospitals of the signed "
                                    f"roster: refused")
        if params.threshold_fraction < self.min_threshold_fraction:
            raise ProtocolViolation(f"{me}: threshold fraction {params.threshold_fraction} is below this hospital's "
                                    f"floor of {self.min_threshold_fraction}: refused")
        if params.degree and params.degree < graph.auto_degree(n):
            raise ProtocolViolation(f"{me}: SecAgg+ degree {params.degree} is below the automatic "
                                    f"{graph.auto_degree(n)} for {n} parties: refused")

    def check_u2(self, params: Params, me: str, u2: frozenset[str]) -> None:
        """Mask only when a strict majority of the parties shared: a coordinator that tells this hospital
        fewer did (so that it masks with partners whose keys the others will reveal) is refused."""
        need = self.confirm_quorum(len(params.parties))
        if len(u2) < need:
            raise SecAggAbort(f"{me}: roster U2 names {len(u2)} of {len(params.parties)} parties, {need} (a strict "
                              f"majority) must have shared before this hospital masks its update")

    def confirm_quorum(self, parties: int) -> int:
        """Confirmations of one (U1, U2, U3) a hospital needs before revealing anything."""
        return min(parties, (parties + self.colluders) // 2 + 1)

    @property
    def min_sum(self) -> int:
        return self.colluders + 2


class Ledger(Protocol):
    """Where a hospital remembers which sum it helped unmask (see primia.secure.ledger)."""

    def claim(self, key: str, members: list[str], session: str) -> None: ...


