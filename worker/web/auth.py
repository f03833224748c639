"""Who may see the UI: a shared token, presented as ``Authorization: Bearer``, or as ``?token=`` once
(answered with an HttpOnly, SameSite=Strict cookie and a redirect that drops it from the address bar).
POSTs also need ``X-CSRF-Token``: a cookie rides along on a cross-site form post, a custom header
cannot. Comparisons are constant-time; the token is never logged (access logging is off, see app)."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import SecretStr

COOKIE = "routeq_ui"
CSRF_HEADER = "X-CSRF-Token"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AuthConfigError(ValueError):
    """The UI cannot start with this combination of token, host and --no-auth."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Auth:
    token: str | None  # None: no authentication (loopback and --no-auth only)
    csrf: str

    def __repr__(self) -> str:  # never print the token
        return f"Auth(token={'set' if self.token else None})"

    def accepts(self, presented: str | None) -> bool:
        if self.token is None:
            return True
        return presented is not None and hmac.compare_digest(presented.encode(), self.token.encode())

    def csrf_ok(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self.csrf.encode())


def make_auth(token: SecretStr | None, host: str, no_auth: bool) -> Auth:
    if no_auth:
        if not is_loopback(host):
            raise AuthConfigError(f"--no-auth is allowed only on a loopback --host, not {host!r}")
        return Auth(None, secrets.token_urlsafe(32))
    value = token.get_secret_value() if token is not None else ""
    if not value:
        raise AuthConfigError(
            "set ROUTEQ_UI_TOKEN (every page and API call needs it), or pass --no-auth on a loopback --host"
        )
    # Derived from the token, so every UI process of a deployment accepts the same CSRF token.
    csrf = hmac.new(value.encode(), b"routeq-ui-csrf", hashlib.sha256).hexdigest()
    return Auth(value, csrf)


def _bearer(request: web.Request) -> str | None:
    h = request.headers.get("Authorization", "")
    scheme, _, value = h.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _unauthorized() -> web.Response:
    return web.json_response(
        {"error": "unauthorized: send Authorization: Bearer <ROUTEQ_UI_TOKEN>, or open /?token=<it> once"},
        status=401,
        headers={"WWW-Authenticate": 'Bearer realm="routeq"'},
    )


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return origin is None
    return origin.split("://", 1)[-1] == request.host


def middleware(auth: Auth) -> Middleware:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        via_query = False
        if auth.token is not None:
            query_token = request.query.get("token")
            if auth.accepts(_bearer(request)) or auth.accepts(request.cookies.get(COOKIE)):
                pass
            elif query_token is not None and auth.accepts(query_token):
                via_query = True
            else:
                return _unauthorized()
        unsafe = request.method not in ("GET", "HEAD", "OPTIONS")
        if unsafe and (not auth.csrf_ok(request.headers.get(CSRF_HEADER)) or not _same_origin(request)):
            return web.json_response({"error": f"forbidden: missing or wrong {CSRF_HEADER}"}, status=403)
        if via_query and request.method == "GET" and not request.path.startswith("/api/"):
            # Swap the token in the address bar (history, Referer) for a cookie.
            query = {k: v for k, v in request.query.items() if k != "token"}
            location = str(request.rel_url.with_query(query))
            resp: web.StreamResponse = web.Response(status=303, headers={"Location": location})
        else:
            resp = await handler(request)
        if via_query and auth.token is not None and not resp.prepared:
            resp.set_cookie(
                COOKIE, auth.token, httponly=True, samesite="Strict", path="/", secure=request.secure or None
            )
        return resp

    return check
