"""Core dumps: take one from a live process (``gcore``), keep it encrypted, read backtraces with ``gdb``.

A core is untrusted input (the process that wrote it may be hostile, and gdb is a large parser), and it
holds the process's secrets. So:

- a core is written into a private directory, encrypted into the :class:`CoreStore` at once (AES-256-GCM
  in 1 MiB chunks, the key in a 0600 file apart from the cores) and the plaintext deleted;
- to read one, it is decrypted into a fresh private directory and ``gdb`` runs in batch mode in corral's
  sandbox, as a vetted command (``corral.sandbox.run_command_sync``): the core is a read-only input, gdb gets
  the sandbox's namespaces, seccomp filter (it cannot start another program), limits and output caps. The
  printable-strings scan of a core runs in the sandbox too, as a Python job.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, Field

from corral.apps.ops_agent.errors import CoreDumpError, CoreStoreError
from corral.sandbox import Limits, SandboxError, SandboxPool, run_command_sync

_MAGIC = b"CORRALCORE1\n"
_CHUNK = 1 << 20


class CoreStore:
    """Cores encrypted at rest under ``root`` (``<id>.core.enc``), with the key in ``key_file``.

    The key is 32 random bytes created on first use (mode 0600); keep it apart from backups of the cores.
    """

    def __init__(
        self, root: str | os.PathLike[str], *, key_file: str | os.PathLike[str] | None = None
    ) -> None:
        self.root = Path(root)
        self.key_file = Path(key_file) if key_file is not None else self.root / "core.key"

    def _key(self) -> bytes:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.key_file.exists():
            fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
        key = self.key_file.read_bytes()
        if len(key) != 32:
            raise CoreStoreError(f"the core key {self.key_file} is not 32 bytes: refusing to use it")
        return key

    def path(self, core_id: str) -> Path:
        if not re.fullmatch(r"[a-z0-9-]{1,64}", core_id):
            raise CoreStoreError(f"{core_id!r} is not a core id")
        return self.root / f"{core_id}.core.enc"

    def put(self, core_id: str, plaintext: Path) -> Path:
        """Encrypt ``plaintext`` into the store as ``core_id``; the plaintext is left to the caller."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        aead, base = AESGCM(self._key()), secrets.token_bytes(8)
        target = self.path(core_id)
        tmp = target.with_suffix(".tmp")
        size = plaintext.stat().st_size
        with (
            plaintext.open("rb") as src,
            open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out,
        ):
            out.write(_MAGIC + base)
            index = 0
            while True:
                chunk = src.read(_CHUNK)
                last = src.tell() >= size
                sealed = aead.encrypt(base + index.to_bytes(4, "big"), chunk, _aad(index, last))
                out.write(len(sealed).to_bytes(4, "big") + sealed)
                index += 1
                if last:
                    break
        tmp.replace(target)
        return target

    def decrypt_to(self, core_id: str, target: Path) -> Path:
        """Decrypt ``core_id`` into ``target`` (mode 0600); a tampered or cut file is refused."""
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        source = self.path(core_id)
        if not source.exists():
            raise CoreStoreError(f"no stored core {core_id!r} in {self.root}")
        aead = AESGCM(self._key())
        with (
            source.open("rb") as src,
            open(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out,
        ):
            if src.read(len(_MAGIC)) != _MAGIC:
                raise CoreStoreError(f"{source} is not an encrypted core")
            base, index, size = src.read(8), 0, source.stat().st_size
            while True:
                length = int.from_bytes(src.read(4), "big")
                sealed = src.read(length)
                last = src.tell() >= size
                try:
                    out.write(aead.decrypt(base + index.to_bytes(4, "big"), sealed, _aad(index, last)))
                except InvalidTag as exc:
                    raise CoreStoreError(f"{source} was altered or cut (chunk {index})") from exc
                index += 1
                if last:
                    return target


def _aad(index: int, last: bool) -> bytes:
    return index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


@contextlib.contextmanager
def private_dir() -> Iterator[Path]:
    """A fresh 0700 directory, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="corral-core-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class CoreRecord(BaseModel):
    """A stored core: its id, the process it came from, and its size."""

    core_id: str
    pid: int
    executable: str
    size_mb: float


def import_core(path: str, store: CoreStore, core_id: str) -> CoreRecord:
    """Encrypt the existing core file ``path`` (e.g. one a crash left) into ``store``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise CoreDumpError(f"cannot read the core {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb"):
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CoreDumpError(f"{path} is not a regular file")
        store.put(core_id, Path(f"/proc/self/fd/{fd}"))
    return CoreRecord(core_id=core_id, pid=0, executable="", size_mb=round(st.st_size / 2**20, 1))


def take_core(
    pid: int, store: CoreStore, core_id: str, *, timeout_s: float = 60.0, max_mb: int = 2048
) -> CoreRecord:
    """``gcore`` the live process ``pid`` (it pauses while the core is written) into ``store``."""
    gcore = shutil.which("gcore")
    if gcore is None:
        raise CoreDumpError("gcore is not installed (Debian package gdb)")
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        rss_kb = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError) as exc:
        raise CoreDumpError(f"process {pid} is gone or unreadable") from exc
    if rss_kb // 1024 > max_mb:
        raise CoreDumpError(f"process {pid} uses {rss_kb // 1024} MiB, above the core limit of {max_mb} MiB")
    with private_dir() as work:
        prefix = work / "core"
        try:
            done = subprocess.run(
                [gcore, "-o", str(prefix), str(pid)], capture_output=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise CoreDumpError(f"gcore of {pid} took more than {timeout_s:g} s") from exc
        written = work / f"core.{pid}"
        if done.returncode != 0 or not written.exists():
            tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [str(done.returncode)]
            raise CoreDumpError(f"gcore of {pid} failed: {tail[0][:300]}")
        size = written.stat().st_size
        store.put(core_id, written)
        if os.path.isfile(exe):
            with contextlib.suppress(OSError):
                shutil.copyfile(exe, store.root / f"{core_id}.exe")
    return CoreRecord(core_id=core_id, pid=pid, executable=exe, size_mb=round(size / 2**20, 1))


class Frame(BaseModel):
    """One frame of a backtrace: its function (``??`` when unknown) and the rest of gdb's line."""

    function: str
    detail: str = ""


class ThreadStack(BaseModel):
    """One thread's backtrace, innermost frame first."""

    number: int
    tid: int | None = None
    name: str = ""
    frames: list[Frame] = Field(default_factory=list)


_THREAD = re.compile(r"^Thread (\d+) \(.*?(?:LWP (\d+))?\)(?: \"([^\"]*)\")?\)?:")
_FRAME = re.compile(r"^#(\d+)\s+(?:0x[0-9a-f]+ in )?(\S+)\s*(.*)$")


def parse_backtraces(text: str, *, max_frames: int = 30) -> list[ThreadStack]:
    """gdb's ``thread apply all bt`` output as threads and frames (lines it does not know are skipped)."""
    threads: list[ThreadStack] = []
    for line in text.splitlines():
        m = _THREAD.match(line)
        if m:
            threads.append(
                ThreadStack(
                    number=int(m.group(1)), tid=int(m.group(2)) if m.group(2) else None, name=m.group(3) or ""
                )
            )
            continue
        f = _FRAME.match(line)
        if f and threads and len(threads[-1].frames) < max_frames:
            threads[-1].frames.append(Frame(function=f.group(2), detail=f.group(3)[:300]))
    if not threads:  # a single-threaded core prints no "Thread" header
        frames = [
            Frame(function=f.group(2), detail=f.group(3)[:300])
            for f in map(_FRAME.match, text.splitlines())
            if f
        ]
        if frames:
            threads.append(ThreadStack(number=1, frames=frames[:max_frames]))
    return threads


#: The one program the backtrace reader may run in the sandbox (a vetted command, see docs/sandbox.md).
GDB = "/usr/bin/gdb"
_GDB_ARGS = [
    "-batch",
    "-nx",
    "-iex",
    "set auto-load off",
    "-ex",
    "set pagination off",
    "-ex",
    "set print frame-arguments scalars",
    "-ex",
    "thread apply all bt 40",
]


def read_backtraces(
    store: CoreStore,
    core_id: str,
    *,
    timeout_s: float = 60.0,
    cpu_s: int = 60,
    memory_bytes: int = 1 << 30,
    max_output: int = 1 << 20,
    pool: SandboxPool | None = None,
) -> str:
    """gdb's threads and backtraces of the stored core ``core_id``, read in corral's sandbox (raw text).

    gdb runs as a vetted command (``corral.sandbox.run_command_sync``): the core and the program it came
    from are read-only inputs, gdb has no network, no host files but the system's, cannot start another
    program, and runs under the sandbox's limits. A first reading finds the program the core names; the
    program (when anybody may read it) is kept beside the core for its symbols, and a second reading uses it.
    """
    if not os.path.isfile(GDB):
        raise CoreDumpError(f"gdb is not installed at {GDB} (Debian package gdb)")
    limits = Limits(
        wall_seconds=timeout_s,
        cpu_seconds=cpu_s,
        memory_bytes=memory_bytes,
        output_bytes=max_output,
        scratch_bytes=16 << 20,
        file_size_bytes=16 << 20,
    )
    with private_dir() as work:
        core = store.decrypt_to(core_id, work / "core")
        # The sandbox's uid reopens its inputs through /proc/self/fd, which checks the file's own mode; the
        # directory around it stays private (0700), so no host user can reach the plaintext.
        os.chmod(core, 0o444)
        exe_copy = store.root / f"{core_id}.exe"
        if not exe_copy.exists():
            text = _gdb([GDB, *_GDB_ARGS, "-c", "/data/core"], {"core": core}, limits, pool)
            named = executable_of(text)
            if named is None:
                return text
            shutil.copyfile(named, exe_copy)  # symbols for the frames, and for the next reading
        os.chmod(exe_copy, 0o444)
        inputs: dict[str, str | os.PathLike[str]] = {"core": core, "exe": exe_copy}
        return _gdb([GDB, *_GDB_ARGS, "/data/exe", "/data/core"], inputs, limits, pool)


def _gdb(
    argv: list[str], inputs: dict[str, str | os.PathLike[str]], limits: Limits, pool: SandboxPool | None
) -> str:
    try:
        result = run_command_sync(argv, allow=[GDB], inputs=inputs, limits=limits, pool=pool)
    except SandboxError as exc:
        raise CoreDumpError(f"gdb could not run in the sandbox: {exc}") from exc
    if result.limit is not None:
        raise CoreDumpError(f"gdb was stopped by the sandbox's {result.limit} limit while reading the core")
    return result.stdout


_GENERATED_BY = re.compile(r"^Core was generated by `([^ `']+)", re.MULTILINE)


def executable_of(gdb_text: str) -> str | None:
    """The program a core names (``Core was generated by `…```), if it is one anybody may read and run:
    the core is untrusted, so the path it names must not make root copy a private file for gdb."""
    m = _GENERATED_BY.search(gdb_text)
    if m is None or not m.group(1).startswith("/"):
        return None
    try:
        fd = os.open(m.group(1), os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        regular = stat.S_ISREG(st.st_mode) and st.st_mode & 0o005 == 0o005
        return m.group(1) if regular and f.read(4) == b"\x7fELF" else None


_SIGNAL = re.compile(r"^Program terminated with signal (SIG[A-Z0-9]+), ([^.\n]{0,80})", re.MULTILINE)
_CURRENT = re.compile(r"^\[Current thread is (\d+)", re.MULTILINE)


def termination(gdb_text: str) -> dict[str, str | int]:
    """The signal that ended the process, and the thread it hit, when the core says (a crash's core does;
    one taken with gcore does not)."""
    m = _SIGNAL.search(gdb_text)
    if m is None:
        return {}
    current = _CURRENT.search(gdb_text)
    return {
        "signal": m.group(1),
        "signal_text": m.group(2),
        "thread": int(current.group(1)) if current else 1,
    }


def core_strings_job(pattern: str, limit: int) -> str:
    """The sandbox job that lists printable strings (8+ characters) of ``/data/core`` matching
    ``pattern``, as JSON on stdout."""
    return (
        "import json, re\n"
        f"pattern = re.compile({pattern.encode()!r}, re.IGNORECASE)\n"
        "found, seen = [], set()\n"
        "with open('/data/core', 'rb') as f:\n"
        "    data = f.read(256 << 20)\n"
        "for m in re.finditer(rb'[\\x20-\\x7e]{8,}', data):\n"
        "    s = m.group()[:300]\n"
        "    if s not in seen and pattern.search(s):\n"
        "        seen.add(s)\n"
        "        found.append(s.decode('ascii'))\n"
        f"        if len(found) >= {int(limit)}:\n"
        "            break\n"
        "print(json.dumps(found))\n"
    )


def parse_strings_output(stdout: str, limit: int) -> list[str]:
    """The sandbox job's output, parsed strictly (a list of at most ``limit`` short strings)."""
    try:
        value = json.loads(stdout)
    except json.JSONDecodeError as exc:
        raise CoreDumpError("the core strings job printed something that is not JSON") from exc
    if (
        not isinstance(value, list)
        or len(value) > limit
        or not all(isinstance(s, str) and len(s) <= 300 for s in value)
    ):
        raise CoreDumpError("the core strings job printed an unexpected shape")
    return value
