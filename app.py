"""The Flask app: ``create_app``, the routes as one blueprint, request parsing and errors as JSON.
Nothing about models lives here.

Run ``python3 app.py`` for a local server, or serve ``app:create_app()`` with uWSGI.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import functools
import hashlib
import io
import ipaddress
import json
import logging
import os
import socket
import time
from collections.abc import Mapping
from http import HTTPStatus
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Request, Response, current_app, g, jsonify, render_template, request, url_for
from flask_cors import CORS
from werkzeug.exceptions import Forbidden, HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge
from werkzeug.serving import WSGIRequestHandler

from classifier import (Classification, Classifier, ClassifierError, PredictRequest, Settings, json_body, metrics,
                        request_ids)
from classifier.access import AccessRecord, escaped
from classifier.errors import (ClientGone, CrossOriginForbidden, ImageTooLarge, InvalidImage, InvalidRequest,
                               RequestTooLarge, UnsupportedImageType)
from classifier.explain import overlay_png
from classifier.image_checks import ImageLimits
from classifier.logs import configure_logging
from classifier.options import DEFAULT_TOP_K, MAX_TOP_K, OPTION_NAMES, default_filename
from classifier.forwarding.client import HOP_HEADER
from classifier.service import ManyClassifications, ManyImagesRequest, Upload
from classifier.sizes import size_limit

log = logging.getLogger("classifier.app")

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")  # what HTML forms send
# The API's description, written by hand and held to the code by tests/test_openapi.py.
OPENAPI_DOCUMENT = Path(__file__).with_name("openapi.json")

# Sent with every answer. The page runs only its own script and style from /static/ (no
# inline code), shows the chosen picture from a blob: URL, and may not be framed.
# remote/nginx/classifier-locations.conf sends the same for what NGINX answers itself.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
                               "base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}

# The page and the API. The views take the classifier from the app they serve (``current_classifier()``),
# so one module-level blueprint serves every app ``create_app`` builds, each with its settings.
classify = Blueprint("classify", __name__)


class InMemoryRequest(Request):
    """Keeps uploaded files in memory: Werkzeug spools large ones to disk, and image bytes
    must never be written there. The body size is capped first, so memory stays bounded."""

    def _get_file_stream(self, *args: Any, **kwargs: Any) -> io.BytesIO:
        return io.BytesIO()


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app from ``CLASSIFIER_*`` settings; ``test_config`` overrides any of them."""
    settings = Settings.from_env(**(test_config or {}))
    # uWSGI calls only this: its workers must log model loads and failures too.
    configure_logging(log_format=settings.log_format)
    classifier = Classifier(settings)
    app = Flask(__name__)
    install_request_ids(app)  # first: every other hook and handler sees the request's id
    app.request_class = InMemoryRequest
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    # Every image of the largest request, its options, and room for a client's extra fields;
    # more parts are refused (413) before any is read.
    app.config["MAX_FORM_PARTS"] = settings.max_images + len(OPTION_NAMES) + 16
    app.config["SEND_FILE_MAX_AGE_DEFAULT"] = 365 * 24 * 3600  # static URLs carry a content hash
    app.json.sort_keys = False
    app.extensions["classifier"] = classifier
    origins = settings.cors_origins.split(",") if settings.cors_origins != "*" else "*"
    CORS(app, resources={r"/predict": {"origins": origins}, r"/models": {"origins": origins}},
         expose_headers=[request_ids.HEADER])
    app.register_blueprint(classify)
    # The image limit as the page states it, worded as the API's 413 words it: "10 MiB (10,485,760 bytes)".
    app.add_template_global(size_limit(settings.max_upload_bytes), "upload_limit")
    _add_error_handlers(app, settings.max_request_bytes)
    app.after_request(_add_security_headers)
    install_metrics(app, settings.metrics_allow)
    if settings.warmup:  # at start (uWSGI's workers call this too), not at the first request
        classifier.prepare_default()
    return app


def current_classifier() -> Classifier:
    """The classifier of the app handling this request, which ``create_app`` built and stored."""
    return current_app.extensions["classifier"]


