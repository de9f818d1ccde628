"""The production deployment, run for real: uWSGI with uwsgi.ini behind NGINX with remote/nginx/.

Nothing here is installed by hand: the tests use Debian's ``nginx`` and the pip ``uwsgi`` of
the Python running them, and start both on loopback ports with the project's own files. The
NGINX files are used unchanged apart from these substitutions: listen addresses and ports,
the upstream addresses, and the paths of the repository, the shared snippet and the logs.
A minimal nginx.conf around the site stands in for Ubuntu's (pid, logs and temp paths in a
temporary folder, ``daemon off``).

Every process a test starts is stopped by the test, by its own process id.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import pwd
import queue
import re
import signal
import socket
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import psutil
import pytest
import requests
import urllib3
from conftest import (
    CAT_LABELS,
    ROOT,
    Site,
    Uwsgi,
    copy_of,
    free_port,
    start_uwsgi,
    stop,
)
from support.nginx import access_log_entries, client_at, first_answer, hold_upload

from bench import stack
from bench.polling import wait_until
from bench.stack import NGINX, UWSGI, Nginx, environment, start_nginx, uwsgi_command
from classifier.web.static_modules import content_hash

pytestmark = pytest.mark.stack  # uWSGI and NGINX, run for real

REMOTE = ROOT / "remote"
NGINX_DIR = REMOTE / "nginx"
# Under the /predict limit of remote/nginx/classifier-locations.conf (10 r/s, burst 20).
LOAD_RATE = 8.0


if not (NGINX and UWSGI):
    missing = " and ".join(name for name, path in (("nginx", NGINX), ("uwsgi", UWSGI)) if not path)
    pytest.fail(f"{missing} not installed: apt-get install nginx; pip install -r requirements-test.txt",
                pytrace=False)


# --- configuration, unchanged apart from substitutions ----------------------------------------

def uwsgi_ini_value(name: str) -> str:
    match = re.search(rf"^{re.escape(name)} = (.+)$", (ROOT / "uwsgi.ini").read_text(), re.M)
    assert match, f"uwsgi.ini has no {name}"
    return match.group(1).strip()


def locations_file() -> str:
    return (NGINX_DIR / "classifier-locations.conf").read_text()


def nginx_location(name: str) -> str:
    """The directives inside ``location <name> {...}`` of classifier-locations.conf."""
    return re.search(rf"^location {re.escape(name)} \{{(.*?)\n\}}", locations_file(), re.S | re.M).group(1)


def nginx_directives(text: str) -> dict[str, str]:
    """``name value;`` lines at the top level of ``text`` (the server level, or a location's)."""
    return dict(re.findall(r"^\s*(\w+) ([^;{]+);", re.sub(r"^location .*?^\}", "", text, flags=re.S | re.M), re.M))


def nginx_seconds(value: str) -> int:
    return int(value.removesuffix("s"))


def nginx_bytes(value: str) -> int:
    units = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
    return int(value[:-1]) * units[value[-1].lower()] if value[-1].isalpha() else int(value)


# --- processes --------------------------------------------------------------------------------

def restart(instance: Uwsgi, folder: Path, name: str) -> Uwsgi:
    """The same instance started again on the same sockets."""
    return start_uwsgi(folder, name, instance.port, instance.http_port, **instance.settings)


# --- requests ---------------------------------------------------------------------------------

@dataclass
class Outcome:
    status: int | None
    body: object


def post_cat(url: str, image: bytes, timeout: float = 90, client: requests.Session | None = None) -> Outcome:
    try:
        response = (client or requests).post(url + "/predict", files={"image": ("cat.png", image, "image/png")},
                                             timeout=(5, timeout))
    except requests.RequestException as error:
        return Outcome(None, repr(error))
    try:
        body = response.json()
    except ValueError:
        body = response.text[:300]
    return Outcome(response.status_code, body)


def paced_run(url: str, image: bytes, *, limit: int, seconds: float,
              before_each: Callable[[int], None] = lambda i: None,
              stop_when: Callable[[int], bool] = lambda i: False) -> list[Outcome]:
    """Predictions sent at most LOAD_RATE a second, at most 8 in flight, bounded in count and
    time. Sends are spaced from the previous send, never from a schedule, so no burst follows
    a slow stretch and NGINX's rate limit is never reached. Each request in flight comes from
    an address of its own (127.0.1.1-8), as 8 clients would: NGINX takes one at a time from each."""
    in_flight = threading.Semaphore(8)
    clients: queue.SimpleQueue[requests.Session] = queue.SimpleQueue()
    for number in range(1, 9):
        clients.put(client_at(f"127.0.1.{number}"))
    futures = []
    started = last = time.monotonic()

    def task() -> Outcome:
        client = clients.get()
        try:
            return post_cat(url, image, client=client)
        finally:
            clients.put(client)
            in_flight.release()

    with ThreadPoolExecutor(max_workers=8) as pool:
        for i in range(limit):
            if time.monotonic() - started > seconds or stop_when(i):
                break
            in_flight.acquire()
            time.sleep(max(0.0, last + 1 / LOAD_RATE - time.monotonic()))
            last = time.monotonic()
            before_each(i)
            futures.append(pool.submit(task))
        return [future.result() for future in futures]


def failures(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.status != 200 or not isinstance(o.body, dict) or not o.body.get("predictions")]


def top_labels(body: dict) -> list[str]:
    return [p["label"] for p in body["predictions"]]


# --- the configuration agrees with itself -----------------------------------------------------

def test_uwsgi_and_nginx_numbers_agree():
    harakiri = int(uwsgi_ini_value("harakiri"))
    server = nginx_directives(locations_file())
    predict = nginx_directives(nginx_location("= /predict"))
    # NGINX waits a little longer than uWSGI lets a request run, and a graceful reload
    # waits for the longest request.
    assert harakiri < nginx_seconds(server["uwsgi_read_timeout"]) <= harakiri + 10
    assert int(uwsgi_ini_value("worker-reload-mercy")) >= harakiri
    # Bodies: the app's own cap (CLASSIFIER_MAX_REQUEST_BYTES) sits just below NGINX's and
    # uWSGI's, which are equal, so the app answers a body over the limit itself; accepted
    # bodies stay in memory throughout.
    from classifier import Settings

    app_cap = Settings().max_request_bytes
    limit = nginx_bytes(predict["client_max_body_size"])
    assert app_cap < limit == int(uwsgi_ini_value("limit-post")) <= app_cap + 2**20
    assert nginx_bytes(predict["client_body_buffer_size"]) >= limit
    assert nginx_bytes(server["client_body_buffer_size"]) >= nginx_bytes(server["client_max_body_size"])
    # Everything NGINX passes on fits uWSGI's buffers: the uwsgi protocol's largest packet,
    # and as many variables as fit in it (each at least 10 bytes), 2 per max-vars.
    assert int(uwsgi_ini_value("buffer-size")) == 65535
    assert 2 * int(uwsgi_ini_value("max-vars")) >= 65535 // 10
    # The page's form takes the same uploads as /predict, under the same limits.
    page = nginx_directives(nginx_location("= /"))
    shared = ("client_max_body_size", "client_body_buffer_size", "limit_conn_status", "limit_req_status")
    assert {name: page[name] for name in shared} == {name: predict[name] for name in shared}
    upload_limits = re.compile(r"^\s*((?:limit_conn|limit_req zone=classifier_predict) .*;)$", re.M)
    predict_limits = upload_limits.findall(nginx_location("= /predict"))
    assert len(predict_limits) == 3 and upload_limits.findall(nginx_location("= /")) == predict_limits
    # One address holds one worker less than uWSGI has, so another address always finds one free.
    per_address = re.search(r"limit_conn classifier_uploads_per_address (\d+);", nginx_location("= /predict"))
    assert int(per_address.group(1)) == int(uwsgi_ini_value("processes")) - 1
    assert uwsgi_ini_value("lazy-apps") == "true"


def test_setup_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(REMOTE / "setup.sh")], check=True, timeout=30)


