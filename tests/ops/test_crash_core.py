"""A core a crash left on disk: imported into the encrypted store, read by gdb, the crashing frame named."""

from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path

import pytest

from corral.apps.ops_agent import DiagnoseRequest
from corral.durable import MemoryJournal, Runtime

from . import faults
from .conftest import needs_gdb

pytestmark = pytest.mark.slow


def _core_pattern() -> str:
    try:
        return Path("/proc/sys/kernel/core_pattern").read_text().strip()
    except OSError:
        return ""


def crash(tmp_path: Path) -> Path:
    """Run a program that dereferences a null pointer, with cores allowed; the core it leaves."""
    exe = faults.compile_c(tmp_path, "proxy", faults.CRASH_C)
    os.chmod(tmp_path, 0o755)  # the program must be readable by anyone for gdb to load its symbols

    def allow_cores() -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    done = subprocess.run([str(exe)], cwd=tmp_path, preexec_fn=allow_cores, capture_output=True, timeout=30)
    assert done.returncode < 0  # it died on a signal
    written = sorted(tmp_path.glob("core*"))
    if not written:
        pytest.skip(f"no core written (core_pattern {_core_pattern()!r})")
    return written[0]


@needs_gdb
@pytest.mark.skipif(_core_pattern().startswith("|"), reason="cores go to a program here, not to a file")
async def test_a_crash_core_names_the_crashing_frame(tmp_path: Path, make_agent) -> None:  # type: ignore[no-untyped-def]
    written = [crash(tmp_path)]
    request = DiagnoseRequest(symptom="the proxy died", core_files=[str(written[0])], remediate=False,
                              core_dumps="never", interval_s=0.5)  # fmt: skip
    report = await make_agent().diagnose(request, runtime=Runtime(MemoryJournal()))
    assert report.cause is not None and report.cause.kind == "crashed", (report.summary, report.alternatives)
    assert report.cause.facts["signal"] == "SIGSEGV"
    assert report.cause.facts["backtrace"][0] == "parse_header"
    stored = [p.read_bytes() for p in make_agent().tools.store.root.glob("*.core.enc")]
    assert stored and written[0].read_bytes()[:64] not in stored[0]
