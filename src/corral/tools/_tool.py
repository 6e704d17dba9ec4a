"""Typed tools: a Python function becomes something a model can call, safely.

The :func:`tool` decorator reads a function's name, docstring and type hints and builds the
:class:`~corral.models.ToolDefinition` a model sees (arguments as a JSON Schema, made by pydantic). A call
goes through four fences before and around the function: the arguments are validated (the error lists
each problem and the expected schema, written for the model to fix); a bulkhead bounds how many calls run
at once and how many may queue; a timeout bounds the call, waiting included; and any exception the
function raises becomes a :class:`~corral.tools.errors.ToolError` — feedback, not a crash.

>>> import asyncio
>>> @tool
... def add(a: int, b: int = 0) -> int:
...     '''Add two integers.
...
...     Args:
...         a: the first term
...         b: the second term
...     '''
...     return a + b
>>> add.definition.description
'Add two integers.'
>>> add.definition.parameters["properties"]["a"]
{'description': 'the first term', 'type': 'integer'}
>>> asyncio.run(add.call({"a": "2", "b": 3}))
5
>>> add(1, 2)  # a tool stays a plain function for direct calls
3
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import json
import os
import queue
import re
import threading
import typing
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeVar, overload

import pydantic
import pydantic_core
from pydantic import BaseModel, ConfigDict, Field

from corral.models import ToolDefinition
from corral.tools.errors import (
    ToolArgumentsError,
    ToolBusyError,
    ToolDefinitionError,
    ToolError,
    ToolRaisedError,
    ToolTimeoutError,
)

P = ParamSpec("P")
R = TypeVar("R")

# Providers accept this much in a tool name (OpenAI's rule is the strictest).
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# A quoted bad value in a validation message is cut here so a huge argument does not flood the prompt.
_QUOTE_MAX = 120
#: The parameter name through which a tool receives its idempotency key (a ``str``), if it declares it.
IDEMPOTENCY_KEY_PARAM = "idempotency_key"
_OTHER_SECTIONS = {"returns", "raises", "yields", "examples", "example", "note", "notes"}


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a tool may know about the call it serves. Declare a parameter of this type to receive it.

    ``idempotency_key`` is stable for this call across crashes and replays of the run (it is derived from
    the run id and the call's place in the run), so a side-effecting tool can hand it to the outside
    system (a payment API, an ``INSERT ... ON CONFLICT``) and a call repeated after a crash does nothing
    twice.
    """

    run_id: str
    tool_call_id: str
    tool_name: str
    idempotency_key: str


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The description (text before a Google-style ``Args:`` section) and each argument's description."""
    lines = doc.splitlines()
    head: list[str] = []
    args: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    for line in lines:
        stripped = line.strip()
        header = stripped.rstrip(":").lower()
        if stripped.endswith(":") and header in {"args", "arguments", "parameters", "params"}:
            section, current = "args", None
            continue
        if stripped.endswith(":") and header in {
            "returns",
            "raises",
            "yields",
            "examples",
            "example",
            "note",
        }:
            section, current = "other", None
            continue
        if section is None:
            head.append(line)
        elif section == "args":
            match = re.match(r"^(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$", stripped)
            if match and (current is None or len(line) - len(line.lstrip()) <= _indent_of(lines, current)):
                current = match.group(1)
                args[current] = match.group(2).strip()
            elif current is not None and stripped:
                args[current] = f"{args[current]} {stripped}".strip()
    return "\n".join(head).strip(), args


def _indent_of(lines: list[str], name: str) -> int:
    for line in lines:
        if re.match(rf"^\s*{re.escape(name)}\s*(?:\([^)]*\))?\s*:", line):
            return len(line) - len(line.lstrip())
    return 0


def _strip_titles(schema: Any) -> Any:
    # pydantic adds a "title" to every property; models pay tokens for them and gain nothing. Only string
    # titles are dropped, so a property that is itself named "title" survives.
    if isinstance(schema, dict):
        return {
            key: _strip_titles(value)
            for key, value in schema.items()
            if not (key == "title" and isinstance(value, str))
        }
    if isinstance(schema, list):
        return [_strip_titles(item) for item in schema]
    return schema


def _quote(value: Any) -> str:
    try:
        text = json.dumps(value, default=str)
    except ValueError:
        text = repr(value)
    return text if len(text) <= _QUOTE_MAX else text[:_QUOTE_MAX] + "…"


