"""Encrypted inference as a service: the model owner's and the dealer's servers, and the data owner's client.

One session per batch of images:

1. The data owner (a hospital) connects to the model owner, both prove their roster keys, and it sends
   `open`: a fresh random session id and the dealer it wants (a roster dealer). The model owner answers
   with its public card (architecture, image size, class names, the most images a session): never a weight.
2. The data owner checks the card (the model it asked for) and says `go` with its number of images. Only
   then does the model owner take a session slot, connect to the dealer and tell it its half of the session
   (id, role, partner); it tells the data owner the dealer expects it, and the data owner does the same.
   The dealer pairs the two halves by session id and checks each names the other as proven by the
   handshakes.
3. All three agree the spec, session id included; then the two parties compute, and the logits go to the
   data owner alone.

A caller that never completes its half is cut off at the timeout, and any failure is told to the other
parties with its reason at once (each waits on the party that can fail it).
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from primia.smpc import session as s
from primia.smpc.link import Identity, Link, LinkError
from primia.smpc.parties import DATA_OWNER, DEALER, MODEL_OWNER, Parties
from primia.smpc.server import Address, PartiesSource, Server, Slots, connect, current, parse_address

__all__ = ["Address", "Card", "Endpoints", "Served", "Server", "batches", "dealer_server", "infer_batch",
           "model_owner_server", "parse_address"]
SESSION_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_PIXELS = 4 * 224 * 224  # a session's images at most (one 224x224 ResNet-18 image: about 2 GB a party)


@dataclass(frozen=True)
class Card:
    """What the model owner tells a caller about its model: public facts only."""

    model: str
    num_classes: int
    in_channels: int
    image_size: int
    class_names: tuple[str, ...]
    source: str  # e.g. models:/NAME/VERSION
    max_batch: int = 0  # images a session; 0: by the image size (MAX_PIXELS)

    def __post_init__(self) -> None:
        if not self.max_batch:
            object.__setattr__(self, "max_batch", max(1, min(s.MAX_BATCH, MAX_PIXELS // self.image_size ** 2)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Card:
        try:
            return cls(str(d["model"]), int(d["num_classes"]), int(d["in_channels"]), int(d["image_size"]),
                       tuple(str(c) for c in d["class_names"]), str(d["source"]), int(d["max_batch"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise LinkError(f"the model owner's card does not parse ({type(exc).__name__}: {exc})") from None

    def spec(self, images: int, session: str) -> s.Spec:
        if not 0 < images <= self.max_batch:
            raise LinkError(f"{images} images in one session: this model owner takes 1 to {self.max_batch}")
        return s.Spec(self.model, self.num_classes, self.in_channels,
                      (images, self.in_channels, self.image_size, self.image_size), session=session)


@dataclass
class Served:
    """A model as the model owner serves it."""

    model: nn.Module
    card: Card


def _field(body: dict[str, Any], name: str, who: str) -> Any:
    if name not in body:
        raise LinkError(f"{who}'s message lacks {name!r}")
    return body[name]


def _session_id(body: dict[str, Any], who: str) -> str:
    session = str(_field(body, "session", who))
    if not SESSION_ID.match(session):
        raise LinkError(f"{who}: a session id is 32 hex digits")
    return session


# ---------------------------------------------------------------------- model owner
def model_owner_server(listen: Address, me: Identity, roster: PartiesSource, served: Served,
                       dealers: dict[str, Address], timeout_s: float = 120.0, max_sessions: int = 2,
                       busy_wait_s: float | None = None) -> Server:
    """The model owner: any active hospital may call; the dealer must be a roster dealer it can reach. A caller
    waits up to `busy_wait_s` (default: half the timeout, so it hears why) for a free session slot."""
    current(roster).check(me.name, MODEL_OWNER)
    slots = Slots(max_sessions, timeout_s / 2 if busy_wait_s is None else busy_wait_s)

    def handle(peer: Link) -> str:
        parties = current(roster)
        with s.telling(peer):
            _, body, _ = peer.recv("open")
            session = _session_id(body, peer.peer)
            dealer_name = parties.check(str(_field(body, "dealer", peer.peer)), DEALER)
            if dealer_name not in dealers:
                raise LinkError(f"this model owner knows no address for dealer {dealer_name!r} "
                                f"(it uses {', '.join(sorted(dealers)) or 'none'})")
            peer.send("card", asdict(served.card))
            _, body, _ = peer.recv("go")  # the caller checked the card: it may have left instead
            spec = served.card.spec(int(_field(body, "images", peer.peer)), session)
            with slots.taken():
                dealer = connect(dealers[dealer_name], me, parties, dealer_name, timeout_s)
                with s.telling(dealer):
                    dealer.send("open", {"session": session, "role": MODEL_OWNER, "partner": peer.peer,
                                         "spec": spec.to_dict()})
                    peer.send("dealer-ready")
                try:
                    s.run_model_owner(served.model, spec, peer, dealer)
                finally:
                    dealer.close()
        return "done"

    return Server(listen, me, roster, lambda p: p.of_role(DATA_OWNER), handle, timeout_s)


# ---------------------------------------------------------------------- dealer
@dataclass
class _Waiting:
    role: str
    partner: str
    link: Link
    spec: dict[str, Any]
    met: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)  # the session this half is in is over


class _Pairing:
    """The dealer's meeting point: the two halves of a session find each other by its id. Halves waiting are
    bounded, in all and per party, so no caller can fill the dealer with halves that never meet."""

    def __init__(self, max_waiting: int = 64, per_party: int = 8) -> None:
        self.lock = threading.Lock()
        self.waiting: dict[str, _Waiting] = {}
        self.max_waiting, self.per_party = max_waiting, per_party

    def meet(self, session: str, mine: _Waiting, timeout_s: float) -> _Waiting | None:
        """The other half if it is here (the caller runs the session), else None once it came (its thread
        runs it); a LinkError if it did not come in time."""
        with self.lock:
            other = self.waiting.pop(session, None)
            if other is None:
                self._admit(mine)
                self.waiting[session] = mine
        if other is not None:
            other.met.set()
            return other
        if mine.met.wait(timeout_s):
            return None
        with self.lock:
            if self.waiting.get(session) is mine:  # else the partner took it just now, and runs the session
                del self.waiting[session]
                raise LinkError(f"the other party of session {session[:8]}... did not reach the dealer within "
                                f"{timeout_s:g} s")
        return None

    def _admit(self, mine: _Waiting) -> None:
        mine_waiting = sum(w.link.peer == mine.link.peer for w in self.waiting.values())
        if len(self.waiting) >= self.max_waiting or mine_waiting >= self.per_party:
            raise LinkError(f"busy: {len(self.waiting)} sessions wait for their other half ({mine_waiting} of "
                            f"them {mine.link.peer}'s)")


def dealer_server(listen: Address, me: Identity, roster: PartiesSource, timeout_s: float = 120.0,
                  max_sessions: int = 2) -> Server:
    current(roster).check(me.name, DEALER)
    pairing = _Pairing()
    slots = Slots(max_sessions, timeout_s / 2)

    def handle(link: Link) -> str:
        parties = current(roster)
        with s.telling(link):
            _, body, _ = link.recv("open")
            session = _session_id(body, link.peer)
            role, partner = str(body.get("role")), str(body.get("partner"))
            parties.check(link.peer, role if role in (MODEL_OWNER, DATA_OWNER) else "party of a session")
            parties.check(partner, DATA_OWNER if role == MODEL_OWNER else MODEL_OWNER)
            mine = _Waiting(role, partner, link, dict(body.get("spec") or {}))
            other = pairing.meet(session, mine, timeout_s)
        if other is None:  # the other half's thread runs the session; this link stays open until it ends
            mine.ended.wait()
            return "done (run on the other half's thread)"
        try:
            with s.telling(mine.link, other.link), slots.taken():
                _pair(mine, other)
        finally:
            other.ended.set()
        return "done"

    return Server(listen, me, roster, lambda p: p.of_role(DATA_OWNER) | p.of_role(MODEL_OWNER), handle, timeout_s)


def _pair(a: _Waiting, b: _Waiting) -> None:
    mo, do = (a, b) if a.role == MODEL_OWNER else (b, a)
    with s.telling(mo.link, do.link):
        if a.role == b.role:
            raise LinkError(f"two {a.role}s ({a.link.peer}, {b.link.peer}) opened the same session")
        if mo.partner != do.link.peer or do.partner != mo.link.peer:
            raise LinkError(f"session partners disagree: {mo.link.peer} names {mo.partner}, {do.link.peer} names "
                            f"{do.partner}")
        spec = s.Spec.from_dict(mo.spec)  # the model owner's; the data owner's must agree (run_dealer checks)
    s.run_dealer(spec, mo.link, do.link)


# ---------------------------------------------------------------------- data owner
@dataclass(frozen=True)
class Endpoints:
    model_owner: tuple[str, Address]  # roster name, address
    dealer: tuple[str, Address]


def infer_batch(images: Callable[[Card], torch.Tensor], me: Identity, parties: Parties, where: Endpoints,
                timeout_s: float = 120.0, prefetch: bool = False) -> tuple[torch.Tensor, Card, dict[str, Any]]:
    """One session: `images(card)` gives the (N, C, S, S) batch in [0, 1] once the card says S (N at most the
    card's max_batch), or raises to leave before any image is shared. Returns the logits (float64), the card
    and the session's figures. `prefetch`: take all of the dealer's material before the online phase (to
    time that phase alone)."""
    parties.check(me.name, DATA_OWNER)
    mo_name, dealer_name = parties.check(where.model_owner[0], MODEL_OWNER), parties.check(where.dealer[0], DEALER)
    session = secrets.token_hex(16)
    started = time.perf_counter()
    peer = connect(where.model_owner[1], me, parties, mo_name, timeout_s)
    try:
        with s.telling(peer):
            peer.send("open", {"session": session, "dealer": dealer_name})
            _, body, _ = peer.recv("card")
            card = Card.from_dict(body)
            batch = images(card)
            spec = card.spec(batch.shape[0], session)
            peer.send("go", {"images": batch.shape[0]})
            peer.recv("dealer-ready")  # the model owner reached the dealer (else its reason comes here)
            dealer = connect(where.dealer[1], me, parties, dealer_name, timeout_s)
        try:
            with s.telling(peer, dealer):
                dealer.send("open", {"session": session, "role": DATA_OWNER, "partner": mo_name})
            logits, info = s.run_data_owner(batch, spec, peer, dealer, prefetch)
        finally:
            dealer.close()
    finally:
        peer.close()
    return logits, card, {**info, "session_s": time.perf_counter() - started}


def batches(n: int, size: int) -> Iterator[range]:
    for i in range(0, n, size):
        yield range(i, min(n, i + size))
