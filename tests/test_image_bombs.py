"""Hostile images sent to a running uWSGI with uwsgi.ini (issue 11): every one is answered,
rightly or with a 4xx JSON error, within 2 s of the worker's CPU and 300 MB of peak memory
above its idle size; decoder warnings give one log line at most; and a request that does get
stuck decoding is ended by harakiri within its limit, through NGINX, the worker respawned.

Every file is generated here (bench/hostile.py). CPU time and the peak resident size
(VmHWM, reset before each request through /proc/PID/clear_refs) are read from the worker's
own process; one worker, so it is the one that served the request. The peak is compared
with the worker's size once idle, before the first hostile file, so memory one request keeps
counts against the next.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests
from conftest import CAT_LABELS, free_port

from bench import hostile, stack
from bench.polling import wait_until
from bench.stack import Worker

pytestmark = pytest.mark.stack  # each hostile image goes to a uWSGI worker, most through NGINX

CPU_SECONDS = 2.0
PEAK_GROWTH = 300 * 2**20
HARAKIRI = 3  # seconds, for the test of the worker-time limit
MODEL = "EfficientNetLite0"  # real weights, shipped in a pip package



def start(folder: Path, *extra: str, **env: str) -> tuple[stack.Server, str, str]:
    """One uWSGI worker answering HTTP, its default model loaded (by the warm-up thread);
    returns it, its HTTP URL and its uwsgi-protocol address."""
    port, http = free_port(), free_port()
    settings = {"CLASSIFIER_DEFAULT_MODEL": MODEL, "CLASSIFIER_UWSGI_HTTP": f"127.0.0.1:{http}", **env}
    server = stack.start_uwsgi(folder, "uwsgi", f"127.0.0.1:{port}", settings, processes=1, threads=1,
                               extra=list(extra))
    url = f"http://127.0.0.1:{http}"
    try:
        wait_until_loaded(url, server)
    except BaseException:
        server.stop()
        raise
    return server, url, f"127.0.0.1:{port}"


def wait_until_loaded(url: str, server: stack.Server) -> None:
    """Until the worker has loaded the default model (its warm-up thread does, at start)."""
    stack.wait_for(f"{url}/healthz", server)
    loaded = wait_until(lambda: any(m["name"] == MODEL and m["status"] == "loaded"
                                    for m in requests.get(f"{url}/models", timeout=10).json()["models"]), 300)
    assert loaded, f"{MODEL} not loaded; see {server.log}"


def reaped_cpu_seconds(server: stack.Server) -> float:
    """CPU time of the master's workers that have exited and been reaped."""
    times = psutil.Process(server.process.pid).cpu_times()
    return times.children_user + times.children_system


def padded(jpeg: bytes, size: int) -> bytes:
    """``jpeg`` with comment segments after its start marker, until it is ``size`` bytes long."""
    comments, room = [], size - len(jpeg)
    while room > 4:
        body = min(room - 4, 65533)
        comments.append(b"\xff\xfe" + (body + 2).to_bytes(2, "big") + b"c" * body)
        room -= body + 4
    return jpeg[:2] + b"".join(comments) + jpeg[2:]


def post(url: str, data: bytes, name: str = "image") -> requests.Response:
    return requests.post(f"{url}/predict", files={"image": (name, data)}, timeout=120)


def post_json(url: str, body: bytes) -> requests.Response:
    return requests.post(f"{url}/predict", data=body, headers={"Content-Type": "application/json"}, timeout=120)


def _lines_beyond_access(log: Path) -> list[bytes]:
    """The log's lines but the app's access lines (one per request, uwsgi.ini's JSON)."""
    return [line for line in log.read_bytes().splitlines() if b'"logger": "classifier.access"' not in line]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[stack.Server, str, str]]:
    """The worker, its own HTTP URL, and NGINX's in front of it (uwsgi.ini and NGINX's files)."""
    folder = tmp_path_factory.mktemp("bombs")
    app, url, address = start(folder)
    nginx = stack.start_nginx(folder / "nginx", {"127.0.0.1:8001": address})
    yield app, url, nginx.url
    nginx.stop()
    app.stop()