def describe_validation_error(tool_name: str, exc: pydantic.ValidationError, schema: dict[str, Any]) -> str:
    """A validation error as the model should read it: each wrong argument, and the schema expected."""
    problems = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "(arguments)"
        if error["type"] == "missing":
            problems.append(f"- {where}: required but missing")
        elif error["type"] == "extra_forbidden":
            problems.append(f"- {where}: not an argument of this tool")
        else:
            problems.append(f"- {where}: {error['msg']} (got {_quote(error.get('input'))})")
    return (
        f"Invalid arguments for tool {tool_name!r}:\n"
        + "\n".join(problems)
        + f"\nCall it again with arguments matching this JSON schema: {json.dumps(schema, sort_keys=True)}"
    )


class _LoopSlots:
    __slots__ = ("semaphore", "waiting")

    def __init__(self, limit: int) -> None:
        self.semaphore = asyncio.Semaphore(limit)
        self.waiting = 0


class _Bulkhead:
    """At most ``limit`` calls at once; at most ``max_queue`` more waiting; beyond that, fail fast.

    asyncio primitives belong to one event loop, and a tool is usually a module-level object used by many
    loops over a process's life (each test, each ``asyncio.run``), so the slots are kept per loop.
    """

    def __init__(self, tool: str, limit: int, max_queue: int) -> None:
        self.tool, self.limit, self.max_queue = tool, limit, max_queue
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopSlots] = (
            weakref.WeakKeyDictionary()
        )

    def _for_loop(self) -> _LoopSlots:
        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:
            slots = self._slots[loop] = _LoopSlots(self.limit)
        return slots

    async def acquire(self, tool_call_id: str | None) -> _LoopSlots:
        slots = self._for_loop()
        if slots.semaphore.locked() and slots.waiting >= self.max_queue:
            raise ToolBusyError(
                f"Tool {self.tool!r} is busy: {self.limit} call(s) are running and {slots.waiting} are "
                "queued, which is its limit. Wait for earlier calls to finish or do without this tool.",
                tool=self.tool,
                tool_call_id=tool_call_id,
            )
        slots.waiting += 1
        try:
            await slots.semaphore.acquire()
        finally:
            slots.waiting -= 1
        return slots


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller timed out or was cancelled; nobody wants the result
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class _DaemonPool:
    """Daemon threads that run sync tools: reused while busy, spawned when none is idle.

    Not the loop's default executor: a hung call would hold one of its few workers forever, and
    ``asyncio.run`` joins that executor at exit, so a hung tool would hang the process. These threads are
    daemons (abandoned on timeout, never blocking exit; Python cannot kill a thread — a tool that must be
    killable belongs in the sandbox, which runs it as a process), and an idle one is reused, because starting
    a thread per call cost more than the rest of the agent loop's step.
    """

    _IDLE_S = 60.0

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1  # reserve an idle worker for this job
        self._jobs.put(job)
        if spawn:
            threading.Thread(target=self._work, name="corral-tool", daemon=True).start()

    def _work(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=self._IDLE_S)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0:  # an unreserved idle worker: this one may go
                        self._idle -= 1
                        return
                continue  # every idle worker is reserved: a job is on its way
            job()
            with self._lock:
                self._idle += 1


_POOL = _DaemonPool()


def _reset_pool_after_fork() -> None:
    # A forked child has none of the parent's threads: a pool that counted idle workers would hand jobs to
    # threads that do not exist there.
    global _POOL
    _POOL = _DaemonPool()


os.register_at_fork(after_in_child=_reset_pool_after_fork)


