"""The pandas harness's own functions, in process: how a result becomes a table, how code errors read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from corral.apps.data_agent import _pydriver


@pytest.fixture
def spec(tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "sales 2024.csv"
    path.write_text("region,amount,when\nnorth,3,2024-01-02\nsouth,4,2024-02-03\nnorth,5,\n")
    return {"tables": [{"name": "sales_2024", "path": str(path), "format": "csv", "original": path.name}]}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (np.float64(2.5), (["result"], [[2.5]], 1)),
        (
            {"mean": np.float64(1.5), "label": "normal", "n": np.int64(3)},
            (["mean", "label", "n"], [[1.5, "normal", 3]], 1),
        ),
        (pd.Series([1, 2], index=["x", "y"], name="n"), (["index", "n"], [["x", 1], ["y", 2]], 2)),
        (pd.Series([7, 8]), (["value"], [[7], [8]], 2)),
        (pd.DataFrame({"a": [1.0, np.nan]}), (["a"], [[1.0], [None]], 2)),
        ([3, 1], (["value"], [[3], [1]], 2)),
        (("normal", np.float64(0.1)), (["value_1", "value_2"], [["normal", 0.1]], 1)),
        ({"a": [1, 2], "b": [3, 4]}, (["a", "b"], [[1, 3], [2, 4]], 2)),
        (pd.Timestamp("2024-01-02"), (["result"], [["2024-01-02T00:00:00"]], 1)),
    ],
)
def test_results_become_plain_json_tables(value: Any, expected: tuple[Any, ...]) -> None:
    columns, rows, count = _pydriver.to_table(value)
    assert (columns, rows, count) == expected
    assert all(type(v) in (int, float, str, bool, type(None)) for row in rows for v in row)


def test_a_grouped_frame_keeps_its_keys_as_columns() -> None:
    frame = pd.DataFrame({"k": ["a", "b", "a"], "v": [1, 2, 3]}).groupby("k").agg(total=("v", "sum"))
    assert _pydriver.to_table(frame) == (["k", "total"], [["a", 4], ["b", 2]], 2)


def test_rows_are_capped_but_counted() -> None:
    _columns, rows, count = _pydriver.to_table(pd.DataFrame({"x": range(50)}), max_rows=10)
    assert len(rows) == 10 and count == 50


def test_code_sees_the_frame_as_df_and_by_name(spec: dict[str, Any]) -> None:
    out = _pydriver.run_code(spec, "result = {'total': df.amount.sum(), 'same': sales_2024 is df}", 100)
    assert out["ok"] and out["columns"] == ["total", "same"] and out["rows"] == [[12, True]]


@pytest.mark.parametrize(
    "code",
    [
        "df.groupby('region').amount.sum()",  # a last bare expression
        "x = df.groupby('region').amount.sum()\nprint(x)",  # a last print of one value
    ],
)
def test_a_trailing_expression_or_print_is_the_result(spec: dict[str, Any], code: str) -> None:
    out = _pydriver.run_code(spec, code, 100)
    assert out["ok"], out["error"]
    assert out["rows"] == [["north", 8], ["south", 4]]


def test_reloading_the_file_by_any_path_reads_the_source(spec: dict[str, Any]) -> None:
    code = "import pandas as pd\ndata = pd.read_csv('/mnt/data/sales 2024.csv')\nresult = len(data)"
    out = _pydriver.run_code(spec, code, 100)
    assert out["ok"] and out["rows"] == [[3]]


def test_an_error_names_the_exception_and_the_models_line(spec: dict[str, Any]) -> None:
    out = _pydriver.run_code(spec, "x = 1\nresult = df['price'].mean()", 100)
    assert not out["ok"]
    assert (
        out["error"].startswith("KeyError: 'price'") and "line 2: result = df['price'].mean()" in out["error"]
    )


def test_syntax_errors_and_a_missing_result_are_clear(spec: dict[str, Any]) -> None:
    bad = _pydriver.run_code(spec, "def f(:\n  pass", 100)
    assert not bad["ok"] and bad["error"].startswith("SyntaxError") and "line 1" in bad["error"]
    none = _pydriver.run_code(spec, "x = df.amount.sum()", 100)
    assert not none["ok"] and "did not set the variable `result`" in none["error"]


def test_describe_lists_dtypes_missing_values_and_samples(spec: dict[str, Any]) -> None:
    table = _pydriver.describe(spec)["tables"][0]
    assert table["name"] == "sales_2024" and table["rows"] == 3
    by_name = {c["name"]: c for c in table["columns"]}
    assert by_name["amount"]["dtype"] == "int64" and by_name["amount"]["samples"] == [3, 4, 5]
    assert by_name["when"]["nulls"] == 1 and by_name["region"]["samples"] == ["north", "south"]


def test_a_latin1_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "legacy.csv"
    path.write_bytes("name,city\nJos\xe9,M\xe1laga\n".encode("latin-1"))
    spec = {"tables": [{"name": "legacy", "path": str(path), "format": "csv"}]}
    out = _pydriver.run_code(spec, "result = df.city[0]", 10)
    assert out["ok"] and out["rows"] == [["Málaga"]]


def test_a_reload_gets_the_prepared_frame_and_options_still_apply(tmp_path: Path) -> None:
    path = tmp_path / "budget.csv"
    path.write_text(" dept ;start;end\na;2024-01-01;2024-12-30\nb;2024-01-01;2024-12-31\n")
    spec = {"tables": [{"name": "budget", "path": str(path), "format": "csv", "original": path.name}]}
    # The file is ';'-separated: read with sep=';' it is parsed again, and prepared the same way.
    code = "d = pd.read_csv('budget.csv', sep=';')\nresult = {'days': (d['end'] - d['start']).dt.days.mean()}"
    out = _pydriver.run_code(spec, code, 10)
    assert out["ok"], out["error"]
    assert out["rows"] == [[364.5]]
    # The column names lost their surrounding spaces; a plain reload is the loaded frame itself.
    out = _pydriver.run_code(spec, "result = list(pd.read_csv('/mnt/data/budget.csv').columns)", 10)
    assert out["ok"] and out["rows"] == [["dept ;start;end"]]


def test_a_wrong_column_name_is_answered_with_the_names_that_exist(tmp_path: Path) -> None:
    path = tmp_path / "wind.csv"
    path.write_text("Wind_Speed,TEMP\n1.5,20\n2.5,21\n")
    spec = {"tables": [{"name": "wind", "path": str(path), "format": "csv"}]}
    out = _pydriver.run_code(spec, "result = df['WINDSPEED'].mean()", 10)
    assert not out["ok"] and "Columns with a similar name: 'Wind_Speed'" in out["error"]
    out = _pydriver.run_code(spec, "result = df['humidity'].mean()", 10)
    assert "The columns are: 'Wind_Speed', 'TEMP'" in out["error"]


def test_filling_result_without_creating_it_works(spec: dict[str, Any]) -> None:
    out = _pydriver.run_code(spec, "result['n'] = len(df)\nresult['total'] = df.amount.sum()", 10)
    assert out["ok"] and out["columns"] == ["n", "total"] and out["rows"] == [[3, 12]]


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        ("result = round((df.when - df.when).mean())", "`.dt.days`"),
        ("result = df.region.astype(float).sum()", "pd.to_numeric"),
        ("result = df.region.dt.year", "pd.to_datetime"),
    ],
)
def test_common_pandas_mistakes_come_back_with_the_idiom(spec: dict[str, Any], code: str, hint: str) -> None:
    out = _pydriver.run_code(spec, code, 10)
    assert not out["ok"] and hint in out["error"], out["error"]


def test_a_wrong_library_name_comes_back_with_the_names_that_exist(spec: dict[str, Any]) -> None:
    out = _pydriver.run_code(spec, "from scipy.stats import AndersonDarling\nresult = 1", 10)
    assert not out["ok"] and "scipy.stats has:" in out["error"] and "anderson" in out["error"], out["error"]
    out = _pydriver.run_code(spec, "import scipy.stats as st\nresult = st.shapiro_wilk(df.amount)", 10)
    assert "shapiro" in out["error"].split("has:")[-1], out["error"]
    out = _pydriver.run_code(spec, "from scipy import stats\nresult = stats.shapiro(df.amount) < 0.05", 10)
    assert "`.pvalue`" in out["error"], out["error"]
