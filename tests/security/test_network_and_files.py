"""Attacks on the network, the host's files and secrets, and the result collector."""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path

import pytest

from corral.sandbox import SandboxPool

from .conftest import AS_ROOT, Sandbox, Secrets

ROOT = Path(__file__).resolve().parents[2]


def attempt(body: str) -> str:
    """Wrap an attack: print ESCAPED if the body completes, BLOCKED and the error if it raises."""
    return (
        "try:\n"
        + textwrap.indent(textwrap.dedent(body), "    ")
        + "\n    print('ESCAPED')\nexcept Exception as exc:\n"
        + "    print('BLOCKED', type(exc).__name__, exc)\n"
    )


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)", id="tcp-connect"),
        pytest.param(
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.sendto(b'x', ('8.8.8.8', 53))",
            id="udp-send",
        ),
        pytest.param("import socket\nsocket.getaddrinfo('example.com', 443)", id="dns-lookup"),
        pytest.param(
            "import socket\nsocket.create_connection(('169.254.169.254', 80), timeout=2)", id="metadata"
        ),
        pytest.param(
            "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)", id="raw"
        ),
        pytest.param("import socket\nsocket.socket(socket.AF_PACKET, socket.SOCK_RAW)", id="packet-socket"),
        pytest.param("import socket\nsocket.socket(socket.AF_INET6, socket.SOCK_STREAM)", id="ipv6"),
    ],
)
def test_network_is_unreachable(sandbox: Sandbox, body: str) -> None:
    result = sandbox.run(attempt(body))
    assert result.stdout.startswith("BLOCKED"), result.stdout + result.stderr


def test_host_loopback_service_is_unreachable(sandbox: Sandbox) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.settimeout(0.5)
    try:
        result = sandbox.run(
            attempt(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)")
        )
        assert result.stdout.startswith("BLOCKED"), result.stdout
        with pytest.raises(TimeoutError):
            server.accept()  # nothing ever connected
    finally:
        server.close()


@pytest.mark.parametrize(
    "path_of",
    [
        pytest.param(lambda s: "/etc/shadow", id="etc-shadow"),
        pytest.param(lambda s: str(s.root_file), id="root-secret-file"),
        pytest.param(lambda s: "/root/.ssh/id_rsa", id="ssh-key"),
        pytest.param(lambda s: str(s.world_file), id="world-readable-host-tmp"),
        pytest.param(lambda s: str(ROOT / "pyproject.toml"), id="repository"),
        pytest.param(lambda s: "/proc/1/environ", id="init-environ"),
    ],
)
def test_host_files_cannot_be_read(sandbox: Sandbox, planted: Secrets, path_of: object) -> None:
    path = path_of(planted)  # type: ignore[operator]
    result = sandbox.run(attempt(f"print(open({path!r}, errors='replace').read()[:200])"))
    assert planted.value not in result.stdout + result.stderr
    assert "root:" not in result.stdout  # no shadow/passwd line either
    assert "BLOCKED" in result.stdout or "ESCAPED" not in result.stdout


def test_directories_of_the_host_are_not_visible(sandbox: Sandbox) -> None:
    code = textwrap.dedent(
        f"""
        import os
        for path in ['/root', '/root/.ssh', {str(ROOT)!r}, '/home', '/etc', '/var']:
            try:
                print(path, sorted(os.listdir(path))[:50])
            except OSError as exc:
                print(path, 'BLOCKED', exc.errno)
        """
    )
    result = sandbox.run(code)
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert lines[str(ROOT)].startswith("BLOCKED")
    assert "pyproject.toml" not in result.stdout and "src" not in lines.get("/root", "")
    assert "shadow" not in lines["/etc"] and "passwd" not in lines["/etc"]
    assert "BLOCKED" in lines["/home"] and "BLOCKED" in lines["/root/.ssh"]


def test_host_environment_does_not_leak(sandbox: Sandbox, planted: Secrets) -> None:
    result = sandbox.run(
        "import os\nprint(sorted(os.environ))\nprint(dict(os.environ))\n"
        "print(open('/proc/self/environ', 'rb').read())"
    )
    assert planted.value not in result.stdout + result.stderr
    assert planted.env_name not in result.stdout


