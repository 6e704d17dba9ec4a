"""Long-lived processes with durable mailboxes, under supervisors: OTP's discipline on corral's journal.

A process is a name, a state (JSON) and a handler registered under a behaviour name::

    async def handler(ctx: ProcessContext, state, message: Message) -> new_state | Stop

It handles one message at a time. Handling ends in one commit (shared with other handlings: group commit)
that deletes the message, writes the process's new state and queues the messages it sent, so a message is
consumed exactly once. A sent message is handed to its receiver at once; the receiver's handling of it
commits in the same batch or a later one (batches commit in order), so a crash loses both or neither.
Effects inside a handler (model and tool calls) go through ``ctx.run``, a durable run context keyed by the
message's sender and sequence number: if the handler crashes or the host dies before the commit, the
message is handled again (a sender that ran again re-sends it with the same sequence number) and every
step already recorded is replayed, not repeated.

An idle process is an entry in a dict and its rows; no task or thread waits for it. See
``docs/multiagent.md``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pydantic_core

from corral._errors import UsageError
from corral.agents._supervision import NORMAL_REASONS, Child, Supervisor, restart_targets, within_intensity
from corral.agents.errors import CallTimeout, NoProcess, SystemStopped
from corral.durable import (
    Batch,
    Clock,
    Envelope,
    Journal,
    MailboxStore,
    RunContext,
    RunInterrupt,
    SqliteMailboxStore,
    StepStatus,
    SystemClock,
    mailbox_for,
)

_EXT = "$ext"


def _dumps(value: Any) -> str:
    return pydantic_core.to_json(value).decode()


_loads = pydantic_core.from_json

_SYSTEM_ROW = "$system"
_RUNNING = "running"
_STOPPED = "stopped"  # terminated by its supervisor, about to be restarted
_EXITED = "exited"


@dataclass(frozen=True, slots=True)
class Message:
    """A delivered message. ``kind``: ``send``, ``call`` (answer with ``ctx.reply``), ``reply`` (to a
    ``ctx.request``; ``ref`` matches), ``down`` (a monitored process exited: ``sender`` is it, ``body`` the
    reason)."""

    id: int
    sender: str
    seq: int
    body: Any
    kind: str = "send"
    ref: str | None = None
    reply_to: str | None = None
    sent_at: float = 0.0

    @property
    def caller(self) -> dict[str, Any] | None:
        """Who a ``call`` is from, as JSON to keep in a state and answer later with ``ctx.reply``."""
        if self.kind != "call" or self.reply_to is None:
            return None
        return {"to": self.reply_to, "ref": self.ref}


@dataclass(frozen=True, slots=True)
class Stop:
    """Returned by a handler: the process exits with ``reason`` (``normal`` is not a failure)."""

    reason: str = "normal"
    state: Any = None


Handler = Callable[["ProcessContext", Any, Message], Awaitable[Any]]


@dataclass(slots=True, eq=False)
class _Proc:
    name: str
    kind: str  # "worker" | "supervisor"
    parent: str | None
    behaviour: str = ""
    restart: str = "permanent"
    status: str = _RUNNING
    state: Any = None
    reason: str | None = None
    restarts: int = 0
    attempt: int = 0  # how many times the head message was started before (crashes while handling it)
    out: dict[str, int] = field(default_factory=dict)
    links: set[str] = field(default_factory=set)
    monitors: set[str] = field(default_factory=set)
    children: list[str] = field(default_factory=list)
    strategy: str = "one_for_one"
    intensity: int = 1
    period: float = 5.0
    history: list[float] = field(default_factory=list)
    mailbox: deque[Envelope] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None

    def row(self) -> str:
        return _dumps(
            {
                "kind": self.kind,
                "parent": self.parent,
                "behaviour": self.behaviour,
                "restart": self.restart,
                "status": self.status,
                "state": self.state,
                "reason": self.reason,
                "restarts": self.restarts,
                "attempt": self.attempt,
                "out": self.out,
                "links": sorted(self.links),
                "monitors": sorted(self.monitors),
                "children": self.children,
                "strategy": self.strategy,
                "intensity": self.intensity,
                "period": self.period,
                "history": self.history,
            }
        )

    @classmethod
    def from_row(cls, name: str, text: str) -> _Proc:
        d = json.loads(text)
        return cls(
            name=name,
            kind=d["kind"],
            parent=d["parent"],
            behaviour=d["behaviour"],
            restart=d["restart"],
            status=d["status"],
            state=d["state"],
            reason=d["reason"],
            restarts=d["restarts"],
            attempt=d["attempt"],
            out=d["out"],
            links=set(d["links"]),
            monitors=set(d["monitors"]),
            children=d["children"],
            strategy=d["strategy"],
            intensity=d["intensity"],
            period=d["period"],
            history=d["history"],
        )


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """One node of :meth:`System.tree`: ``status`` is ``idle``, ``busy``, ``stopped`` or ``exited``."""

    name: str
    kind: str
    status: str
    restarts: int
    mailbox: int
    reason: str | None
    children: tuple[ProcessInfo, ...] = ()


class ProcessContext:
    """What a handler can do while it handles one message. Sends, replies, spawns, links and monitors take
    effect when the handling commits (never if the handler crashes)."""

    __slots__ = ("_ops", "_proc", "_replies", "_requests", "_run", "_sent", "_system", "message")

    def __init__(self, system: System, proc: _Proc, message: Message) -> None:
        self._system = system
        self._proc = proc
        self.message = message
        self._sent: list[tuple[str, dict[str, Any]]] = []
        self._ops: list[Callable[[], None]] = []
        # Answers to outside callers: given only once the handling is committed.
        self._replies: list[Callable[[], None]] = []
        self._run: RunContext | None = None
        self._requests = 0

    @property
    def name(self) -> str:
        """This process's name."""
        return self._proc.name

    @property
    def run(self) -> RunContext:
        """A durable run context for this message's effects (``ctx.run.step``, ``agent.run(..., ctx=...)``):
        its steps are recorded once and replayed when the message is handled again after a crash."""
        if self._run is None:
            self._run = self._system._run_context(self._proc, self.message)
        return self._run

    def send(self, to: str, body: Any) -> None:
        """Send ``body`` (JSON) to process ``to``; delivered once, after this handling commits."""
        self._sent.append((to, {"k": "send", "v": body}))

    def request(self, to: str, body: Any) -> str:
        """Send a call to ``to``; its ``ctx.reply`` comes back as a ``reply`` message with the returned ref.
        (A handler never blocks on a call: it handles the reply when it arrives.)"""
        ref = f"{self._proc.name}:{self.message.id}:{self._requests}"
        self._requests += 1
        self._sent.append((to, {"k": "call", "v": body, "ref": ref, "to": self._proc.name}))
        return ref

    def reply(self, message: Message | Mapping[str, Any], body: Any) -> None:
        """Answer a ``call`` message (from ``System.call`` or another process's ``request``) — now, or in a
        later handling through the message's ``caller`` kept in the state."""
        caller = message if isinstance(message, Mapping) else message.caller
        if caller is None:
            raise UsageError(f"process {self.name!r}: that message is not a call, so it takes no reply")
        to, ref = str(caller["to"]), caller.get("ref")
        if to == _EXT:
            key = str(ref or "")
            self._replies.append(lambda: self._system._answer(key, body))
        else:
            self._sent.append((to, {"k": "reply", "v": body, "ref": ref}))

    def handoff(self, to: str, message: Message, body: Any) -> None:
        """Transfer a call to process ``to``: it gets ``body`` (e.g. the conversation so far) as a call
        whose reply goes straight to the original caller."""
        if message.kind != "call":
            self.send(to, body)
            return
        self._sent.append((to, {"k": "call", "v": body, "ref": message.ref, "to": message.reply_to}))

    def spawn(self, name: str, behaviour: str, state: Any = None, *, link: bool = False) -> None:
        """Start a process (unsupervised) after this handling commits; ``link`` links it to this one."""
        me = self._proc.name
        self._ops.append(lambda: self._system._spawn(name, behaviour, state, link_to=me if link else None))

    def link(self, other: str) -> None:
        """Link with ``other``: an abnormal exit of either makes the other exit with the same reason."""
        me = self._proc.name
        self._ops.append(lambda: self._system._link(me, other))

    def monitor(self, other: str) -> None:
        """Get a ``down`` message when ``other`` exits (at once, reason ``noproc``, if it is not alive)."""
        me = self._proc.name
        self._ops.append(lambda: self._system._monitor(me, other))


