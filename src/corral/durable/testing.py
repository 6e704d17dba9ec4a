"""The journal conformance suite: ``check_journal(make_journal)`` runs every check against fresh journals.

Any backend (``MemoryJournal``, ``SqliteJournal``, a future Temporal or Postgres one) must pass it::

    from corral.durable import MemoryJournal
    from corral.durable.testing import check_journal

    def test_memory_journal() -> None:
        check_journal(MemoryJournal)

Checks raise ``AssertionError`` with a message naming the check; they need no test framework.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from corral.durable._context import RunContext
from corral.durable._journal import Journal, RunRecord, RunStatus, StepRecord, StepStatus
from corral.durable.errors import RunNotFound

T0 = 1_000.0


def _run(
    run_id: str, status: RunStatus = RunStatus.PENDING, *, at: float = T0, worker: str | None = None
) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        function="tests:fn",
        input='{"args":[],"kwargs":{}}',
        status=status,
        created_at=at,
        updated_at=at,
        worker_id=worker,
    )


def _step(run_id: str, position: int, status: StepStatus = StepStatus.OK, value: str = "1") -> StepRecord:
    return StepRecord(run_id, position, f"s{position}", status, value, None, None, T0, T0)


def _claim(j: Journal, worker: str, now: float = T0, **kw: object) -> list[str]:
    return [r.run_id for r in j.claim(worker_id=worker, now=now, lease_seconds=10.0, **kw)]  # type: ignore[arg-type]


def check_runs(j: Journal) -> None:
    """Create, get, list; a duplicate id is refused without change."""
    assert j.create_run(_run("a", at=T0)), "create_run must accept a new id"
    assert j.create_run(_run("b", at=T0 + 1))
    assert not j.create_run(replace(_run("a"), function="other:fn")), "create_run must refuse a taken id"
    a = j.get_run("a")
    assert a is not None and a.function == "tests:fn" and a.status is RunStatus.PENDING, a
    assert j.get_run("missing") is None
    assert [r.run_id for r in j.list_runs()] == ["b", "a"], "list_runs is newest first"
    assert [r.run_id for r in j.list_runs(limit=1)] == ["b"]
    assert [r.run_id for r in j.list_runs(statuses=[RunStatus.COMPLETED])] == []


def check_steps(j: Journal) -> None:
    """Step rows: appended by position; intent/waiting may be replaced; a final row never is."""
    j.create_run(_run("r"))
    assert j.write_step(_step("r", 1))
    assert j.write_step(_step("r", 0, StepStatus.INTENT, "null"))
    assert [s.position for s in j.load_steps("r")] == [0, 1], "load_steps is ordered by position"
    assert j.write_step(_step("r", 0, StepStatus.OK, '"done"')), "an intent row is replaced by its result"
    assert j.load_steps("r")[0].value == '"done"'
    assert not j.write_step(_step("r", 0, StepStatus.OK, '"again"')), "a final row must not be overwritten"
    assert not j.write_step(_step("r", 1, StepStatus.ERROR, "{}"))
    assert j.load_steps("r")[0].value == '"done"'
    assert j.load_steps("other") == []


def check_signals(j: Journal) -> None:
    """Signals queue; a matching signal wakes a waiting run; taking one writes its step atomically."""
    try:
        j.send_signal("missing", "go", "1", now=T0)
    except RunNotFound:
        pass
    else:
        raise AssertionError("send_signal to an unknown run must raise RunNotFound")
    j.create_run(_run("r"))
    assert _claim(j, "w1", run_id="r") == ["r"]
    assert j.park_run("r", signal="go", wake_at=None, worker_id="w1", now=T0) is RunStatus.WAITING
    j.send_signal("r", "other", '"x"', now=T0)
    run = j.get_run("r")
    assert run is not None and run.status is RunStatus.WAITING, "another signal name must not wake the run"
    j.send_signal("r", "go", '"first"', now=T0)
    j.send_signal("r", "go", '"second"', now=T0)
    run = j.get_run("r")
    assert run is not None and run.status is RunStatus.PENDING, "the awaited signal makes the run pending"
    wait = StepRecord("r", 0, "wait:go", StepStatus.OK, None, None, None, T0, T0)
    got = j.consume_signal("r", "go", wait)
    assert got is not None and got.value == '"first"', "signals are consumed oldest first"
    assert j.load_steps("r")[0].value == '"first"', "consuming writes the step row"
    assert j.consume_signal("r", "go", wait) is None, "a position already answered takes no second signal"
    got = j.consume_signal("r", "go", replace(wait, position=1))
    assert got is not None and got.value == '"second"'
    assert j.consume_signal("r", "go", replace(wait, position=2)) is None, "no signal left"


def check_park(j: Journal) -> None:
    """Parking releases the lease; a signal that came first or a due timer makes the run pending at once."""
    for rid in ("a", "b", "c"):
        j.create_run(_run(rid))
        assert _claim(j, "w", run_id=rid) == [rid]
    assert j.park_run("a", signal=None, wake_at=T0 + 60, worker_id="w", now=T0) is RunStatus.WAITING
    run = j.get_run("a")
    assert run is not None and run.wake_at == T0 + 60 and run.worker_id is None, run
    j.send_signal("b", "go", "1", now=T0)
    assert j.park_run("b", signal="go", wake_at=None, worker_id="w", now=T0) is RunStatus.PENDING
    assert j.park_run("c", signal=None, wake_at=T0, worker_id="w", now=T0) is RunStatus.PENDING
    assert j.park_run("c", signal=None, wake_at=T0, worker_id="w", now=T0) is None, "park needs the lease"


def check_claims(j: Journal) -> None:
    """Claims: one holder at a time; expired leases and due timers make runs claimable again."""
    j.create_run(_run("p"))
    assert _claim(j, "w1", limit=5) == ["p"]
    assert _claim(j, "w2", limit=5) == [], "a leased run must not be claimed by another worker"
    assert _claim(j, "w2", run_id="p") == [], "nor by id while the lease lives"
    assert _claim(j, "w2", now=T0 + 11, limit=5) == ["p"], "an expired lease is reclaimed"
    assert j.renew(worker_id="w1", run_ids=["p"], now=T0 + 11, lease_seconds=10) == set(), "w1 lost it"
    assert j.renew(worker_id="w2", run_ids=["p"], now=T0 + 15, lease_seconds=10) == {"p"}
    assert _claim(j, "w3", now=T0 + 21, limit=5) == [], "renewal extends the lease"
    assert _claim(j, "w3", now=T0 + 21, run_id="p", steal_from="w2") == ["p"], "steal_from ignores its lease"
    # timers
    j.create_run(_run("t"))
    assert _claim(j, "w1", run_id="t") == ["t"]
    j.park_run("t", signal=None, wake_at=T0 + 100, worker_id="w1", now=T0)
    assert "t" not in _claim(j, "w1", now=T0 + 50, limit=5), "a timer not yet due is not runnable"
    assert "t" in _claim(j, "w1", now=T0 + 100, limit=5), "a due timer is runnable"
    # finishing
    assert not j.finish_run("t", RunStatus.COMPLETED, "1", None, worker_id="w9", now=T0), "only the holder"
    assert j.finish_run("t", RunStatus.COMPLETED, "1", None, worker_id="w1", now=T0 + 101)
    done = j.get_run("t")
    assert done is not None and done.status is RunStatus.COMPLETED and done.output == "1"
    assert _claim(j, "w1", now=T0 + 500, run_id="t") == [], "a final run is never claimed"
    # release
    j.create_run(_run("r"))
    assert _claim(j, "w1", run_id="r") == ["r"]
    j.release("r", worker_id="w1", now=T0)
    assert _claim(j, "w2", run_id="r") == ["r"], "a released run is claimable at once"


def check_cancel(j: Journal) -> None:
    """Cancel: final, stops renewals, never undoes another final status."""
    j.create_run(_run("c"))
    assert _claim(j, "w", run_id="c") == ["c"]
    assert j.cancel_run("c", now=T0).status is RunStatus.CANCELLED
    assert j.renew(worker_id="w", run_ids=["c"], now=T0, lease_seconds=10) == set(), (
        "cancelled runs lose leases"
    )
    assert not j.finish_run("c", RunStatus.COMPLETED, "1", None, worker_id="w", now=T0)
    assert "c" not in _claim(j, "w2", now=T0 + 100, limit=5), "a cancelled run is not runnable"
    j.create_run(_run("d"))
    _claim(j, "w", run_id="d")
    j.finish_run("d", RunStatus.COMPLETED, "1", None, worker_id="w", now=T0)
    assert j.cancel_run("d", now=T0).status is RunStatus.COMPLETED, "cancel leaves final runs alone"
    try:
        j.cancel_run("missing", now=T0)
    except RunNotFound:
        pass
    else:
        raise AssertionError("cancel_run of an unknown run must raise RunNotFound")


def check_concurrent_claims(j: Journal) -> None:
    """Eight threads claiming from one journal never claim the same run twice."""
    n = 200
    for i in range(n):
        j.create_run(_run(f"run{i:03d}", at=T0 + i))
    got: list[list[str]] = [[] for _ in range(8)]

    def worker(k: int) -> None:
        while True:
            ids = _claim(j, f"w{k}", limit=3)
            if not ids:
                return
            got[k].extend(ids)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [rid for ids in got for rid in ids]
    assert len(claimed) == n and len(set(claimed)) == n, f"{len(claimed)} claims of {len(set(claimed))} runs"


def check_fencing(j: Journal) -> None:
    """Every claim raises the lease generation; writes under an older claim, or to a cancelled run, are
    refused, while the current holder's go through."""
    j.create_run(_run("f"))
    first = j.claim(worker_id="w1", now=T0, lease_seconds=10.0, run_id="f")
    assert len(first) == 1 and first[0].generation >= 1, f"a claim gives a lease generation: {first}"
    old = first[0].generation
    assert j.write_step(_step("f", 0), generation=old), "the holder's fenced write goes through"
    second = j.claim(worker_id="w2", now=T0 + 11, lease_seconds=10.0)  # w1's lease expired: w2 takes over
    assert [r.run_id for r in second] == ["f"] and second[0].generation > old, (
        f"a takeover raises the generation: {second}"
    )
    new = second[0].generation
    assert not j.write_step(_step("f", 1, value='"stale"'), generation=old), (
        "a stale holder's write is refused"
    )
    assert [s.position for s in j.load_steps("f")] == [0], "a refused write leaves nothing behind"
    assert j.write_step(_step("f", 1, value='"current"'), generation=new), "the current holder goes on"
    wait = StepRecord("f", 2, "wait:go", StepStatus.OK, None, None, None, T0, T0)
    j.send_signal("f", "go", '"x"', now=T0)
    assert j.consume_signal("f", "go", wait, generation=old) is None, "a stale holder takes no signal"
    taken = j.consume_signal("f", "go", wait, generation=new)
    assert taken is not None and taken.value == '"x"', "the signal was kept for the current holder"
    assert not j.finish_run("f", RunStatus.COMPLETED, "1", None, worker_id="w2", now=T0, generation=old)
    j.cancel_run("f", now=T0 + 12)
    assert not j.write_step(_step("f", 3), generation=new), "a cancelled run records no more steps"
    assert [s.position for s in j.load_steps("f")] == [0, 1, 2]


