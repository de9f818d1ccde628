"""Forwarding cannot be turned into a proxy to the cloud metadata service (SSRF).

The probe runs in a network namespace of its own (``unshare -n``: loopback only), with the
forbidden addresses bound to its loopback and listening, ``/etc/hosts`` replaced so a
hostname resolves to one of them, and ``/etc/resolv.conf`` pointing at the probe's own DNS
server. Every request must be refused and no connection made.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import PHOTOS, ROOT

HOSTS = "169.254.169.254 metadata.test\nfd00:ec2::254 metadata6.test\n127.0.0.1 localhost\n"
FORBIDDEN_ADDRESSES = ["169.254.169.254", "100.100.100.200", "168.63.129.16", "192.0.0.192"]
FORBIDDEN_IPV6 = ["fd00:ec2::254", "fd20:ce::254", "64:ff9b::a9fe:a9fe", "64:ff9b:1::a9fe:a9fe",
                  "::a9fe:a9fe", "2002:a9fe:a9fe::", "2001:0:4136:e378:8000:63bf:5601:5601"]
SETUP = (
    "ip link set lo up && "
    + "".join(f"ip addr add {address}/32 dev lo && " for address in FORBIDDEN_ADDRESSES)
    + "".join(f"ip -6 addr add {address}/128 dev lo nodad && " for address in FORBIDDEN_IPV6)
    + 'printf "$HOSTS" > "$HOSTS_FILE" && mount --bind "$HOSTS_FILE" /etc/hosts && '
    'printf "nameserver 127.0.0.1\\n" > "$RESOLV_FILE" && mount --bind "$RESOLV_FILE" /etc/resolv.conf && '
    'exec "$@"'
)
REFUSED_URLS = [
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://2852039166/",                    # decimal
    "http://0251.0376.0251.0376/",           # octal
    "http://0xa9fea9fe/",                    # hex
    "http://169.254.43518/",                 # a.b.c with a 16-bit tail
    "http://[::ffff:169.254.169.254]/",      # IPv4-mapped IPv6
    "http://[::ffff:a9fe:a9fe]/",
    "http://[64:ff9b::a9fe:a9fe]/",          # NAT64 (well-known prefix)
    "http://[64:ff9b:1::a9fe:a9fe]/",        # NAT64 (local-use prefix)
    "http://[::a9fe:a9fe]/",                 # IPv4-compatible IPv6
    "http://[2002:a9fe:a9fe::]/",            # 6to4
    "http://[2001:0:4136:e378:8000:63bf:5601:5601]/",  # Teredo, client 169.254.169.254
    "http://0.0.0.0/",                       # the unspecified address reaches loopback
    "http://0/",
    "http://[::]/",
    "http://100.100.100.200/",               # Alibaba Cloud metadata
    "http://168.63.129.16/",                 # Azure WireServer
    "http://192.0.0.192/",                   # Oracle Cloud metadata
    "http://[fd20:ce::254]/",                # Google Cloud metadata over IPv6
    "http://metadata.test/latest/meta-data/",  # a name that resolves to link-local
    "http://metadata6.test/",
    "http://169.254.169.254:443/",
    "file:///etc/passwd",
    "gopher://169.254.169.254:80/_GET",
    "ftp://169.254.169.254/",
    "http://user:pass@169.254.169.254/",
    "http://user@127.0.0.1/predict",
    "http://rebind.test/predict",            # 127.0.0.1 when checked, the metadata service after
]
# Forwarded to without the up-front URL check: the connection-time guard alone must refuse.
UNCHECKED_URLS = [
    "http://metadata.test/latest/meta-data/",
    "http://metadata6.test/",
    "http://rebind.test/predict",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://0.0.0.0/",
]


def run_probe(tmp_path) -> dict:
    command = ["unshare", "--net", "--mount", "--", "sh", "-c", SETUP, "sh",
               sys.executable, "-m", "tests.ssrf_probe",
               str(PHOTOS["chelsea"]), json.dumps(REFUSED_URLS), json.dumps(UNCHECKED_URLS)]
    env = {"HOSTS": HOSTS, "HOSTS_FILE": str(tmp_path / "hosts"), "RESOLV_FILE": str(tmp_path / "resolv.conf"),
           "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def outcome(tmp_path_factory) -> dict:
    return run_probe(tmp_path_factory.mktemp("ssrf"))


def test_forbidden_destinations_are_refused_without_a_connection(outcome):
    answers = outcome["answers"]
    for url in REFUSED_URLS:
        assert answers[url] == [400, "remote_not_allowed"], url
    redirect = next(url for url in answers if url not in REFUSED_URLS)
    assert answers[redirect] == [502, "remote_error"]  # the 302 is reported, never followed
    assert outcome["connections"] == []


def test_the_connection_is_checked_again_when_it_is_made(outcome):
    """DNS rebinding: the name passed the up-front check, then resolved to the metadata service."""
    assert outcome["dns_answers"][0] == "127.0.0.1"  # what check_url saw, and allowed
    assert set(outcome["dns_answers"][1:]) == {"169.254.169.254"}
    assert outcome["unchecked"] == {url: "remote_not_allowed" for url in UNCHECKED_URLS}
    assert outcome["connections"] == []