def test_broken_setting_stops_uwsgi(tmp_path):
    """need-app: a worker that cannot load the app takes the whole service down, loudly."""
    server = stack.start_uwsgi(tmp_path, "uwsgi", f"127.0.0.1:{free_port()}",
                               {"CLASSIFIER_DEFAULT_MODEL": "NoSuchModel"}, processes=1, threads=1)
    process, log = server.process, server.log
    try:
        assert process.wait(timeout=90) != 0
    finally:
        if process.poll() is None:
            stop(process)
    assert "NoSuchModel" in log.read_text()


def test_the_default_metrics_folder_is_refused_when_another_user_planted_it(tmp_path):
    """Without PROMETHEUS_MULTIPROC_DIR, uwsgi.ini names /tmp/classifier-metrics-<socket>: a
    name another local user can take first, as a link to a folder of ours, whose files the
    first worker used to delete. uWSGI now refuses to start, saying why, and touches nothing."""
    port = free_port()
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "counter_1.db").write_bytes(b"keep")
    planted = Path(f"/tmp/classifier-metrics-127.0.0.1:{port}")
    planted.symlink_to(ours)
    if os.geteuid() == 0:  # as the other user would have made it
        nobody = pwd.getpwnam("nobody")
        os.lchown(planted, nobody.pw_uid, nobody.pw_gid)
    env = environment({"CLASSIFIER_UWSGI_SOCKET": f"127.0.0.1:{port}", "CLASSIFIER_UWSGI_PROCESSES": "1",
                       "CLASSIFIER_WARMUP": "0", "CLASSIFIER_OFFLINE": "1", "KERAS_HOME": str(tmp_path / "keras")})
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = tmp_path / "uwsgi.log"
    process = subprocess.Popen(uwsgi_command("--ini", str(ROOT / "uwsgi.ini")), cwd=tmp_path, env=env,
                               stdout=log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        assert process.wait(timeout=90) != 0
    finally:
        if process.poll() is None:
            stop(process)
        planted.unlink()
    assert f"PROMETHEUS_MULTIPROC_DIR {planted} is a symbolic link" in log.read_text()
    assert [path.name for path in ours.iterdir()] == ["counter_1.db"]
    assert (ours / "counter_1.db").read_bytes() == b"keep"


# --- one host: NGINX in front of uWSGI, the real pretrained model -----------------------------

def test_page_loads_through_nginx(site):
    response = requests.get(site.url + "/", timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert "EfficientNetLite0" in response.text
    assert response.headers["Server"] == "nginx"  # no version
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    models = requests.get(site.url + "/models", timeout=30).json()
    assert models["default"] == "EfficientNetLite0"


def test_page_form_without_javascript_through_nginx(site, cat_png):
    """The no-JavaScript form posts a photo to / : NGINX must let an upload through there too."""
    photo = cat_png + b"\0" * 2_000_000  # over NGINX's 1 MB default for other locations
    response = requests.post(site.url + "/", files={"image": ("chelsea.png", photo, "image/png")}, timeout=90)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert re.search(r"Tabby|Tiger cat|Egyptian cat", response.text)


def access_line(log: Path, request_id: str) -> dict:
    """The app's access line (uwsgi.ini's JSON) for the request with ``request_id``."""
    lines = [json.loads(line) for line in log.read_text().splitlines()
             if line.startswith("{") and f'"request_id": "{request_id}"' in line]
    (line,) = [line for line in lines if line["logger"] == "classifier.access"]
    return line


@pytest.mark.parametrize("body", ["json", "raw"])
def test_the_page_refuses_json_and_raw_bodies_before_predicting_through_nginx(site, cat_png, body):
    """POST / is the page's form. A JSON or raw image body once made a whole prediction, then
    a 500 (the page names the form's file), which NGINX worded as "too many request headers":
    now a 415 page that says where programs go, and no prediction is made."""
    request_id = f"page-form-{body}"
    sent = {"json": {"json": {"image": base64.b64encode(cat_png).decode()}},
            "raw": {"data": cat_png, "headers": {"Content-Type": "image/png"}}}[body]
    headers = {**sent.pop("headers", {}), "X-Request-ID": request_id}
    response = requests.post(site.url + "/", **sent, headers=headers, timeout=90)
    assert response.status_code == 415 and response.headers["Content-Type"].startswith("text/html")
    assert "programs send JSON or a raw image to POST /predict" in response.text
    line = access_line(site.uwsgi.log, request_id)
    assert (line["status"], line["error"]) == (415, "unsupported_image_type")
    assert line["images"] == 0 and line["decode_ms"] is None and line["inference_ms"] is None


@pytest.mark.parametrize("name", ["app.js", "style.css", "favicon.svg"])
def test_static_files_come_from_nginx_cached_for_a_year(site, name):
    """The page links each static file with a hash of its content (?v=...): NGINX caches it
    for a year, as the app does (python app.py); without the hash, an hour."""
    page = requests.get(site.url + "/", timeout=30).text
    link = re.search(rf'"(/static/{re.escape(name)}\?v=[0-9a-f]+)"', page).group(1)
    response = requests.get(site.url + link, timeout=10)
    assert response.status_code == 200
    assert response.content == (ROOT / "static" / name).read_bytes()
    assert response.headers["Cache-Control"] == "max-age=31536000"
    assert "Expires" in response.headers
    assert re.fullmatch(r'(W/)?"[0-9a-f]+-[0-9a-f]+"', response.headers["ETag"])
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    direct = requests.get(site.uwsgi.http + link, timeout=10)
    assert "max-age=31536000" in direct.headers["Cache-Control"]  # the app's own, without NGINX
    unhashed = requests.get(f"{site.url}/static/{name}", timeout=10)
    assert unhashed.headers["Cache-Control"] == "max-age=3600"


def test_every_module_of_the_page_comes_from_nginx_cached_for_a_year(site):
    """app.js imports the modules in static/page/, and they each other, by URLs with their
    content's hash (classifier/web/static_modules.py): followed from the page's link to app.js,
    NGINX serves each as on disk, as JavaScript, for a year."""
    page = requests.get(site.url + "/", timeout=30).text
    pending, seen = [re.search(r'"(/static/app\.js\?v=[0-9a-f]+)"', page).group(1)], set()
    while pending:
        link = pending.pop()
        assert "?v=" in link, link
        response = requests.get(site.url + link, timeout=10)
        path, version = link.split("?v=")
        assert response.content == (ROOT / path.lstrip("/")).read_bytes(), link
        assert version == content_hash(response.content), link
        assert response.headers["Cache-Control"] == "max-age=31536000", link
        assert "javascript" in response.headers["Content-Type"], link
        seen.add(path)
        for imported in re.findall(r'(?:from|import)\s*"(\./[^"]+)"', response.text):
            pending.append(urljoin(link, imported))
    assert seen == {f"/static/{path.relative_to(ROOT / 'static').as_posix()}" for path in (ROOT / "static").rglob("*.js")}


def _assert_cat(response: requests.Response) -> dict:
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["weights"], body["server"]) == ("EfficientNetLite0", "imagenet", "local")
    assert CAT_LABELS & set(top_labels(body)[:3]), body["predictions"]
    return body


def test_predict_multipart_json_and_raw_with_the_pretrained_model(site, cat_png):
    multipart = requests.post(site.url + "/predict", files={"image": ("chelsea.png", cat_png, "image/png")},
                              data={"top_k": "3"}, timeout=90)
    first = _assert_cat(multipart)
    # One copy of each security header (NGINX's), though the app sends them too.
    assert multipart.headers["X-Frame-Options"] == "DENY"
    assert multipart.headers["X-Content-Type-Options"] == "nosniff"
    as_json = requests.post(site.url + "/predict", timeout=90,
                            json={"image": base64.b64encode(cat_png).decode(), "top_k": 3})
    raw = requests.post(site.url + "/predict?top_k=3", data=cat_png, headers={"Content-Type": "image/png"},
                        timeout=90)
    for response in (as_json, raw):
        assert top_labels(_assert_cat(response)) == top_labels(first)


def test_upload_over_the_limit_gets_the_apps_json_413(site):
    over_image_limit = os.urandom(11 * 1024 * 1024)  # > CLASSIFIER_MAX_UPLOAD_BYTES (10 MiB)
    response = requests.post(site.url + "/predict", files={"image": ("big.png", over_image_limit, "image/png")},
                             timeout=60)
    assert response.status_code == 413
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "image_too_large"  # the app's answer
    over_body_cap = bytes(64 * 1024 * 1024 + 1)  # > the app's body cap, < NGINX's 65m
    response = requests.post(site.url + "/predict", data=over_body_cap, headers={"Content-Type": "image/png"},
                             timeout=60)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_entity_too_large"  # the app's, with its limit:
    assert "64 MiB (67,108,864 bytes)" in response.json()["error"]["message"]
    over_everything = bytes(66 * 1024 * 1024)  # NGINX refuses it, in the same JSON shape
    response = requests.post(site.url + "/predict", data=over_everything, headers={"Content-Type": "image/png"},
                             timeout=60)
    assert response.status_code == 413
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "request_entity_too_large"
    assert "X-Content-Type-Options" in response.headers


def test_oversized_request_line_and_headers_get_json_414_and_431(site):
    """NGINX refuses what it will not pass on, in JSON; what it passes on fits uWSGI's
    buffers, so uWSGI never drops a request unanswered (NGINX would count that against the
    host: the cluster test below)."""
    too_long = requests.get(site.url + "/models?q=" + "a" * 9000, timeout=30)
    too_large = requests.get(site.url + "/models", headers={"X-Big": "a" * 9000}, timeout=30)
    for response, status, code in ((too_long, 414, "uri_too_long"),
                                   (too_large, 431, "request_header_fields_too_large")):
        assert response.status_code == status
        assert response.headers["Content-Type"] == "application/json"
        assert response.json()["error"]["code"] == code
        assert response.headers["X-Frame-Options"] == "DENY"
    # Within NGINX's limits but over uWSGI's old ones: a 7,000-character query with three
    # 7.9 KB headers (a 37 KB packet; buffer-size was 32 KB), and 200 small headers (uWSGI
    # took 128 variables).
    for response in (requests.get(site.url + "/models?q=" + "a" * 7000, timeout=30,
                                  headers={f"X-Big-{i}": "a" * 7900 for i in range(3)}),
                     requests.get(site.url + "/models", headers={f"X-{i}": "1" for i in range(200)}, timeout=30)):
        assert response.status_code == 200, response.text
        assert response.json()["default"] == "EfficientNetLite0"
    log = site.uwsgi.log.read_text(errors="replace")
    assert "invalid request block size" not in log and "max vec size" not in log


def _chunks(data: bytes) -> Iterator[bytes]:
    """A generator body: requests sends it with Transfer-Encoding: chunked, as streaming
    clients do."""
    for start in range(0, len(data), 16384):
        yield data[start:start + 16384]


def test_chunked_uploads_are_classified(site, cat_png):
    raw = requests.post(site.url + "/predict?top_k=3", data=_chunks(cat_png), headers={"Content-Type": "image/png"},
                        timeout=90)
    body, content_type = urllib3.encode_multipart_formdata({"image": ("chelsea.png", cat_png, "image/png"),
                                                           "top_k": "3"})
    multipart = requests.post(site.url + "/predict", data=_chunks(body), headers={"Content-Type": content_type},
                              timeout=90)
    assert raw.request.headers["Transfer-Encoding"] == "chunked"
    assert top_labels(_assert_cat(raw)) == top_labels(_assert_cat(multipart))


def test_chunked_uploads_without_nginx(random_app, cat_png):
    """python app.py: Werkzeug's server reads chunked bodies itself, within the app's cap."""
    local = random_app
    image = requests.post(local + "/predict", data=_chunks(cat_png), headers={"Content-Type": "image/png"},
                          timeout=90)
    assert image.status_code == 200 and image.json()["predictions"], image.text
    too_large = requests.post(local + "/predict", data=_chunks(cat_png + bytes(15 * 2**20)),
                              headers={"Content-Type": "image/png"}, timeout=90)
    assert too_large.status_code == 413


def _unread_bytes(sock: socket.socket, server_port: int) -> int:
    """Bytes sent on ``sock`` that the server has not read yet: still in the client's send
    queue, or in the server side's receive queue (/proc/net/tcp)."""
    unsent = struct.unpack("I", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, bytes(4)))[0]

    def hex_address(host: str, port: int) -> str:
        return f"{int.from_bytes(socket.inet_aton(host), 'little'):08X}:{port:04X}"

    server, client = hex_address("127.0.0.1", server_port), hex_address(*sock.getsockname())
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == server and fields[2] == client:
            return unsent + int(fields[4].split(":")[1], 16)
    return unsent