CHECKS: tuple[Callable[[Journal], None], ...] = (
    check_runs,
    check_steps,
    check_signals,
    check_park,
    check_claims,
    check_cancel,
    check_fencing,
    check_concurrent_claims,
)


def check_journal(make_journal: Callable[[], Journal]) -> None:
    """Run every check in ``CHECKS`` on a fresh journal from ``make_journal``.

    Raises ``AssertionError`` naming the first check that fails."""
    for check in CHECKS:
        journal = make_journal()
        try:
            check(journal)
        except AssertionError as exc:
            raise AssertionError(f"{check.__name__}: {exc}") from exc
        finally:
            journal.close()


# -- crash test with real processes --------------------------------------------------------------------------


@dataclass
class CrashReport:
    """What ``crash_test`` did and found."""

    runs: int
    kills: int
    steps_per_run: int
    reexecuted_steps: int
    counter: int
    distinct_keys: int
    seconds: float


# One connection per (process, file): a forked child must not use its parent's connection.
_counter_conns: dict[tuple[int, str], sqlite3.Connection] = {}


def _counter(path: str) -> sqlite3.Connection:
    key = (os.getpid(), path)
    conn = _counter_conns.get(key)
    if conn is None:
        conn = _counter_conns[key] = sqlite3.connect(path, isolation_level=None, timeout=30)
        conn.execute(
            "PRAGMA synchronous=NORMAL"
        )  # survives the SIGKILLs this test sends; no fsync per effect
    return conn


