"""The host's half of a PostgreSQL session from the sandbox: one connection to one server, relayed.

A sandbox job has no network (its own network namespace, and a seccomp filter that lets it create AF_UNIX
sockets only). So the host opens the one connection the URL names — TCP to its host and port, or the server's
Unix socket when the host is a directory — does the TLS handshake there when the URL asks for TLS, and relays
plaintext bytes between that connection and one end of a ``socket.socketpair()``. The other end goes into the
job, where :mod:`._driver` lets libpq connect through it. The relay never interprets what it copies (but for
one rewrite during authentication over TLS, see :class:`AuthFilter`), and lives at most ``lifetime`` seconds.

>>> target = parse_url("postgresql://ana:s3cret@db.example:6543/shop?sslmode=verify-full")
>>> target.where, target.tls, target.job_params["dbname"]
('db.example:6543', 'require', 'shop')
>>> parse_url("postgresql://ana@127.0.0.1/shop").tls
'off'
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import select
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from corral.apps.data_agent.errors import QueryRunnerError, SourceError

#: The SSLRequest message (length 8, code 80877103): asks the server to switch to TLS.
_SSL_REQUEST = struct.pack("!ii", 8, 80877103)
#: Connection parameters the job's libpq gets; the others (host, port, TLS) are the host's business.
_JOB_PARAMS = ("user", "password", "dbname", "options", "application_name", "client_encoding")
_DEFAULT_CONNECT_TIMEOUT = 10.0

Tls = Literal["off", "try", "require"]


@dataclass(frozen=True)
class PgTarget:
    """Where the server is and how to reach it, parsed from the URL on the host."""

    host: str  # a name, an address, or a Unix socket directory
    port: int
    hostaddr: str | None = None
    tls: Tls = "off"
    sslmode: str = "disable"
    sslrootcert: str | None = None
    sslcert: str | None = None
    sslkey: str | None = None
    connect_timeout: float = _DEFAULT_CONNECT_TIMEOUT
    job_params: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        """``host:port`` (or the socket path) for messages; never the password."""
        if self.host.startswith("/"):
            return f"{self.host}/.s.PGSQL.{self.port}"
        return f"{self.host}:{self.port}"


def _is_loopback(host: str) -> bool:
    if host.startswith("/") or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _tls_for(sslmode: str | None, host: str) -> tuple[Tls, str]:
    """What TLS to do on the host for ``sslmode`` (libpq's meaning), and the effective mode.

    Unset: like libpq's ``prefer`` (try TLS, else plain) — except on loopback, where it stays plain.
    """
    mode = sslmode or ("disable" if _is_loopback(host) else "prefer")
    if host.startswith("/") or mode in ("disable", "allow"):
        # libpq does no TLS over Unix sockets either; "allow" starts plain.
        return "off", mode
    if mode == "prefer":
        return "try", mode
    if mode in ("require", "verify-ca", "verify-full"):
        return "require", mode
    raise SourceError(f"unknown sslmode {mode!r} (disable, allow, prefer, require, verify-ca, verify-full)")


def _default_socket_dir(port: int) -> str:
    for directory in ("/var/run/postgresql", "/tmp"):
        if Path(directory, f".s.PGSQL.{port}").exists():
            return directory
    return "localhost"


def parse_url(url: str) -> PgTarget:
    """Parse a ``postgresql://`` URL (or a libpq ``key=value`` string) with libpq's own parser.

    Raises :class:`SourceError`, without the password, when it names nothing one relay can reach (several
    hosts, a bad port, an unknown sslmode).
    """
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError as exc:  # pragma: no cover - CI installs the postgres extra
        raise SourceError("PostgreSQL sources need psycopg: pip install 'corral[postgres]'") from exc
    try:
        params = {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None}
    except Exception:
        # libpq's parse error may quote the part it choked on, which could be the password: say less.
        raise SourceError("not a valid PostgreSQL URL: postgresql://USER:PASSWORD@HOST:PORT/DBNAME") from None
    host = params.get("host") or ""
    if "," in host or "," in params.get("port", ""):
        raise SourceError("a PostgreSQL URL with several hosts is not supported: name one server")
    try:
        port = int(params.get("port") or 5432)
        connect_timeout = float(params.get("connect_timeout") or _DEFAULT_CONNECT_TIMEOUT)
    except ValueError:
        raise SourceError("the PostgreSQL URL's port or connect_timeout is not a number") from None
    if params.get("channel_binding") == "require" or params.get("gssencmode") == "require":
        # TLS ends on the host, which relays plaintext to the job: the job's SCRAM cannot be bound to it.
        raise SourceError(
            "channel_binding=require and gssencmode=require are not supported (TLS is done by the host, "
            "which relays to the sandbox); use sslmode=verify-full to authenticate the server"
        )
    host = host or _default_socket_dir(port)
    tls, mode = _tls_for(params.get("sslmode"), host)
    return PgTarget(
        host=host,
        port=port,
        hostaddr=params.get("hostaddr") or None,
        tls=tls,
        sslmode=mode,
        sslrootcert=params.get("sslrootcert") or None,
        sslcert=params.get("sslcert") or None,
        sslkey=params.get("sslkey") or None,
        connect_timeout=max(connect_timeout, 1.0),
        job_params=_job_params(params),
    )


def _job_params(params: dict[str, str]) -> dict[str, str]:
    """What the job's libpq needs (user, password, database...), with libpq's defaults taken on the host:
    the job sees none of the host's environment."""
    import getpass

    job = {k: params[k] for k in _JOB_PARAMS if params.get(k)}
    job.setdefault("user", os.environ.get("PGUSER") or getpass.getuser())
    if "password" not in job and os.environ.get("PGPASSWORD"):
        job["password"] = os.environ["PGPASSWORD"]
    return job


# -- connecting --------------------------------------------------------------------------------------------


def connect(target: PgTarget) -> socket.socket:
    """The one connection to the server, TLS done when ``target.tls`` asks for it; raises
    :class:`QueryRunnerError` saying what failed (host and port, never the password)."""
    try:
        sock = _open(target)
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError | socket.timeout):
            reason = f"no answer within {target.connect_timeout:g} s"
        raise QueryRunnerError(f"cannot reach the PostgreSQL server at {target.where}: {reason}") from None
    if target.tls == "off":
        return sock
    try:
        return _start_tls(sock, target)
    except BaseException:
        sock.close()
        raise


