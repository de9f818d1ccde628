"""Every setting of the service, read once from ``CLASSIFIER_*`` environment variables.

One frozen object holds them so that the Flask app, the CLI and the tests all see the same
names and defaults; docs/settings.md lists them, and tests/test_site.py holds its table to this file.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
# How models run: "onnx" is ONNX Runtime on an export of the Keras model, checked against it;
# "keras" is the Keras model as a compiled tf.function; "auto" picks per model (serving/pool.py).
RUNTIMES = ("auto", "onnx", "keras")
# Log lines as text for a person, or one JSON object each for a log shipper (logs.py).
LOG_FORMATS = ("plain", "json")


def _keras_home(environ: Mapping[str, str]) -> Path:
    """Keras keeps downloaded weights under ``$KERAS_HOME/models`` (default ``~/.keras``)."""
    return Path(environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser()


@dataclass(frozen=True)
class Settings:
    """The service's configuration; ``from_env`` documents the variable behind each field."""

    default_model: str | None = None
    random_weights: bool = False
    offline: bool = False
    weights_dir: Path | None = None
    weights_mirror: str | None = None
    keras_home: Path = dataclasses.field(default_factory=lambda: _keras_home(os.environ))
    max_upload_bytes: int = 10 * 1024 * 1024
    # One request (docs/many-images.md): its whole body, which NGINX's
    # client_max_body_size and uWSGI's limit-post follow, and how many images it may hold.
    max_request_bytes: int = 64 * 2**20
    max_images: int = 32
    # Images decoded and run through the model together; a request holds at most this many
    # decoded at once. None: the runtime's own (runtimes/forward.py: ONNX Runtime 1, Keras 8, measured
    # with bench/batching.py).
    batch_size: int | None = None
    # Image limits (image_checks.py; docs/images.md has the measurements).
    max_pixels: int = 50_000_000
    max_aspect_ratio: float = 20.0
    max_jpeg_scans: int = 32
    max_segments: int = 10_000
    max_decode_bytes: int = 256 * 2**20
    # What one request's images may cost to decode together, in pixel scans (image_checks.
    # decode_cost): up to about 14 s of a core (SECURITY.md). 32 12-megapixel photos take 12.7 billion.
    max_request_cost: int = 16_000_000_000
    remote_url: str | None = None
    allow_custom_remote: bool = False
    remote_connect_timeout: float = 3.0
    remote_read_timeout: float = 30.0
    # Whom forwarding trusts to sign an https remote's certificate: this system's certificate
    # authorities (None), or only those in this PEM file (a private CA; docs/https.md).
    remote_ca_bundle: Path | None = None
    cors_origins: str = "*"
    warmup: bool = True
    runtime: str = "auto"
    runtime_threads: int | None = None
    export_timeout: float = 900.0
    # The bar an int8 form must clear against its fp32 export on the held-out photos to be
    # served (quantize.py): the share of images with the same top-1 class, and the mean number
    # of classes the two top-5 lists share. docs/int8.md has what each model measured.
    int8_min_top1: float = 0.97
    int8_min_top5: float = 4.0
    log_format: str = "plain"
    # Who may read GET /metrics from the app itself: loopback. Behind NGINX, its own list
    # (classifier-locations.conf) decides first; both must admit a Prometheus server elsewhere.
    metrics_allow: str = "127.0.0.0/8,::1"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, **overrides: object) -> Settings:
        """Build settings from the environment; ``overrides`` win over both env and defaults."""
        env = _EnvReader(environ)
        values = {
            "default_model": env.text("CLASSIFIER_DEFAULT_MODEL"),
            "random_weights": env.flag("CLASSIFIER_RANDOM_WEIGHTS"),
            "offline": env.flag("CLASSIFIER_OFFLINE"),
            "weights_dir": env.path("CLASSIFIER_WEIGHTS_DIR"),
            "weights_mirror": env.text("CLASSIFIER_WEIGHTS_MIRROR"),
            "keras_home": _keras_home(environ),
            "max_upload_bytes": env.number("CLASSIFIER_MAX_UPLOAD_BYTES", int),
            "max_request_bytes": env.number("CLASSIFIER_MAX_REQUEST_BYTES", int),
            "max_images": env.number("CLASSIFIER_MAX_IMAGES", int),
            "batch_size": env.number("CLASSIFIER_BATCH_SIZE", int),
            "max_pixels": env.number("CLASSIFIER_MAX_PIXELS", int),
            "max_aspect_ratio": env.number("CLASSIFIER_MAX_ASPECT_RATIO", float),
            "max_jpeg_scans": env.number("CLASSIFIER_MAX_JPEG_SCANS", int),
            "max_segments": env.number("CLASSIFIER_MAX_SEGMENTS", int),
            "max_decode_bytes": env.number("CLASSIFIER_MAX_DECODE_BYTES", int),
            "max_request_cost": env.number("CLASSIFIER_MAX_REQUEST_COST", int),
            "remote_url": env.text("CLASSIFIER_REMOTE_URL"),
            "allow_custom_remote": env.flag("CLASSIFIER_ALLOW_CUSTOM_REMOTE"),
            "remote_connect_timeout": env.number("CLASSIFIER_REMOTE_CONNECT_TIMEOUT", float),
            "remote_read_timeout": env.number("CLASSIFIER_REMOTE_READ_TIMEOUT", float),
            "remote_ca_bundle": env.path("CLASSIFIER_REMOTE_CA_BUNDLE"),
            "cors_origins": env.text("CLASSIFIER_CORS_ORIGINS"),
            "warmup": env.flag("CLASSIFIER_WARMUP"),
            "runtime": env.choice("CLASSIFIER_RUNTIME", RUNTIMES),
            "runtime_threads": env.number("CLASSIFIER_RUNTIME_THREADS", int),
            "export_timeout": env.number("CLASSIFIER_EXPORT_TIMEOUT", float),
            "int8_min_top1": env.number("CLASSIFIER_INT8_MIN_TOP1", float, zero=True),
            "int8_min_top5": env.number("CLASSIFIER_INT8_MIN_TOP5", float, zero=True),
            "log_format": env.choice("CLASSIFIER_LOG_FORMAT", LOG_FORMATS),
            "metrics_allow": env.text("CLASSIFIER_METRICS_ALLOW"),
        }
        values = {name: value for name, value in values.items() if value is not None}
        return cls(**{**values, **overrides})

    # Made once per settings (they are frozen): every prediction's look at its weights asks.
    @functools.cached_property
    def keras_cache_dir(self) -> Path:
        """Where ``keras.utils.get_file(..., cache_subdir="models")`` stores weights."""
        return self.keras_home / "models"

    @functools.cached_property
    def exports_dir(self) -> Path:
        """Where ONNX exports of the models and their verification records are cached."""
        return self.keras_cache_dir / "exports"