def _nginx_rss_once_read(worker: psutil.Process, socks: list[socket.socket], port: int) -> int:
    """NGINX's worker's RSS once it has read everything sent on ``socks``; bounded wait."""
    wait_until(lambda: not any(_unread_bytes(sock, port) for sock in socks), 60, interval=0.05)
    return worker.memory_info().rss


def test_held_uploads_are_bounded_per_address_and_in_all(site):
    """Each upload NGINX reads holds up to 16 MiB of its memory, in memory on purpose (no
    picture on disk): 1 at once per address (so one address never holds every worker) and
    32 in all, the rest refused with 429 as soon as their headers arrive. 150 held uploads
    from one address took NGINX to 2.2 GB."""
    size = 16 * 1024 ** 2  # client_max_body_size for /predict
    worker = psutil.Process(site.nginx.process.pid).children()[0]
    start = worker.memory_info().rss
    port = int(site.url.rsplit(":", 1)[1])
    uploads: dict[str, list[socket.socket]] = {}
    others = [f"127.0.2.{number}" for number in range(1, 32)]
    try:
        uploads["127.0.0.3"] = [hold_upload(port, "127.0.0.3", size) for _ in range(2)]
        one_address = _nginx_rss_once_read(worker, uploads["127.0.0.3"], port)
        for source in others:
            uploads[source] = [hold_upload(port, source, size)]
        uploads["127.0.0.7"] = [hold_upload(port, "127.0.0.7", size)]  # within its address's limit
        in_all = _nginx_rss_once_read(worker, [sock for socks in uploads.values() for sock in socks], port)
    finally:
        answers = {source: [first_answer(sock) for sock in socks] for source, socks in uploads.items()}
    print(f"\nNGINX worker RSS: {start / 2**20:.0f} MiB at the start, {one_address / 2**20:.0f} MiB "
          f"holding 1 upload from one address, {in_all / 2**20:.0f} MiB holding 32 in all")
    refused = b"HTTP/1.1 429 Too Many Requests"
    assert answers == {"127.0.0.3": [b"", refused], **{source: [b""] for source in others},
                       "127.0.0.7": [refused]}, answers
    assert one_address <= start + size + 16 * 2**20
    assert in_all <= start + 32 * size + 32 * 2**20


