"""URLs as this service shows them to people and logs.

An operator's ``CLASSIFIER_REMOTE_URL`` or a weights mirror may carry a password or a key;
forwarding, downloads and the access log all show URLs, so the one rule for what of a URL
may be shown lives here, below all of them.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def public_url(url: str) -> str:
    """``url`` as this service shows it, in messages, answers and logs: scheme, host, port
    and path, without credentials, query or fragment (an operator's CLASSIFIER_REMOTE_URL
    may carry a password or a key that no client and no log should see)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:  # a port that is not a number: leave it out
        netloc = host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