class System:
    """Processes, their durable mailboxes and their supervisors, on a journal.

    ``behaviours`` maps behaviour names to handlers; a process row names its behaviour, so a system rebuilt
    after a crash finds each process's handler again. ``start`` creates the supervision tree, or, when the
    journal already holds it, resumes it where it was.

    >>> import asyncio
    >>> from corral.durable import MemoryJournal
    >>> async def echo(ctx, state, msg):
    ...     ctx.reply(msg, msg.body)
    ...     return state
    >>> async def main():
    ...     system = System(MemoryJournal(), {"echo": echo})
    ...     await system.start(Supervisor("root", [Child("e", "echo")]))
    ...     answer = await system.call("e", "ping", timeout=5)
    ...     await system.close()
    ...     return answer
    >>> asyncio.run(main())
    'ping'
    """

    def __init__(
        self,
        journal: Journal,
        behaviours: Mapping[str, Handler],
        *,
        clock: Clock | None = None,
        on_deliver: Callable[[Message], None] | None = None,
    ) -> None:
        self.journal = journal
        self._store: MailboxStore = mailbox_for(journal)
        self._threaded = isinstance(self._store, SqliteMailboxStore)
        self._behaviours = dict(behaviours)
        self._clock = clock or SystemClock()
        self._on_deliver = on_deliver
        self._procs: dict[str, _Proc] = {}
        self._next_id = 1
        self._batch = Batch()
        self._after: list[Callable[[], None]] = []
        self._dirty: asyncio.Event | None = None
        self._committer: asyncio.Task[None] | None = None
        self._calls: dict[str, asyncio.Future[Any]] = {}
        self._flushes: list[asyncio.Future[None]] = []
        self._committing = False
        self._dirty_procs: dict[str, _Proc] = {}
        self._deferred: list[Envelope] = []
        self._inflight: asyncio.Future[list[int]] | None = None
        self.stopped: asyncio.Future[str] | None = None
        self._root: str | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def start(self, tree: Supervisor) -> None:
        """Start ``tree``, or resume it from the journal if it was started before (a stopped tree stays
        stopped: ``stopped`` is already done)."""
        if not self._store.own():
            raise UsageError(
                "another System (in this process or another) runs the agents of this journal: "
                "one runner at a time, or messages could be handled twice"
            )
        loop = asyncio.get_running_loop()
        self._dirty = asyncio.Event()
        self.stopped = loop.create_future()
        self._committer = asyncio.create_task(self._commit_loop())
        self._root = tree.name
        rows = await self._io(self._store.load_rows)
        system_row = json.loads(rows.pop(_SYSTEM_ROW, "{}"))
        self._next_id = int(system_row.get("next_id", 1))
        if tree.name in rows:
            self._recover(rows, await self._io(self._store.load_messages))
            if system_row.get("stopped") is not None:
                self.stopped.set_result(str(system_row["stopped"]))
        else:
            self._create_tree(tree, parent=None)
            await self.flush()

    def _recover(self, rows: dict[str, str], messages: list[Envelope]) -> None:
        for name, text in rows.items():
            self._procs[name] = _Proc.from_row(name, text)
        for env in messages:
            proc = self._procs.get(env.receiver)
            if proc is not None:
                proc.mailbox.append(env)
                self._next_id = max(self._next_id, env.id + 1)
        for proc in self._procs.values():
            self._schedule(proc)

    def _create_tree(self, node: Child | Supervisor, parent: str | None) -> None:
        self._create(node, parent)
        if isinstance(node, Supervisor):
            for child in node.children:
                self._create_tree(child, node.name)

    def _create(self, node: Child | Supervisor, parent: str | None) -> None:
        if node.name in self._procs:
            raise UsageError(f"a process named {node.name!r} exists already")
        if isinstance(node, Supervisor):
            proc = _Proc(
                node.name,
                "supervisor",
                parent,
                restart=node.restart,
                children=[c.name for c in node.children],
                strategy=node.strategy,
                intensity=node.intensity,
                period=node.period,
            )
        else:
            self._handler(node.behaviour, node.name)
            proc = _Proc(node.name, "worker", parent, node.behaviour, node.restart, state=node.state)
        self._procs[node.name] = proc
        self._save(proc)

    def _handler(self, behaviour: str, name: str) -> Handler:
        handler = self._behaviours.get(behaviour)
        if handler is None:
            raise UsageError(f"process {name!r}: no behaviour {behaviour!r} is registered with this system")
        return handler

    async def close(self, *, flush: bool = True) -> None:
        """Commit what is pending and stop every task (processes stay as the journal has them).

        ``flush=False`` drops what is not committed yet, as the death of the host would (crash tests)."""
        if flush:
            await self.flush()
        inflight = self._inflight
        if inflight is not None and not inflight.done():  # a commit in a thread cannot be called back
            await asyncio.wait([inflight])
        for proc in self._procs.values():
            if proc.task is not None:
                proc.task.cancel()
        if self._committer is not None:
            self._committer.cancel()
            await asyncio.gather(self._committer, return_exceptions=True)
            self._committer = None
            self._store.disown()

    # -- the public operations -------------------------------------------------------------------------------
    async def send(self, to: str, body: Any) -> int:
        """Send ``body`` (JSON) to process ``to`` from outside; returns the message id once it is stored.
        (A caller that retries after its own crash may send twice: outside senders are at-least-once.)"""
        env = self._external(to, {"k": "send", "v": body})
        await self.flush()
        return env.id

    async def call(self, to: str, body: Any, *, timeout: float) -> Any:  # noqa: ASYNC109 - a reply deadline
        """Send a call and wait up to ``timeout`` seconds for the handler's ``ctx.reply``."""
        ref = uuid.uuid4().hex
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls[ref] = future
        try:
            self._external(to, {"k": "call", "v": body, "ref": ref, "to": _EXT})
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            raise CallTimeout(f"no reply from process {to!r} within {timeout} s") from None
        finally:
            self._calls.pop(ref, None)

    def kill(self, name: str, reason: str = "killed") -> None:
        """Make process ``name`` exit now with ``reason``, even in the middle of a step (its supervisor
        restarts it as its restart type says; the message it was handling stays in its mailbox)."""
        proc = self._alive(name)
        self._exit(proc, reason)

    async def flush(self) -> None:
        """Wait until everything handled or sent so far is committed."""
        if not self._batch and not self._dirty_procs and not self._after and not self._committing:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flushes.append(future)
        self._wake()
        await future

    async def idle(self, *, poll: float = 0.002) -> None:
        """Wait until no process has a message to handle and everything is committed (tests, examples)."""
        while True:
            await self.flush()
            busy = any(
                p.task is not None or (p.mailbox and p.status == _RUNNING) for p in self._procs.values()
            )
            if not busy and not self._batch and not self._dirty_procs and not self._committing:
                return
            await asyncio.sleep(poll)

    def tree(self) -> list[ProcessInfo]:
        """The supervision tree (and unsupervised processes) as it is now."""
        return [self._info(p) for p in self._procs.values() if p.parent is None]

    def _info(self, proc: _Proc) -> ProcessInfo:
        status = proc.status
        if status == _RUNNING:
            status = "busy" if proc.task is not None else "idle"
        kids = tuple(self._info(self._procs[c]) for c in proc.children if c in self._procs)
        return ProcessInfo(proc.name, proc.kind, status, proc.restarts, len(proc.mailbox), proc.reason, kids)

    def state(self, name: str) -> Any:
        """A process's current state (as its last handled message left it)."""
        return self._get(name).state

    # -- plumbing --------------------------------------------------------------------------------------------
    async def _io(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.to_thread(fn) if self._threaded else fn()

    def _get(self, name: str) -> _Proc:
        proc = self._procs.get(name)
        if proc is None:
            raise NoProcess(f"no process named {name!r}")
        return proc

    def _alive(self, name: str) -> _Proc:
        proc = self._get(name)
        if proc.status == _EXITED:
            raise NoProcess(f"process {name!r} has exited ({proc.reason})")
        return proc

    def _save(self, proc: _Proc) -> None:
        # Serialized once per commit, however many messages the process handled since the last one.
        self._dirty_procs[proc.name] = proc
        self._wake()

    def _wake(self) -> None:
        if self._dirty is not None:
            self._dirty.set()

    def _envelope(
        self, sender: str, seq: int, to: str, payload: dict[str, Any] | str, *, local: bool = True
    ) -> Envelope:
        body = payload if isinstance(payload, str) else _dumps(payload)
        env = Envelope(self._next_id, to, sender, seq, body, self._clock.time())
        self._next_id += 1
        self._batch.sent.append(env)
        if local:
            # A process's message is handed over at once, before its batch commits: the receiver's
            # handling can commit only in the same batch or a later one, so a crash loses both or neither.
            self._deliver(env)
        else:
            self._deferred.append(env)
        self._wake()
        return env

    def _external(self, to: str, payload: dict[str, Any]) -> Envelope:
        self._alive(to)
        # From outside: delivered once stored (the caller learns of it only then).
        return self._envelope(_EXT, self._next_id, to, payload, local=False)

    def _send_from(self, proc: _Proc, to: str, payload: dict[str, Any] | str) -> None:
        seq = proc.out.get(to, 0)
        proc.out[to] = seq + 1
        self._envelope(proc.name, seq, to, payload)

    def _answer(self, ref: str, body: Any) -> None:
        future = self._calls.get(ref)
        if future is not None and not future.done():
            future.set_result(body)

    async def _commit_loop(self) -> None:
        assert self._dirty is not None
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if not self._batch and not self._dirty_procs and not self._after and not self._flushes:
                continue
            batch, after, flushes, deferred = self._batch, self._after, self._flushes, self._deferred
            self._batch, self._after, self._flushes, self._deferred = Batch(), [], [], []
            _cancel_out(batch)
            batch.rows.update((name, proc.row()) for name, proc in self._dirty_procs.items())
            self._dirty_procs = {}
            if batch:
                batch.rows[_SYSTEM_ROW] = self._system_row()
            self._committing = True
            try:
                if self._threaded:
                    self._inflight = asyncio.ensure_future(
                        asyncio.to_thread(functools.partial(self._store.commit, batch))
                    )
                    stored = set(await self._inflight)
                else:
                    stored = set(self._store.commit(batch))
            except Exception as exc:
                # The journal failed (disk full, corruption): nothing handled since the last commit counts,
                # so the system stops rather than go on with state the journal does not hold.
                self._stop_system(f"journal failure: {exc}")
                for future in flushes:
                    future.set_exception(SystemStopped(f"journal failure: {exc}"))
                raise
            finally:
                self._committing = False
            for env in deferred:
                if env.id in stored:
                    self._deliver(env)
            for effect in after:
                effect()
            for future in flushes:
                if not future.done():
                    future.set_result(None)

    def _system_row(self) -> str:
        stopped = self.stopped.result() if self.stopped is not None and self.stopped.done() else None
        return json.dumps({"next_id": self._next_id, "stopped": stopped})

    def _deliver(self, env: Envelope) -> None:
        proc = self._procs.get(env.receiver)
        if proc is None or proc.status == _EXITED:
            # OTP: a message to a process that is gone is dropped.
            self._batch.consumed.append(env.id)
            self._wake()
            return
        proc.mailbox.append(env)
        self._schedule(proc)

    def _schedule(self, proc: _Proc) -> None:
        if proc.task is None and proc.mailbox and proc.status == _RUNNING and proc.kind == "worker":
            proc.task = asyncio.create_task(self._drain(proc))

    @staticmethod
    def _decode(env: Envelope) -> Message:
        payload = _loads(env.body)
        return Message(
            env.id,
            env.sender,
            env.seq,
            payload.get("v"),
            payload.get("k", "send"),
            payload.get("ref"),
            payload.get("to"),
            env.sent_at,
        )

    async def _drain(self, proc: _Proc) -> None:
        handler = self._handler(proc.behaviour, proc.name)
        try:
            while proc.mailbox and proc.status == _RUNNING:
                env = proc.mailbox[0]
                message = self._decode(env)
                if self._on_deliver is not None:
                    self._on_deliver(message)
                ctx = ProcessContext(self, proc, message)
                try:
                    result = await handler(ctx, proc.state, message)
                    encoded = [(to, _dumps(payload)) for to, payload in ctx._sent]
                    _dumps(result.state if isinstance(result, Stop) else result)  # JSON, or a crash here
                except asyncio.CancelledError:
                    return  # killed or terminated: whoever cancelled records the exit
                except (Exception, RunInterrupt) as exc:
                    # RunInterrupt: the journal refused a step of this handling (e.g. a final row already
                    # holds its position): a crash of the process like any other, not a dead task.
                    if proc.task is not asyncio.current_task():
                        return  # killed meanwhile: that exit is recorded already
                    proc.task = None
                    proc.attempt += 1
                    self._exit(proc, f"{type(exc).__name__}: {exc}")
                    return
                if proc.task is not asyncio.current_task():
                    return  # killed while finishing (the handler swallowed the cancellation): not consumed
                proc.mailbox.popleft()
                self._commit_handling(proc, ctx, env, result, encoded)
        finally:
            if proc.task is asyncio.current_task():
                proc.task = None

    def _commit_handling(
        self, proc: _Proc, ctx: ProcessContext, env: Envelope, result: Any, encoded: list[tuple[str, str]]
    ) -> None:
        proc.attempt = 0
        self._batch.consumed.append(env.id)
        for to, body in encoded:
            self._send_from(proc, to, body)
        self._after.extend(ctx._replies)
        for op in ctx._ops:
            op()
        if isinstance(result, Stop):
            proc.state = result.state
            self._exit(proc, result.reason)
            return
        proc.state = result
        self._save(proc)

    def _run_context(self, proc: _Proc, message: Message) -> RunContext:
        # Each attempt at a message writes under its own run id; a new attempt replays the earlier ones'
        # successful steps and runs again the step that failed (and anything after it).
        # Keyed by sender and sequence number, which a sender that runs again after a crash reuses (its
        # message ids may differ): a message handed over before a crash that lost it is the same message.
        base = f"mbx:{proc.name}:{message.sender}:{message.seq}"
        merged: dict[int, Any] = {}
        for attempt in range(proc.attempt + 1):
            for record in self.journal.load_steps(f"{base}:{attempt}"):
                merged[record.position] = record
        records = []
        for position in sorted(merged):
            record = merged[position]
            if record.status in (StepStatus.ERROR, StepStatus.WAITING):
                break
            records.append(record)
        return RunContext(f"{base}:{proc.attempt}", self.journal, self._clock, records)

    # -- exits, links, monitors, supervision -----------------------------------------------------------------
    def _stop_task(self, proc: _Proc) -> None:
        task, proc.task = proc.task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _exit(self, proc: _Proc, reason: str) -> None:
        if proc.status == _EXITED:
            return
        self._stop_task(proc)
        if proc.kind == "supervisor":
            self._terminate_children(proc)
        proc.status, proc.reason = _EXITED, reason
        self._save(proc)
        self._notify(proc, reason)
        parent = self._procs.get(proc.parent) if proc.parent is not None else None
        if parent is not None and parent.status == _RUNNING:
            self._child_exited(parent, proc, reason)
        elif proc.name == self._root:
            self._stop_system(reason)
        else:
            self._drop_mailbox(proc)

    def _notify(self, proc: _Proc, reason: str) -> None:
        for watcher in sorted(proc.monitors):
            target = self._procs.get(watcher)
            if target is not None and target.status != _EXITED:
                self._send_from(proc, watcher, {"k": "down", "v": reason})
        proc.monitors.clear()
        for other in sorted(proc.links):
            peer = self._procs.get(other)
            proc.links.discard(other)
            if peer is None:
                continue
            peer.links.discard(proc.name)
            self._save(peer)
            if reason not in NORMAL_REASONS and peer.status == _RUNNING:
                self._exit(peer, reason)

    def _drop_mailbox(self, proc: _Proc) -> None:
        self._batch.consumed.extend(env.id for env in proc.mailbox)
        proc.mailbox.clear()

    def _terminate(self, proc: _Proc) -> None:
        """Stop a running child on its supervisor's order (it will be restarted)."""
        if proc.status != _RUNNING:
            return
        self._stop_task(proc)
        if proc.kind == "supervisor":
            self._terminate_children(proc)
        proc.status, proc.reason = _STOPPED, "shutdown"
        self._save(proc)
        for watcher in sorted(proc.monitors):
            if watcher in self._procs and self._procs[watcher].status != _EXITED:
                self._send_from(proc, watcher, {"k": "down", "v": "shutdown"})
        proc.monitors.clear()

    def _terminate_children(self, sup: _Proc) -> None:
        for name in reversed(sup.children):
            child = self._procs.get(name)
            if child is not None:
                self._terminate(child)

    def _child_exited(self, sup: _Proc, child: _Proc, reason: str) -> None:
        abnormal = reason not in NORMAL_REASONS
        if child.restart == "temporary" or (child.restart == "transient" and not abnormal):
            self._drop_mailbox(child)
            return
        allowed, sup.history = within_intensity(
            sup.history, now=self._clock.time(), intensity=sup.intensity, period=sup.period
        )
        self._save(sup)
        if not allowed:
            self._exit(sup, f"shutdown: reached_max_restart_intensity (child {child.name!r}: {reason})")
            return
        targets = restart_targets(sup.strategy, sup.children, child.name)  # type: ignore[arg-type]
        for name in reversed(targets):
            if name != child.name:
                self._terminate(self._procs[name])
        for name in targets:
            self._restart(self._procs[name])

    def _restart(self, proc: _Proc) -> None:
        if proc.restart == "temporary" and proc.status == _EXITED:
            return
        proc.status = _RUNNING
        proc.restarts += 1
        if proc.kind == "supervisor":
            proc.history = []
            for name in proc.children:
                child = self._procs[name]
                if child.status != _RUNNING:
                    self._restart(child)
        self._save(proc)
        self._schedule(proc)

    def _stop_system(self, reason: str) -> None:
        for proc in self._procs.values():
            if proc.status == _RUNNING:
                self._stop_task(proc)
        if self.stopped is not None and not self.stopped.done():
            self.stopped.set_result(reason)
        self._wake()

    def _spawn(self, name: str, behaviour: str, state: Any, *, link_to: str | None) -> None:
        if name in self._procs:
            return  # spawned by an earlier attempt whose commit landed: spawn is idempotent by name
        self._create(Child(name, behaviour, state, "temporary"), parent=None)
        if link_to is not None:
            self._link(link_to, name)

    def _link(self, a: str, b: str) -> None:
        pa, pb = self._procs.get(a), self._procs.get(b)
        if pa is None or pb is None or pb.status == _EXITED:
            if pa is not None and pa.status == _RUNNING:
                self._exit(pa, "noproc")
            return
        pa.links.add(b)
        pb.links.add(a)
        self._save(pa)
        self._save(pb)

    def _monitor(self, watcher: str, target: str) -> None:
        pt, pw = self._procs.get(target), self._procs.get(watcher)
        if pw is None:
            return
        if pt is None or pt.status == _EXITED:
            self._envelope(target, -self._next_id, watcher, {"k": "down", "v": "noproc"})
            return
        pt.monitors.add(watcher)
        self._save(pt)

    async def spawn(self, name: str, behaviour: str, state: Any = None) -> None:
        """Start an unsupervised process (``temporary``: nobody restarts it)."""
        self._create(Child(name, behaviour, state, "temporary"), parent=None)
        await self.flush()

    async def link(self, a: str, b: str) -> None:
        """Link two processes (see :meth:`ProcessContext.link`)."""
        self._link(a, b)
        await self.flush()

    async def monitor(self, watcher: str, target: str) -> None:
        """Make ``watcher`` get a ``down`` message when ``target`` exits."""
        self._monitor(watcher, target)
        await self.flush()


def _cancel_out(batch: Batch) -> None:
    """Drop the messages both sent and consumed within one batch: they were handled before being stored."""
    if not batch.consumed or not batch.sent:
        return
    both = {e.id for e in batch.sent}.intersection(batch.consumed)
    if both:
        batch.sent = [e for e in batch.sent if e.id not in both]
        batch.consumed = [i for i in batch.consumed if i not in both]


def stored_tree(journal: Journal) -> list[ProcessInfo]:
    """The supervision trees a journal holds, as their systems last committed them (any process can read
    it, e.g. ``corral agents tree``): ``status`` is ``running``, ``stopped`` or ``exited``.

    >>> from corral.durable import MemoryJournal
    >>> stored_tree(MemoryJournal())
    []
    """
    store = mailbox_for(journal)
    rows = store.load_rows()
    rows.pop(_SYSTEM_ROW, None)
    procs = {name: _Proc.from_row(name, text) for name, text in rows.items()}
    depths = store.depths()

    def info(proc: _Proc) -> ProcessInfo:
        kids = tuple(info(procs[c]) for c in proc.children if c in procs)
        return ProcessInfo(
            proc.name, proc.kind, proc.status, proc.restarts, depths.get(proc.name, 0), proc.reason, kids
        )

    return [info(p) for p in procs.values() if p.parent is None]