@classify.route("/", methods=["GET", "POST"])
def index() -> Any:
    """The upload page. Its form posts here when JavaScript is off; the answer is rendered."""
    classifier = current_classifier()
    if request.method == "GET":
        return render_page(classifier)
    try:
        parsed = predict_request_from(_page_form(request))
        classification = classify_request(parsed)
    except RequestEntityTooLarge:
        too_large = ImageTooLarge.over(classifier.settings.max_upload_bytes)
        g.access.error = too_large.code
        return render_page(classifier, error=too_large), too_large.status
    except ClassifierError as error:
        g.access.error = error.code
        return render_page(classifier, error=error, form=request.form), error.status, retry_headers(error)
    answer = classification.to_json()
    if isinstance(parsed, ManyImagesRequest):
        return render_page(classifier, result=answer, form=request.form)  # a table, a row per photo
    overlay = overlay_url(parsed.image, classification, classifier.limits)
    return render_page(classifier, result=answer, form=request.form, overlay=overlay, filename=parsed.filename)


def _page_form(req: Request) -> Request:
    """``req`` if it is what the page's form sends (multipart/form-data, or a form without
    files, which gets its own 400); JSON or a raw image are for ``POST /predict``, and are
    refused before any prediction is made, since the page could not show their answer."""
    if req.mimetype not in FORM_TYPES:
        raise UnsupportedImageType("POST / takes the page's form (multipart/form-data); programs send JSON or "
                                   "a raw image to POST /predict.")
    return req


def overlay_url(image: bytes, answer: Classification, limits: ImageLimits) -> str | None:
    """The explained crop as a ``data:`` URL (the CSP allows those for images): the no-JavaScript
    page cannot draw the heatmap over a preview, so the server draws it into the photo, as the
    prediction decoded it (a costly upload is decoded once), or decoded here when a remote
    classified it. A photo a remote classified but this server's ``limits`` refuse is answered
    without the picture."""
    if answer.explanation is None:
        return None
    try:
        png = overlay_png(answer.photo or image, answer.explanation, limits)
    except ClassifierError as error:
        log.info("no explained crop drawn: %s", error.message)
        return None
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@classify.post("/predict")
def predict() -> Any:
    """One image answers as one (``predictions``); several, or JSON ``images``, with ``results``."""
    return jsonify(classify_request(predict_request_from(request)).to_json())


@classify.get("/models")
def models() -> Any:
    classifier = current_classifier()
    return jsonify({"default": classifier.default_model, "models": classifier.models()})


@classify.get("/healthz")
def healthz() -> Any:
    """Liveness: the app answers. It loads nothing, so a model still preparing does not fail it."""
    return jsonify({"status": "ok"})


@classify.get("/readyz")
def readyz() -> Any:
    """Readiness, for load balancers and probes: 200 once the default model answers at once in
    this worker; else the 503 a prediction would explain (preparing, downloading, unavailable)."""
    return jsonify({"status": "ready", "model": current_classifier().check_ready()})


@classify.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 description of these routes, as checked in."""
    return current_app.response_class(_openapi_text(), mimetype="application/json")


@functools.cache
def _openapi_text() -> str:
    return OPENAPI_DOCUMENT.read_text(encoding="utf-8")


@classify.get("/metrics")
def metrics_page() -> Any:
    """Prometheus' text format, summed over the workers; only for the addresses allowed."""
    if not metrics.client_allowed(request.remote_addr, current_app.extensions["metrics_allow"]):
        raise Forbidden("GET /metrics is served only to the addresses in CLASSIFIER_METRICS_ALLOW.")
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)


