"""The three body forms of ``POST /predict`` read into one ``PredictRequest``, without a web
framework: the HTTP edge hands over what it already split (type, query, form fields, files,
the raw body), so the rules for each form live beside the options they produce.

Query parameters apply to every form. Several ``image`` parts, or JSON ``images``, make a
request for several images; one part, JSON ``image`` or a raw ``image/*`` body, a single one.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from classifier.errors import (
    ClassifierError,
    InvalidImage,
    InvalidRequest,
    TooManyImages,
    UnsupportedImageType,
)
from classifier.serving import json_body
from classifier.serving.options import (
    OPTION_NAMES,
    Options,
    PredictRequest,
    Upload,
    default_filename,
)

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")  # what HTML forms send


@dataclass(frozen=True)
class Body:
    """A request as the HTTP edge received it: ``files`` are the ``image`` parts (file name,
    bytes), and ``data`` reads the raw body (only the JSON and raw forms ask for it)."""

    mimetype: str
    query: Mapping[str, Any]
    form: Mapping[str, Any]
    files: Sequence[tuple[str, bytes]]
    data: Callable[[], bytes]


def parse(body: Body, max_images: int) -> PredictRequest:
    """Read any of the three request forms; more than ``max_images`` images are refused from
    their count, before any is looked at."""
    if body.mimetype in FORM_TYPES:
        return _form_request(body)
    if body.mimetype == "application/json":
        return _json_request(body, max_images)
    if body.mimetype.startswith("image/") or body.mimetype == "application/octet-stream":
        return PredictRequest.one(body.data(), Options.parse(body.query))
    raise UnsupportedImageType(
        "Send the image as multipart/form-data (field 'image'), as JSON "
        "({\"image\": base64}) or as a raw image/* body."
    )


def check_image_count(count: int, max_images: int) -> None:
    """Refuse a request of more images than ``CLASSIFIER_MAX_IMAGES``, from its count alone."""
    if count > max_images:
        raise TooManyImages(f"The request holds {count:,} images; this server takes at most "
                            f"{max_images} in one request (CLASSIFIER_MAX_IMAGES).")


def _form_request(body: Body) -> PredictRequest:
    """One ``image`` part: a single image; several: one request for all of them."""
    if not body.files:
        raise InvalidRequest("The request has no file field named 'image'.")
    options = Options.parse({**body.query, **body.form})
    if len(body.files) == 1:
        filename, data = body.files[0]
        return PredictRequest.one(data, options, filename)
    return PredictRequest.many([Upload(filename or default_filename(index), data)
                                for index, (filename, data) in enumerate(body.files)], options)


def _json_request(body: Body, max_images: int) -> PredictRequest:
    """``{"image": ...}`` or ``{"images": [...]}``, options at the top level or in ``settings``
    (the original keras_classifier page's shape)."""
    document = json_body.parse(body.data(), max_images)  # within a memory bound
    if not isinstance(document, dict):
        raise InvalidRequest("The body is not a JSON object.")
    settings = {} if document.get("settings") is None else document["settings"]
    if not isinstance(settings, dict):
        raise InvalidRequest("'settings' must be a JSON object.")
    named = {name: document[name] for name in OPTION_NAMES if name in document}
    options = Options.parse({**body.query, **named, **settings})
    if "images" in document:
        return PredictRequest.many(_json_uploads(document, max_images), options)
    return PredictRequest.one(decode_image_field(document.get("image")), options)


def _json_uploads(document: dict[str, Any], max_images: int) -> list[Upload]:
    """JSON ``images`` (each base64 or a data: URL) with their ``filenames``; an entry that
    cannot be read fails that image only."""
    images, names = document["images"], document.get("filenames")
    if "image" in document:
        raise InvalidRequest("Send either 'image' (one) or 'images' (a list), not both.")
    if not isinstance(images, list) or not images:
        raise InvalidRequest("'images' must be a list of base64 strings or data: URLs.")
    check_image_count(len(images), max_images)  # before any entry is looked at
    if not all(isinstance(image, str) for image in images):
        raise InvalidRequest("'images' must be a list of base64 strings or data: URLs.")
    if "filenames" not in document:
        names = [default_filename(index) for index in range(len(images))]
    if not (isinstance(names, list) and len(names) == len(images) and all(isinstance(n, str) for n in names)):
        raise InvalidRequest("'filenames' must be a list of strings, one for each of 'images'.")
    uploads = []
    for index, (value, name) in enumerate(zip(images, names)):
        filename = name or default_filename(index)
        try:
            uploads.append(Upload(filename, decode_image_field(value, "This entry of 'images'")))
        except ClassifierError as problem:  # kept without its traceback, which holds this frame
            uploads.append(Upload(filename, problem=problem.with_traceback(None)))
    return uploads


def decode_image_field(value: object, name: str = "'image'") -> bytes:
    """Base64 or a ``data:image/...;base64,`` URL (what a browser's FileReader produces);
    ``name`` is what the messages call the field."""
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{name} must be a base64 string or a data: URL.")
    if value.startswith("data:"):
        header, comma, value = value.partition(",")
        media_type, _, encoding = header[len("data:"):].partition(";")
        if not comma or encoding != "base64":
            raise InvalidImage("A data: URL must be base64-encoded (data:image/...;base64,...).")
        if not media_type.startswith("image/"):
            raise UnsupportedImageType(f"The data: URL holds {media_type or 'no type'}, not an image.")
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImage(f"{name} is not valid base64.") from None
