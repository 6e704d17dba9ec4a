"""PostgreSQL through the sandbox, against a real server (``CORRAL_TEST_POSTGRES_URL``, set by
``scripts/_setup.sh``; CI has it, a machine without it skips these tests).

The job stays without network: the host relays one connection to the server the URL names.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from corral.apps.data_agent import DataAgent, _run, load_schema, open_source
from corral.apps.data_agent._pg_relay import Relay, open_relay, parse_url
from corral.apps.data_agent._sandbox_runner import SandboxQueryRunner
from corral.apps.data_agent._sources import without_password
from corral.apps.data_agent.errors import QueryRunnerError, SourceError
from corral.durable import Runtime, SqliteJournal
from corral.sandbox import run_python

from .conftest import routed_model

URL = os.environ.get("CORRAL_TEST_POSTGRES_URL", "")
needs_postgres = pytest.mark.skipif(not URL, reason="no PostgreSQL server to test (CORRAL_TEST_POSTGRES_URL)")
pytestmark = pytest.mark.sandbox


def _with(
    url: str, *, password: str | None = None, port: int | None = None, dbname: str | None = None
) -> str:
    """``url`` with another password, port or database."""
    parts = urlsplit(url)
    user = parts.username or ""
    netloc = f"{user}:{password if password is not None else parts.password}@{parts.hostname}"
    netloc += f":{port if port is not None else parts.port}"
    path = f"/{dbname}" if dbname is not None else parts.path
    return urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment))


def _admin(sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Set-up and checks, straight to the server (the test's own trusted SQL, not the product's path)."""
    import psycopg

    with psycopg.connect(URL, autocommit=True) as conn:
        cur = conn.execute(sql, args or None)
        return cur.fetchall() if cur.description else []