def install_metrics(app: Flask, allow: str) -> None:
    """Count and time every request by its route's rule (a path nothing matches is
    ``unmatched``: a client cannot create series), and keep who may read ``/metrics``."""
    app.extensions["metrics_allow"] = metrics.parse_networks(allow)

    @app.before_request
    def start_clock() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def observe(response: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        started = g.get("metrics_started", time.perf_counter())  # unset if an earlier hook answered
        metrics.observe_request(endpoint, response.status_code, time.perf_counter() - started)
        return response


def render_page(
    classifier: Classifier,
    result: dict[str, Any] | None = None,
    error: ClassifierError | None = None,
    form: Mapping[str, str] | None = None,
    overlay: str | None = None,
    filename: str | None = None,
) -> str:
    """``index.html``: the models and servers to offer, and the answer to a form post if any
    (of the photo ``filename``; with ``overlay``, its explained crop as an image URL)."""
    return render_template(
        "index.html",
        models=classifier.models(),
        remote_url=classifier.settings.remote_url,
        allow_custom=classifier.settings.allow_custom_remote,
        default_top_k=DEFAULT_TOP_K,
        max_top_k=MAX_TOP_K,
        max_upload_bytes=classifier.settings.max_upload_bytes,
        result=result,
        error=error.to_json()["error"] if error else None,
        form=form or {},
        overlay=overlay,
        filename=filename,
    )


@classify.app_template_global()
def asset_url(filename: str) -> str:
    """A static file's URL with a hash of its content, so browsers may cache it for a year."""
    path = Path(current_app.static_folder or "static", filename)
    return url_for("static", filename=filename, v=_content_hash(path, path.stat().st_mtime_ns))


@functools.lru_cache(maxsize=32)
def _content_hash(path: Path, mtime_ns: int) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def classify_request(parsed: PredictRequest | ManyImagesRequest) -> Classification | ManyClassifications:
    """The answer to a parsed prediction request (the page's form or the API), noted for the
    access line; a request forwarded by another instance is answered here (no loops)."""
    classifier, record = current_classifier(), g.access
    forwarded = HOP_HEADER in request.headers
    still_wanted()  # a request that waited in uWSGI's queue until NGINX gave up on it
    if isinstance(parsed, ManyImagesRequest):
        record.note_request(parsed.options, classifier.settings.remote_url, images=len(parsed.uploads))
        answer: Classification | ManyClassifications = classifier.predict_many(parsed, forwarded=forwarded,
                                                                               still_wanted=still_wanted)
    else:
        record.note_request(parsed, classifier.settings.remote_url)
        answer = classifier.predict(parsed, forwarded=forwarded)
    record.note_answer(answer)
    return answer


def still_wanted() -> None:
    """Stop (``ClientGone``) a request whose connection NGINX or the client has closed.

    NGINX closes it when its client goes, or at its uwsgi_read_timeout, which counts the time
    the request waited in uWSGI's queue: requests NGINX had answered 504 were still computed
    35 s later (issue 21). Under uWSGI the connection is peeked at, without blocking: end of
    file means it is closed. Elsewhere (``python3 app.py``) nothing is checked."""
    try:
        import uwsgi
    except ImportError:
        return
    with socket.fromfd(uwsgi.connection_fd(), socket.AF_INET, socket.SOCK_STREAM) as connection:  # a copy of it
        try:
            closed = connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return
        except OSError:
            closed = True
    if closed:
        raise ClientGone("The connection was closed before the answer was ready; the rest of the "
                         "request was not computed.")


def predict_request_from(req: Request) -> PredictRequest | ManyImagesRequest:
    """The parsed request, refusing ``server=custom`` from another origin's page.

    CORS lets any page call ``/predict`` (reading the answer needs no credentials), which is
    fine for ``local`` and ``remote``; but a page choosing the URL would turn the user's own
    ``python3 app.py`` into a proxy into the user's network. Programs send no ``Origin``.
    A page whose host name was rebound to this machine's address looks same-origin, so the
    host must also be an address or ``localhost``, names no attacker's DNS answers for.
    """
    parsed = parse_predict_request(req)
    options = parsed.options if isinstance(parsed, ManyImagesRequest) else parsed
    if options.server == "custom" and (is_cross_origin(req) or not _host_is_address_or_localhost(req.host)):
        raise CrossOriginForbidden("server=custom is only available from this server's own page, "
                                   "opened at localhost or an IP address, not from another origin.")
    return parsed


def _host_is_address_or_localhost(host: str) -> bool:
    name = urlsplit(f"//{host}").hostname or ""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name == "localhost"
    return True


def is_cross_origin(req: Request) -> bool:
    """Whether a browser sent ``req`` from a page on another origin (``Origin: null`` included:
    ``file://`` pages and sandboxed frames send it). ``Sec-Fetch-Site`` covers a missing ``Origin``."""
    origin = req.headers.get("Origin")
    if origin is not None:
        return origin != f"{req.scheme}://{req.host}"
    return req.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none")


def parse_predict_request(req: Request) -> PredictRequest | ManyImagesRequest:
    """Read any of the three request forms; query parameters apply to all of them. Several
    ``image`` parts, or JSON ``images``, make a request for several images."""
    mimetype = req.mimetype
    if mimetype in FORM_TYPES:
        return _form_request(req)
    if mimetype == "application/json":
        document = _json_document(req)
        options = {name: document[name] for name in OPTION_NAMES if name in document}
        settings = {} if document.get("settings") is None else document["settings"]
        if not isinstance(settings, dict):
            raise InvalidRequest("'settings' must be a JSON object.")
        options = {**req.args, **options, **settings}
        if "images" in document:
            return ManyImagesRequest.from_options(_json_uploads(document), options)
        return PredictRequest.from_options(decode_image_field(document.get("image")), options)
    if mimetype.startswith("image/") or mimetype == "application/octet-stream":
        return PredictRequest.from_options(req.get_data(), req.args)
    raise UnsupportedImageType(
        "Send the image as multipart/form-data (field 'image'), as JSON "
        "({\"image\": base64}) or as a raw image/* body."
    )


def _form_request(req: Request) -> PredictRequest | ManyImagesRequest:
    """One ``image`` part: today's single request; several: one request for all of them."""
    files = req.files.getlist("image")
    if not files:
        raise InvalidRequest("The request has no file field named 'image'.")
    options = {**req.args, **req.form}
    if len(files) == 1:
        return PredictRequest.from_options(files[0].read(), options, files[0].filename or "image")
    return ManyImagesRequest.from_options(
        [Upload(file.filename or default_filename(index), file.read()) for index, file in enumerate(files)], options)


def _json_uploads(document: dict[str, Any]) -> list[Upload]:
    """JSON ``images`` (each base64 or a data: URL) with their ``filenames``; an entry that
    cannot be read fails that image only."""
    images, names = document["images"], document.get("filenames")
    if "image" in document:
        raise InvalidRequest("Send either 'image' (one) or 'images' (a list), not both.")
    if not isinstance(images, list) or not images:
        raise InvalidRequest("'images' must be a list of base64 strings or data: URLs.")
    current_classifier().check_image_count(len(images))  # before any entry is looked at
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


def _json_document(req: Request) -> dict[str, Any]:
    """The body as a JSON object, parsed within a memory bound (classifier/json_body.py)."""
    document = json_body.parse(req.get_data(), current_classifier().settings.max_images)
    if not isinstance(document, dict):
        raise InvalidRequest("The body is not a JSON object.")
    return document


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


def _add_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def retry_headers(error: ClassifierError) -> dict[str, str]:
    """``Retry-After`` when the error says when to come back (a download, a busy remote)."""
    return {"Retry-After": str(error.retry_after)} if error.retry_after else {}


def install_request_ids(app: Flask) -> None:
    """Give every request an id (``request_ids``): bound while it is handled, so every log
    line about it carries the id; sent back as ``X-Request-ID`` and in JSON errors; passed on
    to a remote. The request's one access line is written once its answer is ready."""

    @app.before_request
    def start() -> None:
        request_id = request_ids.request_id_for(request.headers.get(request_ids.HEADER))
        g.request_id_token = request_ids.bind(request_id)
        g.access = AccessRecord(request.method, request.path, request.content_length or 0)

    @app.after_request
    def finish(response: Response) -> Response:
        response.headers[request_ids.HEADER] = request_ids.current_request_id()
        g.access.log(response.status_code)
        return response

    @app.teardown_request
    def forget(error: BaseException | None) -> None:
        if token := g.pop("request_id_token", None):  # none in a bare test_request_context
            request_ids.unbind(token)


def json_error(document: dict[str, dict[str, str]], status: int, headers: Mapping[str, str] | None = None) -> Any:
    """An error answer ``{"error": {"code", "message", "request_id"}}``; the code goes in the access line."""
    g.access.error = document["error"]["code"]
    document["error"]["request_id"] = request_ids.current_request_id()
    return jsonify(document), status, dict(headers or {})


def _add_error_handlers(app: Flask, max_request_bytes: int) -> None:
    @app.errorhandler(ClassifierError)
    def classifier_error(error: ClassifierError) -> Any:
        return json_error(error.to_json(), error.status, retry_headers(error))

    @app.errorhandler(RequestEntityTooLarge)
    def body_too_large(error: RequestEntityTooLarge) -> Any:
        if (request.content_length or 0) > max_request_bytes or request.content_length is None:
            return classifier_error(RequestTooLarge(
                f"The request body is larger than {size_limit(max_request_bytes)}, this server's limit "
                "for one request (CLASSIFIER_MAX_REQUEST_BYTES)."))
        return classifier_error(RequestTooLarge(
            f"The form has more parts than this server takes ({current_app.config['MAX_FORM_PARTS']}: "
            "CLASSIFIER_MAX_IMAGES images and the options), or a field too long."))

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        code = (error.name or "error").lower().replace(" ", "_")
        allow = isinstance(error, MethodNotAllowed) and error.valid_methods
        headers = {"Allow": ", ".join(error.valid_methods)} if allow else {}
        return json_error({"error": {"code": code, "message": _http_error_message(error)}}, error.code, headers)

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception) -> Any:
        log.exception("unexpected error on %s %s", request.method, escaped(request.path))
        message = "The server failed unexpectedly; the error has been logged."
        return json_error({"error": {"code": "internal_error", "message": message}}, 500)