def _effect(path: str, run_id: str, position: int, key: str | None) -> int:
    """An external effect: log this execution and, for a new idempotency key, increment the counter — one
    transaction in a separate SQLite file, so the effect and its log line commit together."""
    conn = _counter(path)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "INSERT INTO executions (pid, run_id, position, key) VALUES (?, ?, ?, ?)",
        (os.getpid(), run_id, position, key),
    )
    if (
        key is not None
        and conn.execute("INSERT OR IGNORE INTO applied (key) VALUES (?)", (key,)).rowcount == 1
    ):
        conn.execute("UPDATE counter SET n = n + 1")
    conn.execute("COMMIT")
    return position


def make_counter(path: str | os.PathLike[str]) -> None:
    """Create the external counter database that ``crash_flow``'s steps write to (tables ``applied``,
    ``executions``, ``counter``)."""
    setup = sqlite3.connect(path)
    setup.executescript(
        "CREATE TABLE IF NOT EXISTS applied (key TEXT PRIMARY KEY);"
        "CREATE TABLE IF NOT EXISTS executions "
        "(id INTEGER PRIMARY KEY, pid INT, run_id TEXT, position INT, key TEXT);"
        "CREATE TABLE IF NOT EXISTS counter (n INT);"
        "INSERT INTO counter SELECT 0 WHERE NOT EXISTS (SELECT * FROM counter);"
        "PRAGMA journal_mode=WAL;"
    )
    setup.close()