@pytest.fixture(scope="module")
def sales() -> Iterator[str]:
    """A small table of our own in the test database (a unique name: runs may share the server)."""
    if not URL:
        pytest.skip("no PostgreSQL server to test (CORRAL_TEST_POSTGRES_URL)")
    name = f"corral_sales_{secrets.token_hex(4)}"
    _admin(f"CREATE TABLE {name} (id integer PRIMARY KEY, region text NOT NULL, amount numeric(10, 2))")
    _admin(
        f"INSERT INTO {name} VALUES (1, 'north', 10.50), (2, 'south', 4.00), (3, 'north', 7.25), "
        "(4, 'east', 1.00)"
    )
    try:
        yield name
    finally:
        _admin(f"DROP TABLE IF EXISTS {name}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@needs_postgres
async def test_a_query_and_the_schema_scan_run_in_the_sandbox(sales: str) -> None:
    runner = SandboxQueryRunner(open_source(URL))
    result = await runner.run(f"SELECT region, SUM(amount) AS total FROM {sales} GROUP BY region ORDER BY 1")
    assert result.ok, result.error
    assert result.columns == ["region", "total"]
    assert result.rows == [["east", 1.0], ["north", 17.75], ["south", 4.0]]
    # Rows beyond the cap are counted by the server, not transferred.
    capped = await runner.run("SELECT g FROM generate_series(1, 5000) g", max_rows=3)
    assert capped.rows == [[1], [2], [3]] and capped.row_count == 5000
    schema = await load_schema(runner, use_cache=False)
    table = schema.table(sales)
    assert table is not None
    assert [c.name for c in table.columns] == ["id", "region", "amount"]
    assert table.row_count == 4


@needs_postgres
async def test_writes_are_refused_and_the_data_is_unchanged(sales: str) -> None:
    runner = SandboxQueryRunner(open_source(URL))
    victim = f"corral_created_{secrets.token_hex(4)}"
    attempts = [
        f"INSERT INTO {sales} VALUES (9, 'west', 1)",
        f"CREATE TABLE {victim} (x int)",
        f"SELECT 1; DROP TABLE {sales}",
        f"SET TRANSACTION READ WRITE; DELETE FROM {sales}; COMMIT",
        "SET TRANSACTION READ WRITE",
        f"WITH gone AS (DELETE FROM {sales} RETURNING *) SELECT * FROM gone",
        f"SELECT set_config('transaction_read_only', 'off', false), (SELECT COUNT(*) FROM {sales})",
        f"COPY {sales} TO STDOUT",
    ]
    for sql in attempts:
        # Straight to the runner: past the agent's own read-only check, the sandboxed session refuses.
        result = await runner.run(sql)
        assert not result.ok, sql
    assert _admin(f"SELECT id, region, amount::float8 FROM {sales} ORDER BY id") == [
        (1, "north", 10.5),
        (2, "south", 4.0),
        (3, "north", 7.25),
        (4, "east", 1.0),
    ]
    assert _admin("SELECT to_regclass(%s)", victim) == [(None,)]
    refused = await runner.write(f"DELETE FROM {sales}")
    assert not refused.ok and "not supported" in (refused.error or "")


@needs_postgres
async def test_the_job_reaches_the_server_and_nothing_else(sales: str) -> None:
    # A live TCP listener on the host, and the server itself: with the relay up, the job still cannot open a
    # TCP socket to either; it only talks through the descriptor it was given.
    listener = socket.create_server(("127.0.0.1", 0))
    target = parse_url(URL)
    code = f"""
import os, socket, struct
fd = int(os.readlink("/data/pg").rsplit("/", 1)[1])
pg = socket.socket(fileno=fd)
pg.sendall(struct.pack("!ii", 8, 80877103))  # SSLRequest: any PostgreSQL server answers one byte
print("server says", pg.recv(1) in (b"S", b"N"))
for port in ({listener.getsockname()[1]}, {target.port}):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2)
        print("OPEN", port)
    except OSError as exc:
        print("denied", exc.errno)
"""
    relay = await asyncio.to_thread(open_relay, target, 30)
    try:
        result = await run_python(code, sockets={"pg": relay.job_end})
    finally:
        await asyncio.to_thread(relay.close)
        listener.close()
    assert result.stdout.splitlines() == ["server says True", "denied 1", "denied 1"], result.stderr
    assert relay.bytes_up == 8 and relay.bytes_down == 1
    assert not relay._thread.is_alive()


def test_a_relay_ends_when_its_lifetime_is_over() -> None:
    server, upstream = socket.socketpair()  # stands in for the server's connection: only bytes are relayed
    relay = Relay(upstream, lifetime=0.5)
    with server, relay.job_end:
        relay.job_end.sendall(b"hello")
        server.settimeout(5)
        assert server.recv(5) == b"hello"
        start = time.monotonic()
        assert server.recv(1) == b""  # closed by the relay once its lifetime is over
        assert time.monotonic() - start < 3
    relay._thread.join(timeout=5)
    assert not relay._thread.is_alive()


@needs_postgres
async def test_the_password_stays_out_of_errors_and_code(sales: str) -> None:
    password = "pw-" + secrets.token_hex(8)
    runner = SandboxQueryRunner(open_source(_with(URL, password=password)))
    seen: list[str] = []
    real = runner._sandbox

    class Recording:
        """The real sandbox module, recording the code text of each job."""

        async def run_python(self, code: str, **kwargs: Any) -> Any:
            seen.append(code)
            return await real.run_python(code, **kwargs)

    runner._sandbox = Recording()
    with pytest.raises(QueryRunnerError) as failed:
        await runner.run("SELECT 1")
    assert "password authentication failed" in str(failed.value)
    with pytest.raises(QueryRunnerError) as failed_scan:
        await runner.describe()
    for message in (str(failed.value), str(failed_scan.value), runner.source.describe()):
        assert password not in message
    assert seen and all(password not in code for code in seen)


@needs_postgres
async def test_an_unreachable_server_or_a_missing_database_is_a_clear_error() -> None:
    start = time.monotonic()
    with pytest.raises(QueryRunnerError, match=r"cannot reach the PostgreSQL server at 127\.0\.0\.1:\d+"):
        await SandboxQueryRunner(open_source(_with(URL, port=_free_port()))).run("SELECT 1")
    assert time.monotonic() - start < 2
    # A server that accepts and then says nothing: the URL's connect_timeout bounds the wait, on the host
    # (TLS asked for: the host waits for the answer to its SSLRequest) and in the job (libpq, at least 2 s).
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        for query, bound in (("sslmode=require", 2.0), ("sslmode=disable", 4.0)):
            start = time.monotonic()
            url = f"postgresql://u:secret-pw@127.0.0.1:{port}/db?connect_timeout=1&{query}"
            with pytest.raises(QueryRunnerError, match=r"did not answer|timeout expired") as failed:
                await SandboxQueryRunner(open_source(url)).run("SELECT 1")
            assert time.monotonic() - start < bound and "secret-pw" not in str(failed.value)
    missing = f"corral_missing_{secrets.token_hex(3)}"
    with pytest.raises(QueryRunnerError, match=f'database "{missing}" does not exist'):
        await SandboxQueryRunner(open_source(_with(URL, dbname=missing))).run("SELECT 1")


@needs_postgres
async def test_the_data_agent_answers_over_postgres(sales: str) -> None:
    model = routed_model(
        [f"```sql\nSELECT region, SUM(amount) AS total FROM {sales} GROUP BY region ORDER BY total DESC\n```"]
    )
    agent = DataAgent(model=model, runner=SandboxQueryRunner(open_source(URL)))
    answer = await agent.ask("Total amount per region, largest first?")
    assert answer.status == "answered", answer.answer
    assert answer.rows == [["north", 17.75], ["south", 4.0], ["east", 1.0]]
    assert answer.sql is not None and sales in answer.sql


def _all_bytes(folder: Path) -> bytes:
    """Every byte of the journal's files (the database, its WAL and shared memory)."""
    return b"".join(p.read_bytes() for p in folder.iterdir() if p.name.startswith("journal.sqlite"))


@needs_postgres
async def test_the_journal_keeps_the_url_without_its_password(
    sales: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = parse_url(URL).job_params.get("password")
    assert password, "the test server's URL carries a password"
    model = routed_model([f"```sql\nSELECT COUNT(*) AS n FROM {sales}\n```"])
    monkeypatch.setattr(_run, "make_model", lambda name: model)
    monkeypatch.setattr(_run, "_models", {})
    journal = tmp_path / "journal.sqlite"
    rt = Runtime(SqliteJournal(journal))
    answer = await _run.ask("How many sales?", db=URL, runtime=rt, run_id="pg-secret", charts=False)
    rt.close()
    assert answer.status == "answered", answer.answer
    raw = _all_bytes(tmp_path)
    # (The test role's password may equal its name, so look for the URL's user:password@ part.)
    assert f":{password}@".encode() not in raw and without_password(URL).encode() in raw


def test_urls_are_parsed_on_the_host_with_tls_as_sslmode_says() -> None:
    assert parse_url("postgresql://a:b@127.0.0.1:5433/d").tls == "off"  # loopback: plain by default
    assert parse_url("postgresql://a:b@localhost/d?sslmode=require").tls == "require"
    remote = parse_url("postgresql://a:b@db.example/d")
    assert (remote.tls, remote.sslmode, remote.port) == ("try", "prefer", 5432)  # libpq's default, prefer
    assert parse_url("postgresql://a:b@db.example/d?sslmode=disable").tls == "off"
    full = parse_url("postgresql://a:b@db.example/d?sslmode=verify-full&application_name=x")
    assert full.tls == "require" and full.job_params == {
        "user": "a",
        "password": "b",
        "dbname": "d",
        "application_name": "x",
    }
    with pytest.raises(SourceError, match="channel_binding=require"):
        parse_url("postgresql://a:b@db.example/d?channel_binding=require")
    with pytest.raises(SourceError, match="several hosts"):
        parse_url("postgresql://a:b@h1,h2/d")
    with pytest.raises(SourceError, match="sslmode") as bad:
        parse_url("postgresql://a:sekrit@h/d?sslmode=sometimes")
    assert "sekrit" not in str(bad.value)


# -- TLS, against a private server of our own that accepts TLS connections only ----------------------------


def _initdb() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1] if found and shutil.which("openssl") and shutil.which("runuser") else None


def _openssl(folder: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)


def _certificates(folder: Path) -> None:
    """A test CA, and a server certificate it signed for localhost and 127.0.0.1."""
    ca = "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
    _openssl(folder, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=corral CA",
             "-keyout", "ca.key", "-out", "ca.crt", *ca.split())  # fmt: skip
    _openssl(folder, "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
             "-keyout", "server.key", "-out", "server.csr")  # fmt: skip
    (folder / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl(folder, "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-out", "server.crt", "-extfile", "ext.cnf")  # fmt: skip


@pytest.fixture(scope="module")
def tls_server() -> Iterator[tuple[int, Path]]:
    """A throw-away PostgreSQL cluster (port, CA file) whose pg_hba.conf admits TLS connections only."""
    initdb = _initdb()
    if initdb is None or os.geteuid() != 0:
        pytest.skip("needs root, PostgreSQL's initdb and openssl")
    folder = Path(tempfile.mkdtemp(prefix="corral-pg-tls-"))
    as_postgres = ["runuser", "-u", "postgres", "--"]
    pg_ctl = [*as_postgres, str(initdb.parent / "pg_ctl"), "-D", str(folder / "data")]
    try:
        _certificates(folder)
        shutil.chown(folder, "postgres")
        for name in ("server.key", "server.crt"):
            shutil.chown(folder / name, "postgres")
        (folder / "server.key").chmod(0o600)
        subprocess.run([*as_postgres, str(initdb), "-D", str(folder / "data"), "-U", "admin", "--auth=trust"],
                       check=True, capture_output=True)  # fmt: skip
        (folder / "data" / "pg_hba.conf").write_text(
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n"
        )
        port = _free_port()
        options = (
            f"-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={folder} -c ssl=on "
            f"-c ssl_cert_file={folder}/server.crt -c ssl_key_file={folder}/server.key"
        )
        subprocess.run([*pg_ctl, "-w", "-l", str(folder / "log"), "-o", options, "start"], check=True,
                       capture_output=True)  # fmt: skip
        psql = [*as_postgres, str(initdb.parent / "psql"), "-h", str(folder), "-p", str(port), "-U", "admin"]
        subprocess.run([*psql, "-d", "postgres", "-c", "CREATE ROLE reader LOGIN PASSWORD 'tls-pw'"],
                       check=True, capture_output=True)  # fmt: skip
        yield port, folder / "ca.crt"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
async def test_tls_is_done_on_the_host_as_sslmode_says(tls_server: tuple[int, Path]) -> None:
    port, ca = tls_server
    base = f"postgresql://reader:tls-pw@127.0.0.1:{port}/postgres"
    # The server refuses plain connections: this answer went through TLS, verified against the test CA.
    verified = SandboxQueryRunner(open_source(f"{base}?sslmode=verify-full&sslrootcert={ca}"))
    result = await verified.run("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    assert result.ok and result.rows[0][0] is True and result.rows[0][1].startswith("TLS"), result
    assert (await SandboxQueryRunner(open_source(f"{base}?sslmode=require")).run("SELECT 1")).rows == [[1]]
    # Loopback without sslmode stays plain, which this server refuses (as it would refuse libpq).
    with pytest.raises(QueryRunnerError, match="no encryption"):
        await SandboxQueryRunner(open_source(base)).run("SELECT 1")
    # verify-full against a CA that did not sign the server's certificate: refused on the host.
    with pytest.raises(QueryRunnerError, match="certificate verify failed"):
        await SandboxQueryRunner(open_source(f"{base}?sslmode=verify-full&sslrootcert=system")).run(
            "SELECT 1"
        )
