"""Verified queries: question → SQL pairs a team trusts, shown to the model as examples.

The file is YAML, a list of ``{question: ..., sql: ...}`` mappings. The closest pairs to a new question are
found by lexical similarity (BM25-like weighting of shared word stems; no network, no embedding model).

>>> vq = [VerifiedQuery(question="How many customers are there?", sql="SELECT COUNT(*) FROM Customer"),
...       VerifiedQuery(question="Total sales by country", sql="SELECT ...")]
>>> [q.question for q, _ in closest(vq, "how many customers do we have", k=1)]
['How many customers are there?']
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from corral.apps.data_agent._schema import FUNCTION_WORDS, words
from corral.apps.data_agent.errors import SourceError


class VerifiedQuery(BaseModel):
    """A question and the SQL that answers it, checked by a person."""

    question: str
    sql: str


def load_verified(path: str | Path) -> list[VerifiedQuery]:
    """Read a verified-queries YAML file; a malformed file is a clear error naming the entry."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or []
    except (OSError, yaml.YAMLError) as exc:
        raise SourceError(f"{p}: cannot read the verified queries: {exc}") from exc
    if not isinstance(data, list):
        raise SourceError(f"{p}: verified queries must be a YAML list of {{question, sql}} mappings")
    out = []
    for i, item in enumerate(data):
        try:
            out.append(VerifiedQuery.model_validate(item))
        except ValidationError as exc:
            raise SourceError(f"{p}: entry {i + 1} is not a {{question, sql}} mapping: {exc}") from exc
    return out


def _terms(text: str) -> list[str]:
    return [w for w in words(text) if w not in FUNCTION_WORDS]


def closest(
    queries: list[VerifiedQuery], question: str, *, k: int = 2, min_score: float = 0.2
) -> list[tuple[VerifiedQuery, float]]:
    """The ``k`` verified queries most similar to ``question`` (score in [0, 1]), best first."""
    if not queries:
        return []
    docs = [Counter(_terms(q.question)) for q in queries]
    df: Counter[str] = Counter()
    for d in docs:
        df.update(d.keys())
    n = len(docs)
    qterms = set(_terms(question))

    def idf(t: str) -> float:
        return math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))

    scored = []
    for vq, doc in zip(queries, docs, strict=True):
        union = qterms | set(doc)
        if not union:
            continue
        # Weighted Jaccard: shared rare words count more than shared common ones.
        shared = sum(idf(t) for t in qterms & set(doc))
        total = sum(idf(t) for t in union)
        score = shared / total if total else 0.0
        if score >= min_score:
            scored.append((vq, score))
    scored.sort(key=lambda x: -x[1])
    return scored[:k]
