"""Who may call the API from a browser: Host names, Origin / Sec-Fetch-Site, body Content-Type and CORS.

A web page the user visits can send requests to a server on localhost. By default the server answers only
requests a browser marks as its own (no Origin, or the server's own scheme://host:port; no cross-site
Sec-Fetch-Site), for a loopback Host name (so DNS rebinding gets nothing), and parses POST bodies only when
they say `application/json` or `multipart/form-data` (a cross-site form or a fetch() without a CORS
preflight cannot send JSON). `--allow-origin` / `--allow-host` widen this; preflights are answered for allowed origins.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import web
from yarl import URL

from ..config_files import is_loopback
from .errors import ApiError

ANY = "*"
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::"})
BODY_TYPES = ("application/json", "multipart/form-data")
CROSS_SITE = frozenset({"cross-site", "same-site"})
PREFLIGHT_HEADERS = "Authorization, Content-Type"
PREFLIGHT_MAX_AGE = "600"


def normalize_origin(value: str, what: str = "allow_origins") -> str:
    """'HTTP://Example.com:80/' -> 'http://example.com' ('*' stays); ValueError naming `what` otherwise."""
    if value == ANY:
        return ANY
    fix = f"{what}: give an origin as scheme://host[:port] (e.g. http://localhost:3000) or '*', got {value!r}"
    if not isinstance(value, str):
        raise ValueError(fix)
    try:
        url = URL(value.strip())
    except ValueError:
        raise ValueError(fix) from None
    if url.scheme not in ("http", "https") or not url.host or url.path not in ("", "/") or url.query_string:
        raise ValueError(fix)
    return origin_of(url.scheme, url.host, url.explicit_port)


def origin_of(scheme: str, host: str, port: int | None) -> str:
    """The canonical origin string: lowercase, IPv6 in brackets, the scheme's default port left out."""
    host = host.lower()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    default = {"http": 80, "https": 443}.get(scheme)
    return f"{scheme}://{host}" if port in (None, default) else f"{scheme}://{host}:{port}"


def normalize_host(value: str, what: str = "allow_hosts") -> str:
    """'Example.COM' / '[::1]' / '::1' -> a lowercase host name without brackets ('*' stays)."""
    if value == ANY:
        return ANY
    fix = f"{what}: give a host name or address without scheme or port (e.g. gpubox.local) or '*', got {value!r}"
    if not isinstance(value, str) or not value.strip():
        raise ValueError(fix)
    host = value.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if any(c in host for c in ":/@[] ") or host.startswith("."):
        raise ValueError(fix)
    return host.rstrip(".")


@dataclass(frozen=True)
class BrowserPolicy:
    """Which origins and Host names a server answers; `hosts=None` accepts any Host (the host app decides)."""

    origins: frozenset[str] = frozenset()  # normalized extra origins; '*' allows every origin
    hosts: frozenset[str] | None = frozenset()  # Host names beyond the loopback ones; '*' or None: any

    @classmethod
    def build(cls, origins: Iterable[str] = (), hosts: Iterable[str] | None = (), bound: str = "") -> BrowserPolicy:
        """A policy from operator lists (validated) and the bound address (it is a Host name clients may use)."""
        origin_set = frozenset(normalize_origin(o) for o in origins)
        if hosts is None:
            return cls(origin_set, None)
        host_set = {normalize_host(h) for h in hosts}
        bound = bound.strip("[]").lower()
        if bound not in WILDCARD_BINDS:
            host_set.add(normalize_host(bound, "host"))
        elif not host_set:
            return cls(origin_set, None)  # a wildcard bind without a list: every name this machine has
        return cls(origin_set, None if ANY in host_set else frozenset(host_set))

    def allows_origin(self, origin: str) -> bool:
        """True when `origin` (normalized) was allowed by the operator."""
        return ANY in self.origins or origin in self.origins

    def allows_host(self, host: str) -> bool:
        """True for a loopback name or one the operator listed (always, when any host is accepted)."""
        return self.hosts is None or is_loopback(host) or host in self.hosts


