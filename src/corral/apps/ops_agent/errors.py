"""The observability agent's errors.

::

    CorralError
    └── OpsError                    anything the ops agent refuses or cannot do
        ├── EvidenceError           a read-only tool failed (bad path, tool missing, timed out)
        ├── CoreDumpError           taking or reading a core dump failed
        ├── CoreStoreError          a stored core cannot be encrypted, found or decrypted
        └── ActionError             a remediation is malformed or failed when it ran
"""

from __future__ import annotations

from corral import CorralError


class OpsError(CorralError):
    """Base of the observability agent's errors."""


class EvidenceError(OpsError):
    """A read-only evidence tool could not do its job; the message says what and why."""


class CoreDumpError(OpsError):
    """Taking a core dump (``gcore``) or reading one (``gdb``) failed."""


class CoreStoreError(OpsError):
    """A core dump cannot be stored, found or decrypted."""


class ActionError(OpsError):
    """A remediation is malformed, refused by its own checks, or failed when it ran."""
