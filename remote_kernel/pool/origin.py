"""Who may talk to the pool: requests addressed to the pool's own names, and never a browser page of
another origin.

Two attacks are closed here, for every pool (with a token or `--no-auth`):

- DNS rebinding: a page on `attacker.example` whose name is re-pointed at 127.0.0.1 reaches the pool
  with `Host: attacker.example`; only the pool's own names are accepted (loopback by every spelling,
  the address it binds, and the name given with `--host`), else 421 `MisdirectedRequest`.
- Cross-origin requests from a browser: a page elsewhere can POST a "simple" request (`text/plain`,
  form data, `no-cors`) that the pool would run without any preflight. Browsers mark those requests
  (`Origin`, `Sec-Fetch-Site`); one that comes from another origin is refused with 403
  `CrossOriginRequest`. Programs (httpx, requests, curl, the Azure SDKs) send neither header, so
  they are not affected.

Starlette's TrustedHostMiddleware is not used: it cuts `[::1]:port` at the first colon, answers in
plain text rather than the contract's error envelope, and knows nothing of browsers' headers.
"""
from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
CROSS_SITE = (b"cross-site", b"same-site")  # Sec-Fetch-Site values of a page that is not the pool's own


def host_name(value: str) -> str | None:
    """The host part of a Host header or URL netloc (`name`, `name:port`, `[v6]`, `[v6]:port`), lower
    case, brackets removed; None when it is malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        rest = value[end + 1:] if end > 0 else ""
        if end < 0 or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        return value[1:end]
    name, _, port = value.partition(":")
    if port and not port.isdigit():
        return None
    return name.rstrip(".") or None


def allowed_hosts(bound: str | None, told: Iterable[str] = ()) -> frozenset[str] | None:
    """The names a request may carry in its Host header: loopback, the address bound (`bound`; None for a
    Unix socket, which no browser can reach, so no check), the names told (`--host`). A pool bound to every
    address (0.0.0.0, ::) is reached by this machine's names and by any address literal."""
    if bound is None:
        return None
    names = {*LOOPBACK_NAMES, bound.strip("[]").lower(), *(t.strip("[]").lower() for t in told if t)}
    if _unspecified(bound):
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    return frozenset(n for n in names if n)


def _unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class OriginGuard:
    """ASGI middleware: 421 for a Host that is not one of the pool's names, 403 for a browser request from
    another origin. `hosts` None skips the Host check (a Unix socket)."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str] | None, any_address: bool = False) -> None:
        self.app = app
        self.hosts = hosts
        self.any_address = any_address  # bound to 0.0.0.0/::: an address literal is the pool's own

    def host_allowed(self, host: str | None) -> bool:
        if self.hosts is None:
            return True
        if host is None:
            return False
        return host in self.hosts or host.endswith(".localhost") or (self.any_address and _is_address(host))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        host_header = headers.get(b"host")
        if host_header is not None or scope.get("http_version") not in ("1.0", "0.9"):
            host = host_name(host_header.decode("latin-1")) if host_header is not None else None
            if not self.host_allowed(host):
                shown = host_header.decode("latin-1")[:100] if host_header is not None else "none"
                return await _refuse(send, 421, "MisdirectedRequest",
                                     f"This pool does not answer for the host {shown!r}: it answers for "
                                     f"{', '.join(sorted(self.hosts or ()))}. Use one of those in the URL (a name "
                                     "that only points at this machine, such as one from DNS rebinding, is refused); "
                                     "to serve another name, start the pool with --host NAME.")
        problem = self.cross_origin(headers)
        if problem:
            return await _refuse(send, 403, "CrossOriginRequest",
                                 f"This pool does not answer requests from web pages of other origins ({problem}). "
                                 "Call it from a program (httpx, requests, the Azure SDKs, curl), which sends no "
                                 "Origin header.")
        await self.app(scope, receive, send)

    @staticmethod
    def cross_origin(headers: dict[bytes, bytes]) -> str | None:
        """Why a request is a browser's cross-origin request, or None."""
        site = headers.get(b"sec-fetch-site", b"").strip().lower()
        if site in CROSS_SITE:
            return f"Sec-Fetch-Site: {site.decode('latin-1')}"
        origin = headers.get(b"origin")
        if origin is None:
            return None
        text = origin.decode("latin-1").strip()
        own = headers.get(b"host", b"").decode("latin-1").strip().lower()
        parts = urlsplit(text.lower())
        if text.lower() == "null" or parts.scheme not in ("http", "https") or parts.netloc != own:
            return f"Origin: {text[:100]}"
        return None


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"x-ms-error-code", code.encode())]})
    await send({"type": "http.response.body", "body": body})


def guard(app: ASGIApp, bound: str | None, told: Iterable[str] = ()) -> ASGIApp:
    """`app` behind the Host and Origin checks for a pool bound to `bound` (None: a Unix socket)."""
    return OriginGuard(app, allowed_hosts(bound, told), any_address=bound is not None and _unspecified(bound))
