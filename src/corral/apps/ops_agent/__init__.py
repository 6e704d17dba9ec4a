"""The observability agent: diagnoses a misbehaving service from read-only evidence, reports a root cause
with its evidence, and proposes a fix that runs only after a human approves it (see ``docs/ops-agent.md``).

::

    agent = OpsAgent(model=resolve_model("local"))
    report = await agent.diagnose(DiagnoseRequest(symptom="connections pile up", service="api"))
    report.cause.title, report.confidence, report.cited()
"""

from corral.apps.ops_agent._actions import (
    KillProcess,
    RaiseFileLimit,
    RestartUnit,
    TruncateFile,
    parse_action,
)
from corral.apps.ops_agent._agent import DiagnoseRequest, Incident, OpsAgent, OpsEvent, ops_workflow
from corral.apps.ops_agent._cores import CoreStore, parse_backtraces
from corral.apps.ops_agent._detect import detect, triage
from corral.apps.ops_agent._redact import DEFAULT_RULES, RedactionRule, Redactor
from corral.apps.ops_agent._report import ActionOutcome, Evidence, Hypothesis, Kind, Report
from corral.apps.ops_agent._run import diagnose, ops_run, resume
from corral.apps.ops_agent._tools import OpsTools, default_store_dir
from corral.apps.ops_agent.errors import ActionError, CoreDumpError, CoreStoreError, EvidenceError, OpsError

__all__ = [
    "DEFAULT_RULES",
    "ActionError",
    "ActionOutcome",
    "CoreDumpError",
    "CoreStore",
    "CoreStoreError",
    "DiagnoseRequest",
    "Evidence",
    "EvidenceError",
    "Hypothesis",
    "Incident",
    "KillProcess",
    "Kind",
    "OpsAgent",
    "OpsError",
    "OpsEvent",
    "OpsTools",
    "RaiseFileLimit",
    "RedactionRule",
    "Redactor",
    "Report",
    "RestartUnit",
    "TruncateFile",
    "default_store_dir",
    "detect",
    "diagnose",
    "ops_run",
    "ops_workflow",
    "parse_action",
    "parse_backtraces",
    "resume",
    "triage",
]