def test_app_down_people_get_a_page_programs_get_json(tmp_path):
    """NGINX with no app behind it (nothing listens on the upstream's port)."""
    nginx = start_nginx(tmp_path / "nginx", {"127.0.0.1:8001": f"127.0.0.1:{free_port()}"})
    try:
        page = requests.get(nginx.url + "/", timeout=30)
        api = [requests.post(nginx.url + "/predict", json={}, timeout=30),
               requests.get(nginx.url + "/models", timeout=30)]
        style = requests.get(nginx.url + "/static/style.css", timeout=30)
        hidden = requests.get(nginx.url + "/unavailable.html", timeout=30)
        with client_at("127.0.0.8") as client:  # page loads past the limit: the page again, with 429
            for _ in range(300):
                busy = client.get(nginx.url + "/", timeout=30)
                if busy.status_code != 502:
                    break
    finally:
        nginx.stop()
    for response in (page, busy):
        assert response.headers["Content-Type"].startswith("text/html")
        assert "Temporarily unavailable" in response.text
        assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert page.status_code == 502
    assert '<link rel="stylesheet" href="/static/style.css">' in page.text and style.status_code == 200
    assert (busy.status_code, busy.headers["Retry-After"]) == (429, "1")
    for response in api:
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "bad_gateway"
    assert hidden.status_code == 404


