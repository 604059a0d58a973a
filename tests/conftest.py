"""Shared fixtures: the live stack (real servers, tests/live_stack.py) and the hospital agents
(tests/distributed_agents.py), for the integration and the adversarial tests alike."""

from __future__ import annotations

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

from tests.distributed_agents import agents  # noqa: E402,F401  (fixtures registered here for every folder)
from tests.live_stack import federation_dirs, live_stack  # noqa: E402,F401