@pytest.mark.parametrize("target", ["/usr/pwned", "/etc/pwned", "/pwned", "/opt/corral/pwned", "/data/pwned"])
def test_cannot_write_outside_scratch(sandbox: Sandbox, target: str) -> None:
    result = sandbox.run(attempt(f"open({target!r}, 'w').write('x')"))
    assert result.stdout.startswith("BLOCKED"), result.stdout
    assert not Path(target).exists()


def test_cannot_write_into_the_runtime(sandbox: Sandbox) -> None:
    import pandas

    host_init = Path(pandas.__file__)
    before = host_init.read_bytes()
    code = attempt("import pandas, os\nopen(pandas.__file__, 'a').write('# pwned')\n")
    result = sandbox.run(code)
    assert result.stdout.startswith("BLOCKED"), result.stdout
    assert host_init.read_bytes() == before


def test_symlink_to_a_secret_is_not_collected(sandbox: Sandbox, planted: Secrets) -> None:
    code = (
        "import os\n"
        f"os.symlink({str(planted.world_file)!r}, 'result.csv')\n"
        "os.symlink('/etc/shadow', 'shadow.txt')\n"
        "os.symlink('/proc/self/environ', 'env.txt')\n"
        "open('ok.txt', 'w').write('fine')\n"
    )
    result = sandbox.run(code)
    assert result.files == {"ok.txt": b"fine"}
    reasons = {s.name: s.reason for s in result.skipped}
    assert reasons == {
        "env.txt": "symbolic link",
        "result.csv": "symbolic link",
        "shadow.txt": "symbolic link",
    }


def test_fifo_does_not_block_the_collector(sandbox: Sandbox) -> None:
    result = sandbox.run("import os\nos.mkfifo('result.csv')\nos.mkfifo('chart.png')")
    assert result.ok and result.files == {}
    assert {s.name for s in result.skipped} == {"result.csv", "chart.png"}
    assert all("FIFO" in s.reason for s in result.skipped)


def test_hard_links_are_not_collected(sandbox: Sandbox) -> None:
    result = sandbox.run("import os\nopen('a.csv', 'w').write('x')\nos.link('a.csv', 'b.csv')")
    assert result.files == {}
    assert sorted(s.reason for s in result.skipped) == ["hard link (2 links)", "hard link (2 links)"]


def test_hard_link_to_a_file_outside_is_impossible(sandbox: Sandbox) -> None:
    result = sandbox.run(attempt("import os\nos.link('/etc/ld.so.cache', 'cache')"))
    assert result.stdout.startswith("BLOCKED"), result.stdout
    assert "cache" not in result.files


def test_unix_socket_and_device_files_are_skipped(sandbox: Sandbox) -> None:
    code = (
        "import os, socket\n"
        "s = socket.socket(socket.AF_UNIX)\ns.bind('sock')\n"
        "try:\n    os.mknod('dev', 0o600 | 0o020000, os.makedev(1, 3))\nexcept OSError as exc:\n"
        "    print('mknod', exc.errno)\n"
    )
    result = sandbox.run(code)
    assert result.files == {}
    assert [s.name for s in result.skipped] == ["sock"]
    assert "mknod 1" in result.stdout  # EPERM: no device nodes without capabilities


def test_class_walking_reaches_nothing_new(sandbox: Sandbox, planted: Secrets) -> None:
    """The smolagents escape: walk object's subclasses to reach os/subprocess; here it finds the sandbox."""
    code = textwrap.dedent(
        f"""
        found = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close']
        os_globals = found[0].__init__.__globals__
        print('system rc', os_globals['system']('cat {planted.root_file} > /work/leak.txt'))
        try:
            print(os_globals['open']({str(planted.root_file)!r}, os_globals['O_RDONLY']))
        except OSError as exc:
            print('open', exc.errno)
        """
    )
    result = sandbox.run(code)
    assert planted.value not in result.stdout + result.stderr
    assert "leak.txt" not in result.files
    assert "open 2" in result.stdout  # ENOENT: the file does not exist in the sandbox's world


@pytest.mark.skipif(not AS_ROOT, reason="rootless workers run as the host user itself, by design")
def test_the_pool_workers_run_as_unprivileged_distinct_uids(pool: SandboxPool) -> None:
    uids = pool.worker_uids
    assert len(uids) == len(set(uids)) == pool.size
    assert all(uid >= 100_000 for uid in uids)
