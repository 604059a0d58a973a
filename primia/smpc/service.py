"""Encrypted inference as a service: the model owner's and the dealer's servers, and the data owner's client.

One session per batch of images:

1. The data owner (a hospital) connects to the model owner, both prove their roster keys, and it sends
   `open`: a fresh random session id, the dealer it wants (a roster dealer) and the number of images.
   The model owner answers with its public card (architecture, image size, class names): never a weight.
2. The model owner connects to that dealer; the data owner connects to it too. Each tells the dealer the
   session id, its role and its partner's name. The dealer pairs the two links by session id, checks each
   names the other as proven by the handshakes, and hands out the session's randomness.
3. All three agree the spec, session id included; then the two parties compute, and the logits go to the
   data owner alone.

A server runs each caller on its own thread; a caller that never completes its half is cut off at the
timeout, and any failure is told to the other parties with its reason.
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from primia.smpc import session as s
from primia.smpc.link import Identity, Link, LinkError, handshake
from primia.smpc.parties import DATA_OWNER, DEALER, MODEL_OWNER, Parties

Address = tuple[str, int]
log = logging.getLogger("primia.smpc")
PartiesSource = Parties | Callable[[], Parties]  # a server re-reads the roster: a revocation takes effect


def current(parties: PartiesSource) -> Parties:
    return parties() if callable(parties) else parties


def parse_address(text: str, what: str) -> Address:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise LinkError(f"{what} {text!r}: expected HOST:PORT")
    return host, int(port)


@dataclass(frozen=True)
class Card:
    """What the model owner tells a caller about its model: public facts only."""

    model: str
    num_classes: int
    in_channels: int
    image_size: int
    class_names: tuple[str, ...]
    source: str  # e.g. models:/NAME/VERSION

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Card:
        try:
            return cls(str(d["model"]), int(d["num_classes"]), int(d["in_channels"]), int(d["image_size"]),
                       tuple(str(c) for c in d["class_names"]), str(d["source"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise LinkError(f"the model owner's card does not parse ({type(exc).__name__}: {exc})") from None

    def spec(self, images: int, session: str) -> s.Spec:
        return s.Spec(self.model, self.num_classes, self.in_channels,
                      (images, self.in_channels, self.image_size, self.image_size), session=session)


@dataclass
class Served:
    """A model as the model owner serves it."""

    model: nn.Module
    card: Card


def _connect(address: Address, me: Identity, parties: Parties, name: str, timeout_s: float) -> Link:
    try:
        sock = socket.create_connection(address, timeout=timeout_s)
    except OSError as exc:
        raise LinkError(f"cannot reach {name} at {address[0]}:{address[1]} ({exc.strerror or exc})") from None
    return handshake(sock, me, parties.public_keys(), name, True, timeout_s)


class Slots:
    """At most `n` sessions computing at once (one ResNet-18 session at 224x224 holds gigabytes); a caller
    that finds no slot within the timeout is told the server is busy, instead of exhausting its memory."""

    def __init__(self, n: int, timeout_s: float) -> None:
        self.sem, self.n, self.timeout_s = threading.BoundedSemaphore(n), n, timeout_s

    @contextmanager
    def taken(self) -> Iterator[None]:
        if not self.sem.acquire(timeout=self.timeout_s):
            raise LinkError(f"busy: {self.n} sessions running, none ended within {self.timeout_s:g} s; try again later")
        try:
            yield
        finally:
            self.sem.release()


class Server:
    """Accepts callers on a thread each (a slow handshake holds up nobody else), and logs each session."""

    def __init__(self, listen: Address, me: Identity, parties: PartiesSource,
                 callers: Callable[[Parties], frozenset[str]], handle: Callable[[Link], None],
                 timeout_s: float) -> None:
        self.me, self.parties, self.callers, self.handle, self.timeout_s = me, parties, callers, handle, timeout_s
        self.sock = socket.create_server(listen)
        self.address: Address = self.sock.getsockname()[:2]
        self.errors: deque[str] = deque(maxlen=100)
        self.sessions = 0
        self.stopping = False

    def serve(self, sessions: int | None = None) -> None:
        """Serve until stopped, or until `sessions` callers have been taken."""
        threads: list[threading.Thread] = []
        taken = 0
        while sessions is None or taken < sessions:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                if self.stopping:
                    break
                raise
            threads = [t for t in threads if t.is_alive()]  # a long-running server keeps no finished ones
            t = threading.Thread(target=self._one, args=(conn, peer), daemon=True, name="primia-smpc-caller")
            t.start()
            threads.append(t)
            taken += 1
        for t in threads:
            t.join()

    def _one(self, conn: socket.socket, address: Any) -> None:
        started = time.perf_counter()
        who = f"{address[0]}:{address[1]}"
        try:
            parties = current(self.parties)
            link = handshake(conn, self.me, parties.public_keys(), self.callers(parties), False, self.timeout_s)
            who = f"{link.peer} ({who})"
            self.handle(link)
            self.sessions += 1
            log.info("%s: %s done in %.2f s", self.me.name, who, time.perf_counter() - started)
        except Exception as exc:  # a caller's failure ends its session, never the server
            self.errors.append(f"{type(exc).__name__}: {exc}")
            log.warning("%s: %s failed after %.2f s: %s", self.me.name, who, time.perf_counter() - started, exc)

    def stop(self) -> None:
        self.stopping = True
        self.sock.close()


# ---------------------------------------------------------------------- model owner
def model_owner_server(listen: Address, me: Identity, roster: PartiesSource, served: Served,
                       dealers: dict[str, Address], timeout_s: float = 120.0, max_sessions: int = 2,
                       busy_wait_s: float | None = None) -> Server:
    """The model owner: any active hospital may call; the dealer must be a roster dealer it can reach. A caller
    waits up to `busy_wait_s` (default: the timeout) for a free session slot."""
    current(roster).check(me.name, MODEL_OWNER)
    slots = Slots(max_sessions, timeout_s if busy_wait_s is None else busy_wait_s)

    def handle(peer: Link) -> None:
        with s.telling(peer), slots.taken():
            _serve_session(peer)

    def _serve_session(peer: Link) -> None:
        parties = current(roster)
        with s.telling(peer):
            _, body, _ = peer.recv("open")
            session, dealer_name, images = _open_fields(body, peer.peer)
            parties.check(dealer_name, DEALER)
            if dealer_name not in dealers:
                raise LinkError(f"this model owner knows no address for dealer {dealer_name!r} "
                                f"(it uses {', '.join(sorted(dealers)) or 'none'})")
            peer.send("card", asdict(served.card))
            spec = served.card.spec(images, session)
            dealer = _connect(dealers[dealer_name], me, parties, dealer_name, timeout_s)
        with s.telling(peer, dealer):
            dealer.send("open", {"session": session, "role": MODEL_OWNER, "partner": peer.peer,
                                 "spec": spec.to_dict()})
        s.run_model_owner(served.model, spec, peer, dealer)

    return Server(listen, me, roster, lambda p: p.of_role(DATA_OWNER), handle, timeout_s)


def _open_fields(body: dict[str, Any], who: str) -> tuple[str, str, int]:
    try:
        session, dealer, images = str(body["session"]), str(body["dealer"]), int(body["images"])
    except (KeyError, TypeError, ValueError):
        raise LinkError(f"{who}'s `open` needs session, dealer and images") from None
    if not 16 <= len(session) <= 64 or not 0 < images <= s.MAX_BATCH:
        raise LinkError(f"{who}'s `open`: a session id of 16-64 characters and 1-{s.MAX_BATCH} images expected")
    return session, dealer, images


# ---------------------------------------------------------------------- dealer
@dataclass
class _Waiting:
    role: str
    partner: str
    link: Link
    spec: dict[str, Any]
    met: threading.Event = field(default_factory=threading.Event)


class _Pairing:
    """The dealer's meeting point: the two halves of a session find each other by its id."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waiting: dict[str, _Waiting] = {}

    def meet(self, session: str, mine: _Waiting, timeout_s: float) -> _Waiting | None:
        """The other half if it is here (the caller runs the session), else None once it came (its thread
        runs it); a LinkError if it did not come in time."""
        with self.lock:
            other = self.waiting.pop(session, None)
            if other is None:
                self.waiting[session] = mine
        if other is not None:
            other.met.set()
            return other
        if mine.met.wait(timeout_s):
            return None
        with self.lock:
            self.waiting.pop(session, None)
        raise LinkError(f"the other party of session {session[:8]}... did not reach the dealer within {timeout_s:g} s")


