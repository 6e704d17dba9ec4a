"""Attacks on the host through what it reads from a job: inputs, status channel, result files, counters."""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from corral.sandbox import (
    RunResult,
    SandboxCrashed,
    SandboxPool,
    SandboxUsageError,
    as_source,
    run_sql_sync,
)
from corral.sandbox._protocol import parse_reply

from .conftest import Sandbox, Secrets

# -- inputs the root host opens --------------------------------------------------------------------


def test_a_symlinked_input_is_refused_not_followed(
    pool: SandboxPool, tmp_path: Path, planted: Secrets
) -> None:
    link = tmp_path / "data.csv"
    link.symlink_to(planted.root_file)
    with pytest.raises(SandboxUsageError, match="symbolic link"):
        result = pool.run_python_sync("print(open('/data/data.csv').read())", inputs={"data.csv": link})
        assert planted.value not in result.stdout  # only reached when the input was accepted
    shadow = tmp_path / "shadow.csv"
    shadow.symlink_to("/etc/shadow")
    with pytest.raises(SandboxUsageError):
        pool.run_python_sync("print(open('/data/s').read())", inputs={"s": shadow})


def test_a_fifo_input_is_refused_without_blocking(pool: SandboxPool, tmp_path: Path) -> None:
    fifo = tmp_path / "data.csv"
    os.mkfifo(fifo)
    outcome: list[BaseException | RunResult] = []

    def run() -> None:
        try:
            outcome.append(pool.run_python_sync("print(1)", inputs={"data.csv": fifo}))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():  # unblock the host's open so the thread ends, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(10)
        pytest.fail("a FIFO given as an input blocked the host")
    assert len(outcome) == 1 and isinstance(outcome[0], SandboxUsageError), outcome


def test_a_directory_source_skips_links_and_specials(
    tmp_path: Path, planted: Secrets, pool: SandboxPool
) -> None:
    (tmp_path / "sales.csv").write_text("a\n1\n")
    (tmp_path / "secret.csv").symlink_to(planted.world_file)
    os.mkfifo(tmp_path / "pipe.csv")
    source = as_source(tmp_path)
    assert [p.name for p in source.paths] == ["sales.csv"]  # type: ignore[union-attr]
    result = run_sql_sync("SELECT * FROM sales", tmp_path, pool=pool)
    assert result.rows == [(1,)]


# -- the job -> host status channel --------------------------------------------------------------------------

#: Job code writing raw bytes (hex) to every socket it holds but its inputs: the status channel among them.
FORGE = textwrap.dedent(
    """
    import os
    payload = bytes.fromhex({payload!r})
    written = []
    for name in os.listdir('/proc/self/fd'):
        try:
            if os.readlink(f'/proc/self/fd/{{name}}').startswith('socket:'):
                written.append((name, os.write(int(name), payload)))
        except OSError as exc:
            written.append((name, repr(exc)))
    print('forged', written)
    """
)

_NESTED = ("[" * 200_000 + "]" * 200_000).encode()
FORGERIES = {
    # What the status channel looked like before it was parsed strictly, and what it looks like now.
    "setup-error-with-chosen-text": b"E" + struct.pack(">I", 40) + b'{"setup_error": "CHOSEN-BY-THE-JOB!!!"}',
    "setup-error-new-format": b"E" + struct.pack(">H", 19) + b"CHOSEN-BY-THE-JOB!!",
    "deeply-nested-json": b"E" + struct.pack(">I", len(_NESTED)) + _NESTED,
    "done-with-nan-cpu": struct.pack(">cIid", b"D", 12, 0, math.nan),
    "done-with-huge-cpu": struct.pack(">cIid", b"D", 12, 0, 1e300),
    "done-with-negative-cpu": struct.pack(">cIid", b"D", 12, 0, -5.0),
    "done-twice": b"D\x00D\x00",
    "garbage": os.urandom(3000),
    "flood": b"S" * 200_000,
}


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_forged_status_reports_are_a_failed_run_never_a_crash(
    sandbox: Sandbox, pool: SandboxPool, name: str
) -> None:
    before = pool.worker_pids
    try:
        result = sandbox.run(FORGE.format(payload=FORGERIES[name].hex()))
    except SandboxCrashed as exc:
        pytest.fail(f"a forged report crashed the worker: {exc}")
    assert "CHOSEN-BY-THE-JOB" not in result.stdout
    assert math.isfinite(result.cpu_seconds) and 0 <= result.cpu_seconds < 5, result.cpu_seconds
    # The job's stdout says which descriptors it wrote to, so a failure here tells a forge that reached no
    # status channel apart from a broker that accepted it.
    assert not result.ok, f"a job that forged its status report passed as a clean run: {result.stdout!r}"
    assert pool.worker_pids == before, "a forged report made the pool replace its worker"


