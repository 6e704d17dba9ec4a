"""Remediations: typed actions that change the machine. None runs without a human's approval.

Each action is a pydantic model whose fields are the only thing a human approves (and may edit). The
agent proposes one from a hypothesis's own facts — a model can neither add an action nor change its
arguments — and runs it only after :func:`corral.guards.request_approval` returned an approval bound to
exactly these arguments. Each action also checks its target again right before it acts (the process
still has the name it had, the file is still the one that was measured), and refuses unsafe targets
(pid 1, this process and its parents, a path outside a regular file).
"""

from __future__ import annotations

import os
import shutil
import signal as _signal
import subprocess
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from corral.apps.ops_agent import _procfs as procfs
from corral.apps.ops_agent.errors import ActionError


class _Action(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def arguments(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"action"})


class KillProcess(_Action):
    """Send ``signal`` to ``pid`` if it is still the process named ``name``."""

    action: Literal["kill_process"] = "kill_process"
    pid: int = Field(gt=1)
    name: str = Field(max_length=64)
    signal: Literal["TERM", "KILL"] = "TERM"

    def run(self) -> str:
        protected = _ancestors(os.getpid())
        if self.pid in protected:
            raise ActionError(f"refusing to signal {self.pid}: it is this agent or one of its parents")
        info = procfs.read_process(self.pid, count_fds=False)
        if info is None:
            return f"process {self.pid} had already exited"
        if info.name != self.name:
            raise ActionError(f"process {self.pid} is now {info.name!r}, not {self.name!r}: not signalled")
        os.kill(self.pid, getattr(_signal, f"SIG{self.signal}"))
        return f"sent SIG{self.signal} to process {self.pid} ({self.name})"


class RestartUnit(_Action):
    """``systemctl restart UNIT``."""

    action: Literal["restart_unit"] = "restart_unit"
    unit: str = Field(pattern=r"^[A-Za-z0-9@._:-]{1,200}\.service$")

    def run(self) -> str:
        systemctl = shutil.which("systemctl")
        if systemctl is None:
            raise ActionError("systemctl is not installed here")
        done = subprocess.run([systemctl, "restart", self.unit], capture_output=True, timeout=60, check=False)
        if done.returncode != 0:
            raise ActionError(f"systemctl restart {self.unit} failed: {done.stderr.decode()[-300:]}")
        return f"restarted {self.unit}"


class TruncateFile(_Action):
    """Empty the regular file ``path`` (its writer keeps its descriptor, so deleting would free nothing)
    if it is still the file measured (``inode``)."""

    action: Literal["truncate_file"] = "truncate_file"
    path: str = Field(min_length=2, max_length=4096)
    inode: int

    def run(self) -> str:
        fd = os.open(self.path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
            if not Path(self.path).is_absolute() or st.st_ino != self.inode or not _is_regular(st.st_mode):
                raise ActionError(f"{self.path} is not the regular file that was measured: not truncated")
            freed = st.st_blocks * 512
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)
        return f"truncated {self.path}, freeing {freed / 2**20:.1f} MB"


class RaiseFileLimit(_Action):
    """Raise ``pid``'s open-files limit (RLIMIT_NOFILE) to ``soft``/``hard``."""

    action: Literal["raise_file_limit"] = "raise_file_limit"
    pid: int = Field(gt=1)
    soft: int = Field(gt=0, le=1 << 20)
    hard: int = Field(gt=0, le=1 << 20)

    def run(self) -> str:
        import resource

        resource.prlimit(self.pid, resource.RLIMIT_NOFILE, (self.soft, self.hard))
        return f"raised the open-files limit of {self.pid} to {self.soft}/{self.hard}"


#: Any remediation.
AnyAction = KillProcess | RestartUnit | TruncateFile | RaiseFileLimit
Action = Annotated[AnyAction, Field(discriminator="action")]
_ACTIONS: TypeAdapter[Action] = TypeAdapter(Action)


def parse_action(name: str, arguments: Any) -> AnyAction:
    """The action ``name`` with ``arguments`` (e.g. as a human edited them), validated strictly."""
    if not isinstance(arguments, dict):
        raise ActionError(f"the arguments of {name} must be an object")
    try:
        return _ACTIONS.validate_python({**arguments, "action": name})
    except ValueError as exc:
        raise ActionError(f"{name} with {arguments!r} is not a valid action: {exc}") from exc


def _is_regular(mode: int) -> bool:
    import stat

    return stat.S_ISREG(mode)


def _ancestors(pid: int) -> set[int]:
    found = {1, pid}
    while pid > 1:
        info = procfs.read_process(pid, count_fds=False)
        if info is None:
            break
        pid = info.ppid
        found.add(pid)
    return found
