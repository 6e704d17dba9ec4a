"""The pandas harness: loads the data files as DataFrames, runs the model's code on them, returns a table.

Like :mod:`._driver` this module is self-contained (standard library, plus pandas and numpy imported lazily):
its source text is shipped into the sandbox and run there. The model's code arrives as data (the request file)
and is executed by :func:`run_code` inside the sandboxed job only; the host never executes it.

The model's code sees the DataFrames by table name (and as ``df`` when there is one), ``pd`` and ``np``, and
leaves its answer in ``result``; a last bare expression (or a last ``print(...)``) counts as the result when
``result`` is not set, because small models often end that way. :func:`to_table` turns whatever the result
is (a DataFrame, a Series, a dict, a scalar) into columns and rows:

>>> to_table({"mean_fare": 34.654, "n": 891})
(['mean_fare', 'n'], [[34.654, 891]], 1)
>>> to_table(42)
(['result'], [[42]], 1)
>>> to_table(("normal", 0.12))
(['value_1', 'value_2'], [['normal', 0.12]], 1)
"""

from __future__ import annotations

import ast
import contextlib
import datetime
import decimal
import difflib
import importlib
import io
import json
import math
import os
import re
import traceback
from typing import Any

#: Distinct sample values shown per column, and the longest sample kept (characters).
SAMPLE_VALUES = 3
SAMPLE_CHARS = 40
#: Characters of the code's printed output kept for the judge and the error message.
STDOUT_CHARS = 2000
#: The name the model's code is compiled under (tracebacks keep only its frames).
CODE_NAME = "<answer>"


def _scalar(value: Any) -> Any:
    """A JSON-safe rendering of one value (numpy and pandas scalars included; NaN becomes ``None``)."""
    # Subclasses (numpy's float64 is a float, its str_ a str) become the plain type, so JSON stays plain.
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else float(value)
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item) and type(value).__module__ == "numpy":
        with contextlib.suppress(ValueError, TypeError):
            return _scalar(item())
    iso = getattr(value, "isoformat", None)  # pandas Timestamp, Timedelta
    if callable(iso):
        with contextlib.suppress(TypeError, ValueError):
            return str(iso())
    if type(value).__name__ in ("NAType", "NaTType"):
        return None
    return str(value)


def _is_scalar(value: Any) -> bool:
    # numpy scalars have a shape too, an empty one.
    return not isinstance(value, dict | list | tuple | set) and getattr(value, "ndim", 0) == 0


def to_table(value: Any, max_rows: int = 1000) -> tuple[list[str], list[list[Any]], int]:
    """``(columns, rows, row_count)`` for a result; see the module docstring."""
    import numpy as np
    import pandas as pd

    if isinstance(value, pd.Series):
        value = value.to_frame(name=str(value.name) if value.name is not None else "value")
        if isinstance(value.index, pd.RangeIndex):
            value = value.reset_index(drop=True)
        else:
            value = value.reset_index()
    if isinstance(value, pd.DataFrame):
        frame = value
        if not isinstance(frame.index, pd.RangeIndex):
            frame = frame.reset_index()
        columns = [
            " ".join(str(p) for p in c if str(p)) if isinstance(c, tuple) else str(c) for c in frame.columns
        ]
        rows = [[_scalar(v) for v in row] for row in frame.head(max_rows).itertuples(index=False)]
        return columns, rows, len(frame)
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, dict):
        if value and all(_is_scalar(v) for v in value.values()):
            return [str(k) for k in value], [[_scalar(v) for v in value.values()]], 1
        try:
            return to_table(pd.DataFrame(value), max_rows)
        except (ValueError, TypeError):
            return [str(k) for k in value], [[_scalar(_text(v)) for v in value.values()]], 1
    if isinstance(value, tuple) and all(_is_scalar(v) for v in value):
        return [f"value_{i}" for i in range(1, len(value) + 1)], [[_scalar(v) for v in value]], 1
    if isinstance(value, list | tuple | set):
        items = list(value)
        if all(_is_scalar(v) for v in items):
            return ["value"], [[_scalar(v)] for v in items[:max_rows]], len(items)
        with contextlib.suppress(ValueError, TypeError):
            return to_table(pd.DataFrame(items), max_rows)
    return ["result"], [[_scalar(value)]], 1


