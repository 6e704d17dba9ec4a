"""The sandbox's API: results, inputs, result files, limits, clean state, bulkheads and recycling."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

import corral.sandbox as sb
from corral.sandbox import Limits, SandboxBusy, SandboxCrashed, SandboxPool, SandboxUsageError
from corral.sandbox._collect import collect
from corral.sandbox._seccomp import DENIED_X86_64, build_filter

from .conftest import needs_bwrap

pytestmark = [pytest.mark.sandbox, needs_bwrap]


def test_exported_names_are_complete() -> None:
    # The order is ruff's (RUF022, isort-style); this pins the contents.
    assert len(sb.__all__) == len(set(sb.__all__))
    public = {n for n in dir(sb) if not n.startswith("_") and n not in {"errors", "sqljob", "annotations"}}
    assert public == set(sb.__all__)


def test_result_carries_output_status_files_and_resource_use(pool: SandboxPool) -> None:
    code = (
        "import sys\nprint('out')\nprint('err', file=sys.stderr)\n"
        "open('table.csv', 'w').write('a,b\\n1,2\\n')\nimport os\nos.makedirs('charts')\n"
        "open('charts/c.txt', 'w').write('c')\nsum(range(3_000_000))\nsys.exit(3)"
    )
    result = pool.run_python_sync(code)
    assert (result.stdout, result.stderr, result.exit_code, result.limit) == ("out\n", "err\n", 3, None)
    assert result.files == {"table.csv": b"a,b\n1,2\n", "charts/c.txt": b"c"}
    assert not result.ok
    assert 0 < result.cpu_seconds < 5 and 0 < result.wall_seconds < 10
    assert result.peak_memory_bytes is not None and result.peak_memory_bytes > 0


def test_exception_is_a_result_with_the_traceback(pool: SandboxPool) -> None:
    result = pool.run_python_sync("def f():\n    1 / 0\nf()")
    assert result.exit_code == 1 and "ZeroDivisionError: division by zero" in result.stderr
    assert 'File "<job>", line 2, in f' in result.stderr


def test_matplotlib_chart_comes_back_as_a_png(pool: SandboxPool) -> None:
    code = "import matplotlib.pyplot as plt\nplt.bar(['a', 'b'], [1, 2])\nplt.savefig('chart.png')"
    result = pool.run_python_sync(code)
    assert result.ok, result.stderr
    assert result.files["chart.png"].startswith(b"\x89PNG\r\n\x1a\n")


def test_inputs_are_readable_and_read_only(pool: SandboxPool, tmp_path: Path) -> None:
    data = tmp_path / "sales.csv"
    data.write_text("k,v\na,1\nb,2\n")
    writable = tmp_path / "open.txt"
    writable.write_text("shared")
    writable.chmod(0o666)
    code = (
        "import pandas as pd\nprint(pd.read_csv('/data/sales.csv').v.sum())\n"
        "print(open('/data/raw.bin','rb').read())\n"
        "for name in ['sales.csv', 'open.txt', 'raw.bin']:\n"
        "    try:\n        f = open('/data/' + name, 'a')\n        f.write('x')\n        f.close()\n"
        "        print('WROTE', name)\n"
        "    except OSError as exc:\n        print('ro', name, exc.errno)\n"
    )
    result = pool.run_python_sync(
        code, inputs={"sales.csv": data, "raw.bin": b"\x00\x01", "open.txt": writable}
    )
    assert result.stdout.splitlines()[:2] == ["3", "b'\\x00\\x01'"], result.stderr
    assert "WROTE" not in result.stdout
    assert data.read_text() == "k,v\na,1\nb,2\n" and writable.read_text() == "shared"


def test_bad_input_names_and_limits_are_usage_errors(pool: SandboxPool) -> None:
    with pytest.raises(SandboxUsageError, match="plain file name"):
        pool.run_python_sync("pass", inputs={"../x": b""})
    with pytest.raises(SandboxUsageError, match="wall_seconds"):
        Limits(wall_seconds=0)
    with pytest.raises(SandboxUsageError, match="must be a str"):
        pool.run_python_sync(b"print(1)")  # type: ignore[arg-type]


#: A job that talks over the socket it was given, then tries the network itself.
_SOCKET_JOB = """
import os, socket
fd = int(os.readlink("/data/peer").rsplit("/", 1)[1])
peer = socket.socket(fileno=fd)
print(peer.family.name, peer.recv(5).decode())
peer.sendall(b"pong")
for what, attempt in [
    ("tcp", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM)),
    ("connect", lambda: socket.create_connection(("127.0.0.1", PORT), timeout=2)),
]:
    try:
        attempt()
        print(what, "OPEN")
    except OSError as exc:
        print(what, "denied", exc.errno)