class _EnvReader:
    """Reads typed values; a malformed value stops start-up with the variable's name."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def text(self, name: str) -> str | None:
        value = self._environ.get(name, "").strip()
        return value or None

    def choice(self, name: str, choices: tuple[str, ...]) -> str | None:
        value = self.text(name)
        if value is not None and value.lower() not in choices:
            raise ValueError(f"{name}={value!r}: expected one of {', '.join(choices)}")
        return value and value.lower()

    def path(self, name: str) -> Path | None:
        value = self.text(name)
        return Path(value).expanduser() if value else None

    def flag(self, name: str) -> bool | None:
        if name not in self._environ:
            return None
        value = self._environ[name].strip().lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise ValueError(f"{name}={self._environ[name]!r}: expected 1/0, true/false, yes/no or on/off")

    def number(self, name: str, kind: type[int] | type[float], zero: bool = False) -> int | float | None:
        """A positive number, or with ``zero`` also 0 (a bar an operator may lower to nothing)."""
        value = self.text(name)
        if value is None:
            return None
        try:
            number = kind(value)
        except ValueError:
            raise ValueError(f"{name}={value!r}: expected a {kind.__name__}") from None
        if number < 0 or (number == 0 and not zero):
            raise ValueError(f"{name}={value!r}: must be {'zero or more' if zero else 'greater than zero'}")
        return number