def _text(value: Any) -> str:
    return str(value)[:200]


def _read(table: dict[str, Any]) -> Any:
    import pandas as pd

    if table["format"] == "parquet":
        return pd.read_parquet(table["path"])
    sep = "\t" if str(table.get("original", table["path"])).lower().endswith(".tsv") else ","
    try:
        return pd.read_csv(table["path"], sep=sep, low_memory=False)
    except UnicodeDecodeError:
        # Spreadsheets exported on other systems are often Latin-1; every byte decodes in it.
        return pd.read_csv(table["path"], sep=sep, low_memory=False, encoding="latin-1")


_DATE = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}([ T]\d{1,2}:\d{2}(:\d{2})?)?$|^\d{1,2}/\d{1,2}/\d{4}$")


def _parse_dates(frame: Any) -> Any:
    """Text columns that hold dates become datetimes (so ``end - start`` is a duration), as an analyst's
    ``parse_dates`` would: only when every one of the first non-missing values looks like a date."""
    import pandas as pd

    for column in frame.columns:
        series = frame[column]
        if series.dtype != object and str(series.dtype) not in ("str", "string"):
            continue
        head = series.dropna().head(200).astype(str)
        if head.empty or not head.map(lambda v: bool(_DATE.match(v.strip()))).all():
            continue
        parsed = pd.to_datetime(series, errors="coerce", format="mixed")
        if parsed.notna().sum() >= 0.95 * series.notna().sum():
            frame[column] = parsed
    return frame


def _strip_names(frame: Any) -> Any:
    """Column names without surrounding spaces (``" WINDSPEED"`` is ``WINDSPEED`` to anyone asking), unless
    stripping would make two names equal."""
    stripped = [c.strip() if isinstance(c, str) else c for c in frame.columns]
    if stripped != list(frame.columns) and len(set(stripped)) == len(stripped):
        frame.columns = stripped
    return frame


def _prepare(frame: Any) -> Any:
    """What an analyst does first to a freshly read file: tidy column names, parse date columns."""
    return _parse_dates(_strip_names(frame))


def load_frames(spec: dict[str, Any]) -> dict[str, Any]:
    """The source's files as DataFrames, by table name, prepared (see :func:`_prepare`)."""
    return {table["name"]: _prepare(_read(table)) for table in spec["tables"]}


def _reading_known_files(pd: Any, spec: dict[str, Any], frames: dict[str, Any]) -> None:
    """Make ``pd.read_csv``/``pd.read_parquet`` of a source file give the loaded DataFrame, whatever path
    the model imagines.

    Models often reload the data although it is loaded, from a path of their own (``/mnt/data/sales.csv``,
    ``sales``, ``data.csv``): a read naming a source file's name, stem or table name gets a copy of that
    file's prepared DataFrame (or, with options such as ``sep=``, the file read with them and prepared), and
    with a single source file any path that does not exist counts as it (there is nothing else to read).
    """
    known: dict[str, dict[str, Any]] = {}
    for t in spec["tables"]:
        original = os.path.basename(str(t.get("original", t["path"])))
        for key in (original, os.path.splitext(original)[0], str(t["name"])):
            known.setdefault(key.lower(), t)
    only = spec["tables"][0] if len(spec["tables"]) == 1 else None

    def wrap(read: Any) -> Any:
        def reader(path: Any, *args: Any, **kwargs: Any) -> Any:
            table = None
            if isinstance(path, str | os.PathLike):
                table = known.get(os.path.basename(str(path)).lower())
                if table is None and only is not None and not os.path.exists(path):
                    table = only
            if table is None:
                return read(path, *args, **kwargs)
            if not args and not kwargs:
                return frames[table["name"]].copy()
            return _prepare(read(table["path"], *args, **kwargs))

        return reader

    pd.read_csv = wrap(pd.read_csv)
    pd.read_parquet = wrap(pd.read_parquet)


