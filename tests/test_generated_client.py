"""A client generated from the served ``openapi.json`` by openapi-python-client, a generator
nobody here wrote, classifies a real photo through a real ``python3 app.py``.

openapi-python-client 0.29 used to leave ``POST /predict`` out (an ``explain`` mixing a
boolean with an enum of strings and integers, ``$ref``s into another schema's properties) and
made one error model per response. Here the client is generated once per module from what
the running server serves (GET /openapi.json), imported, and used the way a developer
integrating the API would: every request form the generator keeps (multipart, JSON, a raw
body), one image and several, with an explanation, and an error parsed with the generated
error model. The real EfficientNetLite0 (its pip-packaged weights) must say chelsea is a cat.
"""

from __future__ import annotations

import base64
import importlib
import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests

from conftest import CAT_LABELS, PHOTOS

PACKAGE = "generated_classifier_client"
GENERATOR = Path(sys.executable).parent / "openapi-python-client"


@pytest.fixture(scope="module")
def real_server(serve_app, keras_home) -> str:
    """``python3 app.py`` with real weights; offline, so nothing is downloaded (EfficientNetLite0's
    weights come with pip, the Keras models' would be fetched)."""
    return serve_app(CLASSIFIER_RANDOM_WEIGHTS="0", CLASSIFIER_OFFLINE="1",
                     CLASSIFIER_DEFAULT_MODEL="EfficientNetLite0", KERAS_HOME=str(keras_home))


@pytest.fixture(scope="module")
def generation(real_server, tmp_path_factory) -> Iterator[tuple[str, ModuleType]]:
    """(the generator's output, the generated package), from the document the server serves."""
    folder = tmp_path_factory.mktemp("client")
    document = folder / "openapi.json"
    document.write_bytes(requests.get(real_server + "/openapi.json", timeout=30).content)
    result = subprocess.run(
        [str(GENERATOR), "generate", "--path", str(document), "--meta", "none", "--output-path", str(folder / PACKAGE)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PATH": f"{GENERATOR.parent}{os.pathsep}{os.environ['PATH']}"})  # it formats with ruff
    assert result.returncode == 0, result.stdout + result.stderr
    sys.path.insert(0, str(folder))
    try:
        yield result.stdout + result.stderr, importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(folder))
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def generated(generation) -> ModuleType:
    return generation[1]


def part(generated: ModuleType, name: str) -> Any:
    """A generated module, e.g. ``models`` or ``api.default.predict``."""
    return importlib.import_module(f"{generated.__name__}.{name}")


@pytest.fixture(scope="module")
def client(generated, real_server) -> Any:
    """The generated client; long timeouts: the first prediction prepares the model."""
    import httpx

    return generated.Client(base_url=real_server, timeout=httpx.Timeout(300), raise_on_unexpected_status=True)


def test_it_generates_every_operation_and_drops_no_schema(generation):
    """The one thing it leaves out is the ``image/*`` body (it cannot name a wildcard media
    type); application/octet-stream carries the same raw image."""
    output, generated = generation
    problems = re.findall(r"^(Unable to .*|Failure to .*|Could not .*|Unsupported .*)$", output, re.MULTILINE)
    assert problems == ["Unsupported content type image/*"], output
    for operation in ("predict", "page_form", "page", "list_models", "health", "metrics", "openapi"):
        assert hasattr(part(generated, f"api.default.{operation}"), "sync_detailed"), operation


def test_errors_share_one_generated_model(generated):
    """Every JSON error response refers to the one Error schema, so one model parses them all."""
    models = part(generated, "models")
    error_models = [name for name in models.__all__ if name.startswith("Error") or "Response4" in name
                    or "Response5" in name]
    assert error_models == ["Error", "ErrorError"]


def data_url(photo: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(photo).decode()


def photo_file(generated: ModuleType, name: str = "chelsea.png") -> Any:
    return part(generated, "types").File(payload=io.BytesIO(PHOTOS["chelsea"].read_bytes()), file_name=name,
                                          mime_type="image/png")


def request_in(generated: ModuleType, form: str) -> tuple[Any, dict[str, Any]]:
    """The body of one request form, asking for an explanation, and query options beside it."""
    models = part(generated, "models")
    photo = PHOTOS["chelsea"].read_bytes()
    return {
        "multipart": lambda: (models.MultipartPredictImages(image=photo_file(generated), top_k=5, explain=True), {}),
        "multipart several": lambda: (models.MultipartPredictImages(
            image=[photo_file(generated, "a.png"), photo_file(generated, "b.png")], top_k=5, explain=True), {}),
        "json": lambda: (models.JsonPredictImage(image=data_url(photo), top_k=5, explain=True), {}),
        "json settings": lambda: (models.JsonPredictImage(
            image=base64.b64encode(photo).decode(), settings=models.Options(top_k=5, explain=True)), {}),
        "json several": lambda: (models.JsonPredictImages(images=[data_url(photo)] * 2, filenames=["a.png", "b.png"],
                                                          top_k=5, explain=True), {}),
        "raw": lambda: (part(generated, "types").File(payload=io.BytesIO(photo), mime_type="application/octet-stream"),
                        {"top_k": 5, "explain": True}),
    }[form]()


def assert_a_cat(answer: Any) -> None:
    """chelsea is a cat: one of ImageNet's cats in the top 3, and the explanation is of the top one."""
    labels = [prediction.label for prediction in answer.predictions]
    assert len(labels) == 5 and CAT_LABELS & set(labels[:3]), labels
    assert answer.explanation.label == labels[0] and answer.explanation.heatmap.startswith("data:image/png;base64,")


@pytest.mark.parametrize("form", ["multipart", "json", "json settings", "raw"])
def test_the_generated_predict_classifies_a_real_photo(generated, client, form):
    body, query = request_in(generated, form)
    response = part(generated, "api.default.predict").sync_detailed(client=client, body=body, **query)
    answer = response.parsed
    assert response.status_code == 200 and isinstance(answer, part(generated, "models").Classification)
    assert answer.model == "EfficientNetLite0" and answer.weights == "imagenet"
    assert_a_cat(answer)


@pytest.mark.parametrize("form", ["multipart several", "json several"])
def test_the_generated_predict_classifies_several_photos(generated, client, form):
    body, query = request_in(generated, form)
    response = part(generated, "api.default.predict").sync_detailed(client=client, body=body, **query)
    answer = response.parsed
    assert response.status_code == 200 and isinstance(answer, part(generated, "models").ManyClassifications)
    assert [result.filename for result in answer.results] == ["a.png", "b.png"]
    for result in answer.results:
        assert_a_cat(result)


@pytest.mark.parametrize("body, expected", [
    ({"image": "%%% not base64 %%%"}, (400, "invalid_image")),
    ({"image": "CAT", "model": "ResNet50"}, (503, "model_unavailable")),  # offline: its weights are not here
])
def test_an_error_parses_with_the_generated_error_model(generated, client, body, expected):
    """"CAT" stands for the real photo: an image is decoded before any model is touched."""
    models = part(generated, "models")
    body = {**body, "image": data_url(PHOTOS["chelsea"].read_bytes())} if body["image"] == "CAT" else body
    response = part(generated, "api.default.predict").sync_detailed(
        client=client, body=models.JsonPredictImage.from_dict(body), x_request_id="generated-client-1")
    error = response.parsed
    assert isinstance(error, models.Error)
    assert (response.status_code, error.error.code) == expected
    assert error.error.request_id == response.headers["X-Request-ID"] == "generated-client-1"
    assert error.error.message