def dealer_server(listen: Address, me: Identity, roster: PartiesSource, timeout_s: float = 120.0,
                  max_sessions: int = 2) -> Server:
    current(roster).check(me.name, DEALER)
    pairing = _Pairing()
    slots = Slots(max_sessions, timeout_s)

    def handle(link: Link) -> None:
        parties = current(roster)
        with s.telling(link):
            _, body, _ = link.recv("open")
            role, session, partner = str(body.get("role")), str(body.get("session")), str(body.get("partner"))
            parties.check(link.peer, role if role in (MODEL_OWNER, DATA_OWNER) else "party of a session")
            parties.check(partner, DATA_OWNER if role == MODEL_OWNER else MODEL_OWNER)
            mine = _Waiting(role, partner, link, dict(body.get("spec") or {}))
            other = pairing.meet(session, mine, timeout_s)
        if other is None:
            return
        with s.telling(mine.link, other.link), slots.taken():
            _pair(mine, other)

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


def infer_batch(images: Callable[[Card], torch.Tensor], count: int, me: Identity, parties: Parties,
                where: Endpoints, timeout_s: float = 120.0, prefetch: bool = False
                ) -> tuple[torch.Tensor, Card, dict[str, Any]]:
    """One session: `images(card)` gives the (N, C, S, S) batch in [0, 1] once the card says S. Returns the
    logits (float64), the card and the session's figures. `prefetch`: take all of the dealer's material
    before the online phase (to time that phase alone)."""
    parties.check(me.name, DATA_OWNER)
    mo_name, dealer_name = parties.check(where.model_owner[0], MODEL_OWNER), parties.check(where.dealer[0], DEALER)
    session = secrets.token_hex(16)
    started = time.perf_counter()
    peer = _connect(where.model_owner[1], me, parties, mo_name, timeout_s)
    with s.telling(peer):
        peer.send("open", {"session": session, "dealer": dealer_name, "images": count})
        _, body, _ = peer.recv("card")
        card = Card.from_dict(body)
        batch = images(card)
        spec = card.spec(count, session)
        dealer = _connect(where.dealer[1], me, parties, dealer_name, timeout_s)
    with s.telling(peer, dealer):
        dealer.send("open", {"session": session, "role": DATA_OWNER, "partner": mo_name})
    logits, info = s.run_data_owner(batch, spec, peer, dealer, prefetch)
    peer.close()
    dealer.close()
    return logits, card, {**info, "session_s": time.perf_counter() - started}


def batches(n: int, size: int) -> Iterator[range]:
    for i in range(0, n, size):
        yield range(i, min(n, i + size))
