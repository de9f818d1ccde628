"""Forwarding cannot be turned into a proxy to the cloud metadata service (SSRF).

The probe runs in a network namespace of its own (``unshare -n``: loopback only), with the
metadata addresses bound to its loopback and listening, and ``/etc/hosts`` replaced so a
hostname resolves to one of them. Every request must be refused and no connection made.
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import PHOTOS, ROOT

HOSTS = "169.254.169.254 metadata.test\nfd00:ec2::254 metadata6.test\n127.0.0.1 localhost\n"
SETUP = (
    "ip link set lo up && ip addr add 169.254.169.254/32 dev lo && "
    "ip -6 addr add fd00:ec2::254/128 dev lo nodad && "
    'printf "$HOSTS" > "$HOSTS_FILE" && mount --bind "$HOSTS_FILE" /etc/hosts && exec "$@"'
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
    "http://metadata.test/latest/meta-data/",  # a name that resolves to link-local
    "http://metadata6.test/",
    "http://169.254.169.254:443/",
    "file:///etc/passwd",
    "gopher://169.254.169.254:80/_GET",
    "ftp://169.254.169.254/",
    "http://user:pass@169.254.169.254/",
    "http://user@127.0.0.1/predict",
]


def run_probe(tmp_path) -> dict:
    command = ["unshare", "--net", "--mount", "--", "sh", "-c", SETUP, "sh",
               sys.executable, str(ROOT / "tests" / "ssrf_probe.py"),
               str(PHOTOS["chelsea"]), json.dumps(REFUSED_URLS)]
    env = {"HOSTS": HOSTS, "HOSTS_FILE": str(tmp_path / "hosts"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_forbidden_destinations_are_refused_without_a_connection(tmp_path):
    outcome = run_probe(tmp_path)
    answers = outcome["answers"]
    for url in REFUSED_URLS:
        assert answers[url] == [400, "remote_not_allowed"], url
    redirect = next(url for url in answers if url not in REFUSED_URLS)
    assert answers[redirect] == [502, "remote_error"]  # the 302 is reported, never followed
    assert outcome["connections"] == []
