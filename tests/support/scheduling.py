"""How the suite spreads over pytest-xdist's workers (tests/conftest.py's hooks call this;
pyproject.toml's addopts start the workers).

- A worker takes whole modules, so a module's servers and fixtures are made once.
- The modules that drive Chromium or run containers share one group and run one after
  another on one worker: a container's network devices appearing on the host make
  Chromium fail the requests it has in flight (``ERR_NETWORK_CHANGED``).
- The modules of the longest kinds start first and the quick ones fill in at the end,
  rather than one worker finishing a long module alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling

# pyproject.toml's markers, in the order their modules start.
FIRST_KINDS = ("container", "tls", "browser", "stack", "slow")
# Kinds that must not run beside each other, and the group their modules share.
NETWORK_KINDS = {"browser", "container"}
NETWORK_GROUP = "chromium-and-podman"


def kinds_of(item: pytest.Item) -> set[str]:
    return {mark.name for mark in item.iter_markers()}


def order_and_group(items: list[pytest.Item]) -> None:
    """Order modules by their longest kind (each module's tests in their order), and put the
    modules with a browser or container test into the one group (conftest calls this once the
    kinds are marked, before xdist reads the groups)."""
    rank: dict[Path, int] = {}
    networked: set[Path] = set()
    for item in items:
        kinds = kinds_of(item)
        ranks = [FIRST_KINDS.index(kind) for kind in kinds if kind in FIRST_KINDS]
        rank[item.path] = min([rank.get(item.path, len(FIRST_KINDS)), *ranks])
        if kinds & NETWORK_KINDS:
            networked.add(item.path)
    items.sort(key=lambda item: rank[item.path])
    for item in items:
        if item.path in networked:
            item.add_marker(pytest.mark.xdist_group(NETWORK_GROUP))


class ModulesAndGroups(LoadScopeScheduling):
    """xdist's ``loadgroup`` for grouped tests, ``loadfile`` for the rest: a test's unit of
    work is its group when it has one (xdist appends ``@group`` to its id), else its module."""

    def _split_scope(self, nodeid: str) -> str:
        if nodeid.rfind("@") > nodeid.rfind("]"):
            return nodeid.rsplit("@", 1)[1]
        return nodeid.split("::", 1)[0]