def describe(spec: dict[str, Any]) -> dict[str, Any]:
    """Each DataFrame's name, row count, and columns with dtype, null count and a few sample values."""
    frames = load_frames(spec)
    tables = []
    for name, frame in frames.items():
        columns = []
        for column in frame.columns:
            series = frame[column]
            samples = []
            for v in series.dropna().head(2000).unique()[:SAMPLE_VALUES]:
                v = _scalar(v)
                if isinstance(v, str) and len(v) > SAMPLE_CHARS:
                    v = v[:SAMPLE_CHARS] + "…"
                samples.append(v)
            columns.append(
                {
                    "name": str(column),
                    "dtype": str(series.dtype),
                    "nulls": int(series.isna().sum()),
                    "samples": samples,
                }
            )
        files = [t for t in spec["tables"] if t["name"] == name]
        original = os.path.basename(str(files[0].get("original", files[0]["path"]))) if files else name
        tables.append({"name": name, "file": original, "rows": len(frame), "columns": columns})
    return {"ok": True, "error": None, "tables": tables}


def _last_expression(tree: ast.Module) -> ast.expr | None:
    """The value a trailing ``expr`` or ``print(expr, ...)`` statement shows, to take as the result."""
    if not tree.body or not isinstance(tree.body[-1], ast.Expr):
        return None
    expr = tree.body[-1].value
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id == "print":
        if not expr.args or expr.keywords:
            return None
        return expr.args[0] if len(expr.args) == 1 else ast.Tuple(elts=list(expr.args), ctx=ast.Load())
    return expr


