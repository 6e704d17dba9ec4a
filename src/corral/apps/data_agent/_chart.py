"""Charts: a Vega-Lite spec when a result is a series or a comparison of categories, and the code that
renders it as a PNG with matplotlib (run inside the sandbox, never in the host).

>>> spec = vega_lite_spec(["Genre", "tracks"], [["Rock", 1297], ["Latin", 579]])
>>> spec["mark"]["type"], spec["encoding"]["x"]["field"], spec["encoding"]["y"]["type"]
('bar', 'Genre', 'quantitative')
>>> vega_lite_spec(["n"], [[3]]) is None
True
"""

from __future__ import annotations

import re
from typing import Any

#: Most categories a bar chart shows; longer results are not comparisons at a glance.
MAX_BARS = 40
MAX_POINTS = 2000

_TIME = re.compile(r"^\d{4}(-\d\d)?(-\d\d)?([ T]\d\d:\d\d(:\d\d)?)?$")


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def chart_shape(columns: list[str], rows: list[list[Any]]) -> tuple[str, int, int] | None:
    """``(kind, x_index, y_index)`` when the result is worth a chart: ``line`` for a time series (or a year
    column), ``bar`` for a measure per category; ``None`` otherwise (one value, no measure, too many rows)."""
    if len(rows) < 2 or len(columns) < 2:
        return None
    numeric = [i for i in range(len(columns)) if all(_is_number(r[i]) or r[i] is None for r in rows)]
    if not numeric:
        return None
    y = numeric[-1]
    others = [i for i in range(len(columns)) if i != y]
    for x in others:
        values = [r[x] for r in rows if r[x] is not None]
        name = columns[x].lower()
        is_time = all(isinstance(v, str) and _TIME.match(v) for v in values) or (
            re.search(r"year|month|date|day", name) is not None and all(_is_number(v) for v in values)
        )
        if is_time and len(rows) <= MAX_POINTS:
            return "line", x, y
    for x in others:
        if x not in numeric and len(rows) <= MAX_BARS:
            return "bar", x, y
    return None


def vega_lite_spec(columns: list[str], rows: list[list[Any]], *, title: str = "") -> dict[str, Any] | None:
    """A Vega-Lite v5 spec with the data inline, or ``None`` when no chart helps."""
    shape = chart_shape(columns, rows)
    if shape is None:
        return None
    kind, x, y = shape
    data = [{columns[x]: r[x], columns[y]: r[y]} for r in rows]
    x_type = "temporal" if kind == "line" and isinstance(rows[0][x], str) else "ordinal"
    if kind == "bar":
        x_type = "nominal"
    spec: dict[str, Any] = {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "data": {"values": data},
        "mark": {"type": kind, "tooltip": True},
        "encoding": {
            "x": {"field": columns[x], "type": x_type, "sort": None},
            "y": {"field": columns[y], "type": "quantitative"},
        },
    }
    if title:
        spec["title"] = title
    return spec


#: Python run in the sandbox to draw the PNG. It reads ``/data/chart.json`` (written by the host, data only)
#: and writes ``chart.png``; nothing from the data is ever formatted into this code.
RENDER_CODE = """
import json
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

with open("/data/chart.json", encoding="utf-8") as f:
    spec = json.load(f)
enc = spec["encoding"]
xf, yf = enc["x"]["field"], enc["y"]["field"]
xs = [str(d[xf]) for d in spec["data"]["values"]]
ys = [d[yf] if d[yf] is not None else 0 for d in spec["data"]["values"]]
fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
if spec["mark"]["type"] == "line":
    ax.plot(xs, ys, marker="o")
else:
    ax.bar(xs, ys)
ax.set_xlabel(xf)
ax.set_ylabel(yf)
if spec.get("title"):
    ax.set_title(spec["title"][:80])
for label in ax.get_xticklabels():
    label.set_rotation(45)
    label.set_horizontalalignment("right")
if len(xs) > 20:
    for i, label in enumerate(ax.get_xticklabels()):
        label.set_visible(i % max(1, len(xs) // 20) == 0)
fig.tight_layout()
fig.savefig("chart.png")
"""
