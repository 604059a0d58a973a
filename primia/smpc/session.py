"""One encrypted inference session between the three parties, over authenticated links.

- The model owner (party 0) holds the weights. Its share of the dealer's randomness is a 32-byte seed.
- The data owner (party 1) holds the images and alone learns the logits. Its share of the dealer's randomness
  is a seed plus the dealer's corrections, streamed to it while the dealer computes them.
- The dealer sees neither weights nor images: it runs the public program on shapes.

Inputs are shared by seed: the model owner sends the data owner a seed whose expansion is the data owner's
share of every weight (and keeps the weights minus it), the data owner does the same for its images, so
sharing a ResNet-18 costs 32 bytes instead of 90 MB. The architecture, image shape and fixed-point format
are public and must agree on all three sides, or the session ends with the reason.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from primia.models.factory import build_model
from primia.smpc.dealer import CorrectedSource, DealerSource, SeededSource
from primia.smpc.engine import Engine
from primia.smpc.link import Link, LinkError
from primia.smpc.local import NullChannel
from primia.smpc.network import forward, weights_of
from primia.smpc.parties import DATA_OWNER, DEALER, MODEL_OWNER
from primia.smpc.prg import Stream, new_seed
from primia.smpc.ring import FRAC_BITS, decode, encode

__all__ = ["DATA_OWNER", "DEALER", "MODEL_OWNER", "Spec", "run_dealer", "run_data_owner", "run_model_owner"]
MODELS = ("small_cnn", "resnet18")  # what the protocol computes (network.py)
MAX_BATCH, MAX_SIZE = 64, 512  # per session: what a server allocates for one caller stays bounded
INLINE_BYTES = 32 << 10  # both ends send this much before reading: far below a loopback socket's buffers


@dataclass(frozen=True)
class Spec:
    """What all three must agree on: the architecture and the batch's shape, never a weight or a pixel."""

    model: str
    num_classes: int
    in_channels: int
    batch: tuple[int, ...]  # (N, C, H, W)
    frac_bits: int = FRAC_BITS
    session: str = ""  # the data owner's random id: binds the three links of one session together

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise LinkError(f"model {self.model!r}: encrypted inference computes {', '.join(MODELS)}")
        n, c, h, w = self.batch if len(self.batch) == 4 else (0, 0, 0, 0)
        if not (0 < n <= MAX_BATCH and c == self.in_channels and 0 < h <= MAX_SIZE and h == w):
            raise LinkError(f"batch shape {self.batch}: expected (N <= {MAX_BATCH}, {self.in_channels}, S, S) "
                            f"with S <= {MAX_SIZE}")
        if not (0 < self.num_classes <= 1000 and 8 <= self.frac_bits <= 24):
            raise LinkError(f"{self.num_classes} classes, {self.frac_bits} fractional bits: out of range")

    def structure(self) -> nn.Module:
        """The architecture with throwaway weights: what the data owner and the dealer walk."""
        return build_model(self.model, num_classes=self.num_classes, in_channels=self.in_channels, seed=0).eval()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Spec:
        try:
            return cls(str(d["model"]), int(d["num_classes"]), int(d["in_channels"]),
                       tuple(int(x) for x in d["batch"]), int(d["frac_bits"]), str(d.get("session", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise LinkError(f"session spec does not parse ({type(exc).__name__}: {exc})") from None


def _meta(shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(s, dtype=torch.int64, device="meta") for k, s in shapes.items()}


def weight_shapes(model: nn.Module) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in weights_of(model).items()}


def _expand(seed: bytes, shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    s = Stream(seed)
    return {k: s.int64(shapes[k]) for k in sorted(shapes)}


# ---------------------------------------------------------------------- dealer
def agree(link: Link, spec: Spec) -> None:
    """Both ends state the spec; any difference ends the session with the reason on both sides."""
    link.send("spec", spec.to_dict())
    _, body, _ = link.recv("spec")
    theirs = Spec.from_dict(body)
    if theirs != spec:
        link.fail(f"spec mismatch: {spec} here, {theirs} there")
        raise LinkError(f"{link.peer} runs another session: {theirs}, not {spec}")


def run_dealer(spec: Spec, model_owner: Link, data_owner: Link) -> dict[str, Any]:
    with telling(model_owner, data_owner):
        return _dealer(spec, model_owner, data_owner)


def _dealer(spec: Spec, model_owner: Link, data_owner: Link) -> dict[str, Any]:
    """Hand out the session's randomness: seeds to both, then the data owner's corrections as computed."""
    agree(model_owner, spec)
    agree(data_owner, spec)
    seeds = new_seed(), new_seed()
    model_owner.send("seed", {"seed": seeds[0].hex()})
    data_owner.send("seed", {"seed": seeds[1].hex()})
    started = time.perf_counter()

    def emit(t: torch.Tensor) -> None:
        data_owner.send("corr", tensors=[t])

    source = DealerSource(Stream(seeds[0]), Stream(seeds[1]), emit)
    structure = spec.structure()
    forward(Engine("dealer", NullChannel(), source, spec.frac_bits), structure, _meta(weight_shapes(structure)),
            torch.empty(spec.batch, dtype=torch.int64, device="meta"))
    data_owner.send("corr-end")
    return {"dealer_bytes": source.bytes_out, "dealer_s": time.perf_counter() - started}


class _Corrections:
    """The data owner's side of the dealer's stream, read on a thread so the dealer can run ahead."""

    def __init__(self, dealer: Link) -> None:
        self.q: queue.Queue[torch.Tensor | LinkError | None] = queue.Queue()
        self.dealer = dealer
        threading.Thread(target=self._read, daemon=True, name="primia-smpc-dealer").start()

    def _read(self) -> None:
        try:
            while True:
                kind, _, tensors = self.dealer.recv()
                if kind == "corr-end":
                    self.q.put(None)
                    return
                if kind != "corr" or len(tensors) != 1:
                    raise LinkError(f"the dealer sent {kind!r} in its stream of corrections")
                self.q.put(tensors[0])
        except LinkError as exc:
            self.q.put(exc)

    def drain(self) -> list[torch.Tensor]:
        """All of the dealer's material, before the online phase starts."""
        out: list[torch.Tensor] = []
        while (item := self.q.get(timeout=self.dealer.timeout_s + 5)) is not None:
            if isinstance(item, LinkError):
                raise item
            out.append(item)
        return out

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            item = self.q.get(timeout=self.dealer.timeout_s + 5)
            if item is None:
                raise LinkError("the dealer's corrections ended before the program did")
            if isinstance(item, LinkError):
                raise item
            yield item


# ---------------------------------------------------------------------- the two parties
class PeerChannel:
    """The parties' exchange: each sends its tensors, then reads the other's (both send first: no deadlock
    while the messages fit the sockets' buffers, which a thread per direction removes for large ones)."""

    def __init__(self, link: Link) -> None:
        self.link = link

    def exchange(self, mine: list[torch.Tensor]) -> list[torch.Tensor]:
        if sum(t.numel() * t.element_size() for t in mine) <= INLINE_BYTES:  # fits the sockets' buffers: no
            self.link.send("x", tensors=mine)  # thread (most rounds: a thread per round cost more than the round)
            return self.link.recv("x")[2]
        error: list[LinkError] = []

        def send() -> None:
            try:
                self.link.send("x", tensors=mine)
            except LinkError as exc:
                error.append(exc)

        sender = threading.Thread(target=send)
        sender.start()
        try:
            _, _, theirs = self.link.recv("x")
        finally:
            sender.join()
        if error:
            raise error[0]
        return theirs


@contextmanager
def telling(*links: Link) -> Iterator[None]:
    """Any failure here ends the session for the others too, with its reason, instead of leaving them to
    their timeouts."""
    try:
        yield
    except Exception as exc:
        for link in links:
            link.fail(f"{type(exc).__name__}: {exc}")
        raise


def run_model_owner(model: nn.Module, spec: Spec, peer: Link, dealer: Link) -> dict[str, Any]:
    with telling(peer, dealer):
        return _model_owner(model, spec, peer, dealer)


def _model_owner(model: nn.Module, spec: Spec, peer: Link, dealer: Link) -> dict[str, Any]:
    """Party 0: shares its weights by seed, runs the program, sends its share of the logits to the data
    owner (which alone learns them)."""
    agree(dealer, spec)
    agree(peer, spec)
    _, body, _ = dealer.recv("seed")
    source = SeededSource(Stream(bytes.fromhex(body["seed"])))
    weights = {k: encode(v, spec.frac_bits) for k, v in weights_of(model).items()}
    seed_w = new_seed()
    peer.send("weights-seed", {"seed": seed_w.hex()})
    theirs = _expand(seed_w, {k: v.shape for k, v in weights.items()})
    mine = {k: weights[k] - theirs[k] for k in weights}
    _, body, _ = peer.recv("image-seed")
    image = _expand(bytes.fromhex(body["seed"]), {"x": torch.Size(spec.batch)})["x"]
    engine = Engine(0, PeerChannel(peer), source, spec.frac_bits)
    logits = forward(engine, model, mine, image)
    peer.send("logits", tensors=[logits])
    return {"rounds": engine.rounds}


def run_data_owner(images: torch.Tensor, spec: Spec, peer: Link, dealer: Link, prefetch: bool = False
                   ) -> tuple[torch.Tensor, dict[str, Any]]:
    """`prefetch`: take all of the dealer's material before the online phase (to time that phase alone)."""
    with telling(peer, dealer):
        return _data_owner(images, spec, peer, dealer, prefetch)


def _data_owner(images: torch.Tensor, spec: Spec, peer: Link, dealer: Link, prefetch: bool
                ) -> tuple[torch.Tensor, dict[str, Any]]:
    """Party 1: shares its images by seed, runs the program, and opens the logits (float64, N x classes)."""
    if tuple(images.shape) != spec.batch:
        raise LinkError(f"images of shape {tuple(images.shape)} for a session of {spec.batch}")
    agree(dealer, spec)
    agree(peer, spec)
    started = time.perf_counter()
    _, body, _ = dealer.recv("seed")
    stream = _Corrections(dealer)
    source = CorrectedSource(Stream(bytes.fromhex(body["seed"])), iter(stream.drain() if prefetch else stream))
    structure = spec.structure()
    _, body, _ = peer.recv("weights-seed")
    mine_w = _expand(bytes.fromhex(body["seed"]), weight_shapes(structure))
    seed_x = new_seed()
    online = time.perf_counter()
    peer.send("image-seed", {"seed": seed_x.hex()})
    x = encode(images, spec.frac_bits)
    mine_x = x - _expand(seed_x, {"x": x.shape})["x"]
    engine = Engine(1, PeerChannel(peer), source, spec.frac_bits)
    logits = forward(engine, structure, mine_w, mine_x)
    _, _, theirs = peer.recv("logits")
    done = time.perf_counter()
    return decode(logits + theirs[0], spec.frac_bits), {
        "rounds": engine.rounds, "online_s": done - online, "total_s": done - started,
        "bytes_sent": peer.bytes_sent, "bytes_received": peer.bytes_received,
        "dealer_bytes": dealer.bytes_received}
