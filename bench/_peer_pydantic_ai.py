"""The peer agent for ``bench/peer_agent.py``: a Pydantic AI agent over an OpenAI-compatible llama.cpp server.

Runs in the anchors' venv (``/work/anchors-venv``, with ``pydantic-ai-slim[openai]``); never imports corral::

    python bench/_peer_pydantic_ai.py --base-url http://127.0.0.1:8080/v1 --model qwen --questions q.json

``q.json`` is a JSON list of ``{"id", "question", "db"}`` (``db``: a SQLite file). For each question it prints
one JSON line on stdout: ``{"id", "status", "answer", "sql", "columns", "rows", "row_count", "seconds",
"requests", "tool_calls", "input_tokens", "output_tokens", "error"}``; logs go to stderr.

The agent is what a Pydantic AI user would write for this job: three tools (``list_tables``,
``describe_table``, ``run_sql``), a plain analyst system prompt, and a structured final output
(``final_answer`` with the SQL and a short answer, or ``cannot_answer`` with the reason; plain text is
accepted too). The rows that are scored are those of the final SQL, run read-only once the agent is done.

Tool calls: llama-cpp-python's server renders the GGUF's own chat template (Qwen2.5's, which lists the tools
and shows tool results as ``<tool_response>``), but it does not parse the model's Hermes-style replies
(``<tool_call>{"name": ..., "arguments": ...}</tool_call>``) into OpenAI ``tool_calls`` — llama.cpp's own
``llama-server --jinja`` does. :class:`HermesToolCalls` is that parser, on the HTTP client: it rewrites a
chat completion whose text is a call to one of the offered tools into ``tool_calls``. (The server's
``chatml-function-calling`` format does parse calls, but its template drops tool results from the prompt,
so the model never sees what its query returned, and it rejects ``tool_choice="required"``.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sqlite3
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
from pydantic import BaseModel, Field
from pydantic_ai import Agent, RunContext, ToolOutput, capture_run_messages
from pydantic_ai.messages import ModelMessage, RetryPromptPart, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai_compatible import OpenAICompatibleProvider
from pydantic_ai.settings import ModelSettings
from pydantic_ai.usage import UsageLimits

MAX_ROWS = 1000  # rows kept for scoring, as corral's --json contract
SHOWN_ROWS = 20  # rows a run_sql result shows the model
SAMPLES = 3  # sample values per column in describe_table
QUERY_SECONDS = 20.0  # a single query's time limit

SYSTEM_PROMPT = """\
You are a data analyst. You answer questions about a SQLite database by querying it with the tools.

How to work:
1. Call list_tables to see which tables exist.
2. Call describe_table for the few tables the question needs (not every table), to see their columns, \
types, keys and sample values.
3. Write one SQLite SELECT query that answers the question and check it with run_sql. If run_sql returns an \
error or an obviously wrong result, fix the query and run it again.
4. When the query returns the answer, call final_answer with the exact SQL query and a short answer.

