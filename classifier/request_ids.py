"""Request ids: which id a request goes by, and the id of the request being handled now.

One id follows a prediction through NGINX, the app and a forwarded remote, so the log lines
of all three can be found together. A client's own ``X-Request-ID`` is kept when it is
harmless to copy into logs, headers and JSON as it is; anything else (too long, control
characters, CR/LF, spaces, quotes, non-ASCII) is replaced by a new id and never used.
NGINX applies the same rule (``remote/nginx/classifier-http.conf``; a test holds the two
to each other), so a request passed on by NGINX keeps its id here.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar, Token

HEADER = "X-Request-ID"
MAX_LENGTH = 128  # a UUID is 36 characters; tracing systems' ids (W3C traceparent: 55) fit
# Letters, digits and . _ : - : what ids are made of (UUIDs, hex, ULIDs, "svc:1234.5"), and
# nothing that could end a log field, a header or a JSON string.
ALLOWED = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_LENGTH}}}")

_current: ContextVar[str | None] = ContextVar("request_id", default=None)


def is_acceptable(candidate: str | None) -> bool:
    """Whether a client's id may be used as it is."""
    return candidate is not None and ALLOWED.fullmatch(candidate) is not None


def new_request_id() -> str:
    """A fresh id: 32 hex digits, like NGINX's ``$request_id``."""
    return uuid.uuid4().hex


def request_id_for(incoming: str | None) -> str:
    """The id a request goes by: the client's if acceptable, else a new one."""
    return incoming if is_acceptable(incoming) else new_request_id()


def current_request_id() -> str | None:
    """The id of the request this thread is handling, or ``None`` outside a request."""
    return _current.get()


def bind(request_id: str) -> Token[str | None]:
    """Make ``request_id`` the current one until ``unbind`` is given the returned token."""
    return _current.set(request_id)


def unbind(token: Token[str | None]) -> None:
    _current.reset(token)