async def _run_in_thread(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """Run a sync function in a daemon worker thread (see :class:`_DaemonPool`) and await its result."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def job() -> None:
        try:
            result, error = context.run(fn, **kwargs), None
        except BaseException as exc:  # handed to the awaiting task, which decides
            result, error = None, exc
        # RuntimeError: the loop closed while the call ran, so nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, future, result, error)

    _POOL.submit(job)
    return await future


class Tool(Generic[P, R]):
    """A typed function a model can call. Build one with :func:`tool`; call it directly like the function.

    Attributes are read-only after construction: ``name``, ``description``, ``definition`` (what the model
    sees), ``timeout`` (seconds or ``None``), ``max_concurrency``, ``max_queue``, ``side_effects``,
    ``needs_approval``, ``args_model`` (the pydantic model of the arguments).
    """

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        max_queue: int = 64,
        side_effects: bool = False,
        needs_approval: bool = False,
    ) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        if not _NAME.match(self.name):
            raise ToolDefinitionError(
                f"{self.name!r} cannot be a tool name: use 1-64 letters, digits, '_' or '-' (pass name=...)"
            )
        if timeout is not None and timeout <= 0:
            raise ToolDefinitionError(f"tool {self.name!r}: timeout must be positive seconds, not {timeout}")
        if max_concurrency is not None and max_concurrency < 1:
            raise ToolDefinitionError(
                f"tool {self.name!r}: max_concurrency must be >= 1, not {max_concurrency}"
            )
        if max_queue < 0:
            raise ToolDefinitionError(f"tool {self.name!r}: max_queue must be >= 0, not {max_queue}")
        doc_text, arg_docs = _parse_docstring(inspect.getdoc(fn) or "")
        self.description = description if description is not None else doc_text
        self.timeout = timeout
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.side_effects = side_effects
        self.needs_approval = needs_approval
        self.is_async = inspect.iscoroutinefunction(fn)
        self._context_param: str | None = None
        self._key_param: str | None = None
        self.args_model = self._build_args_model(fn, arg_docs)
        self._arg_names = tuple(self.args_model.model_fields)
        schema = _strip_titles(self.args_model.model_json_schema())
        self.definition = ToolDefinition(name=self.name, description=self.description, parameters=schema)
        self._bulkhead = (
            _Bulkhead(self.name, max_concurrency, max_queue) if max_concurrency is not None else None
        )
        functools.update_wrapper(self, fn)

    def _build_args_model(self, fn: Callable[..., Any], arg_docs: dict[str, str]) -> type[BaseModel]:
        try:
            hints = typing.get_type_hints(fn, include_extras=True)
        except Exception as exc:
            raise ToolDefinitionError(
                f"tool {self.name!r}: its type hints cannot be resolved: {exc}"
            ) from exc
        fields: dict[str, Any] = {}
        for param in inspect.signature(fn).parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
                raise ToolDefinitionError(
                    f"tool {self.name!r}: parameter {param.name!r} is {param.kind.description}; a tool takes "
                    "named arguments only"
                )
            hint = hints.get(param.name)
            if hint is ToolContext:
                self._context_param = param.name
                continue
            if param.name == IDEMPOTENCY_KEY_PARAM:
                self._key_param = param.name
                continue
            if hint is None:
                raise ToolDefinitionError(
                    f"tool {self.name!r}: parameter {param.name!r} has no type hint; the model needs one to "
                    "know what to pass"
                )
            default = ... if param.default is param.empty else param.default
            doc = arg_docs.get(param.name)
            fields[param.name] = (hint, Field(default, description=doc) if doc else default)
        try:
            return pydantic.create_model(
                f"{self.name}_arguments", __config__=ConfigDict(extra="forbid"), **fields
            )
        except (pydantic.PydanticSchemaGenerationError, TypeError) as exc:
            raise ToolDefinitionError(
                f"tool {self.name!r}: its parameters cannot be validated: {exc}"
            ) from exc

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the underlying function directly: no validation, no bulkhead, no timeout."""
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Tool {self.name!r}>"

    @property
    def wants_context(self) -> bool:
        """Whether the function declares a :class:`ToolContext` or ``idempotency_key`` parameter."""
        return self._context_param is not None or self._key_param is not None

    def validate(
        self, arguments: Mapping[str, Any] | None, *, tool_call_id: str | None = None
    ) -> dict[str, Any]:
        """The validated arguments as Python values, or :class:`ToolArgumentsError` saying what is wrong."""
        if arguments is None:
            raise ToolArgumentsError(
                f"The arguments of tool {self.name!r} must be a JSON object. Call it again with arguments "
                f"matching this JSON schema: {json.dumps(self.definition.parameters, sort_keys=True)}",
                tool=self.name,
                tool_call_id=tool_call_id,
            )
        try:
            model = self.args_model.model_validate(arguments)
        except pydantic.ValidationError as exc:
            raise ToolArgumentsError(
                describe_validation_error(self.name, exc, self.definition.parameters),
                tool=self.name,
                tool_call_id=tool_call_id,
            ) from exc
        return {name: getattr(model, name) for name in self._arg_names}

    async def call(
        self,
        arguments: Mapping[str, Any] | None,
        context: ToolContext | None = None,
        *,
        default_timeout: float | None = None,
    ) -> Any:
        """Validate ``arguments``, then run the function inside the bulkhead and the timeout.

        ``default_timeout`` applies when the tool declares none (the agent's guards pass their default). Every
        failure is a :class:`~corral.tools.errors.ToolError` whose message is meant for the model;
        ``BaseException``s that are not ``Exception``s (cancellation, run termination) pass through.
        """
        call_id = context.tool_call_id if context is not None else None
        values = self.validate(arguments, tool_call_id=call_id)
        if self.wants_context:
            if context is None:
                context = ToolContext(run_id="", tool_call_id="", tool_name=self.name, idempotency_key="")
            if self._context_param is not None:
                values[self._context_param] = context
            if self._key_param is not None:
                values[self._key_param] = context.idempotency_key
        limit = self.timeout if self.timeout is not None else default_timeout
        if limit is None and self._bulkhead is None:
            return await self._execute(values, call_id)
        scope = asyncio.timeout(limit)
        try:
            async with scope:
                return await self._bounded(values, call_id)
        except TimeoutError as exc:
            if not scope.expired():  # the tool's own TimeoutError, not ours
                raise ToolRaisedError(
                    self._raised_message(exc), tool=self.name, tool_call_id=call_id
                ) from exc
            raise ToolTimeoutError(
                f"Tool {self.name!r} did not finish within {limit:g} s and was abandoned. Try smaller "
                "inputs, or do without this tool.",
                tool=self.name,
                tool_call_id=call_id,
                timeout_s=limit or 0.0,
            ) from None

    async def _bounded(self, values: dict[str, Any], call_id: str | None) -> Any:
        if self._bulkhead is None:
            return await self._execute(values, call_id)
        slots = await self._bulkhead.acquire(call_id)
        try:
            return await self._execute(values, call_id)
        finally:
            slots.semaphore.release()

    async def _execute(self, values: dict[str, Any], call_id: str | None) -> Any:
        try:
            if self.is_async:
                return await self.fn(**values)  # type: ignore[call-arg, misc]
            return await _run_in_thread(self.fn, values)
        except ToolError:
            raise
        except Exception as exc:
            raise ToolRaisedError(self._raised_message(exc), tool=self.name, tool_call_id=call_id) from exc

    def _raised_message(self, exc: BaseException) -> str:
        detail = str(exc) or "(no message)"
        return (
            f"Tool {self.name!r} failed with {type(exc).__name__}: {detail}. Check the arguments and try "
            "again differently, or answer without this tool."
        )


def format_result(value: Any) -> str:
    """A tool's return value as the text a model reads: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    return pydantic_core.to_json(value, fallback=str).decode()


@overload
def tool(fn: Callable[P, R], /) -> Tool[P, R]: ...
@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    max_concurrency: int | None = None,
    max_queue: int = 64,
    side_effects: bool = False,
    needs_approval: bool = False,
) -> Callable[[Callable[P, R]], Tool[P, R]]: ...
def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    max_concurrency: int | None = None,
    max_queue: int = 64,
    side_effects: bool = False,
    needs_approval: bool = False,
) -> Tool[..., Any] | Callable[[Callable[..., Any]], Tool[..., Any]]:
    """Make a typed function (sync or async) a :class:`Tool`. Use bare (``@tool``) or with options.

    ``name``/``description`` override the function's name and docstring. ``timeout`` (seconds) bounds each
    call, waiting in the queue included; a sync function runs in a daemon worker thread so a hung one cannot
    hang the run. ``max_concurrency`` bounds calls running at once (a bulkhead) with at most ``max_queue``
    more waiting; a call beyond that fails fast. ``side_effects=True`` makes the agent journal the call with
    an idempotency key (declare an ``idempotency_key: str`` or a :class:`ToolContext` parameter to receive
    it). ``needs_approval=True`` makes the agent ask a human before each call.
    """

    def make(function: Callable[..., Any]) -> Tool[..., Any]:
        return Tool(
            function,
            name=name,
            description=description,
            timeout=timeout,
            max_concurrency=max_concurrency,
            max_queue=max_queue,
            side_effects=side_effects,
            needs_approval=needs_approval,
        )

    return make(fn) if fn is not None else make


def as_tool(obj: Tool[..., Any] | Callable[..., Any]) -> Tool[..., Any]:
    """``obj`` if it is a :class:`Tool`, else the function made into one with default options."""
    return obj if isinstance(obj, Tool) else Tool(obj)
