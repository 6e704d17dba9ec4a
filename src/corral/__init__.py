"""corral: AI agents that survive crashes, cannot hurt their host, and stay under human control.

The package is layered (see ``docs/architecture.md``); each layer is a subpackage that imports only from the
layers below it::

    apps      data agent, CLI
    agents    Agent loop
    guards    budgets, retry guards        tools   typed tools        sandbox
    models    message format, providers, local model, scripted model
    durable   run context, step API, SQLite journal
"""

from corral._errors import CorralError, UsageError

__version__ = "0.1.0"

__all__ = ["CorralError", "UsageError", "__version__"]
