"""The root of every exception corral raises on purpose.

Exception tree (each layer extends it in its own ``errors.py``)::

    CorralError
    ├── UsageError          the caller used the API wrongly; fix the code, retrying will not help
    ├── corral.durable.errors.DurableError ...
    ├── corral.models.errors.ModelError ...
    └── corral.sandbox.errors.SandboxError ...

Run termination and cancellation are ``BaseException`` subclasses (see ``corral.durable``) so that a tool's
``except Exception`` cannot swallow them.
"""


class CorralError(Exception):
    """Base class of corral's own errors."""


class UsageError(CorralError):
    """The API was called in a way that can never work (a bug in the calling code, not a run-time failure)."""