def _slow_upload(address: tuple[str, int], body: bytes, seconds: float) -> bytes:
    """POST ``body`` as JSON in pieces spread over ``seconds``; the answer's status line."""
    try:
        return _send_slowly(address, body, seconds)
    except OSError as error:
        return f"connection lost: {error!r}".encode()


def _send_slowly(address: tuple[str, int], body: bytes, seconds: float) -> bytes:
    with socket.create_connection(address, timeout=90) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
        pieces = range(0, len(body), 16384)
        for start in pieces:
            sock.sendall(body[start:start + 16384])
            time.sleep(seconds / len(pieces))
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def test_slow_upload_beside_other_requests_keeps_its_worker(tmp_path):
    """A body read slowly while other requests come and go on the same worker must not trip
    harakiri. With several threads per worker it does, within a second (uwsgi.ini explains);
    one worker with uwsgi.ini's threads, and a body the app refuses cheaply (no model)."""
    app = start_uwsgi(tmp_path, "uwsgi", CLASSIFIER_UWSGI_PROCESSES="1", CLASSIFIER_WARMUP="0",
                      CLASSIFIER_RANDOM_WEIGHTS="1")
    uploading = threading.Event()
    uploading.set()
    stop_at = time.monotonic() + 60

    def other_requests() -> None:
        while uploading.is_set() and time.monotonic() < stop_at:
            requests.get(app.http + "/healthz", timeout=30)
            # Each of these resets the worker's one timer; the upload then counts it up from
            # zero until the next one, which the master must get to see.
            time.sleep(0.2)

    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            background = [pool.submit(other_requests)]
            try:
                body = b"[" + b" " * 250_000 + b"]"  # JSON, but not an object: 400 at once
                statuses = [_slow_upload(("127.0.0.1", app.http_port), body, seconds=3) for _ in range(2)]
            finally:
                uploading.clear()
            for future in background:
                future.result()
    finally:
        app.stop()
    assert statuses == [b"HTTP/1.1 400 BAD REQUEST"] * 2
    assert "HARAKIRI" not in app.log.read_text(errors="replace")


