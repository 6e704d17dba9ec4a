"""Where corral keeps its files, and the defaults a user can set without code.

Every layer reads its settings from here, so one place documents them all. Precedence, highest
first: environment variables, the config file (``$CORRAL_CONFIG`` or ``<config dir>/config.toml``),
built-in defaults.

=====================  ===========================  ===============================================
environment variable   config file key              meaning
=====================  ===========================  ===============================================
``CORRAL_HOME``        —                            data directory (journal); default: platform's
``CORRAL_CACHE_DIR``   —                            cache directory (joined model weights)
``CORRAL_JOURNAL``     ``journal``                  path of the SQLite journal
``CORRAL_MODEL``       ``model``                    default model name, e.g. ``local``
=====================  ===========================  ===============================================

>>> import os
>>> os.environ["CORRAL_MODEL"] = "local:qwen2.5-coder-1.5b"
>>> get_setting("model", default="local")
'local:qwen2.5-coder-1.5b'
>>> del os.environ["CORRAL_MODEL"]
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import platformdirs

from corral._errors import UsageError

_APP = "corral"


def data_dir() -> Path:
    """Directory for durable state (the journal). Created on first use."""
    path = Path(os.environ.get("CORRAL_HOME") or platformdirs.user_data_dir(_APP))
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """Directory for files that can be rebuilt (joined model weights, schema caches). Created on first use."""
    path = Path(os.environ.get("CORRAL_CACHE_DIR") or platformdirs.user_cache_dir(_APP))
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_file() -> Path:
    return Path(os.environ.get("CORRAL_CONFIG") or Path(platformdirs.user_config_dir(_APP)) / "config.toml")


def load_config() -> dict[str, Any]:
    """The config file's contents, or ``{}`` when there is none. A malformed file is a clear error."""
    path = config_file()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"corral's config file {path} is not valid TOML: {exc}") from exc


def get_setting(key: str, *, default: str) -> str:
    """A setting: ``CORRAL_<KEY>`` from the environment, then the config file's ``key``, then ``default``."""
    env = os.environ.get(f"CORRAL_{key.upper()}")
    if env:
        return env
    value = load_config().get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise UsageError(f"{config_file()}: '{key}' must be a string, not {type(value).__name__}")
    return value


def journal_path() -> Path:
    """The journal: ``$CORRAL_JOURNAL``, the config file's ``journal``, or ``<data dir>/journal.sqlite``."""
    return Path(get_setting("journal", default=str(data_dir() / "journal.sqlite")))
