"""Attacks on resources: memory, processes, CPU, time, disk, descriptors, output."""

from __future__ import annotations

import textwrap

import pytest

from .conftest import AS_ROOT, Sandbox, weaker_rootless, weaker_rootless_landlock

MiB = 1024 * 1024


def test_heap_bomb_is_killed_by_the_memory_limit(sandbox: Sandbox) -> None:
    result = sandbox.run(
        "blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 1024 * 1024))",
        memory_bytes=128 * MiB,
        wall_seconds=20,
    )
    if not AS_ROOT:  # rootless, no cgroup: an rlimit, the allocation fails (docs/sandbox.md's table)
        assert result.exit_code == 1 and "MemoryError" in result.stderr, result
        return
    assert result.limit == "memory", result
    assert result.signal == 9


def test_tmp_bomb_fills_only_its_own_tmpfs(sandbox: Sandbox) -> None:
    weaker_rootless_landlock(sandbox.pool, "scratch and /tmp are plain directories, not capped tmpfs")
    code = textwrap.dedent(
        """
        import errno
        try:
            with open('/tmp/fill', 'wb') as f:
                while True:
                    f.write(b'x' * (1 << 20))
                    f.flush()
        except OSError as exc:
            print('stopped', errno.errorcode[exc.errno])
        """
    )
    result = sandbox.run(code, tmp_bytes=8 * MiB)
    assert "stopped ENOSPC" in result.stdout, result


def test_dev_shm_bomb_is_size_capped(sandbox: Sandbox) -> None:
    weaker_rootless_landlock(sandbox.pool, "scratch and /tmp are plain directories, not capped tmpfs")
    code = textwrap.dedent(
        """
        import errno
        try:
            with open('/dev/shm/fill', 'wb') as f:
                while True:
                    f.write(b'x' * (1 << 20))
                    f.flush()
        except OSError as exc:
            print('stopped', errno.errorcode[exc.errno])
        """
    )
    result = sandbox.run(code, tmp_bytes=8 * MiB)
    assert "stopped ENOSPC" in result.stdout, result


def test_memfd_bomb_is_killed_by_the_memory_limit(sandbox: Sandbox) -> None:
    code = textwrap.dedent(
        """
        import os
        fds = []
        while True:
            fd = os.memfd_create('bomb')
            os.write(fd, b'x' * (32 << 20))
            fds.append(fd)
        """
    )
    result = sandbox.run(code, memory_bytes=128 * MiB, wall_seconds=20)
    # Rootless without a cgroup memfd_create is denied (its pages would count against no limit).
    stopped = ("MemoryError", "Errno 28") if AS_ROOT else ("Errno 1] Operation not permitted",)
    assert result.limit == "memory" or any(s in result.stderr for s in stopped), result
    assert not result.ok


def test_linear_fork_bomb_hits_the_pids_limit(sandbox: Sandbox) -> None:
    code = textwrap.dedent(
        """
        import os, time
        children = 0
        try:
            while True:
                if os.fork() == 0:
                    time.sleep(30)
                    os._exit(0)
                children += 1
        except OSError as exc:
            print('children', children, exc.errno)
        """
    )
    result = sandbox.run(code, pids=32, wall_seconds=10)
    assert "children" in result.stdout, result
    children = int(result.stdout.split()[1])
    assert 20 <= children <= 32
    assert result.ok  # PID 1's exit took every sleeping child down with it: the job did not wait 30 s
    assert result.wall_seconds < 10


def test_exponential_fork_bomb_is_contained(sandbox: Sandbox) -> None:
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    result = sandbox.run(code, pids=32, wall_seconds=2)
    assert result.limit in ("wall", "cpu"), result


def test_thread_bomb_hits_the_pids_limit(sandbox: Sandbox) -> None:
    code = textwrap.dedent(
        """
        import threading, time
        n = 0
        try:
            while True:
                threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
                n += 1
        except RuntimeError as exc:
            print('threads', n, exc, flush=True)
        import os
        os._exit(0)  # do not wait for the sleeping threads
        """
    )
    result = sandbox.run(code, pids=32, wall_seconds=10)
    assert "threads" in result.stdout, result
    assert int(result.stdout.split()[1]) <= 32


def test_cpu_loop_is_stopped_by_the_cpu_limit(sandbox: Sandbox) -> None:
    result = sandbox.run("while True:\n    pass", cpu_seconds=1, wall_seconds=20)
    assert result.limit == "cpu", result
    assert 0.9 <= result.cpu_seconds <= 3.0


