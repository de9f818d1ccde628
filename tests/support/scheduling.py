"""How the suite spreads over pytest-xdist's workers (tests/conftest.py's hooks call this;
pyproject.toml's addopts start the workers).

- A worker takes whole modules, so a module's servers and fixtures are made once.
- The tests that drive Chromium and the modules that run containers share one group and run
  one after another on one worker: a container's network devices appearing on the host make
  Chromium fail the requests it has in flight (``ERR_NETWORK_CHANGED``). The HTTPS module
  joins whole too: its ACME site, made once per module, serves its browser tests and the
  others. Any other module's tests without Chromium run on any worker, so that the group,
  which is the longest chain of the run, holds only what must be in it.
- The modules of the longest kinds start first and the quick ones fill in at the end,
  rather than one worker finishing a long module alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling

# pyproject.toml's markers, in the order their modules start.
FIRST_KINDS = ("container", "tls", "browser", "stack", "slow")
# The kind of test that joins the group, and the kinds whose whole modules join it.
BROWSER = "browser"
WHOLE_MODULE_KINDS = {"container", "tls"}
NETWORK_GROUP = "chromium-and-podman"


def kinds_of(item: pytest.Item) -> set[str]:
    return {mark.name for mark in item.iter_markers()}


def order_and_group(items: list[pytest.Item]) -> None:
    """Order modules by their longest kind (each module's tests in their order), and put the
    Chromium tests and the container and HTTPS modules into the one group (conftest calls
    this once the kinds are marked, before xdist reads the groups)."""
    rank: dict[Path, int] = {}
    whole: set[Path] = set()
    for item in items:
        kinds = kinds_of(item)
        ranks = [FIRST_KINDS.index(kind) for kind in kinds if kind in FIRST_KINDS]
        rank[item.path] = min([rank.get(item.path, len(FIRST_KINDS)), *ranks])
        if kinds & WHOLE_MODULE_KINDS:
            whole.add(item.path)
    items.sort(key=lambda item: rank[item.path])
    for item in items:
        if item.path in whole or BROWSER in kinds_of(item):
            item.add_marker(pytest.mark.xdist_group(NETWORK_GROUP))


class ModulesAndGroups(LoadScopeScheduling):
    """xdist's ``loadgroup`` for grouped tests, ``loadfile`` for the rest: a test's unit of
    work is its group when it has one (xdist appends ``@group`` to its id), else its module."""

    def _split_scope(self, nodeid: str) -> str:
        if nodeid.rfind("@") > nodeid.rfind("]"):
            return nodeid.rsplit("@", 1)[1]
        return nodeid.split("::", 1)[0]