def test_each_hostile_image_is_answered_within_its_cpu_and_memory_bounds(server, cat_png):
    app, url, _ = server
    (worker,) = [Worker(p) for p in app.workers()]
    assert post(url, cat_png).status_code == 200
    idle = worker.process.memory_info().rss
    failures = []
    for name, (build, status, code) in hostile.IMAGE_BOMBS.items():
        data = build()
        assert len(data) < 10 * 2**20, name
        log_lines = len(_lines_beyond_access(app.log))
        response, used, peak = worker.measure(lambda: post(url, data))  # noqa: B023 (called at once)
        grown = peak - idle
        new_lines = len(_lines_beyond_access(app.log)) - log_lines
        print(f"{name:40} {len(data):>9,} B  {response.status_code}  {used:5.2f} s CPU  "
              f"{grown / 2**20:6.0f} MiB peak growth  {new_lines} log line(s)")
        body = response.json()
        if (response.status_code, body.get("error", {}).get("code")) != (status, code):
            failures.append(f"{name}: {response.status_code} {body}")
        if used > CPU_SECONDS or grown > PEAK_GROWTH or new_lines > 1:
            failures.append(f"{name}: {used:.2f} s CPU, {grown / 2**20:.0f} MiB, {new_lines} log lines")
    assert not failures, "\n".join(failures)
    answer = post(url, cat_png)
    assert answer.status_code == 200 and answer.json()["predictions"][0]["label"] in CAT_LABELS
    assert [p.pid for p in app.workers()] == [worker.process.pid]  # never killed nor respawned


def test_the_page_decodes_an_explained_photo_once(server):
    """The page without JavaScript draws the heatmap into the photo. It decoded the upload a
    second time for that: a costly JPEG (1.1 s to decode) cost it twice what the API's
    explained answer costs. Now the photo the prediction decoded is drawn on."""
    app, url, _ = server
    (worker,) = [Worker(p) for p in app.workers()]
    photo = hostile.progressive_jpeg_with_scans(7000, 32)
    spent = {}
    for where, path in (("api", "/predict"), ("page", "/")):
        cpu = worker.cpu_seconds()
        response = requests.post(url + path, files={"image": ("photo.jpg", photo)}, data={"explain": "1"}, timeout=120)
        spent[where] = worker.cpu_seconds() - cpu
        assert response.status_code == 200, response.text[:300]
    assert 'class="explained-image"' in response.text
    print(f"explained 7000x7000 32-scan JPEG: API {spent['api']:.2f} s, page {spent['page']:.2f} s of CPU")
    assert spent["page"] < 1.5 * spent["api"]


def test_harakiri_ends_a_request_stuck_decoding_and_the_next_is_served(tmp_path, cat_png):
    """uWSGI 2.0's post-buffering adds harakiri's whole limit to the deadline at each read of
    the body, so a slow decode after a large upload was never killed (uwsgi.ini explains). Here
    the scan limit is raised so that a many-scan JPEG, padded to 9 MiB, decodes for about 20 s,
    and harakiri is 3 s: with post-buffering the deadline moved by 3 s at each of the body's
    reads, and the worker decoded for 30 s before it was killed. The killed worker's CPU time is
    read from its master, which reaped it."""
    app, url, address = start(tmp_path, "--harakiri", str(HARAKIRI), CLASSIFIER_MAX_JPEG_SCANS="1000000")
    nginx = stack.start_nginx(tmp_path / "nginx", {"127.0.0.1:8001": address}, rate_limit=False)
    try:
        before = [p.pid for p in app.workers()]
        stuck = padded(hostile.progressive_jpeg_with_scans(2048, 8_000), 9 * 2**20)  # ~20 s of CPU
        reaped = reaped_cpu_seconds(app) + Worker(app.workers()[0]).cpu_seconds()
        answer = post(nginx.url, stuck)
        wait_until_loaded(url, app)  # a new worker: the old one was reaped; harakiri does not time warm-up
        stuck_cpu = reaped_cpu_seconds(app) - reaped  # what the killed worker spent on the request
        after = post(nginx.url, cat_png)
        respawned = [p.pid for p in app.workers()]
    finally:
        nginx.stop()
        app.stop()
    print(f"stuck request answered {answer.status_code} after {stuck_cpu:.1f} s of the worker's CPU")
    assert answer.status_code == 502  # from NGINX: the worker went away mid-request
    # CPU time never exceeds the time the worker ran; +3 s for the master's once-a-second check.
    assert stuck_cpu <= HARAKIRI + 3
    assert "HARAKIRI" in app.log.read_text(errors="replace")
    assert respawned and respawned != before
    assert after.status_code == 200 and after.json()["predictions"][0]["label"] in CAT_LABELS


