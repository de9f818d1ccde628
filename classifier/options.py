"""One prediction request, parsed from whichever form it came in (form, JSON, query, CLI)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .errors import InvalidRequest

DEFAULT_TOP_K = 3
MAX_TOP_K = 20
SERVERS = ("local", "remote", "custom")


@dataclass(frozen=True)
class PredictRequest:
    """A parsed request, whichever of the three HTTP forms (or the CLI) it came from."""

    image: bytes
    filename: str = "image"
    model: str | None = None
    top_k: int = DEFAULT_TOP_K
    server: str = "local"
    remote_url: str | None = None

    @classmethod
    def from_options(cls, image: bytes, options: Mapping[str, object], filename: str = "image") -> PredictRequest:
        """Validate loosely typed options (form fields, JSON values, query parameters)."""
        return cls(
            image=image,
            filename=filename or "image",
            model=_text(options, "model"),
            top_k=_top_k(options.get("top_k")),
            server=_server(options.get("server")),
            remote_url=_text(options, "remote_url"),
        )


def _text(options: Mapping[str, object], name: str) -> str | None:
    value = options.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string.")
    return value.strip()


def _top_k(value: object) -> int:
    if value is None or value == "":
        return DEFAULT_TOP_K
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        top_k = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        top_k = 0
    if not 1 <= top_k <= MAX_TOP_K:
        raise InvalidRequest(f"top_k must be a whole number from 1 to {MAX_TOP_K}.")
    return top_k


def _server(value: object) -> str:
    if value is None or value == "":
        return "local"
    if value not in SERVERS:
        raise InvalidRequest(f"server must be one of: {', '.join(SERVERS)}.")
    return str(value)
