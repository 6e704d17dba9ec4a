"""The read-only evidence tools, as typed corral tools: each bounded in time and output size, each output
redacted before it leaves the tool (so neither the journal nor a model ever holds the raw text).

>>> tools = OpsTools()
>>> sorted(t.name for t in tools.read_only())[:3]
['backtraces', 'core_strings', 'disk_usage']
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from corral.apps.ops_agent import _cores as cores
from corral.apps.ops_agent import _files as files
from corral.apps.ops_agent import _logs as logs
from corral.apps.ops_agent import _procfs as procfs
from corral.apps.ops_agent import _prom as prom
from corral.apps.ops_agent import _watch
from corral.apps.ops_agent._redact import Redactor
from corral.apps.ops_agent.errors import CoreDumpError, EvidenceError
from corral.tools import Tool, tool

#: The most characters of one tool's output (as JSON) that is kept; the rest is cut and marked.
MAX_OUTPUT_CHARS = 16_000


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _halve_longest(data: Any) -> Any:
    """``data`` with its longest list (at the top or one level down) cut to half, marked ``cut``."""
    if not isinstance(data, dict):
        return data
    best: tuple[int, list[str]] = (0, [])
    for k, v in data.items():
        if isinstance(v, list) and len(v) > best[0]:
            best = (len(v), [k])
        elif isinstance(v, dict):
            for k2, v2 in v.items():
                if isinstance(v2, list) and len(v2) > best[0]:
                    best = (len(v2), [k, k2])
    if best[0] < 2:
        return data
    out = dict(data)
    if len(best[1]) == 1:
        out[best[1][0]] = out[best[1][0]][: best[0] // 2]
    else:
        inner = dict(out[best[1][0]])
        inner[best[1][1]] = inner[best[1][1]][: best[0] // 2]
        out[best[1][0]] = inner
    out["cut"] = True
    return out


def default_store_dir() -> Path:
    """Where cores are kept unless told otherwise: ``$CORRAL_CORE_DIR``, else the data dir's ``cores``."""
    env = os.environ.get("CORRAL_CORE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_data_dir("corral")) / "cores"


@dataclass
class OpsTools:
    """The evidence tools over one :class:`Redactor` and one :class:`CoreStore`.

    Call them like functions (``tools.processes(match="nginx")``) or give :meth:`read_only` to an agent.
    Every result is JSON-like and redacted; a tool that fails raises :class:`EvidenceError`.
    """

    redactor: Redactor = field(default_factory=Redactor)
    store: cores.CoreStore = field(default_factory=lambda: cores.CoreStore(default_store_dir()))
    #: Runs the core-strings job in corral's sandbox (``corral.sandbox.run_python_sync``); injectable.
    sandbox_run: Callable[..., Any] | None = None

    def out(self, value: Any) -> Any:
        """``value`` as redacted JSON-like data, cut to :data:`MAX_OUTPUT_CHARS`."""
        data = self.redactor.scrub(_plain(value))
        for _ in range(12):
            if len(json.dumps(data, default=str)) <= MAX_OUTPUT_CHARS:
                return data
            data = _halve_longest(data)
        return {"cut": True, "text": json.dumps(data, default=str)[:MAX_OUTPUT_CHARS]}

    # -- the tools ------------------------------------------------------------------------------------------
    def node(self) -> Any:
        """The machine: load, CPU busy share, memory, swap, and every real filesystem's space and inodes."""
        return self.out(procfs.node_metrics())

    def scrape(self, url: str, prefix: str = "") -> Any:
        """Scrape a Prometheus text endpoint; only metrics whose name starts with ``prefix``."""
        return self.out(prom.scrape(url, prefix=prefix))

    def processes(self, match: str = "", pid: int = 0, top: int = 8) -> Any:
        """The process table: processes whose name or command line contains ``match`` (or ``pid`` and its
        descendants), plus the ``top`` by CPU, by memory and the youngest, and the zombies. CPU seconds,
        RSS, threads, open files, children, state (Z is a zombie)."""
        table = procfs.process_table()
        chosen: dict[int, procfs.ProcessInfo] = {}
        if pid:
            wanted = procfs.descendants(pid, table)
            chosen.update({p.pid: p for p in table if p.pid in wanted})
        if match:
            chosen.update({p.pid: p for p in table if match in p.name or match in p.cmdline})
        user = [p for p in table if p.pid != 2 and p.ppid != 2]  # not kernel threads
        for key in (lambda p: -p.cpu_s, lambda p: -p.rss_kb, lambda p: p.started_s_ago):
            chosen.update({p.pid: p for p in sorted(user, key=key)[:top]})
        zombies = [p.pid for p in table if p.state == "Z"]
        for p in [p for p in table if p.state == "Z"][:100]:
            chosen[p.pid] = p
        for p in chosen.values():
            p.cmdline = p.cmdline[:200]
        return self.out(
            {
                "processes": sorted(chosen.values(), key=lambda p: p.pid)[:200],
                "total": len(table),
                "zombies": zombies[:100],
            }
        )

    def environment(self, pid: int) -> Any:
        """The environment a process started with (secret-named variables masked)."""
        try:
            pairs = procfs.environment(pid)
        except OSError as exc:
            raise EvidenceError(f"cannot read the environment of {pid}: {exc.strerror}") from exc
        return self.out(self.redactor.environment(pairs))

    def watch(self, pids: list[int], samples: int = 3, interval_s: float = 1.0) -> Any:
        """Sample processes a few times: RSS, CPU, threads' CPU, open files, TCP states per process
        (CLOSE_WAIT), listen queues and the kernel's listen-overflow counter."""
        return self.out(_watch.watch(pids, samples=samples, interval_s=min(interval_s, 5.0)))

    def sockets(self, pid: int = 0) -> Any:
        """TCP sockets per process and state, listen queues (queued / backlog) and the kernel's
        ListenOverflows and ListenDrops counters."""
        owners = procfs.socket_owners()
        backlogs = procfs.listen_backlogs()
        per: dict[int, dict[str, int]] = {}
        listen = []
        for s in procfs.tcp_sockets():
            owner = owners.get(s.inode)
            if pid and owner != pid:
                continue
            if owner is not None:
                states = per.setdefault(owner, {})
                states[s.state] = states.get(s.state, 0) + 1
            if s.state == "LISTEN":
                listen.append(
                    {
                        "pid": owner,
                        "local": s.local,
                        "queued": s.rx_queue,
                        "backlog": backlogs.get(s.local, 0),
                    }
                )
        counters = procfs.tcp_ext_counters()
        return self.out(
            {
                "per_process": {str(k): v for k, v in sorted(per.items())[:200]},
                "listen": listen[:100],
                "ListenOverflows": counters.get("ListenOverflows", 0),
                "ListenDrops": counters.get("ListenDrops", 0),
            }
        )

    def log(
        self, path: str, pattern: str = "", since_s: float = 0, lines: int = 100, follow_links: bool = False
    ) -> Any:
        """Tail a log file: the last ``lines`` lines matching ``pattern`` (a regular expression), no older
        than ``since_s`` seconds when lines carry a timestamp (0: any age). A symlink is read only with
        ``follow_links``."""
        found = logs.read_log(
            path, pattern=pattern or None, since_s=since_s or None, lines=min(lines, 500), follow=follow_links
        )
        return self.out(found)

    def journal(self, unit: str = "", pattern: str = "", since_s: float = 3600, lines: int = 100) -> Any:
        """journald's lines of a unit (or all) from the last ``since_s`` seconds matching ``pattern``."""
        return self.out(
            logs.read_journal(unit or None, pattern=pattern or None, since_s=since_s, lines=min(lines, 500))
        )

    def disk(self, path: str, top: int = 10) -> Any:
        """Disk use under ``path`` by directory, the biggest and the newest files (one filesystem)."""
        try:
            return self.out(files.disk_usage(path, top=min(top, 50)))
        except OSError as exc:
            raise EvidenceError(f"cannot walk {path}: {exc.strerror}") from exc

    def open_files(self, pid: int) -> Any:
        """The files and sockets a process holds open."""
        return self.out({"pid": pid, "open": procfs.open_files(pid)[:500]})

    def who_has_open(self, path: str) -> Any:
        """The processes that hold ``path`` open (e.g. the writer of a log file)."""
        return self.out({"path": path, "pids": procfs.holders(path)[:50]})

    def take_core(self, pid: int, core_id: str) -> Any:
        """Write a core dump of a live process into the encrypted store (pauses the process meanwhile)."""
        return self.out(cores.take_core(pid, self.store, core_id))

    def backtraces(self, core_id: str) -> Any:
        """Every thread's backtrace in a stored core, read by gdb in corral's sandbox."""
        text = cores.read_backtraces(self.store, core_id)
        stacks = cores.parse_backtraces(text)
        if not stacks:
            raise CoreDumpError(f"gdb found no backtrace in core {core_id}: {text.strip()[-300:]}")
        return self.out({"core_id": core_id, **cores.termination(text), "threads": stacks[:64]})

    def import_core(self, path: str, core_id: str) -> Any:
        """Encrypt an existing core file (one a crash left) into the store, to read its backtraces."""
        return self.out(cores.import_core(path, self.store, core_id))

    def core_strings(self, core_id: str, pattern: str, limit: int = 50) -> Any:
        """Printable strings of a stored core that match ``pattern``; the scan runs in corral's sandbox."""
        from corral.sandbox import Limits, run_python_sync

        run = self.sandbox_run or run_python_sync
        with cores.private_dir() as work:
            # Handed over as bytes: the sandbox's unprivileged user cannot read the private directory.
            with self.store.decrypt_to(core_id, work / "core").open("rb") as f:
                data = f.read(256 << 20)
            result = run(
                cores.core_strings_job(pattern, limit),
                inputs={"core": data},
                limits=Limits(wall_seconds=30, cpu_seconds=20, memory_bytes=1 << 30),
            )
        if not result.ok:
            raise CoreDumpError(f"the core strings job failed: {result.stderr.strip()[-300:]}")
        return self.out({"core_id": core_id, "strings": cores.parse_strings_output(result.stdout, limit)})

    def read_only(self) -> list[Tool[..., Any]]:
        """The read-only tools as corral tools, each with a timeout (for an agent that explores)."""
        spec: list[tuple[Callable[..., Any], str, float, bool]] = [
            (self.node, "node_metrics", 10, False),
            (self.scrape, "scrape_metrics", 10, False),
            (self.processes, "processes", 15, False),
            (self.environment, "environment", 5, False),
            (self.watch, "watch_processes", 60, False),
            (self.sockets, "sockets", 15, False),
            (self.log, "read_log", 10, False),
            (self.journal, "journal", 15, False),
            (self.disk, "disk_usage", 15, False),
            (self.open_files, "open_files", 5, False),
            (self.who_has_open, "who_has_open", 15, False),
            (self.backtraces, "backtraces", 90, False),
            (self.core_strings, "core_strings", 60, False),
        ]
        return [
            tool(name=name, timeout=timeout, max_concurrency=2, needs_approval=ask)(fn)
            for fn, name, timeout, ask in spec
        ]