def test_costly_json_bodies_are_refused_within_the_bounds_through_nginx(server, cat_png):
    """Issue 21: 3 million empty strings in 'images' (8.6 MiB) each became an upload holding an
    exception before the 32-image limit was checked, 23 s of CPU and +2,955 MiB; 64 MiB of {}
    became 1.7 GB of dicts. Now the list's length is checked before any entry is looked at and
    the body's shape before it is parsed; the costliest JSON the shape check lets through is
    measured too."""
    app, _, site = server
    (worker,) = [Worker(p) for p in app.workers()]
    assert post(site, cat_png).status_code == 200
    idle = worker.process.memory_info().rss
    failures = []
    for name, (build, status, code) in hostile.HOSTILE_BODIES.items():
        body = build()
        response, used, peak = worker.measure(lambda: post_json(site, body))  # noqa: B023 (called at once)
        grown = peak - idle
        print(f"{name:40} {len(body):>11,} B  {response.status_code}  {used:5.2f} s CPU  "
              f"{grown / 2**20:6.0f} MiB peak growth")
        if (response.status_code, response.json()["error"]["code"]) != (status, code):
            failures.append(f"{name}: {response.status_code} {response.text[:300]}")
        if used > CPU_SECONDS or grown > PEAK_GROWTH:
            failures.append(f"{name}: {used:.2f} s CPU, {grown / 2**20:.0f} MiB")
    assert not failures, "\n".join(failures)


def _costly_form(side: int, copies: int) -> list[tuple[str, tuple[str, bytes]]]:
    """``copies`` parts of the same 32-scan progressive JPEG, ``side`` pixels square."""
    jpeg = hostile.progressive_jpeg_with_scans(side, 32)
    return [("image", (f"{number}.jpg", jpeg)) for number in range(copies)]


def test_a_request_over_the_decode_budget_is_refused_before_any_image_is_decoded(server):
    """32 copies of a 290 KB 49-megapixel 32-scan JPEG: 34 s of a worker's CPU, each image
    within every per-image limit. Their summed decode cost is over CLASSIFIER_MAX_REQUEST_COST."""
    app, _, site = server
    (worker,) = [Worker(p) for p in app.workers()]
    cpu = worker.cpu_seconds()
    response = requests.post(f"{site}/predict", files=_costly_form(7000, 32), timeout=120)
    used = worker.cpu_seconds() - cpu
    print(f"32 costly JPEGs: {response.status_code} after {used:.2f} s of the worker's CPU")
    assert response.status_code == 413, response.text[:300]
    assert response.json()["error"]["code"] == "request_too_costly"
    assert "CLASSIFIER_MAX_REQUEST_COST" in response.json()["error"]["message"]
    assert used < 1.0


def _abandon(url: str, files: list, source: str, after: float) -> None:
    """POST ``files`` to ``url``/predict from ``source``, and close the connection ``after``
    seconds without reading the answer, as a client that gave up would."""
    prepared = requests.Request("POST", f"{url}/predict", files=files).prepare()
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30, source_address=(source, 0)) as sock:
        head = "".join(f"{name}: {value}\r\n" for name, value in prepared.headers.items())
        sock.sendall(f"POST /predict HTTP/1.1\r\nHost: test\r\n{head}\r\n".encode() + prepared.body)
        time.sleep(after)


def _idle_cpu(worker: Worker) -> float:
    """The worker's CPU time once it has stopped working (unchanged for a second; bounded)."""
    deadline, last = time.monotonic() + 60, -1.0
    while time.monotonic() < deadline and (now := worker.cpu_seconds()) - last > 0.02:
        last = now
        time.sleep(1)
    return worker.cpu_seconds()


def test_a_request_whose_client_has_gone_is_not_computed(server):
    """A client that closes its connection while its request is computed, or still waiting in
    uWSGI's queue behind another, costs the worker one image at most: NGINX closes the
    connection to uWSGI, and the app looks at it before it starts and between images. Issue 21:
    requests NGINX had answered 504 were still computed 35 s later."""
    app, _, site = server
    (worker,) = [Worker(p) for p in app.workers()]
    costly = _costly_form(4000, 8)  # 8 x 0.34 s of decoding, within the budget
    cpu = _idle_cpu(worker)
    assert requests.post(f"{site}/predict", files=costly, timeout=120).status_code == 200
    whole = _idle_cpu(worker) - cpu
    _abandon(site, costly, "127.0.0.3", after=whole / 8)  # gone during its first images
    abandoned = _idle_cpu(worker) - cpu - whole
    served = threading.Thread(target=requests.post, args=(f"{site}/predict",),
                              kwargs={"files": costly, "timeout": 120})
    served.start()
    time.sleep(whole / 8)
    _abandon(site, costly, "127.0.0.4", after=whole / 8)  # gone while it waits behind the other
    served.join()
    queued = _idle_cpu(worker) - cpu - whole - abandoned
    print(f"8 costly JPEGs: {whole:.2f} s of CPU answered, {abandoned:.2f} s abandoned while computed, "
          f"{queued - whole:.2f} s beyond the other when abandoned in the queue")
    assert abandoned < whole / 2
    assert queued - whole < whole / 4
