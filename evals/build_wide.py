"""Build ``wide.sqlite``: 300 tables and 3,000 columns, to check schema narrowing on a large schema.

Deterministic (fixed seed): 30 domains of 10 tables each, named ``<domain>_<entity>`` (``hotel_booking``),
so the same entity appears in several domains and only the domain word tells them apart, as in large
company schemas. Each table has 10 columns: an ``id`` key, a ``name``, a ``status``, keys to one or two
other tables of its domain (``<entity>_id``, declared as foreign keys on half of the tables only), and
attributes from a shared pool (``amount``, ``rating``, ``city`` ...), with a few rows of data.

:func:`questions` derives questions with the tables each one needs (a count, a filter, an aggregate, a
join with the referenced table, the most rows per grandparent over two joins), to measure narrowing
recall: the share of questions whose needed tables are all kept. Not a question set for the agent's
accuracy (it has no gold answers) and not used to tune it.

Run: ``python evals/build_wide.py [PATH]`` (default ``evals/wide.sqlite``; the file is not committed).
"""

from __future__ import annotations

import random
import sqlite3
import sys
from pathlib import Path

SEED = 300


def _split(text: str) -> list[str]:
    return text.split()


DOMAINS = _split(
    "library hospital airline school hotel farm bank retail factory museum zoo cinema gym restaurant "
    "university courier insurance telecom energy shipping garden theatre stadium laboratory pharmacy "
    "bakery brewery winery marina ranch"
)
ENTITIES = _split(
    "customer order product supplier invoice payment shipment employee department project task ticket "
    "asset vehicle driver route booking room guest event venue member plan subscription device sensor "
    "reading account transaction branch loan policy claim visit course student enrollment teacher book "
    "author review contract warehouse batch inspection schedule shift complaint refund campaign lead "
    "partner license permit survey incident repair"
)
ATTRIBUTES = {
    "amount": "REAL",
    "quantity": "INTEGER",
    "price": "REAL",
    "rating": "INTEGER",
    "email": "TEXT",
    "phone": "TEXT",
    "city": "TEXT",
    "country": "TEXT",
    "description": "TEXT",
    "weight": "REAL",
    "duration_minutes": "INTEGER",
    "score": "REAL",
    "category": "TEXT",
    "capacity": "INTEGER",
    "balance": "REAL",
    "start_date": "TEXT",
    "end_date": "TEXT",
    "created_at": "TEXT",
    "priority": "INTEGER",
    "color": "TEXT",
}
STATUSES = ("open", "closed", "pending", "active", "archived")
CITIES = ("Lyon", "Porto", "Osaka", "Quito", "Tunis", "Perth")
COLUMNS_PER_TABLE = 10
ROWS = 6


def plural(word: str) -> str:
    if word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    if word.endswith(("s", "ch", "sh")):
        return word + "es"
    return word + "s"


def layout(seed: int = SEED) -> list[dict[str, object]]:
    """The tables: name, domain, entity, columns ``[(name, type)]``, references ``[(column, table)]``."""
    rng = random.Random(seed)
    tables: list[dict[str, object]] = []
    for domain in DOMAINS:
        entities = rng.sample(ENTITIES, 10)
        for i, entity in enumerate(entities):
            # Keys point to earlier tables of the domain: a tree of references, no cycles.
            parents = rng.sample(entities[:i], min(i, rng.choice((1, 2)))) if i else []
            columns: list[tuple[str, str]] = [("id", "INTEGER"), ("name", "TEXT"), ("status", "TEXT")]
            refs = [(f"{p}_id", f"{domain}_{p}") for p in parents]
            columns += [(col, "INTEGER") for col, _ in refs]
            pool = [a for a in ATTRIBUTES if a not in {c for c, _ in columns}]
            for attr in rng.sample(pool, COLUMNS_PER_TABLE - len(columns)):
                columns.append((attr, ATTRIBUTES[attr]))
            tables.append(
                {
                    "name": f"{domain}_{entity}",
                    "domain": domain,
                    "entity": entity,
                    "columns": columns,
                    "refs": refs,
                    "declared": rng.random() < 0.5,
                }
            )
    return tables


