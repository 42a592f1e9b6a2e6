"""Safe defaults for a local server people leave running (the Jupyter model).

* :class:`Guard` (ASGI middleware) refuses a request whose ``Host`` is not one of the server's own
  names (DNS rebinding: a hostile page whose domain resolves to 127.0.0.1 would otherwise read
  our answers), one whose ``Origin`` is another site (a hostile page driving the API with
  ``fetch`` or a form), and one a browser marks ``Sec-Fetch-Site: cross-site`` (requests that
  carry no ``Origin``, such as an ``<img>`` pointed at the API).  When a token is set (binding
  a non-loopback address requires one) every request must carry it: ``?token=`` once (answered
  with a cookie), the cookie, or an ``Authorization: token ...`` header.
* :func:`read_body` reads a request body chunk by chunk and stops at the limit: a declared
  ``Content-Length`` over the limit is refused before reading anything, and a chunked body is
  refused as soon as the bytes read pass the limit, so nothing larger is ever held in memory.
* :class:`ApiError` and :func:`error_handlers`: every refusal is a 4xx with a JSON
  ``{"error": "..."}`` saying what was wrong; an unexpected exception is a 500 with a one-line
  JSON message, never a traceback page.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from ..errors import NumcnnError

#: the cookie that carries the token after the first ``?token=`` visit
TOKEN_COOKIE = "numcnn_token"


class ApiError(Exception):
    """A request the server refuses: ``status`` (4xx) and a message for a person."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def is_loopback(host: str) -> bool:
    """``127.0.0.1``, ``::1``, ``localhost``: addresses only this machine can reach."""
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def token_for(host: str, token=None):
    """The token a server bound to ``host`` requires: ``token`` if given, a fresh random one
    for any address other machines can reach, None for a loopback address."""
    if token is not None:
        return token
    return None if is_loopback(host) else secrets.token_urlsafe(24)


def allowed_hosts(host: str, port: int) -> set:
    """The ``Host`` header values this server answers: its loopback names and its own address.

    A server bound to a wildcard (``0.0.0.0``, ``::``) is reached under names it cannot know;
    it accepts any ``Host`` (``None``) and relies on its token, as Jupyter does.
    """
    if host in ("0.0.0.0", "::", ""):
        return None
    names = {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}
    names.add(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return names


def _json(status, message):
    return JSONResponse({"error": message}, status_code=status)


class Guard:
    """ASGI middleware: Host and Origin checks, and the token when one is set."""

    def __init__(self, app, hosts, token=None):
        self.app = app
        self.hosts = hosts
        self.token = token

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if self.hosts is not None and host.lower() not in self.hosts:
            return await _json(403, f"refused: Host {host!r} is not this server's own name; open "
                               f"it as http://{sorted(self.hosts)[0]}/ (a page on another "
                               "domain cannot use this server)")(scope, receive, send)
        origin = headers.get("origin")
        if origin is not None:
            o = urlsplit(origin)
            if o.scheme not in ("http", "https") or (self.hosts is not None and o.netloc.lower() not in self.hosts) \
                    or (self.hosts is None and o.netloc.lower() != host.lower()):
                return await _json(403, f"refused: requests from {origin!r} are not allowed; "
                                   "only this server's own pages may use its API")(scope, receive, send)
        if headers.get("sec-fetch-site") == "cross-site":      # a browser says: another site
            return await _json(403, "refused: a request from another site; only this server's "
                               "own pages may use its API")(scope, receive, send)
        set_cookie = False
        if self.token is not None:
            given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])[0]
            if given is not None and hmac.compare_digest(given, self.token):
                set_cookie = True
            elif not self._has_token(headers):
                return await _json(403, "this server needs its token: open the link with "
                                   "?token=... that `numcnn serve` printed when it started")(
                    scope, receive, send)
        if not set_cookie:
            return await self.app(scope, receive, send)

        async def send_with_cookie(message):
            if message["type"] == "http.response.start":
                cookie = f"{TOKEN_COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                message = {**message, "headers": list(message.get("headers", []))
                           + [(b"set-cookie", cookie.encode("latin-1"))]}
            await send(message)
        return await self.app(scope, receive, send_with_cookie)

    def _has_token(self, headers):
        auth = headers.get("authorization", "")
        if auth.lower().startswith("token ") and hmac.compare_digest(auth[6:].strip(), self.token):
            return True
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:                          # noqa: BLE001 - a mangled cookie is no token
            return False
        morsel = cookie.get(TOKEN_COOKIE)
        return morsel is not None and hmac.compare_digest(morsel.value, self.token)


async def read_body(request, limit: int, what: str = "upload") -> bytes:
    """The request body, refused with 413 as soon as it would pass ``limit`` bytes.

    A ``Content-Length`` over the limit is refused before a byte is read; a chunked body (no
    length) is read chunk by chunk and the reading stops at the chunk that passes the limit.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            raise ApiError(400, f"bad Content-Length header {declared!r}") from None
        if n > limit:
            raise ApiError(413, f"{what} too large: {n:,} bytes, the limit is {limit:,} bytes "
                           "(resize the picture first)")
    parts, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise ApiError(413, f"{what} too large: more than the limit of {limit:,} bytes "
                           "(resize the picture first)")
        parts.append(chunk)
    if total == 0:
        raise ApiError(400, f"{what}: the request body is empty; send the image file's bytes")
    return b"".join(parts)


async def read_json(request, limit: int = 1 << 20) -> dict:
    """A JSON object from the body (at most ``limit`` bytes), or a 400 saying what is wrong."""
    raw = await read_body(request, limit, "JSON body")
    try:
        value = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError(400, f"expected a JSON object {{...}}, got {type(value).__name__}")
    return value


def error_handlers() -> dict:
    """Exception handlers that answer every error with ``{"error": message}``."""

    async def api_error(request, exc):
        return _json(exc.status, exc.message)

    async def numcnn_error(request, exc):
        return _json(422, str(exc))

    async def http_error(request, exc):
        detail = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 404:
            detail = f"not found: {request.url.path} (see /api for the API)"
        elif exc.status_code == 405:
            detail = f"method {request.method} is not allowed on {request.url.path}"
        return _json(exc.status_code, detail)

    async def server_error(request, exc):
        return _json(500, f"internal error ({type(exc).__name__}); the server log has details")

    return {ApiError: api_error, NumcnnError: numcnn_error, HTTPException: http_error,
            Exception: server_error}