#: A job process for the broker below, standing in for the real one: it takes its job, says "ready" with a
#: descriptor, writes its standard input to its status channel, then exits (``argv[2]`` "exit") or runs on.
_FAKE_JOB = textwrap.dedent(
    """
    import os, socket, sys, time
    payload = sys.stdin.buffer.read()
    sock = socket.socket(fileno=int(sys.argv[1]))
    socket.recv_fds(sock, 1 << 16, 64)
    socket.send_fds(sock, [b'S'], [os.open('/', os.O_PATH)])
    sock.sendall(payload)
    if sys.argv[2] == 'exit':
        os._exit(0)
    time.sleep(60)
    """
)


def _broker_run(payload: bytes, then: str) -> tuple[dict[str, object], subprocess.Popen[bytes]]:
    """One job through the worker's real broker, its job process the fake one above; on the first look at
    the job's CPU time the broker stalls until the job process has ended or 0.5 s have passed (a broker
    descheduled on a busy machine: the race window held open)."""
    from corral.sandbox import _worker

    host, _host_peer = socket.socketpair()
    zygotes = [socket.socketpair() for _ in range(_worker.JOB_SLOTS)]
    broker = _worker.Broker(host, [(0, z[0]) for z in zygotes], {}, landlock=False)
    status, job_end = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, "-c", _FAKE_JOB, str(job_end.fileno()), then],
        pass_fds=[job_end.fileno()],
        stdin=subprocess.PIPE,
    )
    job_end.close()
    assert proc.stdin is not None
    with proc.stdin:
        proc.stdin.write(payload)
    broker.spares[0] = (proc.pid, status)
    # What the slot's zygote would report once it reaps the job process: a clean exit.
    zygotes[0][1].sendall(_worker._ZYGOTE_MSG.pack(b"X", proc.pid, 0))
    stalled: list[bool] = []

    def stalled_cpu_ns(slot: int, pid: int, *, started: bool = True) -> int:
        if not stalled:
            stalled.append(True)
            deadline = time.monotonic() + (10 if then == "exit" else 0.5)
            # Waited for without reaping it: the broker still kills it by pid afterwards.
            while time.monotonic() < deadline and not os.waitid(
                os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG
            ):
                time.sleep(0.01)
        return 0

    broker._cpu_ns = stalled_cpu_ns  # type: ignore[method-assign]
    limits = {"output_bytes": 4096, "wall_seconds": 20, "cpu_seconds": 20}
    try:
        job = {"id": 1, "kind": "python", "slot": 0, "limits": limits, "cpu_rate": 1.0}
        reply, scratch = broker.run_job(job, [])
    finally:
        for sock in (host, _host_peer, status, *(end for pair in zygotes for end in pair)):
            sock.close()
    for fd in scratch:
        os.close(fd)
    return reply, proc


@pytest.mark.parametrize("name", ["setup-error-new-format", "garbage", "done-twice"])
def test_a_forged_status_written_just_before_the_job_dies_is_still_read(name: str) -> None:
    """The broker saw the job's end and its "ready" in one look, and stopped there, never reading what the
    job wrote after "ready": a forged status report passed as a clean run (about one rootless attack-suite
    run in five, on a busy machine)."""
    reply, proc = _broker_run(FORGERIES[name], "exit")
    proc.wait(timeout=10)
    assert reply["killed_for"] == "protocol", reply


