"""Approval policies: per tool and per action class (rules over the arguments), first decision wins."""

from __future__ import annotations

import pytest

from corral.guards import (
    ApprovalPolicy,
    approval_needed,
    cost_above,
    network_requested,
    shell_commands,
    sql_writes,
)


@pytest.mark.parametrize(
    ("sql", "why"),
    [
        ("SELECT 1", None),
        ("select a from t where b = 'DELETE'", None),
        ("WITH x AS (SELECT 1) SELECT * FROM x", None),
        ("SELECT 1 UNION SELECT 2", None),
        ("INSERT INTO t VALUES (1)", "SQL that writes: INSERT"),
        ("update t set a = 1", "SQL that writes: UPDATE"),
        ("SELECT 1; DELETE FROM t", "SQL that writes: DELETE"),
        ("DROP TABLE t", "SQL that writes: DROP"),
        ("CREATE TABLE t (a int)", "SQL that writes: CREATE"),
        ("SELECT FROM WHERE (", "SQL that could not be parsed (it may write)"),
    ],
)
def test_sql_writes(sql: str, why: str | None) -> None:
    assert sql_writes()("run_sql", {"sql": sql}) == why


def test_sql_writes_ignores_calls_without_sql() -> None:
    assert sql_writes()("run_sql", {"query": "DROP TABLE t"}) is None
    assert sql_writes(arg="query")("run_sql", {"query": "DROP TABLE t"}) == "SQL that writes: DROP"


@pytest.mark.parametrize(
    ("command", "asks"),
    [
        ("ls -l /tmp", False),
        (["ls", "-l"], False),
        ("rm -rf /", True),
        ("ls; rm -rf /", True),
        ("ls $(rm -rf /)", True),
        ("ls > /etc/passwd", True),
        ("ls 'unterminated", True),
        (["rm", "x"], True),
    ],
)
def test_shell_commands(command: object, asks: bool) -> None:
    assert (shell_commands(allow=["ls"])("sh", {"command": command}) is not None) is asks


def test_network_and_cost_rules() -> None:
    assert network_requested()("run_python", {"network": False}) is None
    assert network_requested()("run_python", {"network": True}) == "a sandbox job that asks for network"
    rule = cost_above(10.0)
    assert rule("order", {"cost_usd": 10}) is None
    assert rule("order", {"cost_usd": 10.01}) == "a cost of $10.01, above $10.00"
    assert rule("order", {"cost_usd": "lots"}) == "a cost that is not a number: 'lots'"
    assert rule("order", {"cost_usd": True}) is not None
    assert rule("order", {}) is None


def test_first_deciding_policy_wins_and_rules_fall_through() -> None:
    policies = [
        ApprovalPolicy(tools=("run_sql", "query"), ask=sql_writes()),
        ApprovalPolicy(tools="*", ask=cost_above(5)),
        ApprovalPolicy(tools="lookup", ask="never"),
        ApprovalPolicy(tools="deploy", ask="always", timeout_s=60),
    ]
    assert approval_needed(policies, "run_sql", {"sql": "SELECT 1"}) is None
    found = approval_needed(policies, "run_sql", {"sql": "SELECT 1", "cost_usd": 9})
    assert found is not None and found[0] is policies[1]
    found = approval_needed(policies, "deploy", {})
    assert found is not None and found[0].timeout_s == 60
    # "never" overrides a tool's own needs_approval; no policy leaves it to needs_approval.
    assert approval_needed(policies, "lookup", {}, needs_approval=True) is None
    default = approval_needed(policies, "other", {}, needs_approval=True)
    assert default is not None and default[1] == "other is declared needs_approval"
    assert approval_needed(policies, "other", {}) is None
