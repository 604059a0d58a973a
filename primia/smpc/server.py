"""The servers' common part: accept callers, each on its own thread, authenticate them against the roster
as it is now, and bound what callers can hold (connections, sessions), so no caller can starve the others."""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from primia.smpc.link import Identity, Link, LinkError, handshake
from primia.smpc.parties import Parties

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


def connect(address: Address, me: Identity, parties: Parties, name: str, timeout_s: float) -> Link:
    try:
        sock = socket.create_connection(address, timeout=timeout_s)
    except OSError as exc:
        raise LinkError(f"cannot reach {name} at {address[0]}:{address[1]} ({exc.strerror or exc})") from None
    return handshake(sock, me, parties.public_keys(), name, True, timeout_s)


class Slots:
    """At most `n` sessions computing at once (one ResNet-18 session at 224x224 holds gigabytes); a caller
    that finds no slot within `wait_s` is told the server is busy, instead of exhausting its memory."""

    def __init__(self, n: int, wait_s: float) -> None:
        self.sem, self.n, self.wait_s = threading.BoundedSemaphore(n), n, wait_s

    @contextmanager
    def taken(self) -> Iterator[None]:
        if not self.sem.acquire(timeout=self.wait_s):
            raise LinkError(f"busy: {self.n} sessions running, none ended within {self.wait_s:g} s; try again later")
        try:
            yield
        finally:
            self.sem.release()


class Server:
    """Accepts callers on a thread each (a slow handshake holds up nobody else), at most `max_callers` at
    once (more are closed at once: idle sockets cannot exhaust the server), and logs each caller's end."""

    def __init__(self, listen: Address, me: Identity, parties: PartiesSource,
                 callers: Callable[[Parties], frozenset[str]], handle: Callable[[Link], str],
                 timeout_s: float, max_callers: int = 32) -> None:
        self.me, self.parties, self.callers, self.handle, self.timeout_s = me, parties, callers, handle, timeout_s
        self.sock = socket.create_server(listen)
        self.address: Address = self.sock.getsockname()[:2]
        self.errors: deque[str] = deque(maxlen=100)
        self.sessions = 0
        self.stopping = False
        self.room = threading.BoundedSemaphore(max_callers)

    def serve(self, sessions: int | None = None) -> None:
        """Serve until stopped, or until `sessions` callers have been taken."""
        threads: list[threading.Thread] = []
        taken = 0
        while sessions is None or taken < sessions:
            try:
                conn, peer = self.sock.accept()
            except OSError as exc:
                if self.stopping:
                    break
                if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ECONNABORTED, errno.ENOBUFS, errno.ENOMEM):
                    raise
                log.warning("%s: accept failed (%s); going on", self.me.name, exc.strerror)
                time.sleep(0.2)
                continue
            if not self.room.acquire(blocking=False):
                log.warning("%s: %s:%s refused: %s callers already", self.me.name, *peer[:2], "too many")
                conn.close()
                continue
            threads = [t for t in threads if t.is_alive()]  # a long-running server keeps no finished ones
            t = threading.Thread(target=self._one, args=(conn, peer), daemon=True, name="primia-smpc-caller")
            t.start()
            threads.append(t)
            taken += 1
        for t in threads:
            t.join()

    def _one(self, conn: socket.socket, address: tuple[str, int]) -> None:
        started = time.perf_counter()
        who = f"{address[0]}:{address[1]}"
        try:
            parties = current(self.parties)
            link = handshake(conn, self.me, parties.public_keys(), self.callers(parties), False, self.timeout_s)
            who = f"{link.peer} ({who})"
            status = self.handle(link)
            self.sessions += status == "done"
            log.info("%s: %s %s in %.2f s", self.me.name, who, status, time.perf_counter() - started)
        except Exception as exc:  # a caller's failure ends its session, never the server
            self.errors.append(f"{type(exc).__name__}: {exc}")
            log.warning("%s: %s failed after %.2f s: %s", self.me.name, who, time.perf_counter() - started, exc)
        finally:
            conn.close()
            self.room.release()

    def stop(self) -> None:
        self.stopping = True
        self.sock.close()
