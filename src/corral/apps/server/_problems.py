"""Errors as RFC 9457 problem details (``application/problem+json``): a type, a title, the status, and a
detail a person can act on.

>>> problem = Problem(type="about:blank", title="Not Found", status=404, detail="no run 'x'")
>>> problem.model_dump(exclude_none=True)["status"]
404
"""

from __future__ import annotations

import logging
import typing
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from corral import CorralError, UsageError
from corral.durable import RunNotFound
from corral.guards import ApprovalAlreadyDecided, ApprovalError, ApprovalNotFound

MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("corral.server")


class Problem(BaseModel):
    """An RFC 9457 problem."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None


#: The ``responses=`` entry that documents problems in the OpenAPI schema.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {MEDIA_TYPE: {}}, "description": HTTPStatus(code).phrase}
    for code in (400, 401, 403, 404, 409, 422)
}


class ProblemError(Exception):
    """Raised by a route to answer with a problem."""

    def __init__(self, status: int, detail: str, *, type_: str = "about:blank") -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.type = type_


def problem_response(
    status: int,
    detail: str | None,
    *,
    request: Request | None = None,
    type_: str = "about:blank",
    **extra: Any,
) -> JSONResponse:
    """A problem as a response."""
    body = Problem(
        type=type_,
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=request.url.path if request is not None else None,
        **extra,
    )
    headers = {"WWW-Authenticate": 'Bearer realm="corral"'} if status == 401 else None
    return JSONResponse(
        body.model_dump(exclude_none=True), status_code=status, media_type=MEDIA_TYPE, headers=headers
    )


def _status_of(exc: CorralError) -> int:
    if isinstance(exc, RunNotFound | ApprovalNotFound):
        return 404
    if isinstance(exc, ApprovalAlreadyDecided):
        return 409
    if isinstance(exc, UsageError | ApprovalError):
        return 400 if not isinstance(exc, ApprovalError) else 409
    return 400


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` with a problem."""

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProblemError)
        return problem_response(exc.status, exc.detail, request=request, type_=exc.type)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return problem_response(exc.status_code, str(exc.detail), request=request)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))} for e in exc.errors()
        ]
        return problem_response(422, "the request is not valid", request=request, errors=errors)

    async def on_corral(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, CorralError)
        return problem_response(_status_of(exc), str(exc), request=request)

    async def on_anything(request: Request, exc: Exception) -> JSONResponse:
        # A bug: the details go to the server's log, never to the client.
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return problem_response(500, "the server failed; its log has the details", request=request)

    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(Exception, on_anything)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(CorralError, on_corral)


def _is_list(annotation: object) -> bool:
    if typing.get_origin(annotation) in (list, tuple, set):
        return True
    return any(_is_list(arg) for arg in typing.get_args(annotation))


def _list_params(dependant: Any) -> set[str]:
    names = {p.alias for p in dependant.query_params if _is_list(p.field_info.annotation)}
    for sub in dependant.dependencies:
        names |= _list_params(sub)
    return names


def single_valued_query(request: Request) -> None:
    """Refuse a query parameter given twice unless the route declares it a list.

    FastAPI keeps the last value of a repeated scalar parameter, so ``?run_id=a&run_id=b`` would quietly
    mean ``b``; a request the schema does not allow is refused instead (422, a problem document).
    """
    dependant = getattr(request.scope.get("route"), "dependant", None)
    lists = _list_params(dependant) if dependant is not None else set()
    seen: set[str] = set()
    for key, _ in request.query_params.multi_items():
        if key in seen and key not in lists:
            raise ProblemError(422, f"query parameter {key!r} may be given once")
        seen.add(key)