def test_custom_remote_urls_are_off_in_production(site, cat_png):
    """The environment asked for them (CLASSIFIER_ALLOW_CUSTOM_REMOTE=1); uwsgi.ini wins."""
    response = requests.post(site.url + "/predict", files={"image": ("cat.png", cat_png)},
                             data={"server": "custom", "remote_url": "http://127.0.0.1:9/predict"}, timeout=30)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "remote_not_allowed"


def test_master_never_loads_tensorflow(site, cat_png):
    """lazy-apps: models and their runtime live in the workers only, never in the master
    they are forked from."""
    _assert_cat(requests.post(site.url + "/predict", files={"image": ("cat.png", cat_png)}, timeout=90))

    def libraries(pid: int) -> set[str]:
        maps = Path(f"/proc/{pid}/maps").read_text()
        return {name for name in ("libtensorflow", "onnxruntime") if name in maps}

    assert any(libraries(pid) for pid in site.uwsgi.workers())  # the check looks at the right thing
    assert libraries(site.uwsgi.process.pid) == set()


def test_local_instance_forwards_to_the_nginx_endpoint(site, serve_app, cat_png):
    local = serve_app(CLASSIFIER_REMOTE_URL=site.url + "/predict")
    direct = _assert_cat(requests.post(site.url + "/predict", files={"image": ("cat.png", cat_png)}, timeout=90))
    response = requests.post(local + "/predict", files={"image": ("cat.png", cat_png)},
                             data={"server": "remote", "top_k": "3"}, timeout=90)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["server"] == "remote"
    assert body["server_url"] == site.url + "/predict"
    # The remote's answer (the pretrained model), not the local random-weights MobileNetV2.
    assert (body["model"], body["weights"]) == ("EfficientNetLite0", "imagenet")
    assert top_labels(body) == top_labels(direct)[:3]


