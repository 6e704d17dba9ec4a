"""Vetted commands: what a program gets (inputs, scratch, environment, exit status), and the strict parsing
of a command's status record by the worker's broker."""

from __future__ import annotations

import os
import socket

import pytest

from corral.sandbox import Limits, SandboxPool, run_command, run_command_sync
from corral.sandbox._seccomp import build_filter
from corral.sandbox._worker import _Status

from .conftest import needs_bwrap


@needs_bwrap
def test_a_command_reads_its_inputs_writes_scratch_and_reports_its_exit_code(pool: SandboxPool) -> None:
    # Shell built-ins only: the shell can start no program.
    script = (
        'read line < /data/in.txt; echo "$line"; echo "$line" > copy.txt; echo err >&2; export -p; exit 7'
    )
    done = run_command_sync(
        ["/bin/sh", "-c", script], allow=["/bin/sh"], inputs={"in.txt": b"hello\n"}, pool=pool
    )
    assert done.exit_code == 7 and done.signal is None and done.limit is None and not done.ok
    lines = done.stdout.splitlines()
    assert lines[0] == "hello"
    assert "export HOME='/work'" in lines and "export PATH='/usr/bin:/bin'" in lines
    assert not any("CORRAL" in line for line in lines)  # nothing of the host's environment
    assert done.stderr == "err\n"
    assert done.files == {"copy.txt": b"hello\n"}
    assert done.cpu_seconds > 0 and done.wall_seconds > 0


@needs_bwrap
def test_a_command_gets_an_empty_stdin_and_default_signals(pool: SandboxPool) -> None:
    # stdin is at its end at once. A writer to a closed pipe dies of SIGPIPE: had Python's SIG_IGN for SIGPIPE
    # been inherited, the writing loop would get EPIPE forever and the job would end by its wall clock.
    script = 'read line; echo "read $?"; (while :; do echo x; done) | { read first; echo "piped $first"; }'
    done = run_command_sync(
        ["/bin/sh", "-c", script], allow=["/bin/sh"], limits=Limits(wall_seconds=10), pool=pool
    )
    assert done.ok and done.stdout == "read 1\npiped x\n", done


@needs_bwrap
async def test_the_async_api_runs_a_command(pool: SandboxPool) -> None:
    done = await run_command(["/usr/bin/echo", "async"], allow=["/usr/bin/echo"], pool=pool)
    assert done.stdout == "async\n"


def test_the_command_filter_differs_from_the_job_filter_only_in_exec() -> None:
    plain, notify = build_filter(), build_filter(notify_exec=True)
    assert plain != notify and len(notify) == len(plain) + 8  # one more instruction: the notify return
    assert (0x7FC00000).to_bytes(4, "little") in notify and (0x7FC00000).to_bytes(4, "little") not in plain


@pytest.mark.parametrize(
    ("command", "records", "killed", "violation"),
    [
        (True, [b"S", b"K\x09"], 9, False),
        (True, [b"S", b"K\x0b"], 11, False),
        (True, [b"S", b"K\x00"], None, True),  # no signal 0
        (True, [b"S", b"K\x41"], None, True),  # no signal 65
        (False, [b"S", b"K\x09"], None, True),  # a Python job cannot claim a signal
        (True, [b"S", b"K\x09D\x00"], None, True),  # two records
        (True, [b"S", b"K"], None, False),  # incomplete: waits for its byte
    ],
)
def test_the_broker_parses_a_commands_status_strictly(
    command: bool, records: list[bytes], killed: int | None, violation: bool
) -> None:
    status = _Status(signals=command)
    scratch = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    assert status.feed(records[0], [scratch]) == scratch
    os.close(scratch)
    for record in records[1:]:
        status.feed(record, [])
    assert status.violation is violation
    if not violation:
        assert status.killed == killed


def test_a_descriptor_after_ready_is_a_violation_for_commands_too() -> None:
    status = _Status(signals=True)
    a, b = socket.socketpair()
    status.feed(b"S", [os.dup(a.fileno())])
    status.feed(b"K\x09", [os.dup(b.fileno())])
    assert status.violation
    a.close()
    b.close()