"""


@pytest.mark.parametrize("backend", ["bubblewrap", "landlock"])
def test_a_socket_input_reaches_the_job_and_nothing_else_does(backend: str, pool: SandboxPool) -> None:
    # A live TCP listener on the host: the job must not reach it, even while it holds a relayed socket.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    host_end, job_end = socket.socketpair()
    host_end.sendall(b"ping!")
    own = SandboxPool(1, backend=backend) if backend != "bubblewrap" else None
    try:
        runner = own or pool
        result = runner.run_python_sync(_SOCKET_JOB.replace("PORT", str(port)), sockets={"peer": job_end})
        host_end.settimeout(5)
        assert host_end.recv(4) == b"pong", result.stderr
    finally:
        if own is not None:
            own.close()
        listener.close()
        host_end.close()
        job_end.close()
    lines = result.stdout.splitlines()
    assert lines[0] == "AF_UNIX ping!", result.stderr
    assert lines[1].startswith("tcp denied") and lines[2].startswith("connect denied"), result.stdout


def test_only_unix_stream_sockets_go_into_a_job(pool: SandboxPool) -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
        pytest.raises(SandboxUsageError, match="AF_UNIX stream"),
    ):
        pool.run_python_sync("pass", sockets={"net": tcp})
    a, b = socket.socketpair()
    with a, b, pytest.raises(SandboxUsageError, match="both as input and socket"):
        pool.run_python_sync("pass", inputs={"x": b""}, sockets={"x": b})


def test_each_job_starts_clean_and_isolated(pool: SandboxPool) -> None:
    code = (
        "import os, socket\n"
        "print(os.getcwd(), os.listdir('.'), os.listdir('/tmp'), os.listdir('/dev/shm'), os.getpid(),"
        " socket.gethostname(), os.getuid(), sorted(os.environ))"
    )
    first = pool.run_python_sync(code + "\nopen('/tmp/x', 'w').write('x')")
    second = pool.run_python_sync(code)
    expected_env = sorted(sb._pool.JOB_ENV)
    if pool.backend == "landlock":
        # No namespaces: the real pid, uid and hostname show, and /work is a link to the job's own directory.
        for out in (first.stdout, second.stdout):
            cwd, rest = out.split(" ", 1)
            assert cwd.startswith("/run/corral/j") and cwd.endswith("/work"), out
            assert rest.startswith("[] [] [] ") and rest.endswith(f" {expected_env}\n"), out
        return
    assert first.stdout == second.stdout == f"/work [] [] [] 1 sandbox 1000 {expected_env}\n"


async def test_async_api_runs_jobs_concurrently(pool: SandboxPool) -> None:
    started = time.monotonic()
    job = "import time\ntime.sleep(1.0)\nprint('x')"
    results = await asyncio.gather(*(sb.run_python(job, pool=pool) for _ in range(2)))
    assert [r.stdout for r in results] == ["x\n", "x\n"]
    assert time.monotonic() - started < 1.9  # one after the other would take at least 2 s


def test_busy_pool_refuses_beyond_its_queue() -> None:
    with SandboxPool(1, max_queue=1, queue_timeout=0.3) as pool:
        blocker = threading.Thread(target=pool.run_python_sync, args=("import time\ntime.sleep(1.5)",))
        blocker.start()
        time.sleep(0.3)
        with pytest.raises(SandboxBusy, match=r"waited 0\.3 s"):
            pool.run_python_sync("pass")  # queued, then times out
        waiter = threading.Thread(target=lambda: pool.run_python_sync("pass", queue_timeout=5))
        waiter.start()
        time.sleep(0.1)
        with pytest.raises(SandboxBusy, match="already queued"):
            pool.run_python_sync("pass")  # the one queue slot is taken
        blocker.join()
        waiter.join()
        assert pool.run_python_sync("print(1)").stdout == "1\n"


def test_a_killed_worker_is_replaced() -> None:
    with SandboxPool(1) as pool:
        (old_pid,) = pool.worker_pids
        killer = threading.Timer(0.5, os.kill, args=(old_pid, signal.SIGKILL))
        killer.start()
        with pytest.raises(SandboxCrashed, match="was replaced"):
            pool.run_python_sync("import time\ntime.sleep(3)")
        assert pool.run_python_sync("print('back')").stdout == "back\n"
        assert pool.worker_pids != [old_pid]


def test_workers_are_recycled_after_n_jobs() -> None:
    with SandboxPool(1, max_jobs_per_worker=2) as pool:
        uids = set()
        for _ in range(3):
            assert pool.run_python_sync("pass").ok
            uids.update(pool.worker_uids)
        assert len(uids) >= 2


def test_normal_jobs_keep_the_warm_worker(pool: SandboxPool, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (64 << 20))  # reading it fills page cache, which is reclaimable: no recycling
    before = pool.worker_uids
    for _ in range(2 * pool.size):
        assert pool.run_python_sync(
            "print(len(open('/data/big.bin', 'rb').read()))", inputs={"big.bin": big}
        ).ok
    assert pool.worker_uids == before


def test_limits_can_go_down_and_up_again_on_one_worker() -> None:
    with SandboxPool(1) as pool:
        small = pool.run_python_sync("x = bytearray(8 << 20)", limits=Limits(memory_bytes=64 << 20))
        big = pool.run_python_sync("x = bytearray(200 << 20)", limits=Limits(memory_bytes=400 << 20))
        assert small.ok and big.ok, (small, big)
        assert len(pool.worker_uids) == 1


def test_closed_pool_refuses_work() -> None:
    pool = SandboxPool(1)
    pool.close()
    with pytest.raises(SandboxUsageError, match="closed"):
        pool.run_python_sync("pass")


def test_default_pool_is_lazy_and_shuts_down_cleanly() -> None:
    sb.shutdown_default_pool()
    pool = sb.default_pool()
    assert pool.worker_pids == []
    assert sb.run_python_sync("print(2)").stdout == "2\n"
    pids = pool.worker_pids
    assert len(pids) == pool.size
    sb.shutdown_default_pool()
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids)


def test_seccomp_filter_is_well_formed() -> None:
    program = build_filter("x86_64")
    assert len(program) % 8 == 0 and len(program) // 8 < 4096
    ks = {struct.unpack_from("<HBBI", program, i)[3] for i in range(0, len(program), 8)}
    assert {DENIED_X86_64["ptrace"], DENIED_X86_64["bpf"], DENIED_X86_64["io_uring_setup"], 0x5412} <= ks
    with pytest.raises(sb.SandboxUnavailable, match="aarch64"):
        build_filter("aarch64")


def test_collector_refuses_links_and_specials(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "ok.csv").write_text("fine")
    (scratch / "link.csv").symlink_to(secret)
    (scratch / "dirlink").symlink_to(tmp_path)
    os.mkfifo(scratch / "fifo")
    os.link(secret, scratch / "hard")
    fd = os.open(scratch, os.O_PATH | os.O_DIRECTORY)
    try:
        files, skipped = collect(fd, max_files=10, max_file_bytes=100)
    finally:
        os.close(fd)
    assert files == {"ok.csv": b"fine"}
    assert {s.name: s.reason for s in skipped} == {
        "dirlink": "symbolic link",
        "fifo": "not a regular file (FIFO)",
        "hard": "hard link (2 links)",
        "link.csv": "symbolic link",
    }


def test_check_reports_a_working_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORRAL_SANDBOX_BACKEND", raising=False)
    report = sb.check()
    assert report.can_run and report.backend == "bubblewrap", report.missing()
    names = {item.name for item in report.items}
    assert {"bubblewrap", "user namespaces", "cgroups", "landlock", "gvisor"} <= names


def test_cgroups_of_a_dead_host_are_removed() -> None:
    from corral.sandbox import _cgroup

    dead_pid = 4_194_305  # above the kernel's PID_MAX_LIMIT: certainly not a running process
    stale = _cgroup.WorkerCgroup.create(f"corral-{dead_pid}-p0-w0-g0")
    removed = _cgroup.remove_stale()
    assert str(stale.memory) in removed and not stale.memory.exists() and not stale.pids.exists()


def test_staging_directories_of_dead_hosts_are_removed_and_live_ones_kept() -> None:
    import subprocess
    import tempfile

    from corral.sandbox._pool import remove_stale_stages

    dead = subprocess.Popen(["true"])
    dead.wait()
    tmp = Path(tempfile.gettempdir())
    stale = tmp / f"corral-sandbox-stage-{dead.pid}-test"
    live = tmp / f"corral-sandbox-stage-{os.getpid()}-test"
    for stage in (stale, live):
        (stage / "0").mkdir(parents=True, exist_ok=True)
    try:
        removed = remove_stale_stages()
        assert str(stale) in removed and not stale.exists()
        assert live.exists()
    finally:
        for stage in (stale, live):
            for child in stage.glob("*"):
                child.rmdir()
            if stage.exists():
                stage.rmdir()
