"""Request security for `serve`, in one place: the access token, the Host allow-list and the Origin checks.

What each check stops:
- **Token.** Bound beyond loopback, anyone on the network could reach the API; every request but the page's own
  files must carry the token (`?token=` or `Authorization: Bearer`).
- **Host.** A web page whose DNS name is rebound to 127.0.0.1 becomes "same-origin" with this server in the
  user's browser. Its requests carry its own name in `Host`, so only the names this server answers to are
  served: the loopback names and the bind address, with the bound port, plus the configured `allowed_hosts`.
- **Origin and Sec-Fetch-Site.** Another site must not change anything through the user's browser, nor read the
  overlays through a websocket. Origins are matched against the Host allow-list (plus `allowed_origins`), never
  against the request's own Host, which the attacker chooses.
- **Content-Type.** A cross-site `<form>` or a `text/plain` fetch needs no CORS preflight; requiring
  `application/json` on every state-changing request with a body means such a request is always preflighted,
  and preflights are never answered. A DELETE without a body needs no content type: a browser cannot send a
  DELETE cross-site without a preflight anyway.

Every refusal is raised before the handler runs, so a refused request changes nothing.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from aiohttp import web

from stream.config.serve import LOOPBACK_HOSTS, ServeConfig

STATE_CHANGING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
BODYLESS_OK_METHODS = frozenset({"DELETE"})  # may omit Content-Type when they carry no body
JSON_TYPE = "application/json"
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::"})  # not names a browser can open
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
HOST_DEFAULT_PORT = DEFAULT_PORTS["http"]  # serve speaks plain HTTP: a Host without a port means 80
PUBLIC_PATHS = ("/", "/favicon.ico")  # the page and its code hold no data: it loads, then asks for the token
PUBLIC_PREFIXES = ("/static/",)
CROSS_SITE = "cross-site"  # the Sec-Fetch-Site value browsers send for another site's requests

Authority = tuple[str, int]  # (lower-case host name or address, port)


def parse_authority(text: str, default_port: int | None) -> Authority | None:
    """`name`, `name:port`, `1.2.3.4:port` or `[::1]:port` as (host, port); None for anything else (user info,
    paths, spaces, a bad port), so junk never matches an allowed name."""
    if not text or any(c in text for c in "@/\\?# \t"):
        return None
    try:
        parts = urlsplit(f"//{text}")
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host:
        return None
    port = default_port if port is None else port
    return None if port is None else (host.rstrip("."), port)


class Guard:
    """The security policy of one server, from its config. `check` refuses a request or lets it through."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.extra_origins = frozenset(config.allowed_origins)

    def allowed_hosts(self, port: int) -> frozenset[Authority]:
        """Every (host, port) this server answers to when it listens on `port`."""
        names = set(LOOPBACK_HOSTS)
        if self.config.host not in WILDCARD_BINDS:
            names.add(self.config.host.lower())
        allowed = {(name, port) for name in names}
        for entry in self.config.allowed_hosts:
            authority = parse_authority(entry.lower(), port)
            if authority is not None:
                allowed.add(authority)
        return frozenset(allowed)

    def host_ok(self, request: web.Request) -> bool:
        host = parse_authority(request.headers.get("Host", "").lower(), HOST_DEFAULT_PORT)
        return host is not None and host in self.allowed_hosts(bound_port(request, self.config.port))

    def origin_ok(self, request: web.Request) -> bool:
        """True when the request has no Origin (not a browser, or a same-origin GET) or an allowed one."""
        origin = request.headers.get("Origin")
        if origin is None:
            return True
        if origin in self.extra_origins:
            return True
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or parts.path or parts.query:
            return False  # "null" (sandboxed pages, file://) and anything malformed
        authority = parse_authority(parts.netloc.lower(), DEFAULT_PORTS[parts.scheme])
        return authority is not None and authority in self.allowed_hosts(bound_port(request, self.config.port))

    def token_ok(self, request: web.Request) -> bool:
        if not self.config.needs_token:
            return True
        given = request.query.get("token") or request.headers.get("Authorization", "").removeprefix("Bearer ")
        token = self.config.token
        return bool(token) and hmac.compare_digest(given.strip().encode(), token.encode())  # type: ignore[union-attr]

    def check(self, request: web.Request) -> None:
        """Raise the refusal for `request` (403 with the reason, 401 for a missing token), or return."""
        if not self.host_ok(request):
            raise web.HTTPForbidden(text=f"Host {request.headers.get('Host', '')!r} is not served here: open the "
                                         "page by this server's own address, or add the name to allowed_hosts")
        public = request.method in ("GET", "HEAD") and (
            request.path in PUBLIC_PATHS or request.path.startswith(PUBLIC_PREFIXES))
        if not public and not self.token_ok(request):
            raise web.HTTPUnauthorized(text="this server needs its access token: open the page with ?token=TOKEN")
        if request.headers.get("Upgrade", "").lower() == "websocket" and not self.origin_ok(request):
            raise web.HTTPForbidden(text="websocket Origin not allowed")
        if request.method in STATE_CHANGING_METHODS:
            self._check_state_change(request)

    def _check_state_change(self, request: web.Request) -> None:
        if request.headers.get("Sec-Fetch-Site", "").lower() == CROSS_SITE:
            raise web.HTTPForbidden(text="cross-site requests may not change anything (Sec-Fetch-Site: cross-site)")
        if not self.origin_ok(request):
            raise web.HTTPForbidden(text=f"Origin {request.headers.get('Origin')!r} not allowed")
        bodyless = request.method in BODYLESS_OK_METHODS and not request.body_exists
        if not bodyless and request.content_type != JSON_TYPE:
            raise web.HTTPForbidden(text=f"send Content-Type: {JSON_TYPE} (got {request.content_type!r})")


def bound_port(request: web.Request, fallback: int) -> int:
    """The port the request arrived on, from the socket (right even when the config said port 0)."""
    sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
    if isinstance(sockname, tuple) and len(sockname) >= 2 and isinstance(sockname[1], int):
        return sockname[1]
    return fallback


GUARD_KEY = web.AppKey("guard", Guard)


@web.middleware
async def middleware(request: web.Request, handler):
    request.app[GUARD_KEY].check(request)
    return await handler(request)