Rules:
- Use only tables and columns that exist; this is SQLite (use strftime, not YEAR() or MONTH()).
- Select only the columns the question asks for, plus the values it asks to rank or compare by.
- Never modify the database.
- If the database does not contain the data needed to answer the question, call cannot_answer with the \
reason instead of guessing."""


class FinalAnswer(BaseModel):
    """The final answer: the SQL query whose result answers the question, and a short answer."""

    sql: str = Field(description="The SQLite SELECT query whose result answers the question.")
    answer: str = Field(description="A short answer to the question in plain language.")


class CannotAnswer(BaseModel):
    """Say that the database has no data to answer the question."""

    reason: str = Field(description="Why the database cannot answer the question.")


# --- the database tools --------------------------------------------------------------------------------


class QueryError(Exception):
    """A query that SQLite refused or that ran too long."""


@dataclass
class Database:
    """A SQLite file opened read-only, and the queries the agent ran on it."""

    path: str
    last_ok_sql: str | None = None
    queries: list[str] = field(default_factory=list)

    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(f"{Path(self.path).resolve().as_uri()}?mode=ro", uri=True)
        deadline = time.monotonic() + QUERY_SECONDS
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        return conn

    def query(self, sql: str, max_rows: int) -> tuple[list[str], list[list[Any]], int]:
        """Columns, the first ``max_rows`` rows, and the row count; :class:`QueryError` on failure."""
        conn = self.connect()
        try:
            cur = conn.execute(sql)
            columns = [d[0] for d in cur.description or []]
            rows: list[list[Any]] = []
            count = 0
            for row in cur:
                count += 1
                if len(rows) < max_rows:
                    rows.append([_plain(v) for v in row])
            return columns, rows, count
        except sqlite3.Error as exc:
            raise QueryError(str(exc) or type(exc).__name__) from exc
        finally:
            conn.close()

    def tables(self) -> list[str]:
        _, rows, _ = self.query(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name",
            10_000,
        )
        return [str(r[0]) for r in rows]


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return value


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def list_tables(ctx: RunContext[Database]) -> str:
    """List the tables in the database."""
    return "\n".join(ctx.deps.tables()) or "(no tables)"


def describe_table(ctx: RunContext[Database], name: str) -> str:
    """Describe a table: its columns with their types, primary and foreign keys, a few sample values
    per column, and its row count."""
    db = ctx.deps
    tables = db.tables()
    match = next((t for t in tables if t.lower() == name.strip().strip('"`[]').lower()), None)
    if match is None:
        return f"error: no table named {name!r}. The tables are: {', '.join(tables)}"
    q = _quote(match)
    try:
        _, info, _ = db.query(f"PRAGMA table_info({q})", 1000)
        _, fks, _ = db.query(f"PRAGMA foreign_key_list({q})", 1000)
        _, count, _ = db.query(f"SELECT COUNT(*) FROM {q}", 1)
    except QueryError as exc:
        return f"error: {exc}"
    refs = {str(fk[3]).lower(): f"{fk[2]}({fk[4]})" for fk in fks}
    lines = [f"table {match} ({count[0][0]} rows)"]
    for _cid, col, ctype, _notnull, _default, pk in info:
        line = f"  {col} {ctype or 'ANY'}"
        if pk:
            line += " PRIMARY KEY"
        if str(col).lower() in refs:
            line += f" REFERENCES {refs[str(col).lower()]}"
        c = _quote(str(col))
        try:
            _, samples, _ = db.query(
                f"SELECT DISTINCT {c} FROM {q} WHERE {c} IS NOT NULL LIMIT {SAMPLES}",
                SAMPLES,
            )
        except QueryError:
            samples = []
        if samples:
            line += "  -- e.g. " + ", ".join(_short(r[0]) for r in samples)
        lines.append(line)
    return "\n".join(lines)


def run_sql(ctx: RunContext[Database], query: str) -> str:
    """Run a read-only SQLite query and return its result (the first rows and the row count), or the
    error message if the query failed."""
    db = ctx.deps
    db.queries.append(query)
    try:
        columns, rows, count = db.query(query, SHOWN_ROWS)
    except QueryError as exc:
        return f"error: {exc}"
    db.last_ok_sql = query
    out = [" | ".join(columns)]
    out += [" | ".join(_short(v) for v in row) for row in rows]
    more = f", showing the first {SHOWN_ROWS}" if count > SHOWN_ROWS else ""
    out.append(f"({count} rows{more})")
    return "\n".join(out)


def _short(value: Any, width: int = 60) -> str:
    text = "NULL" if value is None else str(value)
    return text if len(text) <= width else text[: width - 3] + "..."


# --- Hermes-style tool calls → OpenAI tool_calls ---------------------------------------------------------

_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def parse_tool_calls(text: str, tools: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The calls of offered tools in a Hermes-style reply: ``<tool_call>{...}</tool_call>`` blocks, else
    JSON objects ``{"name": <tool>, "arguments": {...}}`` making up the reply (bare or in a code fence).

    ``tools`` maps each offered tool's name to its parameters' JSON Schema. Arguments a schema closes out
    (``additionalProperties: false``) are dropped, as ``llama-server``'s grammar for tool calls would never
    let the model write them (the 0.5B model copies the schema itself as the arguments of a tool that takes
    none).

    >>> parse_tool_calls('<tool_call>\\n{"name": "f", "arguments": {"x": 1}}\\n</tool_call>', {"f": {}})
    [{'name': 'f', 'arguments': '{"x": 1}'}]
    >>> closed = {"type": "object", "properties": {}, "additionalProperties": False}
    >>> parse_tool_calls('{"name": "f", "arguments": {"type": "object"}}', {"f": closed})
    [{'name': 'f', 'arguments': '{}'}]
    >>> parse_tool_calls('The answer is 3.', {"f": {}})
    []
    """
    chunks = _TAGGED.findall(text) if "<tool_call>" in text else [*_FENCE.findall(text), text]
    calls: list[dict[str, Any]] = []
    decoder = json.JSONDecoder()
    for chunk in chunks:
        pos = 0
        while (start := chunk.find("{", pos)) != -1:
            try:
                obj, end = decoder.raw_decode(chunk, start)
            except json.JSONDecodeError:
                pos = start + 1
                continue
            pos = end
            if not isinstance(obj, dict) or obj.get("name") not in tools:
                continue
            args = obj.get("arguments", obj.get("parameters", {}))
            if isinstance(args, str):
                try:
                    args = json.loads(args)
                except json.JSONDecodeError:
                    args = {}
            if not isinstance(args, dict):
                args = {}
            schema = tools[obj["name"]]
            if schema.get("additionalProperties") is False:
                args = {k: v for k, v in args.items() if k in (schema.get("properties") or {})}
            calls.append({"name": obj["name"], "arguments": json.dumps(args)})
        if calls:
            break
    return calls


