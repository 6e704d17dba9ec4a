"""The journal conformance suite: ``check_journal(make_journal)`` runs every check against fresh journals.

Any backend (``MemoryJournal``, ``SqliteJournal``, a future Temporal or Postgres one) must pass it::

    from corral.durable import MemoryJournal
    from corral.durable.testing import check_journal

    def test_memory_journal() -> None:
        check_journal(MemoryJournal)

Checks raise ``AssertionError`` with a message naming the check; they need no test framework.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace

from corral.durable._journal import Journal, RunRecord, RunStatus, StepRecord, StepStatus
from corral.durable.errors import RunNotFound

T0 = 1_000.0


def _run(run_id: str, status: RunStatus = RunStatus.PENDING, *, at: float = T0, worker: str | None = None) -> RunRecord:
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
    """Signals queue in order; a matching signal wakes a waiting run; consumption writes the step atomically."""
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
    assert j.renew(worker_id="w", run_ids=["c"], now=T0, lease_seconds=10) == set(), "cancelled runs lose leases"
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


CHECKS: tuple[Callable[[Journal], None], ...] = (
    check_runs,
    check_steps,
    check_signals,
    check_park,
    check_claims,
    check_cancel,
    check_concurrent_claims,
)


def check_journal(make_journal: Callable[[], Journal]) -> None:
    """Run every check in ``CHECKS`` on a fresh journal from ``make_journal``; raise ``AssertionError`` naming the
    first check that fails."""
    for check in CHECKS:
        journal = make_journal()
        try:
            check(journal)
        except AssertionError as exc:
            raise AssertionError(f"{check.__name__}: {exc}") from exc
        finally:
            journal.close()
