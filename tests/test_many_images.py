"""Several images in one POST /predict, for real: the pretrained EfficientNetLite0 on real
photos, broken files among them, the limits (also through NGINX), explanations, metrics and
a forward of the whole request between two running instances.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from pathlib import Path

import pytest
import requests
from conftest import CAT_LABELS, PHOTOS
from prometheus_client import REGISTRY

from classifier.forwarding.client import HOP_HEADER

MODEL = "EfficientNetLite0"
COFFEE_LABELS = {"espresso", "cup", "coffee_mug"}
NOT_AN_IMAGE = b"Meeting notes, not a picture.\n"


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    return {name: path.read_bytes() for name, path in PHOTOS.items()}


@pytest.fixture
def real_app(make_app, keras_home):
    """The pretrained EfficientNetLite0, two images to a batch: five images cross batches."""
    def make(**settings: object):
        return make_app(random_weights=False, keras_home=keras_home, default_model=MODEL, batch_size=2, **settings)
    return make


def corrupt_jpeg(photos: dict[str, bytes]) -> bytes:
    """A JPEG cut off after its headers: it opens, and fails while decoding."""
    return photos["grace_hopper"][:3000]


def labels_of(result: dict, depth: int = 3) -> set[str]:
    return {p["label"] for p in result["predictions"][:depth]}


def multipart(*files: tuple[str, bytes]) -> dict[str, list]:
    return {"image": [(io.BytesIO(data), name) for name, data in files]}


def test_several_photos_with_broken_files_answer_each_in_order(real_app, photos):
    client = real_app().test_client()
    sent = [("chelsea.png", photos["chelsea"]), ("notes.jpg", NOT_AN_IMAGE), ("coffee.png", photos["coffee"]),
            ("cut.jpg", corrupt_jpeg(photos)), ("grace_hopper.jpg", photos["grace_hopper"])]
    response = client.post("/predict", data={**multipart(*sent), "top_k": "5"})
    assert response.status_code == 200, response.json
    body = response.json
    assert (body["model"], body["weights"], body["server"]) == (MODEL, "imagenet", "local")
    assert "predictions" not in body and body["timing_ms"]["total"] > 0
    results = body["results"]
    assert [result["filename"] for result in results] == [name for name, _ in sent]
    assert results[1]["error"]["code"] == "unsupported_image_type"
    assert results[3]["error"]["code"] == "invalid_image" and "truncated" in results[3]["error"]["message"]
    assert set(results[1]) == set(results[3]) == {"filename", "error"}
    assert labels_of(results[0]) & CAT_LABELS, results[0]
    assert labels_of(results[2]) & COFFEE_LABELS, results[2]
    # Batched or not, each image gets the answer it gets alone.
    for name, result in zip(("chelsea", "coffee", "grace_hopper"), (results[0], results[2], results[4])):
        alone = client.post("/predict", data={"image": (io.BytesIO(photos[name]), name), "top_k": "5"}).json
        assert [p["label"] for p in result["predictions"]] == [p["label"] for p in alone["predictions"]]
        assert [p["score"] for p in result["predictions"]] == pytest.approx(
            [p["score"] for p in alone["predictions"]], abs=1e-4)
        assert len(result["result"]) == 5 and set(result["timing_ms"]) >= {"decode", "inference", "total"}


def test_one_part_keeps_the_single_answer(real_app, photos):
    response = real_app().test_client().post("/predict", data=multipart(("chelsea.png", photos["chelsea"])))
    assert response.status_code == 200
    assert "results" not in response.json and labels_of(response.json) & CAT_LABELS


def test_json_images_with_filenames_data_urls_and_a_bad_entry(real_app, photos):
    client = real_app().test_client()
    data_url = "data:image/png;base64," + base64.b64encode(photos["coffee"]).decode()
    response = client.post("/predict", json={
        "images": [base64.b64encode(photos["chelsea"]).decode(), "not base64 at all!", data_url, ""],
        "filenames": ["cat.png", "x", "", "empty"], "settings": {"top_k": 2}})
    assert response.status_code == 200, response.json
    results = response.json["results"]
    assert [result["filename"] for result in results] == ["cat.png", "x", "image-3", "empty"]
    assert labels_of(results[0], 2) & CAT_LABELS and labels_of(results[2], 2) & COFFEE_LABELS
    assert results[1]["error"] == {"code": "invalid_image", "message": "This entry of 'images' is not valid base64."}
    assert results[3]["error"]["code"] == "invalid_request"
    assert len(results[0]["predictions"]) == 2
    one = client.post("/predict", json={"images": [data_url]}).json  # a list of one: still "results"
    assert [result["filename"] for result in one["results"]] == ["image-1"]


@pytest.mark.parametrize("document, message", [
    ({"images": "abc"}, "'images' must be a list"),
    ({"images": []}, "'images' must be a list"),
    ({"images": ["abc", 7]}, "'images' must be a list"),  # a client's bug, not an image's: openapi.json says strings
    ({"images": ["abc"], "filenames": None}, "'filenames' must be a list"),
    ({"images": ["abc"], "image": "abc"}, "not both"),
    ({"images": ["abc", "def"], "filenames": ["one"]}, "'filenames' must be a list"),
])
def test_malformed_json_images_are_400(client, document, message):
    response = client.post("/predict", json=document)
    assert response.status_code == 400 and message in response.json["error"]["message"]


def test_whole_request_errors_stay_whole(real_app, photos):
    client = real_app().test_client()
    two = multipart(("a.png", photos["chelsea"]), ("b.png", photos["coffee"]))
    unknown = client.post("/predict", data={**two, "model": "AlexNet"})
    assert unknown.status_code == 400 and unknown.json["error"]["code"] == "unknown_model"


def test_more_images_than_allowed_is_413_before_decoding(real_app, photos, caplog):
    client = real_app(max_images=3).test_client()
    four = [("cat.png", photos["chelsea"])] * 4
    with caplog.at_level(logging.INFO, logger="classifier"):
        form = client.post("/predict", data=multipart(*four))
        as_json = client.post("/predict", json={"images": [base64.b64encode(data).decode() for _, data in four]})
    for response in (form, as_json):
        assert response.status_code == 413
        assert response.json["error"]["code"] == "too_many_images"
        assert "at most 3" in response.json["error"]["message"] and response.json["error"]["request_id"]
    assert not [r for r in caplog.records if "Decoding" in r.getMessage()]
    assert client.post("/predict", data=multipart(*four[:3])).status_code == 200


@pytest.mark.slow  # decodes the largest requests
def test_the_default_image_limit_and_the_form_part_limit(client):
    """32 images by default; a form of hundreds of parts is refused by Werkzeug's part count
    before any is read, as JSON too."""
    tiny = ("x.png", NOT_AN_IMAGE)
    assert client.post("/predict", data=multipart(*[tiny] * 32)).status_code == 200
    over = client.post("/predict", data=multipart(*[tiny] * 33))
    assert over.status_code == 413 and over.json["error"]["code"] == "too_many_images"
    parts = client.post("/predict", data=multipart(*[tiny] * 500))
    assert parts.status_code == 413 and parts.json["error"]["code"] == "request_entity_too_large"
    assert "more parts" in parts.json["error"]["message"]


def test_a_body_over_the_request_limit_is_413(make_app, photos):
    client = make_app(max_request_bytes=1_000_000).test_client()
    big = multipart(*[("cat.png", photos["chelsea"])] * 5)  # 5 x 240 KB
    response = client.post("/predict", data=big)
    assert response.status_code == 413 and response.json["error"]["code"] == "request_entity_too_large"
    assert "976.6 KiB (1,000,000 bytes)" in response.json["error"]["message"]


def test_an_image_over_the_image_limit_fails_alone(real_app, photos):
    client = real_app(max_upload_bytes=300_000).test_client()
    response = client.post("/predict", data=multipart(("cat.png", photos["chelsea"]),
                                                      ("big.png", photos["chelsea"] + bytes(300_000))))
    results = response.json["results"]
    assert labels_of(results[0]) & CAT_LABELS and results[1]["error"]["code"] == "image_too_large"


def test_explanations_for_several_images(real_app, photos):
    client = real_app().test_client()
    response = client.post("/predict", data={**multipart(("cat.png", photos["chelsea"]), ("bad.jpg", NOT_AN_IMAGE),
                                                         ("coffee.png", photos["coffee"])), "explain": "1"})
    assert response.status_code == 200, response.json
    cat, bad, coffee = response.json["results"]
    assert "explanation" not in bad
    for result in (cat, coffee):
        explanation = result["explanation"]
        assert explanation["class_id"] == result["predictions"][0]["class_id"]
        assert explanation["heatmap"].startswith("data:image/png;base64,") and "explain" in result["timing_ms"]
    # Each explanation is its own image's: the same as asking for that image alone.
    alone = client.post("/predict", data={"image": (io.BytesIO(photos["coffee"]), "c.png"), "explain": "1"}).json
    assert coffee["explanation"]["crop"] == alone["explanation"]["crop"]
    flat = [value for row in coffee["explanation"]["grid"] for value in row]
    assert flat == pytest.approx([value for row in alone["explanation"]["grid"] for value in row], abs=1e-3)
    tabby = client.post("/predict", data={**multipart(("a.png", photos["chelsea"]), ("b.png", photos["coffee"])),
                                          "explain": "1", "explain_class": "tabby"}).json
    assert [result["explanation"]["label"] for result in tabby["results"]] == ["tabby", "tabby"]


def test_metrics_count_each_image_and_one_prediction(real_app, photos, caplog):
    client = real_app().test_client()
    client.post("/predict", data=multipart(("warm.png", photos["chelsea"])))  # the model is loaded

    def counts() -> tuple[float, float]:
        images = REGISTRY.get_sample_value("classifier_images_total", {"model": MODEL}) or 0
        predictions = REGISTRY.get_sample_value("classifier_predictions_total",
                                                {"model": MODEL, "server": "local", "outcome": "ok"}) or 0
        return images, predictions

    before = counts()
    with caplog.at_level(logging.INFO, logger="classifier.access"):
        response = client.post("/predict", data=multipart(("a.png", photos["chelsea"]), ("b.txt", NOT_AN_IMAGE),
                                                          ("c.png", photos["coffee"])))
    assert response.status_code == 200
    after = counts()
    assert (after[0] - before[0], after[1] - before[1]) == (2, 1)  # images classified; one request
    line = [r.getMessage() for r in caplog.records if r.name == "classifier.access"][-1]
    assert "images=3" in line and f"model={MODEL}" in line


# --- through NGINX and uWSGI, with the production files -------------------------------------

def test_several_images_and_the_limits_through_nginx(site, photos):
    sent = [("cat.png", photos["chelsea"]), ("notes.txt", NOT_AN_IMAGE), ("coffee.png", photos["coffee"])]
    response = requests.post(site.url + "/predict", files=[("image", item) for item in sent], timeout=90)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert labels_of(results[0]) & CAT_LABELS and labels_of(results[2]) & COFFEE_LABELS
    assert results[1]["error"]["code"] == "unsupported_image_type"
    too_many = requests.post(site.url + "/predict", files=[("image", ("x.txt", NOT_AN_IMAGE))] * 33, timeout=90)
    assert too_many.status_code == 413 and too_many.json()["error"]["code"] == "too_many_images"
    # 32 images of 2 MiB each (within the image limit) make a body over the request limit.
    big = [("image", (f"{index}.png", bytes(2 * 2**20 + 100))) for index in range(32)]
    over = requests.post(site.url + "/predict", files=big, timeout=90)
    assert over.status_code == 413 and over.headers["Content-Type"] == "application/json"
    assert over.json()["error"]["code"] == "request_entity_too_large"
    assert "64 MiB" in over.json()["error"]["message"]  # the app's answer, which names its limit
    assert requests.post(site.url + "/predict", files=[("image", sent[0])], timeout=90).status_code == 200


# --- forwarding the whole request --------------------------------------------------------------

@pytest.fixture(scope="module")
def pair(serve_app, cat_png, tmp_path_factory) -> tuple[str, str, Path]:
    """A forwards to B (whose log is the path returned); both run random ResNet50 weights, so
    an answer shows who gave it."""
    env, log_b = {"CLASSIFIER_DEFAULT_MODEL": "ResNet50"}, tmp_path_factory.mktemp("b") / "b.log"
    url_b = serve_app(log=log_b, **env)
    url_a = serve_app(CLASSIFIER_REMOTE_URL=f"{url_b}/predict", **env)
    for url in (url_a, url_b):  # each loads its model before a forward waits on it
        requests.post(f"{url}/predict", files={"image": ("c.png", cat_png)}, timeout=300).raise_for_status()
    return url_a, url_b, log_b


def test_a_multi_image_request_is_forwarded_in_one_call(pair, photos):
    url_a, url_b, log_b = pair
    sent = [("image", ("cat.png", photos["chelsea"])), ("image", ("notes.txt", NOT_AN_IMAGE)),
            ("image", ("coffee.png", photos["coffee"]))]
    forwarded = requests.post(f"{url_a}/predict", files=sent, data={"server": "remote", "top_k": "4"},
                              headers={"X-Request-ID": "many-forward-1"}, timeout=120)
    assert forwarded.status_code == 200, forwarded.text
    body = forwarded.json()
    assert body["server"] == "remote" and body["server_url"] == f"{url_b}/predict"
    at_b = requests.post(f"{url_b}/predict", files=sent, data={"top_k": "4"}, timeout=120).json()
    at_a = requests.post(f"{url_a}/predict", files=sent, data={"top_k": "4"}, timeout=120).json()
    scores = [[(p["class_id"], p["score"]) for p in result.get("predictions", [])] for result in body["results"]]
    assert scores == [[(p["class_id"], p["score"]) for p in r.get("predictions", [])] for r in at_b["results"]]
    assert scores != [[(p["class_id"], p["score"]) for p in r.get("predictions", [])] for r in at_a["results"]]
    assert [r["filename"] for r in body["results"]] == ["cat.png", "notes.txt", "coffee.png"]
    assert body["results"][1]["error"]["code"] == "unsupported_image_type"
    # One call reached B, under the caller's request id, with all three images (B decodes, and
    # refused the text file).
    b_lines = [line for line in log_b.read_text().splitlines() if "many-forward-1" in line and "POST /predict" in line]
    assert len(b_lines) == 1 and " images=3 " in b_lines[0], b_lines


def test_a_json_multi_image_request_is_forwarded_with_explanations(pair, photos):
    url_a, _, _ = pair
    document = {"images": [base64.b64encode(photos["chelsea"]).decode(), "%%%"], "filenames": ["c.png", "bad"],
                "settings": {"server": "remote", "explain": True}}
    response = requests.post(f"{url_a}/predict", json=document, timeout=120)
    assert response.status_code == 200, response.text
    cat, bad = response.json()["results"]
    assert cat["filename"] == "c.png" and cat["explanation"]["heatmap"].startswith("data:image/png")
    assert bad == {"filename": "bad",
                   "error": {"code": "invalid_image", "message": "This entry of 'images' is not valid base64."}}


def test_the_hop_header_answers_several_images_here(pair, photos):
    _, url_b, _ = pair
    two = [("image", ("a.png", photos["chelsea"])), ("image", ("b.png", photos["coffee"]))]
    response = requests.post(f"{url_b}/predict", files=two, data={"server": "remote"}, headers={HOP_HEADER: "1"},
                             timeout=120)
    assert response.json()["server"] == "local" and len(response.json()["results"]) == 2


GOOD = {"label": "tabby", "class_id": "n02123045", "score": 0.5}


@pytest.mark.parametrize("results", [
    [{"predictions": [GOOD]}],                                   # one result for two images
    [{"predictions": [GOOD]}, {"predictions": [{"label": 1}]}],  # a malformed prediction
    [{"predictions": [GOOD]}, {"error": {"code": "x", "message": "m", "extra": "leak"}}],  # not our error shape
    [{"predictions": [GOOD]}, {"error": {"code": "<b>Internal</b>", "message": "m"}}],  # not one of our codes
    [{"predictions": [GOOD]}, "nope"],
])
def test_a_remote_answer_we_cannot_relay_is_502(make_app, fake_remote, photos, results):  # noqa: F811
    body = json.dumps({"model": "X", "weights": "imagenet", "results": results}).encode()
    client = make_app(remote_url=fake_remote(200, body)).test_client()
    response = client.post("/predict", data={**multipart(("a.png", photos["chelsea"]), ("b.png", photos["coffee"])),
                                             "server": "remote"})
    assert response.status_code == 502 and response.json["error"]["code"] == "remote_error"


def test_a_remote_answer_is_relayed_per_image(make_app, fake_remote, photos):  # noqa: F811
    """A remote's per-image error comes back in its place, shortened; an image that could not
    be read here is never sent."""
    long_message = "m" * 1000
    body = json.dumps({"model": "X", "weights": "imagenet", "timing_ms": {"total": 3},
                       "results": [{"filename": "remote-name", "predictions": [GOOD], "timing_ms": {"total": 1}},
                                   {"filename": "b", "error": {"code": "invalid_image", "message": long_message}}]})
    url = fake_remote(200, body.encode())
    client = make_app(remote_url=url).test_client()
    response = client.post("/predict", json={"images": [base64.b64encode(photos["chelsea"]).decode(), "%%",
                                                        base64.b64encode(photos["coffee"]).decode()],
                                             "filenames": ["a", "unreadable", "b"], "server": "remote"})
    assert response.status_code == 200, response.json
    first, unreadable, last = response.json["results"]
    assert first["filename"] == "a" and first["predictions"][0]["label"] == "tabby"
    assert unreadable["error"]["code"] == "invalid_image" and unreadable["filename"] == "unreadable"
    assert last["error"]["code"] == "invalid_image" and len(last["error"]["message"]) == 301
    assert len(fake_remote.received) == 1
