"""A private ACME CA for the TLS tests: Debian's Pebble (Let's Encrypt's test server) with
``pebble-challtestsrv`` as its DNS, meant to run in a network namespace of the test's own."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
import trustme

from bench.polling import wait_until
from bench.stack import stop

CLONE_NEWNET = 0x40000000
DIRECTORY = "https://127.0.0.1:14000/dir"
_libc = ctypes.CDLL(None, use_errno=True)


class NetworkNamespace:
    """A network namespace with only loopback (up), made by the test: the site can listen on
    ports 80 and 443 and the test name can resolve to it without touching the machine's own
    network. This thread enters it for a while (``entered``); every process and thread started
    from here meanwhile lives in it for good, so it outlasts each visit. A fixture must not
    yield inside ``entered``: the tests after it would run, and start their servers, in the
    namespace, where the session's Chromium cannot reach them."""

    def __init__(self) -> None:
        original = _namespace_fd()
        try:
            if _libc.unshare(CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) needs root (CAP_SYS_ADMIN)")
            self.fd = _namespace_fd()
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        finally:
            _setns(original)
            os.close(original)

    @contextmanager
    def entered(self) -> Iterator[None]:
        original = _namespace_fd()
        try:
            _setns(self.fd)
            yield
        finally:
            _setns(original)
            os.close(original)

    def close(self) -> None:
        os.close(self.fd)


def _namespace_fd() -> int:
    return os.open("/proc/thread-self/ns/net", os.O_RDONLY)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns(CLONE_NEWNET) failed")


@dataclass
class Acme:
    """Where the CA is: its directory, the CA file that makes its own listener trusted
    (REQUESTS_CA_BUNDLE for certbot), and the root it signs the certificates it issues with."""

    directory: str
    listener_ca: Path
    root: Path

    def certbot_settings(self) -> dict[str, str]:
        return {"ACME_SERVER": self.directory, "REQUESTS_CA_BUNDLE": str(self.listener_ca)}


@contextmanager
def pebble(folder: Path) -> Iterator[Acme]:
    """Pebble answering at ``DIRECTORY``, validating HTTP-01 on port 80 of whatever address
    challtestsrv gives a name (127.0.0.1, ::1: every name is this host)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    listener = ca.issue_cert("127.0.0.1", "localhost")
    listener.cert_chain_pems[0].write_to_path(folder / "listener.pem")
    listener.private_key_pem.write_to_path(folder / "listener.key")
    ca.cert_pem.write_to_path(folder / "listener-ca.pem")
    (folder / "pebble.json").write_text(json.dumps({"pebble": {
        "listenAddress": "127.0.0.1:14000", "managementListenAddress": "127.0.0.1:15000",
        "certificate": str(folder / "listener.pem"), "privateKey": str(folder / "listener.key"),
        "httpPort": 80, "tlsPort": 5001, "ocspResponderURL": "", "externalAccountBindingRequired": False}}))
    # No random sleeps before validating, no nonces refused on purpose: a quick, certain run.
    env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
    with ExitStack() as stack:
        for name, command in (
                ("challtestsrv", ["pebble-challtestsrv", "-dns01", "127.0.0.1:8053", "-http01", "", "-https01", "",
                                  "-tlsalpn01", "", "-management", "127.0.0.1:8055"]),
                ("pebble", ["pebble", "-config", str(folder / "pebble.json"), "-dnsserver", "127.0.0.1:8053"])):
            process = subprocess.Popen(command, env=env, stdout=(folder / f"{name}.log").open("wb"),
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            stack.callback(stop, process)

        def root() -> str | None:
            try:
                return requests.get("https://127.0.0.1:15000/roots/0", verify=folder / "listener-ca.pem", timeout=2).text
            except requests.ConnectionError:
                return None

        pem = wait_until(root, 30, interval=0.1)
        if not pem:
            raise RuntimeError(f"pebble did not start; see {folder}/pebble.log")
        (folder / "root.pem").write_text(pem)
        yield Acme(DIRECTORY, folder / "listener-ca.pem", folder / "root.pem")
