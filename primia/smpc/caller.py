"""The data owner's seat at an encrypted session: its identity, the parties it trusts and where they listen.

Either all three parties on this machine (spawned, throwaway keys), or running services named on the
federation's signed roster, which this hospital checks against the authority key it pinned when it enrolled.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from primia.errors import ConfigError, IntegrityError
from primia.federation.identity import load_identity
from primia.federation.roster import Pin
from primia.smpc.link import Identity
from primia.smpc.local_service import Source, local_parties
from primia.smpc.parties import Parties
from primia.smpc.service import Endpoints, parse_address


@dataclass(frozen=True)
class Caller:
    me: Identity
    parties: Parties
    where: Endpoints


def pinned_parties(pin_path: Path, roster_file: Path) -> Parties:
    """The parties of a signed roster file, if the authority this party pinned signed it (and not older than
    what it saw)."""
    if not roster_file.is_file():
        raise ConfigError(f"roster {roster_file}: no signed roster there (the authority's `primia federation "
                          f"sign` writes roster.json)")
    return Parties.from_roster(Pin(pin_path).accept(json.loads(roster_file.read_text()), str(roster_file)))


class RosterWatch:
    """A server's parties, re-read when the signed roster file changes (a revoked hospital or service is
    refused from its next session on, without a restart); a file that fails the pin's checks, or a roster
    past its validity, raises: a caller is refused rather than let in on an unverified or stale roster."""

    def __init__(self, pin_path: Path, roster_file: Path) -> None:
        self.pin_path, self.roster_file = pin_path, roster_file
        self.stamp = self._stamp()
        self.parties = pinned_parties(pin_path, roster_file)

    def _stamp(self) -> tuple[int, int]:
        st = self.roster_file.stat()
        return st.st_mtime_ns, st.st_size

    def __call__(self) -> Parties:
        stamp = self._stamp()
        if stamp != self.stamp:
            self.parties = pinned_parties(self.pin_path, self.roster_file)
            self.stamp = stamp
        if self.parties.expired():  # a roster nobody renews may hide a revocation: nobody is served on it
            raise IntegrityError(f"{self.roster_file}: the signed roster expired on {self.parties.valid_until}; "
                                 f"the authority must sign a fresh one (`primia federation sign`)")
        return self.parties


def endpoint(text: str, what: str) -> tuple[str, tuple[str, int]]:
    name, sep, address = text.partition("=")
    if not sep or not name:
        raise ConfigError(f"{what} {text!r}: expected NAME=HOST:PORT (NAME as on the signed roster)")
    return name, parse_address(address, what)


@contextmanager
def seat(home: Path, model_uri: str, model_owner: str = "", dealer: str = "", hospital: str = "",
         roster: Path | None = None, timeout_s: float = 120.0, keys_dir: Path | None = None) -> Iterator[Caller]:
    """Local parties serving `model_uri` without `model_owner`; else the running services, as `hospital`."""
    if not model_owner:
        if dealer or hospital:
            raise ConfigError("a dealer and a hospital go with a running model owner (NAME=HOST:PORT)")
        with local_parties(Source(uri=model_uri), timeout_s) as (me, parties, where):
            yield Caller(me, parties, where)
        return
    if not dealer or not hospital:
        raise ConfigError("a running model owner needs a dealer (NAME=HOST:PORT) and the hospital this data owner is")
    keys = keys_dir or home / "hospitals" / hospital
    me = Identity(hospital, load_identity(keys).signing)
    parties = pinned_parties(keys / "roster-pin.json", roster or home / "authority" / "roster.json")
    yield Caller(me, parties, Endpoints(endpoint(model_owner, "model owner"), endpoint(dealer, "dealer")))


def served_is(source: str, asked: str) -> None:
    """The model owner serves what the caller asked for (the registered name; an alias resolves there)."""
    name = asked.removeprefix("models:/").split("@")[0].split("/")[0]
    if not source.startswith(f"models:/{name}/") or ("@" not in asked and source != asked):
        raise ConfigError(f"the model owner serves {source}, not {asked}")