def _broker_pid(pool: SandboxPool) -> int:
    """The host pid of the pool's (one) broker: the worker process itself (Landlock), or the interpreter
    bubblewrap started."""
    procs: dict[int, tuple[str, int]] = {}
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError, ValueError):
            text = Path(f"/proc/{entry}/stat").read_text()
            procs[int(entry)] = (
                text[text.index("(") + 1 : text.rindex(")")],
                int(text.rsplit(")")[-1].split()[1]),
            )
    worker = pool.worker_pids[0]
    if procs[worker][0].startswith("python"):
        return worker

    def under_worker(pid: int) -> bool:
        while pid > 1 and pid != worker:
            pid = procs.get(pid, ("", 0))[1]
        return pid == worker

    return next(
        pid
        for pid, (comm, parent) in procs.items()
        if comm.startswith("python") and procs.get(parent, ("", 0))[0] == "bwrap" and under_worker(pid)
    )


def test_forged_status_reports_fail_while_the_broker_is_stalled_at_random(pool: SandboxPool) -> None:
    """The race above on a real worker: the broker stopped (SIGSTOP) for 2 ms at random instants, so that
    a job often ends before the broker looks. Before the fix 6 of 200 forging jobs passed as clean runs as
    root (7 of 300 rootless), and the Landlock worker crashed (the job's pid was gone before its pidfd was
    taken)."""
    forge = FORGE.format(payload=FORGERIES["setup-error-new-format"].hex())
    with SandboxPool(1, backend=pool.backend) as solo:
        solo.run_python_sync("pass")
        broker = _broker_pid(solo)
        stop = threading.Event()

        def stall() -> None:
            rng = random.Random()
            with contextlib.suppress(ProcessLookupError):  # a broker that crashed fails the jobs below
                while not stop.is_set():
                    os.kill(broker, signal.SIGSTOP)
                    time.sleep(0.002)
                    os.kill(broker, signal.SIGCONT)
                    time.sleep(rng.uniform(0, 0.003))

        staller = threading.Thread(target=stall)
        staller.start()
        try:
            clean = sum(solo.run_python_sync(forge).ok for _ in range(200))
        finally:
            stop.set()
            staller.join()
            with contextlib.suppress(ProcessLookupError):
                os.kill(broker, signal.SIGCONT)
    assert clean == 0, f"{clean} of 200 forging jobs passed as clean runs"


def test_a_job_that_reports_done_early_is_killed_not_left_running() -> None:
    """ "done" is written by a process the job's code controls: a job writing it early must not run on
    after its reply (past its wall and CPU limits, unseen)."""
    reply, proc = _broker_run(b"D\x00", "run")
    assert reply["exit"] == 0 and reply["killed_for"] is None, reply
    try:
        assert proc.wait(timeout=5) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()


def test_a_job_that_reports_done_early_does_not_outlive_its_reply(sandbox: Sandbox) -> None:
    """The same on a real worker: the job claims "done", then spins under a name the host looks for."""
    marker = "corral-linger"
    code = textwrap.dedent(
        f"""
        import ctypes, os, time
        ctypes.CDLL(None).prctl(15, {marker.encode()!r}, 0, 0, 0)
        for name in sorted(os.listdir('/proc/self/fd')):
            if os.readlink(f'/proc/self/fd/{{name}}').startswith('socket:'):
                os.write(int(name), b'D\\x00')
                break
        end = time.monotonic() + 30
        while time.monotonic() < end:
            pass
        """
    )
    result = sandbox.run(code, wall_seconds=5)
    assert result.exit_code == 0, result

    def lingering() -> list[str]:
        found = []
        for entry in os.listdir("/proc"):
            with contextlib.suppress(OSError):
                if entry.isdigit() and Path(f"/proc/{entry}/comm").read_text().strip() == marker:
                    found.append(entry)
        return found

    deadline = time.monotonic() + 3
    while lingering() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not lingering(), "a job that reported done early ran on after its reply"


