"""The errors the service can answer with, as a small hierarchy callers catch by meaning.

Each class carries the HTTP status and the stable machine-readable ``code`` that the API
puts in ``{"error": {"code": ..., "message": ...}}``; the message is written for people.
The CLI uses the same classes, so a bad file reads the same from a terminal as over HTTP.
"""

from __future__ import annotations

from classifier.sizes import size_limit


class ClassifierError(Exception):
    """Base of every error the service reports on purpose."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after

    def to_json(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


class InvalidRequest(ClassifierError):
    """The request is malformed: a missing field, a bad option value."""

    status, code = 400, "invalid_request"


class UnknownModel(InvalidRequest):
    code = "unknown_model"


class ClientGone(InvalidRequest):
    """The connection was closed before the answer (the client left, or NGINX gave up on the
    request): the rest of it is not computed. No client reads it; the access line and
    ``classifier_predictions_total`` say why the request stopped."""

    code = "client_gone"


class InvalidImage(ClassifierError):
    """The bytes claim to be an image we support but cannot be decoded."""

    status, code = 400, "invalid_image"


class TooManyPixels(InvalidImage):
    """Guards memory: the image's declared size would be too large to decode."""

    code = "too_many_pixels"


class ImageTooComplex(InvalidImage):
    """Guards CPU and memory: a valid image whose shape or encoding is too costly to decode."""

    code = "image_too_complex"


class UnsupportedImageType(ClassifierError):
    status, code = 415, "unsupported_image_type"


class ImageTooLarge(ClassifierError):
    status, code = 413, "image_too_large"

    @classmethod
    def over(cls, limit: int) -> ImageTooLarge:
        """The one wording of the image limit, wherever it is enforced."""
        return cls(f"The image is larger than {size_limit(limit)}.")


class RequestTooLarge(ClassifierError):
    """The whole body is over the limit, before any image could be read from it."""

    status, code = 413, "request_entity_too_large"


class TooManyImages(ClassifierError):
    """More images in one request than ``CLASSIFIER_MAX_IMAGES``, counted before any is decoded."""

    status, code = 413, "too_many_images"


class RequestTooCostly(ClassifierError):
    """Guards the workers' time: the request's images together would cost more to decode than
    ``CLASSIFIER_MAX_REQUEST_COST``, reckoned from their headers before any is decoded."""

    status, code = 413, "request_too_costly"


class ModelUnavailable(ClassifierError):
    """The model exists but cannot run here yet (weights missing or downloading)."""

    status, code = 503, "model_unavailable"


class RemoteNotAllowed(InvalidRequest):
    """Forwarding to this URL is refused by policy (scheme, address or configuration)."""

    code = "remote_not_allowed"


class RemoteError(ClassifierError):
    """The remote server failed or answered something we cannot relay."""

    status, code = 502, "remote_error"


class RemoteTimeout(RemoteError):
    status, code = 504, "remote_timeout"


class RemoteRejected(RemoteError):
    """The remote refused the request itself (400, 413, 415: the image or an option is at
    fault), so the caller gets the remote's status: retrying elsewhere would not help."""

    status, code = 400, "remote_rejected"  # the class's status; each instance has the remote's

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class RemoteBusy(RemoteError):
    """The remote asked us to slow down (429); its ``Retry-After`` is passed on."""

    status, code = 429, "remote_busy"


class RemoteUnavailable(RemoteError):
    """The remote cannot answer yet (503, e.g. its weights are downloading); ``Retry-After`` is passed on."""

    status, code = 503, "remote_unavailable"


class CrossOriginForbidden(ClassifierError):
    """A page from another origin tried ``server=custom``: that would let any web page the
    user visits use this local server as a proxy into the user's network."""

    status, code = 403, "cross_origin_forbidden"
