"""Errors raised by ``corral.sandbox``.

Exception tree::

    corral.CorralError
    ├── SandboxError                  the sandbox could not run the job (the job's own failures are results)
    │   ├── SandboxUnavailable        no safe backend on this machine; says what is missing (fail closed)
    │   ├── SandboxBusy               every worker is taken and the queue is full, or the wait timed out
    │   └── SandboxCrashed            a worker died or broke the protocol; it was recycled, a retry may work
    └── corral.UsageError
        └── SandboxUsageError         bad limits, unknown source kind, ... (fix the calling code)

A job that fails — an exception, a non-zero exit, a limit hit — is *not* an error: it comes back as a
:class:`~corral.sandbox.RunResult` with ``exit_code``, ``limit`` and ``stderr`` set, because model-written
code failing is the normal case the caller feeds back to the model.
"""

from __future__ import annotations

from corral._errors import CorralError, UsageError


class SandboxError(CorralError):
    """The sandbox itself failed to run a job."""


class SandboxUnavailable(SandboxError):
    """No backend can isolate code on this machine; running it anyway would be unsafe, so nothing runs."""


class SandboxBusy(SandboxError):
    """All workers are busy and the bounded queue is full, or a caller waited past its queue timeout."""


class SandboxCrashed(SandboxError):
    """A worker died or misbehaved while running a job. The worker was replaced; retrying may succeed."""


class SandboxUsageError(UsageError):
    """The sandbox API was called with arguments that can never work."""