def test_a_reply_from_a_hostile_worker_is_a_typed_error() -> None:
    good = {
        "id": 1,
        "stdout": "",
        "stderr": "",
        "stdout_total": 0,
        "stderr_total": 0,
        "wall": 0.1,
        "killed_for": None,
        "setup_error": None,
        "exit": 0,
        "wstatus": None,
    }
    assert parse_reply(json.dumps(good).encode(), [], job_id=1, output_bytes=10).reply.exit == 0
    bad: list[object] = [
        {**good, "wall": "NaN"},
        {**good, "exit": 300},
        {**good, "exit": "0"},
        {**good, "stdout": "not base64!"},
        {**good, "stdout": "eHh4eHh4eHh4eHh4"},  # 12 bytes > the cap of 10
        {**good, "id": 2},
        {**good, "extra": 1},
        {**good, "exit": None},
        {**good, "wstatus": 9},
        {**good, "setup_error": "x" * 10_000},
        [good],
        "[" * 100_000 + "]" * 100_000,
    ]
    for message in bad:
        raw = message.encode() if isinstance(message, str) else json.dumps(message).encode()
        with pytest.raises(SandboxCrashed):
            parse_reply(raw, [], job_id=1, output_bytes=10)
    with pytest.raises(SandboxCrashed):
        parse_reply(b'{"wall": NaN}', [], job_id=1, output_bytes=10)


# -- result files ----------------------------------------------------------------------------------


def test_sparse_result_files_are_not_read(sandbox: Sandbox) -> None:
    code = textwrap.dedent(
        """
        import os
        for i in range(30):
            with open(f'hole{i}.bin', 'wb') as f:
                f.truncate(15 * 1024 * 1024)
        open('real.txt', 'w').write('data')
        """
    )
    result = sandbox.run(code)
    assert result.files == {"real.txt": b"data"}
    assert {s.reason for s in result.skipped} == {"sparse file (holes are not collected)"}


def test_result_files_are_bounded_per_job(sandbox: Sandbox) -> None:
    code = "import os\nfor i in range(6):\n    open(f'f{i}.bin', 'wb').write(os.urandom(3 << 20))\n"
    result = sandbox.run(code, scratch_bytes=20 << 20, result_file_bytes=4 << 20)
    assert result.ok, result.stderr
    collected = sum(len(v) for v in result.files.values())
    assert collected <= 20 << 20 and len(result.files) == 6
    small = sandbox.run(code.replace("range(6)", "range(3)"), scratch_bytes=8 << 20, file_size_bytes=8 << 20)
    assert sum(len(v) for v in small.files.values()) <= 8 << 20


# -- limits of the whole process tree --------------------------------------------------------------


def test_cpu_limit_holds_for_the_whole_process_tree(sandbox: Sandbox) -> None:
    code = textwrap.dedent(
        """
        import os
        kids = []
        for _ in range(3):
            pid = os.fork()
            if pid == 0:
                while True:
                    pass
            kids.append(pid)
        for pid in kids:
            os.waitpid(pid, 0)
        """
    )
    result = sandbox.run(code, cpu_seconds=1, wall_seconds=20, cpu_cores=3)
    assert result.limit == "cpu", result
    assert result.cpu_seconds < 1.6, f"three processes used {result.cpu_seconds:.2f} s of a 1 s CPU limit"


def test_cpu_time_is_measured_not_reported(sandbox: Sandbox) -> None:
    code = textwrap.dedent(
        """
        import resource, time
        resource.getrusage = lambda who: (_ for _ in ()).throw(RuntimeError('no'))
        end = time.process_time() + 0.3
        while time.process_time() < end:
            pass
        """
    )
    result = sandbox.run(code)
    assert result.ok, result.stderr
    assert 0.25 < result.cpu_seconds < 2


