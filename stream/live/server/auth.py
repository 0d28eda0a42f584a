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

The source policy (`check_api_source`) is the other half: which camera addresses a request may add. Without it,
anyone allowed to add a stream could make the server read `/etc/passwd` or fetch a cloud metadata endpoint.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from stream.config.serve import LOOPBACK_HOSTS, ServeConfig
from stream.config.sources import SourcePolicy
from stream.live.sources.urls import redact

STATE_CHANGING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
BODYLESS_OK_METHODS = frozenset({"DELETE"})  # may omit Content-Type when they carry no body
JSON_TYPE = "application/json"
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::"})  # not names a browser can open
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
HOST_DEFAULT_PORT = DEFAULT_PORTS["http"]  # serve speaks plain HTTP: a Host without a port means 80
PUBLIC_PATHS = ("/", "/favicon.ico")  # the page and its code hold no data: it loads, then asks for the token
# Probes (container orchestrators, systemd) cannot send a token. /healthz says only "alive"; /readyz says ready or
# not and counts streams by state, and names the streams only to a request with the token (app.readyz).
PROBE_PATHS = ("/healthz", "/readyz")
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
            request.path in PUBLIC_PATHS or request.path in PROBE_PATHS or request.path.startswith(PUBLIC_PREFIXES))
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


# ---------------------------------------------------------------------------------------------- source policy


class SourceRefused(ValueError):
    """An address the API may not add; the message names the rule that refused it, in words."""


LINK_LOCAL_NETWORKS = tuple(ipaddress.ip_network(n) for n in ("169.254.0.0/16", "fe80::/10"))
# Cloud metadata services beyond 169.254.169.254: AWS's IPv6 endpoint. Refused like link-local addresses.
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("fd00:ec2::254")})
RESOLVE_TIMEOUT_S = 5.0
Resolver = Callable[[str], Awaitable[list[str]]]


def _forbidden_address(address: str, policy: SourcePolicy) -> bool:
    """True for a link-local or metadata address not listed in `policy.allowed_addresses`."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # fe80::1%eth0: the zone is not part of the address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:169.254.169.254 is 169.254.169.254
    if not (any(ip in net for net in LINK_LOCAL_NETWORKS) or ip in METADATA_ADDRESSES):
        return False
    for entry in policy.allowed_addresses:
        try:
            if ip in ipaddress.ip_network(entry.split("%", 1)[0], strict=False):
                return False
        except ValueError:
            continue  # a host name: matched against the URL's own name in check_api_source
    return True


async def system_resolve(host: str) -> list[str]:
    """Every address `host` resolves to now (an address resolves to itself), through the system resolver."""
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S)
    return sorted({info[4][0] for info in infos})


def _under(path: Path, roots: list[str]) -> bool:
    for root in roots:
        base = Path(root).expanduser().resolve()
        if path == base or base in path.parents:
            return True
    return False


async def check_api_source(url: str, policy: SourcePolicy, resolve: Resolver = system_resolve) -> None:
    """Raise `SourceRefused` (saying which rule) for an address the API may not add; return when it may.

    The rules, in order:
    1. `rtsp://` and `rtsps://` cameras are allowed; `http://` and `https://` only with `allow_http`; every
       other scheme (`file://`, `udp://`, `tcp://`, `srt://`, `rtmp://`, ...) is refused.
    2. A network address's host is **resolved first** (a name or a literal address, through the system
       resolver), and the source is refused when any address it resolves to is link-local (169.254.0.0/16,
       fe80::/10, IPv4-mapped forms included) or a cloud metadata address, unless that address, its network or
       the host name is listed in `allowed_addresses`. So `http://169.254.169.254/` is refused, and so is a
       name that resolves to 169.254.x. A name that does not resolve is refused too (it cannot be checked).
       The check is made when the stream is added: a name whose DNS answer changes later (rebinding) is not
       re-checked when the decoder reconnects.
    3. Local files and devices (no scheme) are allowed only under one of `allowed_paths`, after resolving `..`
       and symbolic links; with none listed, the API adds no local path at all.
    The config file and the command line are trusted: their sources are never checked here.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if "://" not in url:  # a local path (validate_url refuses other forms later)
        path = Path(url).expanduser()
        if not path.is_absolute():
            raise SourceRefused(f"{url!r}: local files and devices must be given by an absolute path")
        if not policy.allowed_paths:
            raise SourceRefused(f"{url!r}: local files and devices may not be added through the API "
                                "(list folders in source_policy.allowed_paths to allow some)")
        if not _under(path.resolve(), policy.allowed_paths):
            raise SourceRefused(f"{url!r}: local files and devices may be added through the API only under "
                                f"source_policy.allowed_paths ({', '.join(policy.allowed_paths)})")
        return
    if scheme in ("http", "https"):
        if not policy.allow_http:
            raise SourceRefused(f"{redact(url)}: http:// and https:// sources may not be added through the API "
                                "(set source_policy.allow_http: true to allow them)")
    elif scheme not in ("rtsp", "rtsps"):
        raise SourceRefused(f"{redact(url)}: the {scheme}:// scheme may not be added through the API (rtsp:// "
                            "and rtsps:// may, and http(s):// with source_policy.allow_http)")
    try:
        host = parts.hostname
    except ValueError:
        host = None
    if not host:
        raise SourceRefused(f"{redact(url)}: malformed address (no host)")
    if host in (entry.lower() for entry in policy.allowed_addresses):
        return
    try:
        addresses = await resolve(host)
    except (OSError, asyncio.TimeoutError, UnicodeError) as exc:
        raise SourceRefused(f"{redact(url)}: the host {host!r} does not resolve ({exc or 'timed out'}), so it "
                            "cannot be checked against the link-local rule") from None
    bad = [a for a in addresses if _forbidden_address(a, policy)]
    if bad:
        via = "" if bad == [host] else f" (it resolves to {', '.join(bad)})"
        raise SourceRefused(f"{redact(url)}: link-local and metadata addresses (169.254.0.0/16, fe80::/10) may "
                            f"not be added through the API unless listed in source_policy.allowed_addresses{via}")
