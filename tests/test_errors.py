"""What a client gets for a wrong path, a wrong method and an upload over the limit, from a
running ``python3 app.py``: JSON in the API's shape, and the limit in one wording everywhere."""

from __future__ import annotations

import pytest
import requests
from flask import render_template_string

from classifier.sizes import binary_size, size_limit

LIMIT = "10 MiB (10,485,760 bytes)"  # the default CLASSIFIER_MAX_UPLOAD_BYTES, as every 413 states it


@pytest.fixture
def url(random_app) -> str:
    """A running ``python3 app.py``: the session's shared one."""
    return random_app


def error_of(response: requests.Response) -> dict[str, str]:
    """The error's code and message; its request_id must be the answer's X-Request-ID."""
    assert response.headers["Content-Type"] == "application/json", response.text[:200]
    error = response.json()["error"]
    assert error.pop("request_id") == response.headers["X-Request-ID"]
    return error


def test_an_unknown_path_is_a_json_404_that_says_what_is_there(url):
    response = requests.get(url + "/predictions", timeout=10)
    assert response.status_code == 404
    assert error_of(response) == {
        "code": "not_found",
        "message": "There is nothing at /predictions. The API is POST /predict, GET /models and GET /healthz, "
                   "described at GET /openapi.json; the page is /.",
    }


@pytest.mark.parametrize(("method", "path", "allowed"), [("GET", "/predict", "POST"), ("DELETE", "/models", "GET")])
def test_a_wrong_method_is_a_json_405_with_allow(url, method, path, allowed):
    response = requests.request(method, url + path, timeout=10)
    assert response.status_code == 405
    assert error_of(response) == {"code": "method_not_allowed",
                                  "message": f"{path} does not take {method}; it takes {allowed}."}
    assert allowed in response.headers["Allow"].split(", ")


def test_a_body_over_the_limit_states_the_limit(url):
    """A body over CLASSIFIER_MAX_REQUEST_BYTES used to get Werkzeug's "exceeds the capacity
    limit", with no number."""
    response = requests.post(url + "/predict", data=b"\0" * (64 * 2**20 + 1), headers={"Content-Type": "image/jpeg"},
                             timeout=30)
    assert response.status_code == 413
    assert error_of(response) == {
        "code": "request_entity_too_large",
        "message": "The request body is larger than 64 MiB (67,108,864 bytes), this server's limit for one "
                   "request (CLASSIFIER_MAX_REQUEST_BYTES).",
    }


def test_an_image_over_the_limit_is_worded_the_same_by_the_api_and_the_page(url):
    image = {"image": ("big.jpg", b"\0" * 11_000_000, "image/jpeg")}
    response = requests.post(url + "/predict", files=image, timeout=30)
    assert response.status_code == 413
    assert error_of(response) == {"code": "image_too_large", "message": f"The image is larger than {LIMIT}."}

    page = requests.post(url + "/", files=image, timeout=30)  # the page's form, JavaScript off
    assert page.status_code == 413
    assert f"The image is larger than {LIMIT}." in page.text


@pytest.mark.parametrize(("count", "short", "stated"), [
    (10 * 1024 * 1024, "10 MiB", "10 MiB (10,485,760 bytes)"),
    (1_000_000, "976.6 KiB", "976.6 KiB (1,000,000 bytes)"),
    (14_046_549, "13.4 MiB", "13.4 MiB (14,046,549 bytes)"),
    (3 * 1024 ** 4, "3072 GiB", "3072 GiB (3,298,534,883,328 bytes)"),
    (512, "512 bytes", "512 bytes"),
])
def test_sizes_are_binary_units_with_the_exact_count(count, short, stated):
    assert (binary_size(count), size_limit(count)) == (short, stated)


def test_the_page_gets_the_limit_in_the_same_words(make_app):
    app = make_app(max_upload_bytes=1_000_000)
    with app.test_request_context():
        assert render_template_string("up to {{ upload_limit }}") == "up to 976.6 KiB (1,000,000 bytes)"
