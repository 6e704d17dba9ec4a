"""Errors of the data agent.

Exception tree::

    CorralError
    ├── UsageError
    │   ├── SourceError            the --db / --files argument names nothing we can open; fix the argument
    │   └── WriteRefusedError      a query would write and writes were not granted; ask for approval
    └── DataAgentError             a run-time failure of the data agent
        ├── QueryRunnerError       the query could not be run at all (sandbox missing or broken)
        └── EvalSetError           a question set file is malformed

A query that fails inside the database is *not* an exception: its error text goes back to the model so it can
correct the query.
"""

from __future__ import annotations

from corral._errors import CorralError, UsageError


class SourceError(UsageError):
    """The data source cannot be opened or recognised."""


class WriteRefusedError(UsageError):
    """A statement would change data and the user has not granted writes."""


class DataAgentError(CorralError):
    """A run-time failure of the data agent."""


class QueryRunnerError(DataAgentError):
    """The query runner itself failed (as opposed to the query failing in the database)."""


class EvalSetError(DataAgentError):
    """A question-set file (JSONL) is malformed."""