def test_page_views_are_not_predictions_and_429_says_when_to_retry(site):
    """40 quick page loads all succeed (they used to share the prediction limit: 18 x 429),
    while predictions keep theirs: a burst of 20, then 10 a second, then 429 in JSON with
    Retry-After; and predictions do not use up page views either."""
    with client_at("127.0.0.2") as client:
        pages = [client.get(site.url + "/", timeout=30).status_code for _ in range(40)]
    assert pages == [200] * 40

    started = time.monotonic()
    # One at a time, within the one-at-once limit: only the rate limit answers 429 here.
    # Invalid on purpose: the requests NGINX lets through cost the app nothing.
    with client_at("127.0.0.2") as client:
        responses = [client.post(site.url + "/predict", json={}, timeout=30) for _ in range(64)]
    refilled = 10 * (time.monotonic() - started) + 1
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {400, 429}, statuses
    assert 20 <= statuses.count(400) <= 20 + refilled  # the burst, and what the rate refilled
    limited = next(r for r in responses if r.status_code == 429)
    assert limited.headers["Content-Type"] == "application/json"
    assert limited.json()["error"]["code"] == "rate_limited"
    assert limited.headers["Retry-After"] == "1"
    assert not any("Retry-After" in r.headers for r in responses if r.status_code == 400)
    with client_at("127.0.0.2") as client:
        assert client.get(site.url + "/", timeout=30).status_code == 200


def _reload_run(site: Site, cat_png: bytes, trigger: Callable[[], None]) -> tuple[list[Outcome], set[int], set[int]]:
    """A paced run of predictions with a reload triggered after 16 of them, going on until
    the reload is over and the new workers have answered 16 more (bounded: 400 / 120 s)."""
    old = site.uwsgi.workers()
    assert len(old) == 2
    done_at: list[int] = []

    def before_each(i: int) -> None:
        if i == 16:
            trigger()

    def stop_when(i: int) -> bool:
        if i <= 16:
            return False
        if not done_at:
            current = site.uwsgi.workers()
            if len(current) == 2 and not current & old:
                done_at.append(i)
        return bool(done_at) and i >= done_at[0] + 16

    outcomes = paced_run(site.url, cat_png, limit=400, seconds=120, before_each=before_each, stop_when=stop_when)
    assert done_at, "the reload did not finish within the run"
    return outcomes, old, site.uwsgi.workers()


@pytest.mark.parametrize("how", ["chain reload (systemctl reload)", "SIGHUP"])
def test_graceful_reload_loses_no_request(site, cat_png, how):
    def trigger() -> None:
        if how == "SIGHUP":
            site.uwsgi.process.send_signal(signal.SIGHUP)
        else:
            with open(site.fifo, "w") as fifo:  # what remote/systemd/classifier.service does
                fifo.write("c")

    outcomes, old, new = _reload_run(site, cat_png, trigger)
    assert failures(outcomes) == [], failures(outcomes)[:3]
    assert len(outcomes) > 32
    assert old.isdisjoint(new) and len(new) == 2
    assert all(CAT_LABELS & set(top_labels(o.body)[:3]) for o in outcomes)


# --- several hosts: one NGINX upstream over two uWSGI instances -------------------------------

