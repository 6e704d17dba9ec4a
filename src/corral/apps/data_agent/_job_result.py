"""What a sandboxed driver job wrote (``result.json``), parsed as the hostile data it is.

The driver runs model-written SQL or pandas code in the sandbox and writes its answer as a result file; the
job could write anything there. So the host parses it once, here: bounded nesting (the JSON parser refuses
depth past its recursion limit), strict types per key, bounded sizes, no NaN or infinity; anything malformed
is a plain reason string, which the runners turn into a failed result or a typed error — never a
``RecursionError``, ``TypeError`` or ``ValueError`` out of a runner.
"""

from __future__ import annotations

from typing import Annotated, Any

import pydantic_core
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

#: Largest result file a driver may write (the sandbox also caps result files).
MAX_BYTES = 16 * 1024 * 1024

Scalar = None | StrictBool | StrictInt | Annotated[StrictFloat, Field(allow_inf_nan=False)] | StrictStr


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class RunOutput(_Loose):
    """A query's or a pandas program's answer."""

    ok: StrictBool
    error: Annotated[StrictStr, Field(max_length=100_000)] | None = None
    columns: Annotated[list[StrictStr], Field(max_length=100_000)] = []
    rows: list[list[Scalar]] = []
    row_count: Annotated[StrictInt, Field(ge=0)] = 0
    connect_failed: StrictBool = False


class Column(_Loose):
    name: StrictStr


class Table(_Loose):
    name: StrictStr
    columns: list[Column] = []


class DescribeOutput(_Loose):
    """A schema scan's answer (the SQL driver's and the pandas driver's tables share these keys)."""

    ok: StrictBool
    error: Annotated[StrictStr, Field(max_length=100_000)] | None = None
    tables: Annotated[list[Table], Field(max_length=100_000)] = []


def parse(raw: bytes, *, describe: bool = False) -> dict[str, Any] | str:
    """The validated answer as a dict, or why it is not one."""
    if len(raw) > MAX_BYTES:
        return f"the job's result is too large ({len(raw)} bytes)"
    try:
        loaded = pydantic_core.from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        return f"the job's result is not valid JSON ({str(exc)[:200]})"
    model = DescribeOutput if describe else RunOutput
    try:
        validated = model.model_validate(loaded)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))[:100]
        return f"the job's result is malformed ({exc.error_count()} errors, first at {where or 'top'!r})"
    return validated.model_dump()
