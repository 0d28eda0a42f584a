"""Source addresses: classify them, and keep credentials out of logs, status and the API."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit



def redact(url: str) -> str:
    """Return `url` with any user:password replaced by '***', safe to print anywhere."""
    parts = urlsplit(url)
    if parts.scheme and (parts.username or parts.password):
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit(parts._replace(netloc=f"***@{host}"))
    return url
