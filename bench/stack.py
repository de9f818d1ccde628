"""The production stack for benchmarks: uWSGI (uwsgi.ini, or the baseline) behind NGINX.

Also used by tests/test_deployment.py and remote/measure_memory.py. NGINX runs the
project's own files, unchanged apart from loopback ports and paths; benchmarks also remove
the per-client limits on predictions (``rate_limit=False``): a benchmark measures what the
server computes, and its one client address would otherwise be held to 10 predictions a
second and 1 at once. Every process started here is stopped by its own process id.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psutil
import requests

from bench.polling import wait_until

ROOT = Path(__file__).resolve().parent.parent
NGINX_DIR = ROOT / "remote" / "nginx"
_BESIDE_PYTHON = Path(sys.executable).with_name("uwsgi")
UWSGI = str(_BESIDE_PYTHON) if _BESIDE_PYTHON.is_file() else shutil.which("uwsgi")
NGINX = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}{os.pathsep}/usr/sbin")
Answer = TypeVar("Answer")
# The per-client limits a benchmark removes: it measures the server, from one client address.
PER_CLIENT_LIMITS = ("limit_req zone=classifier_predict burst=20 nodelay;",
                     "limit_conn classifier_uploads_per_address 1;")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A running uWSGI master; ``started`` is when it was launched (``time.monotonic``)."""

    process: subprocess.Popen
    started: float
    log: Path

    def cpu_seconds(self) -> float:
        """CPU time used so far by the workers (the master only supervises)."""
        return _cpu_seconds(self.process.pid, children_only=True)

    def workers(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.process.pid).children()
        except psutil.NoSuchProcess:
            return []

    def worker_rss_mb(self) -> list[float]:
        return sorted(round(w.memory_info().rss / 2**20) for w in self.workers())

    def worker_pids(self) -> list[int]:
        """A worker that died and was respawned by the master has a new process id."""
        return sorted(w.pid for w in self.workers())

    def stop(self) -> None:
        stop(self.process)


@dataclass
class Worker:
    """One uWSGI worker process: its CPU time, and its peak resident size since ``reset_peak``."""

    process: psutil.Process

    def cpu_seconds(self) -> float:
        times = self.process.cpu_times()
        return times.user + times.system

    def reset_peak(self) -> None:
        """Start VmHWM again from the current size."""
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")

    def peak(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) * 1024

    def measure(self, send: Callable[[], Answer]) -> tuple[Answer, float, int]:
        """``send()``'s result, the CPU seconds this worker used meanwhile, and its peak
        resident size in bytes (reset first)."""
        self.reset_peak()
        cpu = self.cpu_seconds()
        result = send()
        return result, self.cpu_seconds() - cpu, self.peak()


def stop(process: subprocess.Popen) -> None:
    """Stop a server we started, by its own process id."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


KERAS_HOME_HELP = ("a Keras cache to start from, copied (default: an empty one): models prepared there, "
                   "by `classifier export` for one, are found checked instead of made again")


def keras_home(folder: Path, start: Path | None) -> Path:
    """``folder/keras``, the Keras cache a benchmark's servers use: a copy of ``start`` (the
    ``--keras-home`` of KERAS_HOME_HELP), else empty, so first use makes what it needs."""
    home = folder / "keras"
    if start is not None:
        shutil.copytree(start, home)
    return home


def uwsgi_command(*options: str) -> list[str]:
    """uWSGI with ``options``; from a virtualenv, told about it (pip's uwsgi embeds the base
    Python, which would not see the packages installed in the virtualenv)."""
    virtualenv = ("--virtualenv", sys.prefix) if sys.prefix != sys.base_prefix else ()
    return [UWSGI, *options, *virtualenv]


def environment(env: dict[str, str]) -> dict[str, str]:
    """This process's environment without its own CLASSIFIER_* and UWSGI_* settings, plus ``env``:
    a server started from here runs on the settings it is given, not on the caller's."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("CLASSIFIER_", "UWSGI_"))}
    return {**inherited, **env}