def _value(rng: random.Random, column: str, kind: str, row: int, table: str) -> object:
    if column == "id":
        return row
    if column.endswith("_id"):
        return rng.randint(1, ROWS)
    if column == "name":
        return f"{table.split('_', 1)[1]} {row}"
    if column == "status":
        return rng.choice(STATUSES)
    if column == "city":
        return rng.choice(CITIES)
    if column.endswith(("date", "_at")):
        return f"202{rng.randint(0, 4)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}"
    if kind == "INTEGER":
        return rng.randint(0, 500)
    if kind == "REAL":
        return round(rng.uniform(0, 1000), 2)
    return f"{column} {rng.randint(1, 50)}"


def build(path: Path, seed: int = SEED) -> Path:
    """Write the database at ``path`` (replaced if it exists)."""
    path.unlink(missing_ok=True)
    rng = random.Random(seed)
    conn = sqlite3.connect(path)
    try:
        for t in layout(seed):
            name, columns = str(t["name"]), list(t["columns"])  # type: ignore[call-overload]
            refs = dict(t["refs"]) if t["declared"] else {}  # type: ignore[call-overload]
            defs = []
            for col, kind in columns:
                line = f"{col} {kind}" + (" PRIMARY KEY" if col == "id" else "")
                if col in refs:
                    line += f" REFERENCES {refs[col]}(id)"
                defs.append(line)
            conn.execute(f"CREATE TABLE {name} ({', '.join(defs)})")
            marks = ", ".join("?" for _ in columns)
            rows = [[_value(rng, c, k, r, name) for c, k in columns] for r in range(1, ROWS + 1)]
            conn.executemany(f"INSERT INTO {name} VALUES ({marks})", rows)
        conn.commit()
    finally:
        conn.close()
    return path


def questions(seed: int = SEED, count: int = 60) -> list[tuple[str, list[str]]]:
    """``count`` questions with the tables each needs (see the module docstring)."""
    rng = random.Random(seed + 1)
    tables = layout(seed)
    by_name = {str(t["name"]): t for t in tables}
    out: list[tuple[str, list[str]]] = []
    while len(out) < count:
        t = rng.choice(tables)
        name, domain, entity = str(t["name"]), str(t["domain"]), str(t["entity"])
        attrs = [
            c for c, k in t["columns"] if k in ("REAL", "INTEGER") and c != "id" and not c.endswith("_id")
        ]  # type: ignore[attr-defined]
        refs = list(t["refs"])  # type: ignore[call-overload]
        kind = len(out) % 5
        things = f"{domain} {plural(entity)}"
        if kind == 0:
            out.append((f"How many {things} are there?", [name]))
        elif kind == 1:
            out.append((f"How many {things} have the status '{rng.choice(STATUSES)}'?", [name]))
        elif kind == 2 and attrs:
            attr = rng.choice(attrs).replace("_", " ")
            out.append((f"What is the average {attr} of the {things}?", [name]))
        elif kind == 3 and refs and attrs:
            _, parent = rng.choice(refs)
            p_entity = str(by_name[parent]["entity"])
            attr = rng.choice(attrs).replace("_", " ")
            out.append(
                (f"What is the total {attr} of the {things} for each {p_entity} name?", [name, parent])
            )
        elif kind == 4 and refs:
            _, parent = rng.choice(refs)
            grand = list(by_name[parent]["refs"])  # type: ignore[call-overload]
            if not grand:
                continue
            _, top = rng.choice(grand)
            if top in {r for _, r in refs}:
                continue  # a direct key to it: that join, not the two-step one, answers the question
            g_entity = str(by_name[top]["entity"])
            out.append((f"Which {domain} {g_entity} has the most {plural(entity)}?", [name, parent, top]))
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("wide.sqlite")
    build(target)
    print(f"{target}: {len(layout())} tables, {sum(len(t['columns']) for t in layout())} columns")  # type: ignore[arg-type,misc]
