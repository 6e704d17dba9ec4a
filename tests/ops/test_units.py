"""Fast tests of the parts: redaction rules, detectors over made-up evidence, backtrace parsing, the
encrypted core store, the model's checked advice, and the workflow's static checks."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from corral.apps.ops_agent import (
    CoreStore,
    CoreStoreError,
    DiagnoseRequest,
    Evidence,
    RedactionRule,
    Redactor,
    detect,
    ops_workflow,
    parse_backtraces,
    triage,
)
from corral.apps.ops_agent._advice import model_choice, model_triage
from corral.apps.ops_agent._detect import judge_backtraces
from corral.durable import MemoryJournal, Runtime
from corral.models import ScriptedModel


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("DATABASE_URL=postgres://app:Sup3rS3cret@db:5432/shop", "Sup3rS3cret"),
        ("mysql -u root --password hunter2horse", "hunter2horse"),
        ('{"api_key": "abcd1234efgh5678"}', "abcd1234efgh5678"),
        ("Authorization: Bearer abcdef0123456789xyz", "abcdef0123456789xyz"),
        ("aws AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE"),
        ("token ghp_" + "a" * 36, "ghp_" + "a" * 36),
        ("key sk-proj-abcdefghijklmnopqrstuvwx", "sk-proj-abcdefghijklmnopqrstuvwx"),
        ("jwt eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.SflKxwRJSMeKKF2QT4", "SflKxwRJSMeKKF2QT4"),
        ("Server=db;User Id=sa;Pwd=Pa55word!;", "Pa55word!"),
        ("mail from bob.smith@corp.example.org failed", "bob.smith@corp.example.org"),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
            "MIIEpAIBAAKCAQEA",
        ),
        ("secret_token: xoxb-1234567890-abcdefghij", "xoxb-1234567890-abcdefghij"),
    ],
)
def test_redaction_rules(text: str, secret: str) -> None:
    assert secret not in Redactor().text(text)


def test_redaction_keeps_what_is_not_secret_and_is_configurable() -> None:
    r = Redactor()
    line = "GET /api/orders 200 in 35 ms; auth failed for 3 users; pid 4242"
    assert r.text(line) == line
    custom = Redactor(rules=[RedactionRule("ticket", r"TKT-\d+")], literals=["correct-horse"])
    assert custom.text("TKT-123 correct-horse a@b.io") == "[redacted] [redacted] a@b.io"
    assert r.scrub({"env": {"MY_DB_URL": "x", "PATH": "/bin"}, "n": 3}) == {
        "env": {"MY_DB_URL": "[redacted]", "PATH": "/bin"},
        "n": 3,
    }


def watch_evidence(**data) -> Evidence:  # type: ignore[no-untyped-def]
    return Evidence(
        id="E1",
        tool="watch_processes",
        data={"interval_s": 1.0, "samples": {}, "threads": [], "listen": [], "listen_overflows": 0, **data},
    )


def test_detectors_rank_what_the_numbers_show() -> None:
    samples = {
        "42": [
            {"t": 0, "rss_kb": 100_000, "tcp": {"CLOSE_WAIT": 40}, "open_fds": 50},
            {"t": 2, "rss_kb": 100_100, "tcp": {"CLOSE_WAIT": 44}, "open_fds": 54},
        ],
        "43": [
            {"t": 0, "rss_kb": 50_000, "tcp": {}, "open_fds": 5},
            {"t": 2, "rss_kb": 90_000, "tcp": {}, "open_fds": 5},
        ],
    }
    found = detect([watch_evidence(samples=samples)], triage("connections pile up"))
    assert [(h.kind, h.pid) for h in found] == [("close_wait_leak", 42), ("memory_leak", 43)]
    assert found[0].id == "H1" and found[0].evidence == ["E1"]


def test_detectors_read_hostile_evidence_without_failing() -> None:
    hostile = [
        watch_evidence(
            samples={"x": "y", "5": [None, 3, {"t": "a"}]},
            threads=[{"pid": "1; kill"}],
            listen=[{"queued": [], "backlog": {}}],
        ),
        Evidence(id="E2", tool="read_log", data={"lines": [None, 5, "exited"] * 5}),
        Evidence(id="E3", tool="node_metrics", data={"mounts": [{"used_pct": "99"}, 7]}),
        Evidence(id="E4", tool="processes", data="not a dict"),
    ]
    assert isinstance(detect(hostile, ["cpu"]), list)


BACKTRACES = """
Thread 3 (Thread 0x7f (LWP 101)):
#0  0x000055 in compute_checksums (arg=0x0) at spin.c:5
#1  0x00007f in start_thread (arg=<optimized out>) at ./nptl/pthread_create.c:442
Thread 2 (Thread 0x7e (LWP 102) "worker"):
#0  futex_wait (private=0, expected=2, futex_word=0x55) at ../sysdeps/nptl/futex-internal.h:146
#1  __GI___lll_lock_wait (futex=0x55, private=0) at ./nptl/lowlevellock.c:49
#2  0x00007f in ___pthread_mutex_lock (mutex=0x55) at ./nptl/pthread_mutex_lock.c:93
#3  0x000055 in transfer () at bank.c:12
Thread 1 (Thread 0x7d (LWP 103)):
#0  futex_wait (private=0, expected=2, futex_word=0x56) at ../sysdeps/nptl/futex-internal.h:146
#1  __GI___lll_lock_wait (futex=0x56, private=0) at ./nptl/lowlevellock.c:49
#2  0x000055 in audit () at bank.c:20
"""


def test_backtraces_are_parsed_and_judged() -> None:
    stacks = parse_backtraces(BACKTRACES)
    assert [(t.number, t.tid, t.name) for t in stacks] == [(3, 101, ""), (2, 102, "worker"), (1, 103, "")]
    assert stacks[1].frames[3].function == "transfer"
    data = {"threads": [t.model_dump() for t in stacks]}
    evidence = Evidence(id="E9", tool="backtraces", data=data)
    from corral.apps.ops_agent import Hypothesis

    spin = Hypothesis(id="H1", kind="cpu_spin", title="t", score=0.6, pid=7, facts={"tid": 101})
    assert judge_backtraces(spin, evidence).score > 0.6
    dead = Hypothesis(id="H1", kind="deadlock", title="p is idle", score=0.3, pid=7)
    judged = judge_backtraces(dead, evidence)
    assert judged.score >= 0.9 and judged.facts["lock_waiters"] == [102, 103] and "E9" in judged.evidence


def test_the_core_store_encrypts_and_refuses_tampering(tmp_path: Path) -> None:
    store = CoreStore(tmp_path / "cores")
    plain = tmp_path / "core"
    payload = b"password=abc " * 300_000  # several chunks
    plain.write_bytes(payload)
    sealed = store.put("c1", plain)
    assert b"password=abc" not in sealed.read_bytes()
    assert (tmp_path / "cores" / "core.key").stat().st_mode & 0o077 == 0
    assert store.decrypt_to("c1", tmp_path / "out").read_bytes() == payload
    data = bytearray(sealed.read_bytes())
    data[100] ^= 1
    sealed.write_bytes(bytes(data))
    with pytest.raises(CoreStoreError, match="altered"):
        store.decrypt_to("c1", tmp_path / "out2")
    store.put("c2", plain)
    cut = store.path("c2")
    cut.write_bytes(cut.read_bytes()[: 1 << 20])  # whole chunks dropped at the end
    with pytest.raises(CoreStoreError):
        store.decrypt_to("c2", tmp_path / "out3")
    with pytest.raises(CoreStoreError):
        store.path("../../etc/passwd")


def test_the_models_advice_is_checked() -> None:
    from corral.apps.ops_agent import Hypothesis

    async def run(ctx):  # type: ignore[no-untyped-def]
        hs = [
            Hypothesis(id="H1", kind="cpu_spin", title="a", score=0.8),
            Hypothesis(id="H2", kind="deadlock", title="b", score=0.75),
        ]
        areas, _ = await model_triage(ctx, ScriptedModel(['{"areas": ["cpu", "rm -rf /"]}']), "slow")
        bad, note = await model_choice(ctx, ScriptedModel(['{"id": "kill pid 1"}']), "slow", hs, {})
        good, _ = await model_choice(ctx, ScriptedModel(['{"id": "H2"}']), "slow", hs, {})
        junk, _ = await model_triage(ctx, ScriptedModel(["I think cpu"]), "slow")
        return areas, bad, note, good, junk

    areas, bad, note, good, junk = asyncio.run(Runtime(MemoryJournal()).run(run))
    assert areas == ["cpu"] and bad is None and "not one of" in note and good == "H2" and junk == []


def test_the_workflow_passes_its_static_checks() -> None:
    report = ops_workflow.check()
    assert report.ok, report.problems
    assert set(ops_workflow.nodes) == {
        "triage",
        "evidence",
        "hypotheses",
        "explore",
        "check",
        "choose",
        "report",
        "remediate",
        "verify",
    }


def test_detectors_of_threads_files_and_busy_processes() -> None:
    samples = {
        "7": [
            {"t": 0, "rss_kb": 1000, "threads": 5, "files": {"/var/log/a.log": 0}},
            {"t": 1, "rss_kb": 1000, "threads": 12, "files": {"/var/log/a.log": 6 << 20}},
            {"t": 2, "rss_kb": 1000, "threads": 20, "files": {"/var/log/a.log": 12 << 20}},
        ]
    }
    threads = [{"pid": 9, "tid": t, "cores": 0.25, "samples": 3, "running": 1} for t in range(4)]
    found = {h.kind: h for h in detect([watch_evidence(samples=samples, threads=threads)], ["disk"])}
    assert found["thread_leak"].pid == 7 and found["file_growth"].path == "/var/log/a.log"
    assert found["cpu_bound"].pid == 9 and "cpu_spin" not in found


def test_a_secret_in_the_symptom_is_not_journaled() -> None:
    from corral.apps.ops_agent import OpsAgent

    runtime = Runtime(MemoryJournal())
    report = asyncio.run(
        OpsAgent().diagnose(
            DiagnoseRequest(symptom="login with password=hunter2horse fails", pid=2**22 - 1, remediate=False),
            runtime=runtime,
            run_id="s",
        )
    )
    assert "hunter2horse" not in runtime.get_run("s").input and "hunter2horse" not in report.symptom


def test_logs_that_block_or_point_elsewhere_are_not_read(tmp_path: Path) -> None:
    import os

    from corral.apps.ops_agent import EvidenceError, OpsTools

    tools = OpsTools()
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$salted$hash:19000:0:99999:7:::\n")
    (tmp_path / "app.log").symlink_to(secret)
    os.mkfifo(tmp_path / "pipe.log")
    with pytest.raises(EvidenceError, match="cannot read"):
        tools.log(str(tmp_path / "app.log"))  # a planted link: refused
    with pytest.raises(EvidenceError, match="not a regular file"):
        tools.log(str(tmp_path / "pipe.log"))  # a FIFO: refused at once, not a hang
    assert tools.log(str(tmp_path / "app.log"), follow_links=True)["lines"]  # named by a person: read


def test_a_core_cannot_make_root_hand_a_private_file_to_gdb(tmp_path: Path) -> None:
    import os
    import sys

    from corral.apps.ops_agent._cores import executable_of, termination

    private = tmp_path / "secret-program"
    private.write_bytes(b"\x7fELF" + b"\0" * 60)
    private.chmod(0o700)  # only root may read it
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    real = os.path.realpath(sys.executable)
    assert executable_of(f"Core was generated by `{private} --x'.") is None
    assert executable_of(f"Core was generated by `{script}'.") is None  # not an ELF program
    assert executable_of("Core was generated by `relative/path'.") is None
    assert executable_of(f"Core was generated by `{real} -c pass'.") == real
    text = "Program terminated with signal SIGSEGV, Segmentation fault.\n[Current thread is 2 (LWP 7)]\n"
    assert termination(text) == {"signal": "SIGSEGV", "signal_text": "Segmentation fault", "thread": 2}
    assert termination("#0 main () at a.c:1") == {}


def test_a_filesystem_out_of_inodes_names_the_crowded_directory() -> None:
    node = Evidence(
        id="E1",
        tool="node_metrics",
        data={"mounts": [{"mountpoint": "/srv", "used_pct": 20.0, "inodes_used_pct": 99.0, "size_mb": 100}]},
    )
    walk = Evidence(
        id="E2",
        tool="disk_usage",
        data={
            "root": "/srv",
            "biggest": [{"path": "/srv/a", "size_mb": 1}],
            "most_files": [{"path": "/srv/sessions", "files": 90000}],
        },
    )
    [h] = detect([node, walk], ["disk"])
    assert h.kind == "disk_full" and h.facts["directory"] == "/srv/sessions" and h.evidence == ["E1", "E2"]


def test_the_workflows_static_worst_case_is_three_calls_plus_exploring() -> None:
    """The check loop leaves for `choose` once: the static worst case is the three calls (triage, choice,
    explanation) plus exploring's twenty, not the three once per visit of `check`."""
    from corral.apps.ops_agent import ops_workflow

    report = ops_workflow.check()
    assert report.ok, report.problems
    assert report.visits["choose"] == report.visits["report"] == report.visits["verify"] == 1
    assert report.worst.model_calls == 3 + 20
