"""The first wait on a fresh install: the default model is prepared when the server starts
(``python3 app.py`` and uWSGI), not at the first request; ``GET /readyz`` says when it can
answer, ``GET /models``, the page and ``classifier predict`` say what is happening and roughly
how long it takes. Each server runs the pretrained EfficientNetLite0 offline with an empty
Keras cache of its own, so each converts it (about 15 s) as a fresh install does; the last
test opens a prepared one, where the whole wait is a second or two."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from bench.polling import wait_until
from conftest import CAT_LABELS, PHOTOS, copy_of, run_classifier, start_uwsgi
from playwright.sync_api import Route, expect
from support.page import FIRST_ANSWER

from classifier.web import create_app

pytestmark = pytest.mark.slow  # each test prepares the pretrained model on a fresh cache, as a fresh install does

MODEL = "EfficientNetLite0"
PREPARING = "preparing for first use, about 15 s, once"
FRESH = {"CLASSIFIER_RANDOM_WEIGHTS": "0", "CLASSIFIER_OFFLINE": "1", "CLASSIFIER_DEFAULT_MODEL": MODEL,
         "CLASSIFIER_WEIGHTS_DIR": ""}


def expect_preparing(url: str) -> None:
    """/readyz answers 503 in the API's error shape, and /models says why and for how long,
    unless the model became ready between the two (then /readyz answers 200 too)."""
    answer = requests.get(f"{url}/readyz", timeout=30)
    assert answer.status_code == 503, answer.text
    error = answer.json()["error"]
    assert error["code"] == "model_unavailable" and error["message"].startswith(f"{MODEL}: {PREPARING}."), error
    assert answer.headers["Retry-After"] == "15"
    assert requests.get(f"{url}/healthz", timeout=30).status_code == 200  # alive all along
    models = requests.get(f"{url}/models", timeout=30).json()
    default = next(m for m in models["models"] if m["name"] == models["default"])
    if default["ready"]:  # the preparation ended between the two requests (a busy machine's timing)
        assert requests.get(f"{url}/readyz", timeout=30).status_code == 200, default
        return
    assert (default["name"], default["status"], default["status_text"]) == (MODEL, "preparing", PREPARING), default


def wait_until_ready(url: str, timeout: float = FIRST_ANSWER / 1000) -> dict:
    """Poll /readyz (nothing else) until it answers 200; its answer."""
    def ready() -> requests.Response:
        answer = requests.get(f"{url}/readyz", timeout=30)
        assert answer.status_code in (200, 503), answer.text
        return answer

    answer = wait_until(ready, timeout, lambda answer: answer.status_code == 200, interval=0.5)
    assert answer.status_code == 200, f"/readyz still answers {answer.text}"
    return answer.json()


def test_app_py_prepares_its_model_at_start_and_a_photo_sent_meanwhile_says_why_it_waits(serve_app, open_page,
                                                                                         tmp_path):
    """Preparing before any request: /readyz, /models and the page say so; a photo sent
    meanwhile (the page said "Classifying…" for 18 s) says what the wait is, then is answered.
    The photo goes before the page's script has its first GET /models answer (held here, as a
    slow network or a quick person makes it; CI's run of cf9bf8b met it unheld): the line says
    why it waits once that answer arrives."""
    log = tmp_path / "server.log"
    url = serve_app(log=log, KERAS_HOME=str(tmp_path / "keras"), **FRESH)
    expect_preparing(url)
    page = open_page(url)
    held: list[Route] = []
    page.route("**/models", lambda route: held.append(route))
    page.reload()
    state = page.locator("#model-state")
    expect(state).to_have_text(f"Preparing {MODEL} for first use, about 15 s, once.")  # as the server rendered it
    expect(page.get_by_label("Model").locator("option:checked")).to_contain_text("(preparing)")
    page.set_input_files("#image", PHOTOS["chelsea"])
    expect(page.locator("#status")).to_have_text("Classifying…")
    held.pop().continue_()
    page.unroute("**/models")  # the page's polls (every 2 s) go unheld
    expect(page.locator("#status")).to_have_text(f"Preparing {MODEL} for first use, about 15 s, once. Classifying…")

    expect(page.locator("#result .prediction")).to_have_count(3, timeout=FIRST_ANSWER)
    expect(page.locator("#status")).to_be_empty()
    assert wait_until_ready(url) == {"status": "ready", "model": MODEL}
    expect(state).to_be_hidden()  # the page's poll of /models saw it loaded
    text = log.read_text()
    assert text.index(f"Preparing {MODEL} for first use, about 15 s, once.") < text.index("/predict")


def test_uwsgi_workers_prepare_the_model_at_start_and_never_load_tensorflow(tmp_path):
    """Under uWSGI, where ``sys.executable`` is the uwsgi binary, not Python, the worker has a
    child make the export (issue 11.9: a worker that made it itself kept TensorFlow, 1.7 GB
    RSS against ~140 MB) and answers from ONNX Runtime, TensorFlow never mapped into it."""
    app = start_uwsgi(tmp_path, "uwsgi", CLASSIFIER_UWSGI_PROCESSES="1", KERAS_HOME=str(tmp_path / "keras"),
                      CLASSIFIER_LOG_FORMAT="plain", **FRESH)
    try:
        expect_preparing(app.http)
        assert wait_until_ready(app.http) == {"status": "ready", "model": MODEL}
        log = app.log.read_text()
        answer = requests.post(f"{app.http}/predict", files={"image": PHOTOS["chelsea"].read_bytes()}, timeout=60)
        maps = [Path(f"/proc/{pid}/maps").read_text() for pid in app.workers()]  # the worker and the HTTP router
    finally:
        app.stop()
    assert "/predict" not in log  # no request made it ready
    assert "making its ONNX export in a child process (attempt 1)" in log
    assert answer.status_code == 200 and answer.json()["predictions"][0]["label"] in CAT_LABELS, answer.text
    assert any("onnxruntime" in worker for worker in maps) and not any("tensorflow" in worker for worker in maps)


def test_classifier_predict_says_it_prepares_the_model_once(tmp_path):
    env = {**FRESH, "KERAS_HOME": str(tmp_path / "keras")}
    line = f"Preparing {MODEL} for first use, about 15 s, once."
    first = run_classifier("predict", str(PHOTOS["chelsea"]), **env)
    assert first.returncode == 0, first.stderr
    assert first.stderr.startswith(line), first.stderr
    again = run_classifier("predict", str(PHOTOS["chelsea"]), **env)
    assert again.returncode == 0 and "Preparing" not in again.stderr, again.stderr


def test_the_default_model_is_preparing_from_the_moment_the_app_starts_its_warm_up(prepared_keras_home, tmp_path):
    """``create_app`` starts the warm-up; the thread checks files for a moment before its load
    begins. /models must say "preparing" then, not "ready" (not started) while /readyz answers
    503: CI's run of d9a3fc7 saw exactly that under uWSGI, and every run of this test without
    the fix did."""
    settings = {"keras_home": copy_of(prepared_keras_home, tmp_path / "keras"), "random_weights": False,
                "offline": True, "default_model": MODEL, "runtime": "onnx", "warmup": True}
    client = create_app(settings).test_client()
    models = client.get("/models").json
    default = next(m for m in models["models"] if m["name"] == models["default"])
    assert (default["name"], default["status"], default["ready"]) == (MODEL, "preparing", False), default
    answer = client.get("/readyz")
    assert answer.status_code == 503 and answer.json["error"]["code"] == "model_unavailable", answer.json

    answer = wait_until(lambda: client.get("/readyz"), 60, lambda answer: answer.status_code == 200, interval=0.1)
    assert answer.json == {"status": "ready", "model": MODEL}
    assert next(m for m in client.get("/models").json["models"] if m["name"] == MODEL)["status"] == "loaded"
