"""The web pages: server-rendered with Jinja2 (autoescaped), plus one static script that fills the live
parts (timeline, ask, decisions) by setting text, never HTML."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from corral import CorralError
from corral.apps.server._api import RunFilter, State, _graph, approval_view, list_runs
from corral.apps.server._auth import COOKIE
from corral.apps.server._graph import layout
from corral.apps.server._problems import ProblemError
from corral.apps.server._system import system_view
from corral.apps.server._views import run_detail, when
from corral.durable import RunStatus, trace_id_for

env = Environment(
    loader=PackageLoader("corral.apps.server", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
env.filters["when"] = when
env.filters["pretty"] = lambda v: json.dumps(v, indent=2, ensure_ascii=False, sort_keys=True, default=str)

router = APIRouter(include_in_schema=False)
public = APIRouter(include_in_schema=False)
PAGE_SIZE = 50


def render(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page from its template (every value escaped)."""
    return HTMLResponse(env.get_template(name).render(**context), status_code=status_code)


def login_page(request: Request, *, status_code: int = 200, error: str = "") -> HTMLResponse:
    """The page asking for the token."""
    return render("login.html", status_code=status_code, error=error, page="login")


@public.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> HTMLResponse:
    return login_page(request)


@public.post("/login", response_model=None)
async def login(request: Request, state: State) -> Response:
    """Check the token and keep it in an HttpOnly, SameSite=Strict cookie."""
    body = (await request.body())[:4096].decode("utf-8", "replace")
    token = (parse_qs(body).get("token") or [""])[0].strip()
    if not state.tokens.check(token):
        return login_page(request, status_code=401, error="That is not the current token.")
    response = RedirectResponse("/runs", status_code=303)
    response.set_cookie(
        COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https", path="/"
    )
    return response


@public.get("/favicon.ico")
def favicon() -> Response:
    return Response(status_code=204)


@public.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/")
def home() -> Response:
    return RedirectResponse("/runs", status_code=303)


def _epoch(day: str | None, *, end: bool = False) -> float | None:
    if not day:
        return None
    try:
        start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
    except ValueError as exc:
        raise ProblemError(422, f"dates are YYYY-MM-DD, not {day!r}") from exc
    return start + 86400 if end else start


def _cost(text: str | None) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError as exc:
        raise ProblemError(422, f"a cost is a number of dollars, not {text!r}") from exc
    if not value >= 0:
        raise ProblemError(422, f"a cost is zero or more, not {text!r}")
    return value


@router.get("/runs", response_class=HTMLResponse)
def runs_page(
    state: State,
    status: Annotated[list[RunStatus] | None, Query()] = None,
    label: Annotated[str | None, Query(max_length=200)] = None,
    since: Annotated[str | None, Query(max_length=10)] = None,
    until: Annotated[str | None, Query(max_length=10)] = None,
    min_cost: Annotated[str | None, Query(max_length=30)] = None,
    max_cost: Annotated[str | None, Query(max_length=30)] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    """The runs list: filters, a page of runs, links to the pages before and after. Empty fields of the
    filter form are no filter."""
    flt = RunFilter(
        status=status,
        label=label or None,
        since=_epoch(since),
        until=_epoch(until, end=True),
        min_cost=_cost(min_cost),
        max_cost=_cost(max_cost),
    )
    result = list_runs(state, flt, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    query: dict[str, Any] = {
        "status": [s.value for s in status or []],
        "label": label or "",
        "since": since or "",
        "until": until or "",
        "min_cost": min_cost or "",
        "max_cost": max_cost or "",
    }

    def link(n: int) -> str:
        kept = {k: v for k, v in query.items() if v not in ("", [])}
        return "/runs?" + urlencode({**kept, "page": n}, doseq=True)

    pages = None if result.total is None else max(1, -(-result.total // PAGE_SIZE))
    return render(
        "runs.html",
        page="runs",
        result=result,
        query=query,
        statuses=[s.value for s in RunStatus],
        number=page,
        pages=pages,
        prev_link=link(page - 1) if page > 1 else None,
        next_link=link(page + 1) if result.has_more else None,
    )


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(state: State, run_id: str) -> HTMLResponse:
    """One run: its header, its workflow graph with the path taken, and the live timeline."""
    run = state.runtime.get_run(run_id)
    detail = run_detail(run, [], trace_id_for(run_id))
    drawing = None
    try:
        graph = _graph(state, run_id)
        drawing = layout(graph.spec, graph.path, graph.current)
        mermaid = graph.mermaid
    except ProblemError:
        mermaid = None
    return render("run.html", page="run", run=detail, drawing=drawing, mermaid=mermaid)


@router.get("/approvals", response_class=HTMLResponse)
def approvals_page(state: State, every: Annotated[bool, Query(alias="all")] = False) -> HTMLResponse:
    """The inbox: pending requests with their exact arguments, and the controls to decide them."""
    records = state.approvals.list(status=None if every else "pending", limit=200)
    return render(
        "approvals.html", page="approvals", approvals=[approval_view(r) for r in records], every=every
    )


@router.get("/ask", response_class=HTMLResponse)
def ask_page(state: State) -> HTMLResponse:
    """Pick a source, ask, watch the steps, read the answer, the table, the query and the chart."""
    return render("ask.html", page="ask", sources=sorted(state.config.sources))


@router.get("/system", response_class=HTMLResponse)
def system_page(state: State) -> HTMLResponse:
    """Sandbox, models, workers and leases."""
    try:
        system = system_view(state)
    except CorralError as exc:
        raise ProblemError(500, str(exc)) from exc
    return render("system.html", page="system", system=system)
