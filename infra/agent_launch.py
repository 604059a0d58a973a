"""The command a hospital's process worker runs for each flow run (job variable `command`).

Standard library only, so it starts in milliseconds: it hands the flow run (its environment and
working folder) to the agent's warm launcher over a Unix socket and exits with the run's exit code.
The agent forks the run from a process that has already imported the training stack and read the
hospital's data, which is what makes a round's dispatch cost well under the ~10 s of a cold start.
Without an agent socket it falls back to the same engine, cold (`python -m infra.agent_engine`: the
locally imported flow, never one the Prefect server names).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys

SOCKET_ENV = "PRIMIA_HOSPITAL__LAUNCH_SOCKET"


def main() -> int:
    path = os.environ.get(SOCKET_ENV)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if not path:
            raise OSError("no agent socket")
        conn.connect(path)
    except OSError:
        conn.close()
        os.execv(sys.executable, [sys.executable, "-m", "infra.agent_engine", *sys.argv[1:]])
    # Prefect cancels a run by signalling this process: closing the socket makes the agent stop the run.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(143))
    conn.sendall(json.dumps({"env": dict(os.environ), "cwd": os.getcwd(), "argv": sys.argv[1:]}).encode() + b"\n")
    reply = conn.makefile("rb").readline()
    try:
        return int(json.loads(reply)["exit"])
    except (ValueError, KeyError):
        print("primia agent closed the connection without an exit code", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