async def crash_flow(ctx: RunContext, steps: int, counter_path: str) -> int:
    """The crash test's run: each step is a plain "model" step and a keyed "tool" step, both with effects."""
    total = 0
    for i in range(steps):
        total += await ctx.step("model", _effect, counter_path, ctx.run_id, ctx.position, None)
        key = f"{ctx.run_id}/tool/{i}"
        total += await ctx.step("tool", _effect, counter_path, ctx.run_id, ctx.position, key, key=key)
    return total


def _expected(steps: int) -> int:
    return sum(range(2 * steps))


def crash_test(
    directory: str | os.PathLike[str],
    *,
    kills: int,
    steps: int = 200,
    max_delay: float = 0.02,
    seed: int = 0,
    synchronous: str = "normal",
) -> CrashReport:
    """SIGKILL real processes running ``crash_flow`` at random moments, resume, and check the promises.

    A forked child runs (or resumes) a ``steps``-step run; the parent kills it after a random delay up to
    ``max_delay`` seconds, ``kills`` times in all, starting a new run when one completes. Then every run is
    finished and checked: each completes with the right result; the counter equals the number of distinct
    keys; and no step with a recorded result ran again — a step ran twice only when the process executing it
    was killed during it (before its result was journaled). Raises ``AssertionError`` otherwise.
    """
    from corral.durable._runtime import Runtime
    from corral.durable._sqlite import SqliteJournal

    rng = random.Random(seed)
    base = Path(directory)
    journal_path = base / "journal.sqlite"
    counter_path = str(base / "counter.sqlite")
    make_counter(counter_path)
    started = time.perf_counter()
    runs = [f"crash-{seed}-0"]
    killed: list[int] = []
    while len(killed) < kills:
        pid = os.fork()
        if pid == 0:  # the child: resume (or start) the current run, then exit without any parent cleanup
            code = 0
            try:
                rt = Runtime(SqliteJournal(journal_path, synchronous=synchronous))  # type: ignore[arg-type]
                asyncio.run(rt.run(crash_flow, steps, counter_path, run_id=runs[-1]))
            except BaseException:
                code = 1
            os._exit(code)
        time.sleep(rng.uniform(0, max_delay))
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            if os.waitstatus_to_exitcode(status) != 0:
                raise AssertionError(f"crash test child {pid} failed (exit status {status})")
            runs.append(f"crash-{seed}-{len(runs)}")
            continue
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        killed.append(pid)
    rt = Runtime(SqliteJournal(journal_path))
    rt.register(crash_flow)
    for run_id in runs:
        try:
            result = asyncio.run(rt.resume(run_id))
        except RunNotFound:  # killed before its run row was written
            result = asyncio.run(rt.run(crash_flow, steps, counter_path, run_id=run_id))
        if result != _expected(steps):
            raise AssertionError(f"run {run_id} returned {result}, expected {_expected(steps)}")
    rt.close()
    own = _counter_conns.pop((os.getpid(), counter_path), None)
    if own is not None:
        own.close()
    conn = sqlite3.connect(counter_path)
    counter = conn.execute("SELECT n FROM counter").fetchone()[0]
    distinct = conn.execute("SELECT count(*) FROM applied").fetchone()[0]
    if counter != distinct or distinct != steps * len(runs):
        raise AssertionError(f"counter {counter}, distinct keys {distinct}, expected {steps * len(runs)}")
    last_of_pid = dict(conn.execute("SELECT pid, max(id) FROM executions GROUP BY pid").fetchall())
    killed_set = set(killed)
    reexecuted = 0
    rows = conn.execute(
        "SELECT run_id, position, group_concat(id), group_concat(pid) FROM executions "
        "GROUP BY run_id, position HAVING count(*) > 1"
    ).fetchall()
    for run_id, position, ids, pids in rows:
        pairs = sorted(zip((int(i) for i in ids.split(",")), (int(p) for p in pids.split(",")), strict=True))
        for exec_id, pid in pairs[:-1]:
            if pid not in killed_set or last_of_pid[pid] != exec_id:
                raise AssertionError(
                    f"run {run_id} step {position} ran again after execution {exec_id} by pid {pid}, which "
                    f"was not killed during it: a recorded step ran twice"
                )
            reexecuted += 1
    conn.close()
    return CrashReport(
        runs=len(runs),
        kills=len(killed),
        steps_per_run=steps,
        reexecuted_steps=reexecuted,
        counter=counter,
        distinct_keys=distinct,
        seconds=time.perf_counter() - started,
    )