# -- what a job can learn of the host --------------------------------------------------------------


def test_pidfd_open_is_denied(sandbox: Sandbox) -> None:
    code = textwrap.dedent(
        """
        import ctypes, errno
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        hits = [pid for pid in range(1, 400) if libc.syscall(434, pid, 0) >= 0]
        print('opened', len(hits), errno.errorcode.get(ctypes.get_errno()))
        """
    )
    result = sandbox.run(code)
    assert result.stdout.split() == ["opened", "0", "EPERM"], result.stdout + result.stderr


def test_sqlite_fts3_tokenizer_is_refused(pool: SandboxPool, tmp_path: Path) -> None:
    db = tmp_path / "shop.sqlite"
    with sqlite3.connect(db) as con:
        con.execute("create table t(a)")
    for query in [
        "SELECT fts3_tokenizer('simple')",
        "SELECT fts3_tokenizer('x', X'4141414141414141')",
        "SELECT load_extension('libc.so.6')",
        "ATTACH ':memory:' AS m",
        "PRAGMA writable_schema = ON",
        "VACUUM INTO '/work/copy.db'",
    ]:
        result = run_sql_sync(query, db, pool=pool)
        assert result.error is not None, query
        assert not result.rows, query


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"rows": [[NaN]]}',
        b'{"rows": [1], "row_count": "x"}',
        b'{"columns": [{"a": 1}]}',
        b"\xff",
    ],
)
def test_a_crafted_sql_result_file_is_an_error_result(raw: bytes, tmp_path: Path) -> None:
    from corral.sandbox import _sql

    source = _sql.as_source(tmp_path / "db.sqlite")
    run = RunResult(stdout="", stderr="", exit_code=0, files={".sql-result.json": raw})
    result = _sql.finish(run, source, {"engine": "sqlite"}, None)
    assert result.error is not None and result.rows == []


def test_inputs_show_no_host_path_and_cannot_be_written(sandbox: Sandbox, tmp_path: Path) -> None:
    data = tmp_path / "private-name.csv"
    data.write_text("a\n1\n")
    data.chmod(0o666 & ~0o002)  # not world-writable: the job gets the file itself, not a copy
    code = textwrap.dedent(
        """
        import os
        target = os.readlink('/data/in.csv')
        print(os.readlink(target))
        try:
            open('/data/in.csv', 'w').write('x')
        except OSError as exc:
            print('blocked', exc.errno)
        """
    )
    result = sandbox.pool.run_python_sync(code, inputs={"in.csv": data})
    # Rootless, the job's uid maps to the file's owner: a reopen of the file itself would write it.
    assert data.read_text() == "a\n1\n", result
    assert str(tmp_path.parent) not in result.stdout, result.stdout
    if os.geteuid() != 0:  # rootless: always a sealed copy (the job's uid maps to the file's owner)
        assert result.stdout.splitlines() == ["/memfd:corral-input (deleted)", "blocked 13"], result.stdout
        return
    assert result.stdout.splitlines() == [f"/{tmp_path.name}/private-name.csv", "blocked 30"], result.stdout
    assert data.read_text() == "a\n1\n"


def test_a_descriptor_sent_on_the_status_channel_is_refused(sandbox: Sandbox, pool: SandboxPool) -> None:
    """After "ready" the job may send one record, never a descriptor (it could name anything it opened)."""
    code = textwrap.dedent(
        """
        import os, socket
        for name in os.listdir('/proc/self/fd'):
            try:
                if os.readlink(f'/proc/self/fd/{name}').startswith('socket:'):
                    link = socket.socket(fileno=int(name))
                    socket.send_fds(link, [b'S'], [os.open('/work', os.O_RDONLY)])
                    link.detach()
            except OSError:
                pass
        open('/work/planted.txt', 'w').write('x')
        """
    )
    before = pool.worker_pids
    result = sandbox.run(code)
    assert not result.ok and "status channel" in result.stderr, result
    assert pool.worker_pids == before
