"""Podman for the container tests and this benchmark: the base image, the project's image, and
what the image costs (docs/containers.md, "Measured").

    python3 -m bench.containers [--cold] [--starts N] [--without-preload] [--no-build]

Prints the build time (warm: the layer cache holds every step; cold: --no-cache), the image
sizes and what the runtime image adds to its base, and, for a fresh container, the time from
start to its first prediction and its workers' memory. Podman runs as set up here (below):
runc as the runtime, no default ulimits, and the host's CA bundle handed to the build.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench.stack import free_port

ROOT = Path(__file__).resolve().parent.parent
BASE = "debian:bookworm-slim"
IMAGE = "localhost/classifier:latest"
NGINX_IMAGE = "localhost/classifier-nginx:latest"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# runc: this machine's crun cannot start containers; no default ulimits: raising them is refused here.
RUNTIME = os.environ.get("CLASSIFIER_PODMAN_RUNTIME", "/usr/sbin/runc")
PHOTO = ROOT / "classifier" / "data" / "photos" / "chelsea.jpg"  # CC0 (its README)


def containers_conf() -> Path:
    """A containers.conf that keeps the container's limits as they are (CONTAINERS_CONF)."""
    path = Path(tempfile.gettempdir()) / "classifier-containers.conf"
    if not path.is_file():
        path.write_text("[containers]\ndefault_ulimits = []\n")
    return path


def environment() -> dict[str, str]:
    """The environment podman and podman-compose run with (``CONTAINERS_CONF`` set)."""
    return {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(containers_conf()))}


def podman(*args: str, check: bool = True, timeout: float = 600, **kwargs: object) -> subprocess.CompletedProcess:
    """``podman ARGS`` with the runtime above; its output as text."""
    return subprocess.run(["podman", "--runtime", RUNTIME, *args], env=environment(), check=check,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def image_exists(name: str) -> bool:
    return podman("image", "exists", name, check=False).returncode == 0


def ensure_base() -> None:
    """``debian:bookworm-slim`` from Debian's archive when no registry can give it (~1 min)."""
    if image_exists(BASE):
        return
    debootstrap = subprocess.Popen(["mmdebstrap", "--quiet", "--variant=minbase", "bookworm", "-"],
                                   stdout=subprocess.PIPE)
    subprocess.run(["podman", "import", "-", BASE], stdin=debootstrap.stdout, env=environment(), check=True,
                   capture_output=True, timeout=900)
    if debootstrap.wait() != 0:
        raise RuntimeError("mmdebstrap failed to make the base image")


def build_args(*extra: str) -> list[str]:
    """``podman build`` of the Containerfile, with the host's CA bundle as the build secret."""
    secret = ["--secret", f"id=cacert,src={CA_BUNDLE}"] if CA_BUNDLE.is_file() else []
    # --format docker: the OCI format has no HEALTHCHECK (docker build always keeps it).
    return ["build", "--pull=never", "--format", "docker", *secret, *extra, str(ROOT)]


def build(tag: str = IMAGE, *extra: str) -> float:
    """Build the image (``tag``; ``extra`` options such as ``--target nginx``); seconds taken."""
    ensure_base()
    started = time.perf_counter()
    done = podman(*build_args("-t", tag, *extra), check=False, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"podman build failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return time.perf_counter() - started


def size_mb(image: str) -> float:
    return int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout) / 1e6


def wait_ready(url: str, timeout: float = 120) -> float:
    """Seconds until ``GET url/readyz`` answers 200."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        try:
            if requests.get(f"{url}/readyz", timeout=5).status_code == 200:
                return time.perf_counter() - started
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url}/readyz not ready after {timeout} s")


def run(name: str, port: int, *options: str, image: str = IMAGE) -> str:
    """Start ``image`` as container ``name`` read-only, publishing its HTTP port on ``port``.

    Without a ``--network`` option, on slirp4netns: the host gains no network interface (the
    default bridge adds one, which a browser running elsewhere on the host takes for a
    network change and fails its requests with ERR_NETWORK_CHANGED)."""
    podman("rm", "--force", "--time", "0", name, check=False)
    return start(name, port, *options, image=image)


def start(name: str, port: int, *options: str, image: str = IMAGE) -> str:
    """``run`` without first removing a container ``name`` left from before (there is none)."""
    network = () if "--network" in options else ("--network", "slirp4netns")
    podman("run", "--detach", "--name", name, "--read-only", *network, "--publish", f"127.0.0.1:{port}:8080",
           *options, image)
    return f"http://127.0.0.1:{port}"


def first_prediction_seconds(*options: str, image: str = IMAGE) -> tuple[float, list[float]]:
    """From ``podman run`` (with ``options``) to a 200 from /predict, and the workers' RSS (MiB) after it."""
    port, name = free_port(), "classifier-bench"
    photo = PHOTO.read_bytes()
    podman("rm", "--force", "--time", "0", name, check=False)
    started = time.perf_counter()
    url = start(name, port, *options, image=image)
    try:
        while True:
            try:
                if requests.post(f"{url}/predict", files={"image": photo}, timeout=30).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.02)
        seconds = time.perf_counter() - started
        return seconds, worker_rss_mb(name)
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)


def worker_rss_mb(name: str) -> list[float]:
    """The RSS of each uWSGI worker in container ``name``: the children of its process 1, the
    uWSGI master (read from /proc: the image has no ps)."""
    return json.loads(podman("exec", name, "python3", "-c", _WORKERS_RSS).stdout)


_WORKERS_RSS = """
import json, os
rss = []
for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
        status = dict(line.split(':', 1) for line in open(f'/proc/{pid}/status'))
    except OSError:
        continue
    if status['PPid'].strip() == '1':
        rss.append(round(int(status['VmRSS'].split()[0]) / 1024, 1))
print(json.dumps(sorted(rss)))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold", action="store_true", help="also build once with --no-cache (~10 min)")
    parser.add_argument("--starts", type=int, default=3, metavar="N", help="containers started, one at a time [3]")
    parser.add_argument("--no-build", action="store_true", help="start the image as it is, without building")
    parser.add_argument("--without-preload", action="store_true",
                        help="take turns with starts without CLASSIFIER_UWSGI_PRELOAD (uwsgi.ini), to compare")
    args = parser.parse_args()
    if not args.no_build:
        warm = build()  # a first build here is a cold one; run again for the warm figure
        print(f"build, cache as found: {warm:.0f} s; again: {build():.1f} s")
        if args.cold:
            print(f"build, --no-cache: {build(IMAGE, '--no-cache'):.0f} s")
        base, image = size_mb(BASE), size_mb(IMAGE)
        print(f"base {BASE} {base:.0f} MB; runtime image {image:.0f} MB, adds {image - base:.0f} MB")
    variants = {"as built": ()}
    if args.without_preload:
        variants["without preload"] = ("--unsetenv", "CLASSIFIER_UWSGI_PRELOAD")
    starts: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.starts):
        for name, options in variants.items():  # in turns: each meets the host's load alike
            seconds, rss = first_prediction_seconds(*options)
            starts[name].append(seconds)
            print(f"{name}: podman run to first prediction {seconds:.2f} s (load average "
                  f"{os.getloadavg()[0]:.1f}); worker RSS after it: {rss} MiB")
    for name, seconds in starts.items():
        print(f"{name}: median {statistics.median(seconds):.2f} s, {min(seconds):.2f}-{max(seconds):.2f} s "
              f"over {len(seconds)} starts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