def _http_error_message(error: HTTPException) -> str:
    """Werkzeug's wording for what a client most often gets wrong, made to say what is here."""
    if isinstance(error, NotFound):
        return (f"There is nothing at {request.path}. The API is POST /predict, GET /models and "
                "GET /healthz, described at GET /openapi.json; the page is /.")
    if isinstance(error, MethodNotAllowed):
        allowed = [method for method in error.valid_methods or () if method not in ("HEAD", "OPTIONS")]
        return f"{request.path} does not take {request.method}; it takes {' or '.join(allowed)}."
    return error.description or error.name


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Serve the image classifier for local use: the page at http://HOST:PORT/, the API at "
                    "/predict. For a hosted server, run it under uWSGI (uwsgi.ini). Settings come from "
                    "CLASSIFIER_* environment variables (docs/settings.md).")
    parser.add_argument("--host", default="localhost",
                        help="the address to listen on (default: localhost, this machine only; "
                             "0.0.0.0 for every network)")
    parser.add_argument("--port", type=int, default=5000, help="the port to listen on (default: 5000)")
    parser.add_argument("--debug", action="store_true",
                        help="Flask's debug mode: tracebacks in the browser; never where others can reach it")
    args = parser.parse_args()
    # Local use: a person may point the page at any remote they run (production turns this off).
    os.environ.setdefault("CLASSIFIER_ALLOW_CUSTOM_REMOTE", "1")
    create_app().run(host=args.host, port=args.port, debug=args.debug, use_reloader=False, threaded=True,
                     request_handler=_QuietRequestHandler)


