"""Turning step results, run inputs and exceptions into journal text and back.

Values are JSON. Pydantic models are stored as their JSON plus their class's import path, so a replay
rebuilds the
same class (``returns=`` or the function's return annotation take precedence when given).
"""

from __future__ import annotations

import importlib
import json
import sys
import zlib
from collections.abc import Callable
from enum import Enum
from typing import Any

import pydantic_core

# Imported here, not looked up as ``BaseModel``: pydantic loads it lazily (~30 ms), which would land on
# a run's first step instead of on import.
from pydantic import BaseModel

from corral.durable.errors import NotSerializable, StepError

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_loads = json.loads
_SCALARS = (str, int, float, bool, type(None))


def type_path(cls: type) -> str:
    """``module:qualname`` of a class or function."""
    return f"{cls.__module__}:{cls.__qualname__}"


def import_path(path: str, *, only_loaded: bool = False) -> Any:
    """The object at ``module:qualname``. With ``only_loaded``, do not import modules that are not loaded
    yet."""
    module_name, _, qualname = path.partition(":")
    if only_loaded:
        module = sys.modules.get(module_name)
        if module is None:
            raise ImportError(f"module {module_name!r} is not loaded")
    else:
        module = importlib.import_module(module_name)
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def encode(value: Any, what: str | Callable[[], str]) -> tuple[str, str | None, Any]:
    """(JSON text, model class path or None, the value as a replay will see it). ``what`` (or a function
    that makes it, so that the hot path formats nothing) names it in
    errors."""
    if isinstance(value, BaseModel):
        try:
            return value.model_dump_json(), type_path(type(value)), value
        except pydantic_core.PydanticSerializationError as exc:
            raise NotSerializable(
                f"{_name(what)}: the pydantic model {type(value).__name__} cannot be dumped: {exc}"
            ) from exc
    try:
        text = _dumps(value)
    except (TypeError, ValueError) as exc:
        raise NotSerializable(
            f"{_name(what)} returned a {type(value).__module__}.{type(value).__qualname__}, which the "
            f"journal cannot store: return JSON-serialisable values (dict, list, str, int, float, bool, "
            f"None) or a pydantic model ({exc})"
        ) from exc
    # Scalars come back identical; containers are round-tripped so the first run sees what a replay will see
    # (tuples become lists, int keys become strings).
    return text, None, value if isinstance(value, _SCALARS) else _loads(text)


def _name(what: str | Callable[[], str]) -> str:
    return what if isinstance(what, str) else what()


def decode(text: str | None, value_type: str | None, returns: Any = None) -> Any:
    """The value stored by ``encode``; ``returns`` (a pydantic model class) overrides the stored class."""
    if text is None:
        return None
    model: Any = returns
    if model is None and value_type is not None:
        try:
            model = import_path(value_type)
        except (ImportError, AttributeError):
            model = None  # the class moved: give the plain JSON rather than fail the replay
    if isinstance(model, type) and issubclass(model, BaseModel):
        return model.model_validate_json(text)
    return _loads(text)


def encode_error(exc: BaseException) -> str:
    """An exception as JSON: its type's path, message and (when JSON-able) args."""
    data: dict[str, Any] = {"type": type_path(type(exc)), "message": str(exc)}
    try:
        _dumps(list(exc.args))
        data["args"] = list(exc.args)
    except (TypeError, ValueError):
        pass
    return _dumps(data)


def decode_error(text: str | None, *, run_id: str, position: int, where: str) -> BaseException:
    """Rebuild the recorded exception: same type, same message; ``StepError`` when the type cannot be
    rebuilt."""
    data = _loads(text or "{}")
    type_name = str(data.get("type", "builtins:Exception"))
    message = str(data.get("message", ""))
    try:
        cls = import_path(type_name, only_loaded=True)
        if isinstance(cls, type) and issubclass(cls, Exception):
            exc = cls(*data["args"]) if "args" in data else cls(message)
            if str(exc) == message:
                return exc
    except Exception:
        pass
    return StepError(
        f"{where} failed with {type_name}: {message}", run_id=run_id, position=position, error_type=type_name
    )


def dumps(value: Any) -> str:
    """Compact JSON (no NaN)."""
    return _dumps(value)


loads = _loads


# -- argument fingerprints -----------------------------------------------------------------------------------
# A step's arguments are fingerprinted so a replay can tell that the code now passes other arguments at the
# same position. Bounded work per step (long-running agents pass whole conversations): strings and scalars in
# full, containers by length and their first and last few items, models by their fields, a few levels deep;
# anything else (clients, functions, sets, paths) by its type only, since its text may differ per process.
_EDGE = 4
_SCALAR_TYPES = frozenset(_SCALARS)
_NO_ARGS = zlib.crc32(b"()")
_DEPTH = 4
_BUDGET = 256


def fingerprint(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """A CRC-32 of ``args`` and ``kwargs`` that is the same in every process for the same values."""
    if not kwargs:  # the common cases, cheaply (each shape always takes the same path)
        if not args:
            return _NO_ARGS
        if len(args) == 1 and type(args[0]) in _SCALAR_TYPES:
            return zlib.crc32(repr(args[0]).encode("utf-8", "surrogatepass"))
        if all(type(a) in _SCALAR_TYPES for a in args):
            return zlib.crc32(repr(args).encode("utf-8", "surrogatepass"))
    parts: list[str] = []
    budget = [_BUDGET]
    _walk(args, parts, 0, budget)
    _walk(kwargs, parts, 0, budget)
    return zlib.crc32("\x1f".join(parts).encode("utf-8", "surrogatepass"))


def _walk(value: Any, parts: list[str], depth: int, budget: list[int]) -> None:
    budget[0] -= 1
    kind = type(value)
    if kind in _SCALARS:
        parts.append(repr(value))
        return
    if budget[0] <= 0 or depth >= _DEPTH:
        parts.append(f"<{kind.__qualname__}>")
        return
    if isinstance(value, list | tuple):  # a tuple replays as a list: the same fingerprint
        parts.append(f"[{len(value)}")
        items = value if len(value) <= 2 * _EDGE else [*value[:_EDGE], *value[-_EDGE:]]
        for item in items:
            _walk(item, parts, depth + 1, budget)
        parts.append("]")
    elif isinstance(value, dict):
        parts.append(f"{{{len(value)}")
        for i, (k, v) in enumerate(value.items()):
            if i >= 2 * _EDGE:
                break
            parts.append(str(k))
            _walk(v, parts, depth + 1, budget)
        parts.append("}")
    elif isinstance(value, BaseModel):
        parts.append(kind.__qualname__)
        _walk(dict(value), parts, depth + 1, budget)
    elif isinstance(value, Enum):
        parts.append(repr(value.value))
    else:
        parts.append(f"<{kind.__qualname__}>")
