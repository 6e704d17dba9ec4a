"""The FastAPI app: token on every route and page, strict security headers, same-origin only.

- The token: ``Authorization: Bearer`` or the ``corral_token`` cookie set by ``POST /login``.
- A request that carries an ``Origin`` other than the server's own is refused (403) before any route
  runs, preflights included, and no response ever allows credentials cross-origin.
- Every page is sent with a Content-Security-Policy that allows scripts, styles and connections from
  the server itself only (no inline script, no ``eval``), so markup smuggled into a model's answer could not
  run even if it reached the page as markup; the pages set journal data as text, never as HTML.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles

from corral import __version__
from corral.apps.server import _api, _pages, _problems
from corral.apps.server._auth import COOKIE
from corral.apps.server._problems import problem_response, single_valued_query
from corral.apps.server._state import ServerConfig, ServerState

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not "no-referrer": with it, browsers send "Origin: null" on same-origin form posts.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
STATIC = Path(__file__).with_name("static")
_bearer = HTTPBearer(auto_error=False, description="The token `corral serve` printed on first start.")


class NotAuthenticated(Exception):
    """No valid token: a problem for the API, the login page for a page."""


def require_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """Let the request in only with the current token (header or cookie)."""
    state: ServerState = request.app.state.corral
    token = credentials.credentials if credentials is not None else request.cookies.get(COOKIE)
    if not state.tokens.check(token):
        raise NotAuthenticated


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None:
        return True
    parts = urlsplit(origin)
    host = request.headers.get("host", "")
    return parts.scheme == request.url.scheme and parts.netloc == host


def create_app(config: ServerConfig) -> FastAPI:
    """The app serving the API under ``/api`` and the pages, over ``config.journal``."""
    state = ServerState(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    app = FastAPI(
        title="corral",
        version=__version__,
        description="Runs, steps, approvals and questions of a corral journal. Every route needs the token.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served below, behind the token
    )
    app.state.corral = state
    _problems.install(app)

    async def on_unauthenticated(request: Request, exc: Exception) -> Response:
        if request.url.path.startswith("/api/"):
            return problem_response(
                401, "a valid token is required (Authorization: Bearer …)", request=request
            )
        return _pages.login_page(request, status_code=401)

    app.add_exception_handler(NotAuthenticated, on_unauthenticated)

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if not _same_origin(request):
            response: Response = problem_response(403, "cross-origin requests are refused", request=request)
        else:
            response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.get("/api/openapi.json", include_in_schema=False, dependencies=[Depends(require_token)])
    def openapi() -> dict[str, object]:
        return app.openapi()

    app.include_router(_api.router, dependencies=[Depends(require_token), Depends(single_valued_query)])
    app.include_router(_pages.router, dependencies=[Depends(require_token)])
    app.include_router(_pages.public)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