class _QuietRequestHandler(WSGIRequestHandler):
    """The development server without its ``Server: Werkzeug/x Python/y`` version banner, and
    without its own request lines (the app's access line, ``classifier.access``, says more), and
    with its own refusals (before Flask sees the request) in the API's JSON error shape."""

    server_version = "classifier"
    sys_version = ""
    error_content_type = "application/json"
    # http.server's limits (65,536 bytes per line, 100 headers), coded as NGINX codes its own.
    _REFUSALS: ClassVar[dict[int, tuple[str, str]]] = {
        414: ("uri_too_long", "The request line is longer than this server accepts (64 KiB)."),
        431: ("request_header_fields_too_large",
              "A request header is longer than this server accepts (64 KiB), or there are over 100."),
    }

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """``{"error": {"code", "message"}}`` instead of http.server's HTML page, which the
        API's description does not allow."""
        phrase = HTTPStatus(code).phrase
        error_code, text = self._REFUSALS.get(code, (phrase.lower().replace(" ", "_"), f"{phrase}."))
        self._refusal_id = request_ids.new_request_id()
        error = {"code": error_code, "message": text, "request_id": self._refusal_id}
        self.error_message_format = json.dumps({"error": error}).replace("%", "%%")
        super().send_error(code, message, explain)

    def end_headers(self) -> None:
        """A refusal's id goes in its headers too, as every answer's does."""
        if refusal_id := self.__dict__.pop("_refusal_id", None):
            self.send_header(request_ids.HEADER, refusal_id)
        super().end_headers()

    def log_request(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    main()