class HermesToolCalls(httpx2.AsyncBaseTransport):
    """Rewrites chat completions whose text calls an offered tool into OpenAI ``tool_calls``."""

    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method != "POST" or not request.url.path.endswith("/chat/completions"):
            return await self.inner.handle_async_request(request)
        await request.aread()
        try:
            sent = json.loads(request.content or b"{}")
        except json.JSONDecodeError:
            sent = None
        if isinstance(sent, dict):
            # llama-cpp-python's server refuses an assistant message whose content is null (a tool call).
            for message in sent.get("messages") or []:
                if message.get("role") == "assistant" and message.get("content") is None:
                    message["content"] = ""
            headers = [(k, v) for k, v in request.headers.items() if k.lower() != "content-length"]
            request = httpx2.Request(
                request.method,
                request.url,
                headers=headers,
                content=json.dumps(sent).encode(),
                extensions=request.extensions,
            )
        response = await self.inner.handle_async_request(request)
        body = await response.aread()
        await response.aclose()
        try:
            data = json.loads(body)
        except json.JSONDecodeError:
            return _response(response, body)
        if not isinstance(sent, dict) or not isinstance(data, dict):
            return _response(response, body)
        tools = {
            t["function"]["name"]: t["function"].get("parameters") or {}
            for t in sent.get("tools") or []
            if t.get("type") == "function"
        }
        for choice in data.get("choices") or []:
            message = choice.get("message") or {}
            if not tools or message.get("tool_calls") or not message.get("content"):
                continue
            calls = parse_tool_calls(message["content"], tools)
            if calls:
                message["content"] = None
                message["tool_calls"] = [
                    {"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function", "function": c} for c in calls
                ]
                choice["finish_reason"] = "tool_calls"
        return _response(response, json.dumps(data).encode())

    async def aclose(self) -> None:
        await self.inner.aclose()


def _response(original: httpx2.Response, body: bytes) -> httpx2.Response:
    headers = [
        (k, v) for k, v in original.headers.items() if k.lower() not in ("content-length", "content-encoding")
    ]
    return httpx2.Response(original.status_code, headers=headers, content=body)


# --- the agent ------------------------------------------------------------------------------------------


def build_agent(base_url: str, model_name: str, max_tokens: int) -> Agent[Database, Any]:
    http = httpx2.AsyncClient(transport=HermesToolCalls(httpx2.AsyncHTTPTransport()), timeout=600)
    provider = OpenAICompatibleProvider("llama-cpp", base_url=base_url, api_key="none", http_client=http)
    model = OpenAIChatModel(model_name, provider=provider)
    return Agent(
        model,
        deps_type=Database,
        output_type=[
            ToolOutput(FinalAnswer, name="final_answer"),
            ToolOutput(CannotAnswer, name="cannot_answer"),
            str,
        ],
        system_prompt=SYSTEM_PROMPT,
        tools=[list_tables, describe_table, run_sql],
        model_settings=ModelSettings(temperature=0.0, max_tokens=max_tokens),
        retries=2,
    )


_CANNOT = re.compile(
    r"cannot[ _]answer|can ?not be answered|can't answer|unable to answer|does not contain", re.I
)
_SQL_FENCE = re.compile(r"```(?:sql|sqlite)?\s*(.*?)```", re.S | re.I)


def _sql_in_text(text: str) -> str | None:
    """The SQL query a text answer gives: a fenced SQL block, a ``"query"``/``"sql"`` value of a JSON
    object in the text (a tool call the model wrote as text), else the first ``SELECT``/``WITH`` statement.

    >>> _sql_in_text('```json\\n{"name": "run_sql", "arguments": {"query": "SELECT 1"}}\\n```')
    'SELECT 1'
    >>> _sql_in_text("It is SELECT COUNT(*) FROM Track; done")
    'SELECT COUNT(*) FROM Track'
    """
    for block in _SQL_FENCE.findall(text):
        if re.match(r"\s*(with|select)\b", block, re.I):
            return block.strip()
    decoder = json.JSONDecoder()
    pos = 0
    while (start := text.find("{", pos)) != -1:
        try:
            obj, pos = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            pos = start + 1
            continue
        stack = [obj]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                for key, value in item.items():
                    if key in ("query", "sql") and isinstance(value, str) and value.strip():
                        return value.strip()
                    stack.append(value)
    m = re.search(r"\b(?:with|select)\b[^;`]*", text, re.I | re.S)
    return m.group(0).strip().rstrip('"}\n ').strip() if m else None


