"""Attacks from one job on the jobs after it, on one worker: memory, /dev, random streams, leftover state.

Each test runs on a pool of one worker, so that every job lands on the same worker as the job before it.
"""

from __future__ import annotations

import re
import secrets
import textwrap
from collections.abc import Iterator

import pytest

from corral.sandbox import Limits, SandboxPool
from corral.sandbox._pool import leftovers

from .conftest import BACKENDS

#: Job code that searches everything it can read of its own process for ``MARK`` followed by 24 hex digits:
#: every resident page of its writable anonymous memory, heap and stack (read in place), /dev, /tmp, /dev/shm,
#: /work, its environment, module names and the text of every object the garbage collector tracks.
#: MARK is assembled at run time, so the searching code itself never holds a complete marker.
SEARCH = textwrap.dedent(
    """
    import ctypes, gc, os, re, sys
    MARK = 'corral' + '-planted-'
    pattern = re.compile(MARK.encode() + rb'[0-9a-f]{24}')
    found = set()
    PAGE = os.sysconf('SC_PAGE_SIZE')
    libc = ctypes.CDLL(None)
    with open('/proc/self/maps') as maps:
        regions = [line.split() for line in maps]
    for fields in regions:
        # Anonymous memory, heap and stack: where a process keeps data (file mappings could fault past EOF).
        if not fields[1].startswith('rw') or (len(fields) > 5 and not fields[5].startswith('[')):
            continue
        if len(fields) > 5 and fields[5] not in ('[heap]', '[stack]'):
            continue
        start, end = (int(x, 16) for x in fields[0].split('-'))
        # Only resident pages can hold anything (mincore); each run of them is searched in place.
        pages = (end - start) // PAGE
        resident = (ctypes.c_ubyte * pages)()
        if libc.mincore(ctypes.c_void_p(start), ctypes.c_size_t(end - start), resident) != 0:
            resident = [1] * pages
        page = 0
        while page < pages:
            if not resident[page] & 1:
                page += 1
                continue
            first = page
            while page < pages and resident[page] & 1:
                page += 1
            run = (ctypes.c_char * ((page - first) * PAGE)).from_address(start + first * PAGE)
            found.update(m.decode() for m in pattern.findall(memoryview(run).cast('B')))
    for top in ('/dev', '/tmp', '/dev/shm', '/work'):
        for root, dirs, files in os.walk(top):
            found.update(pattern.findall(' '.join(dirs + files).encode()))
    found.update(pattern.findall(repr(dict(os.environ)).encode()))
    found.update(pattern.findall(' '.join(sys.modules).encode()))
    for obj in gc.get_objects():
        found.update(pattern.findall(repr(obj).encode(errors='replace')[:100000]))
    print('FOUND', sorted(x.decode() if isinstance(x, bytes) else x for x in found))
    """
)


def plant(token: str) -> str:
    """A job that spreads ``corral-planted-<token>`` everywhere it can: code, output, memory, files, state."""
    mark = f"corral-planted-{token}"
    return textwrap.dedent(
        f"""
        import os, sys, json
        secret = {mark!r}
        keep = [secret * 1000 for _ in range(100)]       # heap, freed when the job ends
        print(secret); print(secret, file=sys.stderr)    # output the worker drains
        os.environ['PLANTED'] = secret
        sys.modules[secret] = sys
        json.planted = secret
        for place in ('/tmp', '/dev/shm', '/work', '/dev'):
            try:
                open(os.path.join(place, secret), 'w').write(secret)
            except OSError:
                pass
        try:
            os.mkdir('/tmp/' + secret)
        except OSError:
            pass
        """
    )


@pytest.fixture(scope="module", params=BACKENDS)
def solo(request: pytest.FixtureRequest) -> Iterator[SandboxPool]:
    pool = SandboxPool(1, queue_timeout=60, backend=request.param)
    pool.start()
    try:
        yield pool
    finally:
        pool.close()
        assert not leftovers()


def found(stdout: str) -> list[str]:
    lines = [line for line in stdout.splitlines() if line.startswith("FOUND ")]
    assert lines, stdout
    return re.findall(r"corral-planted-[0-9a-f]{24}", lines[-1])