@dataclass
class Cluster:
    nginx: Nginx
    apps: list[Uwsgi]
    folder: Path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, prepared_keras_home: Path) -> Iterator[Cluster]:
    """classifier-cluster.conf over two single-worker uWSGI instances with the bundled
    pretrained EfficientNetLite0 (prepared: a copy of the session's cache) and no other
    weights (offline)."""
    folder = tmp_path_factory.mktemp("cluster")
    copy_of(prepared_keras_home, folder / "keras")
    apps: list[Uwsgi] = []
    nginx = None
    try:
        for name in ("app1", "app2"):
            apps.append(start_uwsgi(folder, name, CLASSIFIER_UWSGI_PROCESSES="1", CLASSIFIER_OFFLINE="1",
                                    KERAS_HOME=str(folder / "keras")))
        nginx = start_nginx(folder / "nginx", site="classifier-cluster.conf", upstreams={
            "app1.classifier.internal:8001": apps[0].address,
            "app2.classifier.internal:8001": apps[1].address,
        })
        cluster = Cluster(nginx, apps, folder)
        yield cluster
    finally:
        if nginx is not None:
            nginx.stop()
        for app in apps:
            app.stop()


def test_client_requests_never_count_against_a_host(cluster, cat_png):
    """What a client sends must never make NGINX count a host as failed: two such requests
    used to take every host out for 10 s ("no live upstreams"), for everyone. The finding's
    GET (within NGINX's limits, over uWSGI's old buffer), hundreds of headers (over uWSGI's
    old variable count), and a model no host has weights for (the app's 503, which NGINX
    used to retry on the next host and count)."""
    url = cluster.nginx.url
    log_size = cluster.nginx.access_log.stat().st_size
    for _ in range(3):
        long_get = requests.get(url + "/models?q=" + "a" * 7000, timeout=30,
                                headers={f"X-Big-{i}": "a" * 7900 for i in range(3)})
        many_headers = requests.get(url + "/healthz", headers={f"X-{i}": "1" for i in range(200)}, timeout=30)
        no_weights = requests.post(url + "/predict", files={"image": ("cat.png", cat_png, "image/png")},
                                   data={"model": "ResNet50"}, timeout=60)
        assert (long_get.status_code, many_headers.status_code, no_weights.status_code) == (200, 200, 503)
        assert no_weights.json()["error"]["code"] == "model_unavailable"
    # Both hosts still take predictions, at once.
    outcomes = [post_cat(url, cat_png) for _ in range(6)]
    assert failures(outcomes) == [], failures(outcomes)[:3]
    # NGINX logs a request just after answering it: wait (bounded) for all 15 lines.
    entries = wait_until(lambda: access_log_entries(cluster.nginx, log_size, request=""), 10,
                         lambda entries: len(entries) >= 15, interval=0.05)
    assert {e["upstream"] for e in entries[-6:]} == {app.address for app in cluster.apps}
    # Each request went to one host, once: none was retried.
    assert len(entries) == 15 and not any(", " in e["upstream"] for e in entries), entries
    assert "no live upstreams" not in (cluster.nginx.folder / "error.log").read_text()


def test_scale_out_survives_a_host_dying_and_takes_it_back(cluster, cat_png):
    first, second = cluster.apps
    # Both hosts warm (their first prediction builds the model), so the run measures failover.
    for app in cluster.apps:
        assert post_cat(app.http, cat_png).status == 200

    killer = threading.Timer(0.01, first.kill)  # fires while request 80 is on its way

    def before_each(i: int) -> None:
        if i == 80:
            killer.start()

    outcomes = paced_run(cluster.nginx.url, cat_png, limit=240, seconds=100, before_each=before_each)
    killer.join(timeout=30)
    assert first.process.poll() is not None and not first.workers()
    assert len(outcomes) == 240
    assert failures(outcomes) == [], failures(outcomes)[:3]
    assert {o.body["model"] for o in outcomes} == {"EfficientNetLite0"}
    entries = access_log_entries(cluster.nginx)
    assert len(entries) >= 240
    served_by = [e["upstream"] for e in entries]
    assert any(first.address == u for u in served_by[:80]) and any(second.address == u for u in served_by[:80])
    # Predictions that met the dead host were retried on the other one: "dead, live" in the log.
    assert any(u == f"{first.address}, {second.address}" for u in served_by), served_by[80:]

    # The host comes back, and NGINX gives it traffic again once its fail_timeout is over.
    log_size = cluster.nginx.access_log.stat().st_size
    cluster.apps[0] = back = restart(first, cluster.folder, "app1-restarted")
    outcomes = paced_run(cluster.nginx.url, cat_png, limit=200, seconds=45,
                         stop_when=lambda i: i % 8 == 0 and _served_recently(cluster.nginx, log_size, back))
    assert failures(outcomes) == [], failures(outcomes)[:3]
    assert _served_recently(cluster.nginx, log_size, back)


def _served_recently(nginx: Nginx, since: int, app: Uwsgi) -> bool:
    entries = access_log_entries(nginx, since)
    return sum(e["upstream"] == app.address and e["upstream_status"] == "200" for e in entries) >= 3