def start_uwsgi(folder: Path, name: str, address: str, env: dict[str, str], processes: int, threads: int,
                extra: list[str] = ()) -> Server:
    """uWSGI with the project's uwsgi.ini; ``extra`` options come after it and win."""
    settings = {"CLASSIFIER_UWSGI_PROCESSES": str(processes), "CLASSIFIER_UWSGI_THREADS": str(threads),
                "CLASSIFIER_UWSGI_SOCKET": address}
    return _launch(folder, name, uwsgi_command("--ini", str(ROOT / "uwsgi.ini"), *extra), {**env, **settings})


def start_baseline(folder: Path, name: str, address: str, env: dict[str, str], processes: int,
                   threads: int) -> Server:
    """The baseline app under uWSGI with the same workers, threads and buffering."""
    command = uwsgi_command("--master", "--lazy-apps", "--need-app", "--enable-threads", "--strict",
               "--chdir", str(ROOT), "--module", "bench.baseline_app:app",
               "--processes", str(processes), "--threads", str(threads),
               "--buffer-size", "32768", "--post-buffering", "16777216", "--die-on-term",
               "--disable-logging", "--skip-atexit-teardown", "--harakiri", "300", "--socket", address)
    return _launch(folder, name, command, env)


def _launch(folder: Path, name: str, command: list[str], env: dict[str, str]) -> Server:
    log = folder / f"{name}.uwsgi.log"
    started = time.monotonic()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(folder / f"{name}.metrics"), **env}  # not uwsgi.ini's, in /tmp
    process = subprocess.Popen(command, cwd=folder, env=environment(env), stdout=log.open("wb"),
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return Server(process, started, log)


@dataclass
class Nginx:
    process: subprocess.Popen
    url: str
    folder: Path
    https_url: str = ""

    @property
    def access_log(self) -> Path:
        return self.folder / "classifier.access.log"

    def cpu_seconds(self) -> float:
        return _cpu_seconds(self.process.pid)

    def stop(self) -> None:
        stop(self.process)


def _cpu_seconds(pid: int, children_only: bool = False) -> float:
    try:
        parent = psutil.Process(pid)
        processes = parent.children() + ([] if children_only else [parent])
        return sum(sum(p.cpu_times()[:2]) for p in processes)
    except psutil.NoSuchProcess:
        return 0.0


def certificate_settings(folder: Path) -> dict[str, str]:
    """remote/certificate.sh's paths for an NGINX run from ``folder`` (the rest of its settings,
    DOMAIN and so on, are the caller's)."""
    return {"TLS_DIR": f"{folder}/tls", "ACME_WEBROOT": f"{folder}/acme", "CERTBOT_DIR": f"{folder}/letsencrypt",
            "CERTBOT_WORK_DIR": f"{folder}/letsencrypt-work", "CERTBOT_LOGS_DIR": f"{folder}/letsencrypt-logs",
            "TLS_SNIPPET": f"{folder}/classifier-tls.conf",
            "NGINX_RELOAD": f"{NGINX} -c {folder}/nginx.conf -p {folder} -s reload"}


def link_certificate(folder: Path, settings: dict[str, str]) -> None:
    """``remote/certificate.sh link`` with ``settings`` (none: a self-signed certificate)."""
    subprocess.run([str(ROOT / "remote" / "certificate.sh"), "link"], check=True, capture_output=True,
                   env={**os.environ, **certificate_settings(folder), **settings})


def start_nginx(folder: Path, upstreams: dict[str, str], site: str = "classifier.conf",
                rate_limit: bool = True, ports: tuple[int, int] | None = None,
                tls: dict[str, str] | None = None, htpasswd: Path | None = None,
                nginx_conf: Callable[[Path], str] | None = None) -> Nginx:
    """NGINX serving remote/nginx/``site`` on loopback ports (http, https: ``ports``, else free
    ones), the files unchanged apart from ports and paths; ``upstreams`` maps the site's app
    addresses to ours. Its certificate comes from ``remote/certificate.sh link`` with ``tls``'s
    settings (none: self-signed, so http serves everything). With ``htpasswd`` the site is
    private, as remote/setup.sh HTPASSWD=... makes it. Benchmarks pass
    ``rate_limit=False``: they measure the server, from one client address. ``nginx_conf``
    gives the main configuration for the folder (it includes ``site.conf`` there), instead of
    a minimal one: a host's own nginx.conf, say."""
    folder.mkdir(parents=True, exist_ok=True)
    port, tls_port = ports or (free_port(), free_port())
    link_certificate(folder, tls or {})
    locations = {"/srv/classifier/": f"{ROOT}/", "/var/www/classifier-acme": f"{folder}/acme",
                 "/etc/classifier/htpasswd": str(htpasswd or folder / "htpasswd")}
    if not rate_limit:
        locations |= dict.fromkeys(PER_CLIENT_LIMITS, "# the benchmark measures the server: no per-client limit")
    (folder / "classifier-locations.conf").write_text(
        _render((NGINX_DIR / "classifier-locations.conf").read_text(), locations))
    private = {'default "off";': 'default "Image classifier";'} if htpasswd else {}
    (folder / "classifier-http.conf").write_text(_render((NGINX_DIR / "classifier-http.conf").read_text(), private))
    ipv6, tls_ipv6 = ((f"listen [::1]:{port};", f"listen [::1]:{tls_port} ssl http2;") if _has_ipv6_loopback()
                      else ("# no IPv6 loopback here",) * 2)
    (folder / "site.conf").write_text(_render((NGINX_DIR / site).read_text(), {
        "listen 80 default_server;": f"listen 127.0.0.1:{port};",
        "listen [::]:80 default_server;": ipv6,
        "listen 443 ssl http2 default_server;": f"listen 127.0.0.1:{tls_port} ssl http2;",
        "listen [::]:443 ssl http2 default_server;": tls_ipv6,
        "/etc/nginx/snippets/classifier-tls.conf": str(folder / "classifier-tls.conf"),
        "/etc/nginx/snippets/classifier-locations.conf": str(folder / "classifier-locations.conf"),
        "/etc/nginx/snippets/classifier-http.conf": str(folder / "classifier-http.conf"),
        "/var/log/nginx/": f"{folder}/",
        **upstreams,
    }))
    for name in ("uwsgi_params", "mime.types"):  # Debian's, as the real nginx.conf includes them
        shutil.copy(Path("/etc/nginx") / name, folder)
    (folder / "nginx.conf").write_text((nginx_conf or _minimal_conf)(folder))
    process = subprocess.Popen([NGINX, "-c", str(folder / "nginx.conf"), "-p", str(folder)],
                               stdout=(folder / "nginx.out").open("wb"), stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    nginx = Nginx(process, f"http://127.0.0.1:{port}", folder, f"https://127.0.0.1:{tls_port}")

    def state() -> str:
        if process.poll() is not None:
            return "exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return "listening"
        except OSError:
            return "starting"

    if wait_until(state, 15, lambda now: now != "starting", interval=0.05) == "listening":
        return nginx
    nginx.stop()
    errors = (folder / "nginx.out").read_text() + _read(folder / "error.log")
    raise RuntimeError(f"nginx did not start:\n{errors}")


def _minimal_conf(folder: Path) -> str:
    """The least nginx.conf that runs the site from ``folder``, in the foreground."""
    temp = "\n".join(f"    {kind}_temp_path {folder}/{kind}_temp;"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    user = "user root;" if os.geteuid() == 0 else ""
    return f"""{user}
worker_processes 1;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 512; }}
http {{
    include mime.types;
    default_type application/octet-stream;
    sendfile on;
    access_log off;
{temp}
    include {folder}/site.conf;
}}
"""


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def wait_for(url: str, server: Server, timeout: float = 300) -> float:
    """Seconds from the server's launch until ``url`` answers 200."""
    wait_until_ok(url, server.process, timeout, log=server.log)
    return time.monotonic() - server.started


def wait_until_ok(url: str, process: subprocess.Popen, timeout: float, log: Path | None = None) -> None:
    """Poll ``url`` until it answers 200; fail at once if ``process`` exits first."""
    see = f"; see {log}" if log else ""

    def answered() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}{see}")
        try:
            return requests.get(url, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    if not wait_until(answered, timeout, interval=0.02):
        raise TimeoutError(f"{url} did not answer within {timeout}s{see}")


def _render(text: str, substitutions: dict[str, str]) -> str:
    for old, new in substitutions.items():
        if old not in text:
            raise KeyError(f"{old!r} is no longer in the NGINX configuration")
        text = text.replace(old, new)
    return text