def request_host(request: web.Request) -> str | None:
    """The Host header's name without port or brackets, lowercase; None when the request sent no Host."""
    raw = request.headers.get("Host")
    if raw is None:
        return None
    try:
        host = URL(f"http://{raw.strip()}").host
    except ValueError:
        host = None
    if not host:
        return ""
    return host.strip("[]").lower().rstrip(".")


def own_origin(request: web.Request) -> str | None:
    """This server's origin as the request addressed it (scheme and Host header), or None without a Host."""
    raw = request.headers.get("Host")
    if not raw:
        return None
    try:
        return normalize_origin(f"{request.scheme}://{raw.strip()}")
    except ValueError:
        return None


def cross_origin(request: web.Request) -> str | None:
    """The request's Origin when it is not this server's own (normalized; 'null' stays), else None."""
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    try:
        normalized = normalize_origin(origin)
    except ValueError:
        return origin.strip() or "null"  # 'null' (sandboxed frames, file://) or garbage: never our own
    return None if normalized == own_origin(request) else normalized


def check_browser(request: web.Request, policy: BrowserPolicy) -> None:
    """403 for an unlisted Host name or a cross-origin browser request; 415 for a POST body of another type."""
    host = request_host(request)
    if host is not None and not policy.allows_host(host):
        raise ApiError(
            403,
            "host_not_allowed",
            f"Host {request.headers.get('Host')!r} is not a name this server answers to (loopback names only by "
            f"default, against DNS rebinding); start the server with --allow-host {host or 'NAME'} "
            "(or allow_hosts in the config file)",
        )
    origin = cross_origin(request)
    site = request.headers.get("Sec-Fetch-Site", "").strip().lower()
    if (origin is not None or site in CROSS_SITE) and not (
        ANY in policy.origins or (origin is not None and policy.allows_origin(origin))
    ):
        shown = origin or f"a {site} page"
        raise ApiError(
            403,
            "origin_not_allowed",
            f"cross-origin browser request from {shown} refused (web pages may not drive this server); "
            f"to allow a page, start the server with --allow-origin {origin or 'ORIGIN'} "
            "(or allow_origins in the config file)",
        )
    if request.method == "POST":
        check_body_type(request)


def check_body_type(request: web.Request) -> None:
    """415 unless a POST body is JSON or multipart (a POST without a body, e.g. load/unload, may send any)."""
    declared = request.headers.get("Content-Type")
    if not request.body_exists or request.content_length == 0:
        return
    if declared is not None and request.content_type in BODY_TYPES:
        return
    raise ApiError(
        415,
        "unsupported_media_type",
        f"POST bodies must be application/json or multipart/form-data, got "
        f"{'no Content-Type' if declared is None else repr(declared)}; "
        "send the header 'Content-Type: application/json' (curl: -H \"Content-Type: application/json\")",
    )


def cors_headers(request: web.Request, policy: BrowserPolicy) -> dict[str, str]:
    """Access-Control-Allow-Origin (and Vary) for a request from an allowed other origin; {} otherwise."""
    origin = cross_origin(request)
    if origin is None or not policy.allows_origin(origin):
        return {}
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}


def preflight(request: web.Request, policy: BrowserPolicy, methods: Iterable[str]) -> web.Response:
    """Answer an OPTIONS request: CORS permission for an allowed origin, 403 (no CORS headers) otherwise."""
    allow = ", ".join(sorted({*methods, "OPTIONS"}))
    if "Origin" not in request.headers:
        return web.Response(status=204, headers={"Allow": allow})
    check_browser(request, policy)
    headers = cors_headers(request, policy)
    if not headers:  # a same-origin OPTIONS: nothing to grant
        return web.Response(status=204, headers={"Allow": allow})
    headers.update(
        {
            "Access-Control-Allow-Methods": allow,
            "Access-Control-Allow-Headers": PREFLIGHT_HEADERS,
            "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
            "Allow": allow,
        }
    )
    return web.Response(status=204, headers=headers)
