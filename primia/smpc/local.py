"""Both parties and the dealer in one process (threads and queues): for tests, and to time the protocol's
computation apart from its transport."""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from primia.smpc.dealer import CorrectedSource, DealerSource, SeededSource
from primia.smpc.engine import Engine
from primia.smpc.prg import Stream, new_seed
from primia.threads import run_all

T = TypeVar("T")


class QueueChannel:
    """One end of an in-memory link; `sent` keeps what this end received (for tests of what a party sees)."""

    def __init__(self, inbox: queue.Queue[list[torch.Tensor]], outbox: queue.Queue[list[torch.Tensor]],
                 timeout_s: float = 60.0) -> None:
        self.inbox, self.outbox, self.timeout_s = inbox, outbox, timeout_s
        self.received: list[torch.Tensor] = []
        self.bytes_sent = 0

    def exchange(self, mine: list[torch.Tensor]) -> list[torch.Tensor]:
        self.outbox.put([t.clone() for t in mine])
        self.bytes_sent += sum(t.numel() * t.element_size() for t in mine)
        theirs = self.inbox.get(timeout=self.timeout_s)
        self.received.extend(theirs)
        return theirs


class NullChannel:
    """The dealer's: nobody answers, and on meta tensors nothing needs to."""

    def exchange(self, mine: list[torch.Tensor]) -> list[torch.Tensor]:
        return [torch.empty_like(t) for t in mine]


def run_local(program: Callable[[Engine, Any], T], inputs: tuple[Any, Any], dealer_input: Any,
              trace: bool = False) -> tuple[T, T, dict[str, Any]]:
    """Run `program(engine, my_input)` as party 0, party 1 and (first, on shapes) the dealer."""
    seeds = new_seed(), new_seed()
    corrections: list[torch.Tensor] = []
    dealer = DealerSource(Stream(seeds[0]), Stream(seeds[1]), corrections.append)
    program(Engine("dealer", NullChannel(), dealer), dealer_input)
    a, b = queue.Queue[list[torch.Tensor]](), queue.Queue[list[torch.Tensor]]()
    channels = QueueChannel(a, b), QueueChannel(b, a)
    engines = (Engine(0, channels[0], SeededSource(Stream(seeds[0])), trace=trace),
               Engine(1, channels[1], CorrectedSource(Stream(seeds[1]), iter(corrections)), trace=trace))
    out = run_all([lambda: program(engines[0], inputs[0]), lambda: program(engines[1], inputs[1])])
    info = {"rounds": engines[0].rounds, "dealer_bytes": dealer.bytes_out,
            "bytes_sent": (channels[0].bytes_sent, channels[1].bytes_sent), "received": (channels[0].received,
                                                                                       channels[1].received),
            "opened": (engines[0].opened, engines[1].opened)}
    return out[0], out[1], info