def test_loop_ignoring_sigxcpu_and_sigterm_is_still_killed(sandbox: Sandbox) -> None:
    code = textwrap.dedent(
        """
        import signal
        signal.signal(signal.SIGXCPU, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            pass
        """
    )
    result = sandbox.run(code, cpu_seconds=1, wall_seconds=20)
    assert result.limit == "cpu" and result.signal == 9, result


def test_sleep_past_the_wall_limit_is_killed(sandbox: Sandbox) -> None:
    result = sandbox.run("import time\ntime.sleep(60)", wall_seconds=1)
    assert result.limit == "wall", result
    assert result.wall_seconds < 5


def test_oversized_file_is_stopped(sandbox: Sandbox) -> None:
    code = "with open('big.bin', 'wb') as f:\n    f.write(b'x' * (8 << 20))"
    result = sandbox.run(code, file_size_bytes=1 * MiB)
    assert result.limit == "file_size" or "File too large" in result.stderr, result
    assert not result.ok
    assert "big.bin" not in result.files or len(result.files["big.bin"]) <= MiB


def test_oversized_result_file_is_not_collected(sandbox: Sandbox) -> None:
    result = sandbox.run("open('big.bin', 'wb').write(b'x' * (3 << 20))", result_file_bytes=1 * MiB)
    assert result.ok and "big.bin" not in result.files
    assert "too large" in result.skipped[0].reason


def test_inode_exhaustion_stays_in_scratch(sandbox: Sandbox) -> None:
    weaker_rootless_landlock(sandbox.pool, "scratch and /tmp are plain directories, not capped tmpfs")
    code = textwrap.dedent(
        """
        import errno
        n = 0
        try:
            while True:
                open(f'f{n}', 'w').close()
                n += 1
        except OSError as exc:
            print('files', n, errno.errorcode[exc.errno])
        """
    )
    result = sandbox.run(code, scratch_inodes=500, result_files=5)
    assert "ENOSPC" in result.stdout, result
    assert int(result.stdout.split()[1]) < 500
    assert len(result.files) == 5


def test_file_descriptor_exhaustion(sandbox: Sandbox) -> None:
    code = textwrap.dedent(
        """
        import errno, os
        fds = []
        try:
            while True:
                fds.append(os.open('/dev/null', os.O_RDONLY))
        except OSError as exc:
            print('fds', len(fds), errno.errorcode[exc.errno])
        """
    )
    result = sandbox.run(code, open_files=64)
    assert "EMFILE" in result.stdout, result
    assert int(result.stdout.split()[1]) < 64


def test_stdout_flood_is_capped(sandbox: Sandbox) -> None:
    code = "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(100):\n    sys.stdout.write(chunk)\n"
    result = sandbox.run(code, output_bytes=64 * 1024, wall_seconds=30)
    assert result.stdout_truncated
    assert len(result.stdout) == 64 * 1024
    assert result.ok


def test_stderr_flood_is_capped(sandbox: Sandbox) -> None:
    code = "import sys\nfor _ in range(20):\n    sys.stderr.write('y' * (1 << 20))"
    result = sandbox.run(code, output_bytes=4096)
    assert result.stderr_truncated and len(result.stderr) == 4096


@weaker_rootless  # no peak memory without a cgroup
@pytest.mark.parametrize("hits", [1, 2])
def test_memory_limit_is_per_run(sandbox: Sandbox, hits: int) -> None:
    """A run after an OOM kill gets its full allowance again (no leftover from the killed job)."""
    result = sandbox.run("x = bytearray(96 * 1024 * 1024)\nprint(len(x))", memory_bytes=256 * MiB)
    assert result.ok, result
    assert result.peak_memory_bytes is not None and result.peak_memory_bytes >= 90 * MiB


@weaker_rootless  # no CPU bandwidth control without a cgroup
def test_busy_processes_cannot_take_more_than_their_cores(sandbox: Sandbox) -> None:
    """A bulkhead between workers: four busy processes get a tenth of a core, not the machine."""
    code = textwrap.dedent(
        """
        import os, time
        for _ in range(3):
            if os.fork() == 0:
                end = time.time() + 1.0
                while time.time() < end:
                    pass
                os._exit(0)
        end = time.time() + 1.0
        while time.time() < end:
            pass
        for _ in range(3):
            os.wait()
        """
    )
    result = sandbox.run(code, cpu_cores=0.1)  # low enough to bind even when other work shares the cores
    assert result.ok and result.throttled, result
    assert result.cpu_seconds <= 0.1 * result.wall_seconds * 1.25 + 0.05