def test_a_job_finds_nothing_of_earlier_jobs_in_its_memory(solo: SandboxPool) -> None:
    """The finding: a job cloned from a worker that had run jobs read their code and output from memory."""
    tokens = [secrets.token_hex(12) for _ in range(3)]
    for token in tokens:
        assert solo.run_python_sync(plant(token)).ok
    # A SQL job's text is job data too.
    sql_token = secrets.token_hex(12)
    solo.run_python_sync(
        f"import sqlite3; sqlite3.connect(':memory:').execute(\"select 'corral-planted-{sql_token}'\")"
    )
    search = solo.run_python_sync(SEARCH, limits=Limits(wall_seconds=60, cpu_seconds=30))
    assert search.ok, search.stderr
    assert found(search.stdout) == [], "a job read data of an earlier job"


def test_dev_is_read_only_and_private_to_each_job(solo: SandboxPool) -> None:
    attack = textwrap.dedent(
        """
        import errno, os
        def attempt(what, fn):
            try:
                fn()
                print(what, 'DONE')
            except OSError as exc:
                print(what, 'BLOCKED', errno.errorcode[exc.errno])
        attempt('create', lambda: open('/dev/planted', 'w').write('x'))
        attempt('mkdir', lambda: os.mkdir('/dev/planted-dir'))
        attempt('chmod-dev', lambda: os.chmod('/dev', 0))
        attempt('chmod-null', lambda: os.chmod('/dev/null', 0))
        attempt('replace-stdout', lambda: (os.unlink('/dev/stdout'), os.symlink('/work/x', '/dev/stdout')))
        attempt('mknod', lambda: os.mknod('/dev/fifo', 0o10666))
        def inodes():
            for i in range(100000):
                open(f'/dev/f{i}', 'w').close()
        attempt('fill', inodes)
        """
    )
    result = solo.run_python_sync(attack)
    assert result.ok, result.stderr
    assert "DONE" not in result.stdout, result.stdout
    after = solo.run_python_sync(
        "import os; names = ('planted', 'planted-dir', 'fifo', 'f0')\n"
        "print([n for n in names if os.path.lexists('/dev/' + n)])\n"
        "open('/dev/null', 'w').write('x'); print(open('/dev/urandom', 'rb').read(4).__class__.__name__)\n"
        "print(os.readlink('/dev/stdout'))"
    )
    assert after.ok, after.stderr
    lines = after.stdout.splitlines()
    assert lines[0] == "[]"
    assert lines[1:] == ["bytes", "/proc/self/fd/1"]


def test_dev_shm_is_fresh_for_each_job(solo: SandboxPool) -> None:
    assert solo.run_python_sync("open('/dev/shm/left', 'w').write('x' * 1000)").ok
    result = solo.run_python_sync("import os; print(os.listdir('/dev/shm'))")
    assert result.stdout == "[]\n"


def test_random_streams_differ_between_jobs(solo: SandboxPool) -> None:
    code = (
        "import random, tempfile, numpy\n"
        "print(numpy.random.rand(), numpy.random.randint(1 << 30), random.random(),"
        " next(tempfile._get_candidate_names()))"
    )
    outputs = [solo.run_python_sync(code).stdout for _ in range(4)]
    assert all(outputs)
    columns = list(zip(*(o.split() for o in outputs), strict=True))
    for column in columns:
        assert len(set(column)) == len(column), f"a random stream repeated between jobs: {outputs}"


@pytest.mark.slow
def test_two_hundred_jobs_alternating_attacker_and_victim_leave_no_trace(solo: SandboxPool) -> None:
    """Clean state: every victim searches all it inherited for anything of every earlier attacker."""
    planted: list[str] = []
    limits = Limits(wall_seconds=60, cpu_seconds=30)
    pid_before = solo.worker_pids
    for round_ in range(100):
        token = secrets.token_hex(12)
        planted.append(token)
        solo.run_python_sync(plant(token))
        victim = solo.run_python_sync(SEARCH, limits=limits)
        assert victim.ok, victim.stderr
        assert found(victim.stdout) == [], f"round {round_}: a victim found an attacker's data"
    assert solo.worker_pids == pid_before, "the attacks made the pool replace its worker"