async def answer(
    agent: Agent[Database, Any], question: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """Ask the agent one question; the prediction as a JSON-able dict (never raises)."""
    db = Database(question["db"])
    out: dict[str, Any] = {
        "id": question["id"],
        "status": "failed",
        "answer": "",
        "sql": None,
        "columns": [],
        "rows": [],
        "row_count": 0,
        "requests": 0,
        "tool_calls": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "queries": db.queries,
        "error": None,
    }
    started = time.perf_counter()
    result = None
    with capture_run_messages() as messages:
        try:
            result = await asyncio.wait_for(
                agent.run(
                    question["question"],
                    deps=db,
                    usage_limits=UsageLimits(request_limit=args.request_limit),
                ),
                args.timeout,
            )
        except TimeoutError:
            out["error"] = f"timeout: no answer within {args.timeout:.0f} s"
        except Exception as exc:  # one broken question must not end the benchmark
            out["error"] = f"{type(exc).__name__}: {exc}"[:2000]
    out["trace"] = _trace(messages)
    if result is not None:
        usage = result.usage
        out["requests"] = usage.requests
        out["tool_calls"] = getattr(usage, "tool_calls", 0)
        out["input_tokens"] = usage.input_tokens
        out["output_tokens"] = usage.output_tokens
        _finish(out, db, result.output)
    out["seconds"] = time.perf_counter() - started
    return out


def _trace(messages: list[ModelMessage]) -> list[str]:
    """What the model did, one short line per part: its tool calls, texts and the retries it was sent."""
    lines: list[str] = []
    for message in messages:
        for part in message.parts:
            if isinstance(part, ToolCallPart):
                lines.append(f"call {part.tool_name}({_short(part.args_as_json_str(), 300)})")
            elif isinstance(part, TextPart):
                lines.append(f"text {_short(part.content, 300)}")
            elif isinstance(part, RetryPromptPart):
                lines.append(f"retry {part.tool_name or ''}: {_short(str(part.content), 200)}")
            elif isinstance(part, ToolReturnPart):
                lines.append(f"return {part.tool_name}: {_short(str(part.content), 120)}")
    return lines


def _finish(out: dict[str, Any], db: Database, output: Any) -> None:
    """Fill the prediction from the agent's output: status, SQL and the rows of that SQL."""
    sql: str | None
    if isinstance(output, CannotAnswer):
        out.update(status="cannot_answer", answer=output.reason)
        return
    if isinstance(output, FinalAnswer):
        out["answer"] = output.answer
        sql = output.sql.strip() or db.last_ok_sql
    else:
        text = str(output)
        out["answer"] = text
        sql = _sql_in_text(text)
        if sql is None and _CANNOT.search(text):
            out["status"] = "cannot_answer"
            return
        sql = sql or db.last_ok_sql
    if not sql:
        out["error"] = "the agent gave no SQL"
        return
    out["sql"] = sql
    try:
        columns, rows, count = db.query(sql, MAX_ROWS)
    except QueryError as exc:
        out["error"] = f"the final SQL failed: {exc}"
        return
    out.update(status="answered", columns=columns, rows=rows, row_count=count)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", default="qwen")
    parser.add_argument("--questions", required=True, help="a JSON list of {id, question, db}")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per question")
    parser.add_argument("--request-limit", type=int, default=10, help="model requests per question")
    parser.add_argument("--max-tokens", type=int, default=512)
    args = parser.parse_args()

    with open(args.questions, encoding="utf-8") as f:  # noqa: ASYNC230 - once, before any request
        questions = json.load(f)
    agent = build_agent(args.base_url, args.model, args.max_tokens)
    await settle(agent, questions[0]["db"] if questions else "")
    for question in questions:
        prediction = await answer(agent, question, args)
        print(json.dumps(prediction, default=str), flush=True)
        if prediction["error"] and prediction["error"].startswith("timeout"):
            await settle(agent, question["db"])


async def settle(agent: Agent[Database, Any], db: str) -> None:
    """Wait, untimed, until the server is idle and its prompt cache holds the agent's system prompt and tools.

    A cancelled request keeps the llama.cpp server busy until its generation ends, which would be charged to
    the next question; one one-token request with the same prefix waits for it (and warms the cache once at
    the start, as the server's model load is not timed either).
    """
    try:
        await asyncio.wait_for(
            agent.run(
                "Reply OK.",
                deps=Database(db),
                model_settings=ModelSettings(max_tokens=1),
                usage_limits=UsageLimits(request_limit=1),
            ),
            600,
        )
    except Exception as exc:  # expected: a one-token reply is not a valid output
        print(f"settled ({type(exc).__name__})", file=sys.stderr, flush=True)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
