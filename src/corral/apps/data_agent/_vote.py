"""Self-consistency on results: more queries sampled from the same prompt, run, and the result most agree on.

Votes are on results, not on SQL text: two queries written differently that return the same rows agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from corral.apps.data_agent._checks import sanity_check
from corral.apps.data_agent._events import CheckNoted, QueryWritten
from corral.apps.data_agent._runner import QueryResult
from corral.apps.data_agent._schema import Schema
from corral.apps.data_agent._sqlcheck import extract_sql, is_read_only, lint
from corral.apps.data_agent._state import Question, ask_model, emit
from corral.durable import RunContext


class SqlFlow(Protocol):
    """What the vote uses of the SQL flow: the schemas, its repairs and its query step."""

    full: Schema
    schema: Schema

    def repair(self, q: Question, sql: str) -> str: ...
    async def query(self, ctx: RunContext, sql: str) -> QueryResult: ...


#: A candidate query's token budget: a query, not the explanation small models like to add after it.
CANDIDATE_TOKENS = 200


def nothing(result: QueryResult) -> bool:
    """A single row of zeros and NULLs: what a query whose filter or join matched nothing returns."""
    return len(result.rows) == 1 and all(v is None or v == 0 for v in result.rows[0])


def result_key(result: QueryResult) -> tuple[str, ...]:
    """A result's identity for voting: its rows as a sorted multiset, numbers at 6 significant digits,
    column names ignored."""

    def cell(v: Any) -> str:
        if isinstance(v, bool) or v is None:
            return repr(v)
        if isinstance(v, int | float):
            return f"{float(v):.6g}"
        return str(v)

    return tuple(sorted("\x1f".join(cell(v) for v in row) for row in result.rows))


@dataclass
class _Pool:
    """The candidates so far: (query, result) in the order drawn, the first being the attempt's own."""

    entries: list[tuple[str, QueryResult]]
    by_text: dict[str, QueryResult] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)


async def _draw(ctx: RunContext, q: Question, flow: SqlFlow, pool: _Pool, seeds: range) -> None:
    agent = q.agent
    dialect = flow.full.dialect
    for seed in seeds:
        reply = await ask_model(
            ctx,
            q,
            "sql-alt",
            q.prompt,
            temperature=agent.candidate_temperature,
            seed=seed,
            max_tokens=CANDIDATE_TOKENS,
        )
        alt = extract_sql(reply, dialect=dialect)
        if not alt:
            continue
        alt = flow.repair(q, alt)
        if not is_read_only(alt, dialect=dialect) or lint(alt, dialect=dialect):
            continue
        text = " ".join(alt.split())
        if text in pool.by_text:
            pool.entries.append((alt, pool.by_text[text]))  # the same query again: a vote for its result
            continue
        emit(q, QueryWritten(message=alt, language="sql", attempt=None))
        alt_result = await flow.query(ctx, alt)
        pool.by_text[text] = alt_result
        pool.entries.append((alt, alt_result))
        if not alt_result.ok:
            pool.failed.append(text)


def _clean(q: Question, flow: SqlFlow, sql: str, result: QueryResult) -> bool:
    found = sanity_check(q.question, sql, result, schema=flow.schema, full=flow.full)
    return result.row_count > 0 and not any(f.blocking for f in found)


def _count(q: Question, flow: SqlFlow, pool: _Pool) -> tuple[int, dict[tuple[str, ...], list[int]]]:
    """How many candidates ran, and the groups of those that agree. Results with a blocking sanity
    finding vote only when no other result ran."""
    ran = [(i, s, r) for i, (s, r) in enumerate(pool.entries) if r.ok]
    clean = [(i, s, r) for i, s, r in ran if _clean(q, flow, s, r)]
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, _, r in clean or ran:
        groups.setdefault(result_key(r), []).append(i)
    return len(ran), groups


async def vote(
    ctx: RunContext, q: Question, flow: SqlFlow, sql: str, result: QueryResult
) -> tuple[str, QueryResult, bool]:
    """Up to ``candidates`` more queries sampled from the attempt's prompt are checked and run like the first;
    the result most candidates give wins (ties: a result that is not a single row of zeros/NULLs, then the
    first query's, then the earliest). Drawing stops once more than half of all the candidates agree (with
    two more, the first two agreeing), since the rest could not change the winner. When no two results
    agree, ``candidates`` more are drawn, once. Returns the winner and whether every candidate that ran
    agreed on it (two at least)."""
    n = q.agent.candidates
    pool = _Pool([(sql, result)], {" ".join(sql.split()): result})
    for seed in range(1, n + 1):
        await _draw(ctx, q, flow, pool, range(seed, seed + 1))
        ran, groups = _count(q, flow, pool)
        if max((len(g) for g in groups.values()), default=0) * 2 > n + 1:
            break  # a majority of all the candidates already agrees: the rest could not change the winner
    if len(groups) > 1 and max(len(g) for g in groups.values()) == 1:
        # No two results agree: one more round decides more often than a tie-break.
        await _draw(ctx, q, flow, pool, range(n + 1, 2 * n + 1))
        ran, groups = _count(q, flow, pool)
    q.tried.update(pool.failed)
    if not groups:
        return sql, result, False

    def rank(key: tuple[str, ...]) -> tuple[int, bool, bool, int]:
        members = groups[key]
        return len(members), not nothing(pool.entries[members[0]][1]), 0 in members, -members[0]

    best = max(groups, key=rank)
    size, voters = len(groups[best]), sum(len(g) for g in groups.values())
    emit(
        q,
        CheckNoted(
            message=f"{len(pool.entries)} candidate queries, {ran} ran, {size} agree on the kept result"
        ),
    )
    kept_sql, kept = pool.entries[groups[best][0]]
    unanimous = _clean(q, flow, kept_sql, kept) and size >= 2 and len(groups) == 1 and ran == voters
    return kept_sql, kept, unanimous


#: The seed of the query that confirms a fix (the vote's candidates use 1 to 2 × ``candidates``).
CONFIRM_SEED = 99


async def confirmed(ctx: RunContext, q: Question, flow: SqlFlow, result: QueryResult) -> bool:
    """Whether one more query sampled from the attempt's prompt returns the same rows as ``result``: an
    independent sample agreeing is the check a fix gets before it is kept as a lesson (a fix that only
    happened to run is not one)."""
    pool = _Pool([])
    await _draw(ctx, q, flow, pool, range(CONFIRM_SEED, CONFIRM_SEED + 1))
    return any(r.ok and result_key(r) == result_key(result) for _, r in pool.entries)