def _squash(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def _similar_columns(exc: BaseException, frames: dict[str, Any]) -> str:
    """For a ``KeyError`` on a column name: the columns spelled like it (case, spaces, punctuation aside)."""
    if not isinstance(exc, KeyError) or not exc.args or not isinstance(exc.args[0], str):
        return ""
    wrong = exc.args[0]
    columns = list(dict.fromkeys(str(c) for frame in frames.values() for c in frame.columns))
    near = [c for c in columns if _squash(c) == _squash(wrong)]
    near += [c for c in difflib.get_close_matches(wrong, columns, n=3, cutoff=0.6) if c not in near]
    if not near:
        shown = ", ".join(repr(c) for c in columns[:40])
        return f". The columns are: {shown}"
    return ". Columns with a similar name: " + ", ".join(repr(c) for c in near[:3])


#: Common pandas mistakes and the fix, matched on the error text (a small model rarely knows the idiom).
_HINTS = (
    (
        re.compile(r"Timedelta", re.IGNORECASE),
        "A difference of dates is a Timedelta: take `.dt.days` of a Series, or `.days` of one value.",
    ),
    (
        re.compile(
            r"could not convert string to float|unsupported operand type.*'str'|dtype 'str'|"
            r"not supported between instances of 'str'"
        ),
        "The column holds text: convert it with pd.to_numeric(df[column], errors='coerce') first.",
    ),
    (
        re.compile(r"'\w+Result'"),
        "A scipy.stats test returns a result object: compare its `.pvalue` (or `.statistic`).",
    ),
    (
        re.compile(r"Can only use \.dt accessor"),
        "The column is not a date: convert it with pd.to_datetime(df[column], errors='coerce') first.",
    ),
)


def _similar_names(exc: BaseException) -> str:
    """For ``from scipy.stats import AndersonDarling`` or ``stats.anderson_darling``: the module's names
    spelled like the missing one."""
    module_name, wrong = "", ""
    if isinstance(exc, ImportError) and exc.name is not None:
        match = re.search(r"cannot import name '(\w+)'", str(exc))
        module_name, wrong = exc.name, match.group(1) if match else ""
    elif isinstance(exc, AttributeError):
        match = re.search(r"module '([\w.]+)' has no attribute '(\w+)'", str(exc))
        if match:
            module_name, wrong = match.group(1), match.group(2)
    if not module_name or not wrong:
        return ""
    try:
        module = importlib.import_module(module_name)
    except Exception:
        return ""
    names = {_squash(n): n for n in dir(module) if not n.startswith("_")}
    near = difflib.get_close_matches(_squash(wrong), list(names), n=3, cutoff=0.5)
    near += [key for key in names if key and key in _squash(wrong) and len(key) > 4 and key not in near]
    if not near:
        return ""
    return f". {module_name} has: " + ", ".join(names[k] for k in near[:4])


def _hint(message: str) -> str:
    return "".join(f" {text}" for pattern, text in _HINTS if pattern.search(message))


def _error_text(exc: BaseException, code: str, frames: dict[str, Any] | None = None) -> str:
    """The exception with the model's own line that raised it (not the harness's frames), and for a wrong
    column name the names that exist."""
    lines = code.splitlines()
    where = ""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename == CODE_NAME and frame.lineno and 0 < frame.lineno <= len(lines):
            where = f" (line {frame.lineno}: {lines[frame.lineno - 1].strip()[:160]})"
            break
    message = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    similar = _similar_columns(exc, frames or {}) + _similar_names(exc)
    return f"{message[:1500]}{where}{similar}{_hint(message)}"


def run_code(spec: dict[str, Any], code: str, max_rows: int) -> dict[str, Any]:
    """Run the model's ``code`` on the source's DataFrames; ``{"ok", "columns", "rows", "row_count",
    "error", "stdout"}``."""
    import numpy as np
    import pandas as pd

    out: dict[str, Any] = {
        "ok": False,
        "columns": [],
        "rows": [],
        "row_count": 0,
        "error": None,
        "stdout": "",
    }
    try:
        tree = ast.parse(code, filename=CODE_NAME)
    except SyntaxError as exc:
        out["error"] = f"SyntaxError: {exc.msg} (line {exc.lineno}: {(exc.text or '').strip()[:160]})"
        return out
    frames = load_frames(spec)
    _reading_known_files(pd, spec, frames)
    namespace: dict[str, Any] = {"pd": pd, "np": np, "__name__": "__answer__", **frames}
    if len(frames) == 1:
        namespace["df"] = next(iter(frames.values()))
    # An empty dict to start from, so that ``result["mean"] = ...`` without ``result = {}`` works; left
    # empty, it counts as not set.
    seed: dict[str, Any] = {}
    namespace["result"] = seed

    def unset() -> bool:
        return namespace.get("result", seed) is seed and not seed

    tail = _last_expression(tree)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(tree, CODE_NAME, "exec"), namespace)
            if unset() and tail is not None:
                namespace["result"] = eval(compile(ast.Expression(body=tail), CODE_NAME, "eval"), namespace)
    except Exception as exc:
        out["error"] = _error_text(exc, code, frames)
        out["stdout"] = printed.getvalue()[-STDOUT_CHARS:]
        return out
    out["stdout"] = printed.getvalue()[-STDOUT_CHARS:]
    if unset():
        out["error"] = "the code did not set the variable `result` (assign the answer to `result`)"
        return out
    try:
        columns, rows, count = to_table(namespace["result"], max_rows)
    except Exception as exc:
        out["error"] = f"the value of `result` cannot be shown as a table: {type(exc).__name__}: {exc}"
        return out
    out.update(ok=True, columns=columns, rows=rows, row_count=count)
    return out


def main(argv: list[str]) -> int:
    """Sandbox entry point: ``main(["pydriver", REQUEST_JSON, RESULT_JSON])`` (appended by the runner)."""
    with open(argv[1], encoding="utf-8") as f:
        request = json.load(f)
    try:
        if request["op"] == "describe":
            out = describe(request["spec"])
        else:
            out = run_code(request["spec"], request["code"], int(request["max_rows"]))
    except Exception as exc:
        out = {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "columns": [],
            "rows": [],
            "row_count": 0,
        }
    with open(argv[2], "w", encoding="utf-8") as f:
        json.dump(out, f, default=str)
    return 0