def _open(target: PgTarget) -> socket.socket:
    if target.host.startswith("/"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(target.connect_timeout)
        try:
            sock.connect(f"{target.host}/.s.PGSQL.{target.port}")
        except BaseException:
            sock.close()
            raise
        return sock
    return socket.create_connection((target.hostaddr or target.host, target.port), target.connect_timeout)


def _tls_context(target: PgTarget) -> ssl.SSLContext:
    """Verification as libpq's sslmode says: verify-full checks the chain and the name, verify-ca the chain,
    require and prefer nothing (unless a root certificate is named, which makes require act as verify-ca)."""
    verify = target.sslmode in ("verify-ca", "verify-full") or (
        target.sslmode == "require" and target.sslrootcert not in (None, "system")
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = target.sslmode == "verify-full"
    ctx.verify_mode = ssl.CERT_REQUIRED if verify else ssl.CERT_NONE
    if verify:
        root = target.sslrootcert or str(Path.home() / ".postgresql" / "root.crt")
        if root != "system" and Path(root).is_file():
            ctx.load_verify_locations(cafile=root)
        else:
            ctx.load_default_certs()
    if target.sslcert:
        ctx.load_cert_chain(target.sslcert, target.sslkey)
    return ctx


def _start_tls(sock: socket.socket, target: PgTarget) -> socket.socket:
    """PostgreSQL's SSLRequest, then the TLS handshake (``tls="try"`` falls back to plain on a "no")."""
    try:
        sock.sendall(_SSL_REQUEST)
        answer = sock.recv(1)
    except TimeoutError:
        raise QueryRunnerError(
            f"the PostgreSQL server at {target.where} did not answer within {target.connect_timeout:g} s"
        ) from None
    except OSError as exc:
        raise QueryRunnerError(
            f"the PostgreSQL server at {target.where} closed the connection: {exc}"
        ) from None
    if answer == b"N" and target.tls == "try":
        return sock
    if answer == b"N":
        raise QueryRunnerError(
            f"the PostgreSQL server at {target.where} does not accept TLS, and sslmode={target.sslmode} "
            "requires it (use sslmode=disable or prefer to connect without TLS)"
        )
    if not answer:
        raise QueryRunnerError(f"the PostgreSQL server at {target.where} closed the connection")
    if answer != b"S":
        raise QueryRunnerError(f"{target.where} did not answer like a PostgreSQL server ({answer!r})")
    try:
        # The URL's host (a name or an address) is what verify-full checks, also when hostaddr is given.
        return _tls_context(target).wrap_socket(sock, server_hostname=target.host)
    except (ssl.SSLError, ssl.CertificateError, OSError, ValueError) as exc:
        raise QueryRunnerError(
            f"TLS with the PostgreSQL server at {target.where} failed (sslmode={target.sslmode}): {exc}"
        ) from None


# -- relaying ----------------------------------------------------------------------------------------------


class AuthFilter:
    r"""Rewrites the server's side of the authentication exchange on a TLS session the host terminates.

    Over TLS a server offers SCRAM-SHA-256-PLUS (SCRAM bound to the TLS channel). The job's libpq sees a
    Unix socket, not TLS, and rightly refuses a PLUS offer there ("perhaps SSL was stripped by a proxy") —
    which the host is, on purpose. So the host removes PLUS from the offer; libpq then runs plain SCRAM and
    says it has no channel binding ("n"), which servers accept. The TLS session itself was verified by the
    host as sslmode says. Once authentication ends (AuthenticationOk or an error) bytes pass unchanged.

    >>> offer = b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0"
    >>> f = AuthFilter()
    >>> f.feed(b"R" + (8 + len(offer)).to_bytes(4, "big") + (10).to_bytes(4, "big") + offer[:9])
    b''
    >>> f.feed(offer[9:])
    b'R\x00\x00\x00\x17\x00\x00\x00\nSCRAM-SHA-256\x00\x00'
    >>> f.done
    False
    """

    _MAX_MESSAGE = 64 * 1024  # authentication messages are small; anything else is passed on unchanged

    def __init__(self) -> None:
        self.done = False
        self._buffer = b""

    def feed(self, data: bytes) -> bytes:
        """The bytes to forward to the job for ``data`` from the server (held back until whole messages)."""
        if self.done:
            return data
        self._buffer += data
        out = bytearray()
        while not self.done and len(self._buffer) >= 5:
            kind = self._buffer[:1]
            size = struct.unpack("!I", self._buffer[1:5])[0]
            if size > self._MAX_MESSAGE:
                self.done = True
                break
            if len(self._buffer) < 1 + size:
                break
            message, self._buffer = self._buffer[: 1 + size], self._buffer[1 + size :]
            code = struct.unpack("!I", message[5:9])[0] if kind == b"R" and size >= 8 else None
            if code == 10:  # AuthenticationSASL: the mechanisms offered
                message = _without_plus(message)
            # AuthenticationOk (0) or an ErrorResponse ends authentication.
            self.done = code == 0 or kind == b"E"
            out += message
        if self.done:
            out += self._buffer
            self._buffer = b""
        return bytes(out)


def _without_plus(message: bytes) -> bytes:
    names = [n for n in message[9:].split(b"\0") if n]
    kept = [n for n in names if n != b"SCRAM-SHA-256-PLUS"] or names
    body = message[5:9] + b"".join(n + b"\0" for n in kept) + b"\0"
    return b"R" + struct.pack("!I", 4 + len(body)) + body


class Relay:
    """Copies bytes between the server connection and the host's end of a socket pair, in one thread.

    ``job_end`` is the end for the sandbox job. The thread ends when either side closes, on any error, or
    after ``lifetime`` seconds; :meth:`close` (after the job) ends it and closes everything.
    """

    def __init__(self, upstream: socket.socket, lifetime: float) -> None:
        self.upstream = upstream
        self.host_end, self.job_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.bytes_up = 0
        self.bytes_down = 0
        self._deadline = time.monotonic() + lifetime
        self._auth = AuthFilter() if isinstance(upstream, ssl.SSLSocket) else None
        self._closing = threading.Lock()  # the thread closes its sockets while close() may shut one down
        self._thread = threading.Thread(target=self._pump, name="corral-pg-relay", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            self._copy()
        except OSError:
            pass  # a reset or a timeout ends the session; the job sees its connection close
        finally:
            with self._closing:
                for sock in (self.upstream, self.host_end):
                    with contextlib.suppress(OSError):
                        sock.close()

    def _copy(self) -> None:
        up, down = self.upstream, self.host_end
        while (remaining := self._deadline - time.monotonic()) > 0:
            for sock in (up, down):
                sock.settimeout(remaining)  # bounds a send to a peer that stopped reading
            # TLS may hold decrypted bytes that select() cannot see.
            pending = isinstance(up, ssl.SSLSocket) and up.pending() > 0
            ready = [up] if pending else select.select([up, down], [], [], min(remaining, 1.0))[0]
            for src in ready:
                data = src.recv(65536)
                if not data:
                    return
                if src is up:
                    self.bytes_down += len(data)
                    if self._auth is not None:
                        data = self._auth.feed(data)
                        self._auth = None if self._auth.done else self._auth
                    down.sendall(data)
                else:
                    self.bytes_up += len(data)
                    up.sendall(data)

    def close(self) -> None:
        """End the relay (the job has finished) and wait for its thread."""
        self.job_end.close()
        # The job's copy is gone with the job, so the host end reads EOF; shutting it down also wakes select.
        with self._closing, contextlib.suppress(OSError):
            self.host_end.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_relay(target: PgTarget, lifetime: float) -> Relay:
    """Connect to ``target`` (blocking: call it in a thread) and start relaying."""
    return Relay(connect(target), lifetime)
