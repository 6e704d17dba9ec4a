"""Grounding: each concept a question needs, tied to a column, a table or a value of the data, or declared
missing with the evidence.

The system does the matching (a 0.5B model does not read a schema reliably): the question's content words
are grouped into phrases ("blood pressure", "phone number"), and each phrase is matched against table and
column names (stems, prefixes, camelCase and snake_case parts), generic synonyms and sample values.
A phrase nothing matches is a *candidate*: a few concepts have known groundings (an "age" needs an age or a
birth date column, never a record's creation date); for the others the model only chooses, among the
closest columns, the one that holds the phrase or "none". A column it picks that cannot mean the phrase (a
key for a "rating") is not accepted. ``cannot_answer`` comes from here, with the phrase and the closest
columns, never from a query that used a wrong name: that is a mistake to fix.

Pure functions except :func:`choose`, which asks the model (journaled, through the question's budget).
"""

from __future__ import annotations

import difflib
import functools
import itertools
import json
import re
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from corral.apps.data_agent._events import CheckNoted
from corral.apps.data_agent._schema import (
    _STOP,
    Column,
    Schema,
    Table,
    _looks_like_key,
    expand,
    join_path,
    words,
)
from corral.apps.data_agent._sqlcheck import quote_identifier
from corral.apps.data_agent._state import ask_model, emit
from corral.models import OutputSchema, SystemMessage, UserMessage

if TYPE_CHECKING:
    from collections.abc import Sequence

    from corral.apps.data_agent._state import Question
    from corral.durable import RunContext

#: At most this many model choices per question (each is a short call); later candidates stay unknown.
MAX_CHOICES = 3
#: Columns offered to the model for one phrase.
MAX_OFFERED = 12


def _bag(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words a question uses to ask, compare or compute, and relations a schema expresses with keys: matched
# when a column is named so, otherwise never a concept of their own. Domain-neutral on purpose.
_GENERIC_WORDS = _bag(
    """
    value values data dataset datasets record records row rows column columns table tables database entry
    entries item items information info detail details result results type types kind kinds thing things
    time times amount amounts part parts group groups level levels set way ways case cases
    mean median mode std standard deviation variance percent percentage proportion ratio fraction share
    correlation coefficient distribution normal skew skewness kurtosis outlier outliers missing null nulls
    duplicate duplicates unique distinct frequency frequent common rare range minimum maximum quantile
    quartile percentile calculate compute determine identify check find print report round rounded decimal
    decimals place places significant significance test statistic statistics statistical regression linear
    model predict prediction feature features z zscore pearson spearman method methods analysis analyze
    python pandas numpy scipy module function built answer format consider considered assume based
    have had give gave given get got make made work works worked belong belongs contain contains include
    includes including appear appears use uses using used take took come came go went occur occurred
    happen happened exist exists associated related corresponding respective overall combined together
    across within among along them they their his her him she he we you your our us i my
    popular recent latest current new big small large high low good bad best worst better worse greater
    higher lower larger smaller bigger fewer longer shorter older younger earlier later early late
    people person one ones other others same different several various whole entire
    above below after before during since until per year years month months day days date dates week
    today tomorrow yesterday ago now currently number numbers total sum list name named called
    tie ties broken order ordered sort sorted descending ascending first last next previous
    hundred thousand million billion dozen second seconds minute minutes hour hours millisecond
    milliseconds never ever will would like can could should may might also still just yes whether then
    perform generate create remove detect build apply handle provide compare evaluate train training
    testing conclude justify follow follows adhere adheres represent represents representing replace
    replacing removing include subtract subtracting add adding divide multiply fit output return show
    approach technique techniques engineering preprocessing analysis variable variables column's
    threshold alpha p-value pvalue mse rmse mae error errors squared absolute relative normalization
    normalize normalized scale scaled scaling justification whisker whiskers box plot significantly
    difference differences relationship determination goodness performance strategy imputation deletion
    detection metric metrics change changes point points lesser equal capita question questions
    comprehensive nonlinear conduct file csv paid done won lost held kept taken seen shown known found
    brought sent
    """
)
_GENERIC = _GENERIC_WORDS | frozenset(words(" ".join(_GENERIC_WORDS)))

# Concepts whose grounding the system knows: the column words that can hold them. A phrase with one of
# these words and none of those columns is missing: the model is not asked (it invents mappings, e.g. an
# "age" from a record's creation date, a "rating" from the average of an id).
_NEEDS: dict[str, frozenset[str]] = {
    k: _bag(v)
    for k, v in {
        "age": "age birth born dob birthday",
        "born": "birth born dob birthday",
        "money": "price cost amount total revenue fee charge salary sale payment",
        "salary": "salary wage pay income compensation earning",
        "wage": "salary wage pay income compensation earning",
        "income": "income salary wage earning revenue",
        "rating": "rating rate score star review grade",
        "star": "star rating score review",
        "review": "review rating comment feedback",
        "phone": "phone telephone mobile cell",
        "email": "email mail",
        "weather": "weather temperature rain wind humidity",
        "gender": "gender sex",
        "speed": "speed velocity",
        "nationality": "nationality country citizenship",
        "height": "height",
        "weight": "weight",
    }.items()
}

# Words of a time (a date column may ground them, never other concepts).
_TIME_WORDS = _bag("date time year month day week hour minute when period duration")

_AGGREGATE = _bag(
    "average mean total sum count number max min maximum minimum highest lowest most least median"
)


@dataclass
class Concept:
    """One phrase of the question and what grounds it."""

    text: str
    stems: list[str]
    #: ``Table.Column`` names (or table names) that hold it; empty when missing or unknown.
    grounds: list[str] = field(default_factory=list)
    how: str = ""  # name, synonym, value, model, or "" (not grounded)
    missing: bool = False
    closest: list[str] = field(default_factory=list)
    evidence: str = ""
    #: Asked as a measure (averaged, summed, ranked): a key cannot hold it.
    measured: bool = False


@dataclass
class Grounding:
    """The concepts of one question, and the join path that connects the tables they ground to."""

    concepts: list[Concept] = field(default_factory=list)
    joins: list[str] = field(default_factory=list)
    #: The question's word stems (a tie between tables goes to the one whose name has more of them).
    asked: frozenset[str] = frozenset()

    def missing(self) -> list[Concept]:
        return [c for c in self.concepts if c.missing]

    def candidates(self) -> list[Concept]:
        """Phrases nothing matched and nothing decided yet (the model chooses for these)."""
        return [c for c in self.concepts if not c.grounds and not c.missing and c.how != "unknown"]

    def unresolved(self) -> list[Concept]:
        """Phrases neither grounded nor missing: what the data holds for them is not known."""
        return [c for c in self.concepts if not c.grounds and not c.missing]

    def guessed(self) -> list[Concept]:
        """Phrases the system grounded nowhere: unresolved, or grounded only by the model's choice."""
        return [c for c in self.concepts if not c.missing and (not c.grounds or c.how == "model")]

    def tables(self) -> list[str]:
        """One table per grounded concept: the one it names; for a concept grounded in columns only, a table
        already chosen that has one of them, else the first."""
        chosen: list[str] = []
        for c in self.concepts:
            # The name with most of the phrase's words, then of the question's, then the shortest:
            # InvoiceLine for "invoice lines", Track (not PlaylistTrack) for "track", hotel_guest (not
            # zoo_guest) for "guests" in a question about a hotel.
            named = sorted(
                (g for g in c.grounds if "." not in g),
                key=lambda g: (-len(set(words(g)) & set(c.stems)), -len(set(words(g)) & self.asked), len(g)),
            )
            if named and named[0] not in chosen:
                chosen.append(named[0])
        for c in self.concepts:
            owners = [g.split(".", 1)[0] for g in c.grounds if "." in g]
            if not owners or any("." not in g for g in c.grounds) or any(t in chosen for t in owners):
                continue
            chosen.append(owners[0])
        return chosen

    def reason(self) -> str:
        """Why the data cannot answer: each missing concept with its evidence."""
        return "; ".join(c.evidence for c in self.missing())

    def unfound(self) -> str | None:
        """After every query failed: when exactly one phrase of the question was grounded nowhere by the
        system, that is the likeliest reason, said as the finding (the model's pick, if any, named as tried);
        otherwise ``None``."""
        guessed = self.guessed()
        if len(guessed) != 1:
            return None
        c = guessed[0]
        tried = f"; the queries that read {c.grounds[0]} for it failed" if c.grounds else ""
        return _evidence(c.text, [g for g in c.closest if g not in c.grounds][:3]) + tried

    def hint(self) -> str:
        """For the query writer: what each phrase is in the data, and how the tables join."""
        parts = [
            f"'{c.text}' is {' or '.join(c.grounds[:2])}"
            for c in self.concepts
            if c.grounds and c.how in ("value", "model")
        ]
        if self.joins:
            parts.append("join " + ", ".join(self.joins))
        return "; ".join(parts)


# --- phrases --------------------------------------------------------------------------------------------


def question_text(question: str) -> str:
    """The question without the constraints and answer format some sets append to it."""
    return re.split(r"\n\s*(?:Constraints|Answer format)\s*:", question, maxsplit=1)[0]


def phrases(question: str, names: frozenset[str] = frozenset()) -> list[tuple[str, list[str], str]]:
    """Runs of content words, as ``(text, stems, context)`` (the context is the two words before, ``|`` and
    the token after): quoted literals, numbers and
    capitalised names inside the sentence are values (not concepts) unless they are one of the schema's
    ``names`` words, and function or asking words end a phrase. A phrase's last word is a verb, and is
    its own phrase (its context ends with :data:`VERB`), before a determiner ("author *wrote* the most
    books") or at the end of a question with an auxiliary ("how many copies does the branch *hold*?").

    >>> [t for t, _, _ in phrases("What is the average blood pressure of the smokers in 'North'?")]
    ['blood pressure', 'smokers']
    >>> [t for t, _, _ in phrases("Which author wrote the most books? How many copies does a branch hold?")]
    ['author', 'wrote', 'books', 'copies', 'branch', 'hold']
    """
    # Quoted literals; an apostrophe inside a word ("employee's") opens none.
    text = re.sub(r"(?<![A-Za-z])'[^']*'(?![A-Za-z])|\"[^\"]*\"|`[^`]*`", " , ", question_text(question))
    tokens = re.findall(r"[A-Za-z][A-Za-z0-9_-]*|[0-9][0-9.,]*|[^\sA-Za-z0-9]", text)
    content: list[bool] = []
    first = True
    for token in tokens:
        word = token.lower()
        stem = words(word)[0] if words(word) else word
        value = not first and token[0].isupper() and not _is_name(stem, names)
        first = token in (".", "?", "!", "\n")
        content.append(
            token[0].isalpha() and not value and word not in _STOP and stem not in _STOP and len(word) >= 3
        )
    out: list[tuple[str, list[str], str]] = []
    i = 0
    while i < len(tokens):
        if not content[i]:
            i += 1
            continue
        start = i
        while i < len(tokens) and content[i]:
            i += 1
        run = [t.lower() for t in tokens[start:i]]
        after = tokens[i].lower() if i < len(tokens) else "?"
        sentence = re.split(r"[.?!]", " ".join(tokens[:start]).lower())[-1]
        before = [t.lower() for t in tokens[:start] if t[0].isalpha()][-2:]
        verb = ""
        if after in _DETERMINERS or (after in ("?", ".", "!") and re.search(_AUXILIARY, sentence)):
            verb, run = run[-1], run[:-1]
        if run:
            out.append((" ".join(run), [words(w)[0] for w in run], " ".join([*before, "|", after])))
        if verb:
            # Kept, marked: what a verb asks ("streamed a million times") may be what the data lacks.
            out.append((verb, [words(verb)[0]], " ".join([*before, *run, "|", after, VERB])))
    return out


#: Marks the context of a verb's phrase (see :func:`phrases`).
VERB = "<verb>"
_DETERMINERS = frozenset(["the", "a", "an", "most", "more", "all", "each", "every", "any", "some", "their"])
_AUXILIARY = r"\b(?:does|did|do|will|can|could|would|should)\b"


# --- matching -------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=65536)
def _name_words(name: str) -> frozenset[str]:
    squashed = re.sub(r"[^a-z0-9]", "", name.lower())
    return frozenset(words(name)) | {squashed}


@functools.lru_cache(maxsize=262144)
def _similar(w: str, nw: str) -> bool:
    """Same word, or one a form of the other (``purchase``/``purchased``, ``closing``/``close``), or a part
    of a compound name (``class`` in ``pclass``, ``speed`` in ``windspeed``)."""
    if w == nw:
        return True
    if len(w) < 4 or len(nw) < 3:
        return False
    if _lemma(w) == _lemma(nw):
        return True
    prefix = len(_common_prefix(w, nw))
    if prefix >= 5 and prefix >= 0.8 * min(len(w), len(nw)):
        return True
    if (nw.startswith(w) or nw.endswith(w)) and len(nw) <= 2 * len(w) + 2:
        return True
    # An abbreviation in a name: "Rep" of SupportRepId for "representative".
    return w.startswith(nw) and len(w) >= 2 * len(nw)


def _is_name(stem: str, names: frozenset[str]) -> bool:
    return stem in names or any(_similar(stem, n) for n in names)


def _lemma(w: str) -> str:
    return re.sub(r"(?:ing|ed|es|e|s)$", "", w)


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def _value_words(table: Table) -> dict[str, list[str]]:
    """The words of each text column's samples."""
    out: dict[str, list[str]] = {}
    for col in table.columns:
        for v in col.samples:
            if isinstance(v, str):
                for w in words(v):
                    out.setdefault(w, []).append(f"{table.name}.{col.name}")
    return out


def _match(stem: str, schema: Schema) -> tuple[list[str], str]:
    """What ``stem`` names in ``schema``: ``(["Table" or "Table.Column", ...], how)``, or ``([], "")``."""
    found: list[str] = []
    for table in schema.tables:
        if any(_similar(stem, nw) for nw in _name_words(table.name)):
            found.append(table.name)
        for col in table.columns:
            cw = _name_words(col.name) - {"id"}
            if any(_similar(stem, nw) for nw in cw):
                found.append(f"{table.name}.{col.name}")
    if found:
        return found, "name"
    needs = _NEEDS.get(stem)
    alternatives = (needs or frozenset()) | (expand({stem}) - {stem})
    for table in schema.tables:
        for col in table.columns:
            cw = _name_words(col.name) - {"id"}
            if any(_similar(a, nw) for a in alternatives for nw in cw):
                found.append(f"{table.name}.{col.name}")
    if found:
        return found, "synonym"
    for table in schema.tables:
        found.extend(_value_words(table).get(stem, []))
    return (list(dict.fromkeys(found)), "value") if found else ([], "")


def _closest(text: str, schema: Schema, n: int) -> list[str]:
    """The ``n`` columns whose names look most like ``text`` (keys last: a key rarely holds a concept)."""
    scored = []
    for table in schema.tables:
        for col in table.columns:
            name = f"{table.name}.{col.name}"
            ratio = difflib.SequenceMatcher(None, text.lower(), col.name.lower()).ratio()
            key = col.pk or _looks_like_key(col.name)
            scored.append((key, -ratio, name))
    scored.sort()
    return [name for _, _, name in scored[:n]]


def ground(question: str, schema: Schema) -> Grounding:
    """The system's grounding of ``question`` in ``schema`` (no model): phrases matched to names, synonyms
    and values; phrases with a known grounding that the schema lacks are missing; the rest are candidates
    for :func:`choose`."""
    result = Grounding(asked=frozenset(words(question_text(question))))
    names = frozenset(
        w for t in schema.tables for n in [t.name, *(c.name for c in t.columns)] for w in _name_words(n)
    )
    found_phrases = phrases(question, names)
    for i, (text, stems, before) in enumerate(found_phrases):
        concept = _concept(text, stems, schema)
        if concept is None:
            continue
        if before.endswith(VERB) and not concept.grounds:
            # A verb is never declared missing, nor offered to the model; it leaves the question unresolved.
            concept.how = "unknown"
            result.concepts.append(concept)
            continue
        concept.measured = bool(set(before.split("|")[0].split() + text.split()) & _AGGREGATE)
        if not concept.grounds:
            needed = [st for st in concept.stems if st in _NEEDS]
            concept.closest = _closest(concept.text, schema, 3)
            if needed:
                concept.missing = True
                concept.evidence = _evidence(
                    concept.text, concept.closest, looked_for=sorted(_NEEDS[needed[0]])
                )
            elif _minor(
                concept.stems, before, last=i == len(found_phrases) - 1, single=len(schema.tables) == 1
            ):
                concept.how = "unknown"
        result.concepts.append(concept)
    _check_owners(question, schema, result)
    result.joins = _joins(schema, result.tables())
    return result


def _concept(text: str, stems: list[str], schema: Schema) -> Concept | None:
    """One phrase as a concept. Its head (the last word that is not asking vocabulary) decides: grounded,
    the other words are qualifiers ("annual revenue", "album titles"); not grounded, the concept is the
    words nothing matched ("bonus" of "employee bonus"). ``None`` for a phrase of asking vocabulary only
    that names nothing here."""
    concept = Concept(text=text, stems=stems)
    matched: set[str] = set()
    # Pairs too: "wind speed" is the column WINDSPEED.
    squashed = {re.sub(r"[^a-z0-9]", "", c.name.lower()) for t in schema.tables for c in t.columns}
    pairs = [(a + b, (a, b)) for a, b in itertools.pairwise(stems) if a + b in squashed]
    for stem, parts in [*((st, (st,)) for st in stems), *pairs]:
        found, how = _match(stem, schema)
        if found:
            concept.grounds = list(dict.fromkeys(concept.grounds + found))
            concept.how = concept.how or how
            matched.update(parts)
    content = [st for st in stems if st not in _GENERIC and not _ignorable(st)]
    # A verb form is not a head: "customers generated" is about customers.
    nouns = [st for st in content if not re.search(r"(?:ed|ing)$", st) or st in matched]
    if nouns and nouns[-1] in matched:
        return concept
    if not content:
        return concept if concept.grounds else None
    if content[-1] in matched:
        return concept
    words_of = dict(zip(stems, text.split(), strict=False))
    unmatched = [st for st in content if st not in matched]
    return Concept(text=" ".join(words_of.get(st, st) for st in unmatched), stems=unmatched)


def _minor(stems: list[str], before: str, *, last: bool, single: bool) -> bool:
    """A phrase that does not decide what is asked: one that ends with a verb form (``issued``,
    ``streamed``: a key or a date often records the event; ``dataset follows``), or the setting at the end
    of the sentence ("... at the clinic")."""
    content = [s for s in stems if s not in _GENERIC]
    if not content or re.search(r"(?:ed|ing|ly)$", content[-1]):
        return True
    if single and re.search(
        r"\b(?:which|many|each|every|per)\b[^|]*\||\bthe \| (?:with|that|who|whose|where)$", before
    ):
        return True  # the rows themselves ("the vehicle with the highest horsepower" over one table)
    return last and bool(re.search(r"\b(?:in|at|on|from|to|for|with|within) (?:the|this|our|a) \|", before))


def _ignorable(stem: str) -> bool:
    """Superlatives, comparatives and adverbs (``busiest``, ``cheaper``, ``mostly``) qualify a concept."""
    return bool(re.search(r"(?:est|ier|ly)$", stem)) and len(stem) > 5


def _evidence(text: str, closest: list[str], *, looked_for: list[str] | None = None) -> str:
    where = f" (no column named like {', '.join(looked_for[:5])})" if looked_for else ""
    near = f"; the closest columns are {', '.join(closest)}" if closest else ""
    return f"the data has no {text}{where}{near}"


def _joins(schema: Schema, tables: list[str]) -> list[str]:
    """The join conditions that connect the grounded tables (from the first one)."""
    out: list[str] = []
    if len(tables) > 4:
        return out
    for other in tables[1:]:
        for cond in join_path(schema, tables[0], other):
            if cond not in out:
                out.append(cond)
    return out


# --- whose attribute ------------------------------------------------------------------------------------

_OF = re.compile(
    r"\b(?P<attr>[a-z]+(?: [a-z]+)?) of (?:each|every|all|the|a|an)?\s*(?P<entity>[a-z]+)\b"
    r"|\b(?P<entity2>[a-z]+)'s? (?P<attr2>[a-z]+(?: [a-z]+)?)",
    re.IGNORECASE,
)


def _check_owners(question: str, schema: Schema, result: Grounding) -> None:
    """ "The phone number of each artist": an attribute asked without an aggregate belongs to the entity's
    table or to one it references (many-to-one); found only in tables reached the other way (customers who
    bought the artist's tracks), it is not the entity's: the concept is missing."""
    text = question_text(question)
    for m in _OF.finditer(text):
        attr = (m.group("attr") or m.group("attr2")).lower()
        entity_word = m.group("entity") or m.group("entity2")
        entity = words(entity_word)[0]
        before = text[: m.start()].lower().split()[-2:]
        if words(attr)[0] in _AGGREGATE or any(w in _AGGREGATE for w in before):
            continue
        owners = [t for t in schema.tables if any(_similar(entity, nw) for nw in _name_words(t.name))]
        concept = next((c for c in result.concepts if c.text in attr or attr.endswith(c.text)), None)
        if len(owners) != 1 or concept is None or concept.how != "name":
            continue
        holders = {g.split(".", 1)[0] for g in concept.grounds if "." in g}
        if not holders:
            continue
        # The entity's own table, the tables that list its rows (an artist's albums), and what either
        # references (each row has one of it).
        children = {
            t.name for t in schema.tables if any(fk.ref_table == owners[0].name for fk in t.foreign_keys)
        }
        reach = set().union(*(_many_to_one(schema, name) for name in {owners[0].name, *children}))
        if holders & reach:
            continue
        concept.missing = True
        concept.evidence = (
            f"{owners[0].name} has no {attr}; the {attr} columns ({', '.join(sorted(concept.grounds)[:3])}) "
            f"belong to {', '.join(sorted(holders))}, which {owners[0].name}'s keys do not lead to"
        )
        concept.grounds = []


def _many_to_one(schema: Schema, start: str) -> set[str]:
    """The tables reached from ``start`` by following its keys outward (each row has one of each)."""
    by_name = {t.name: t for t in schema.tables}
    seen = {start}
    todo = deque([start])
    while todo:
        table = by_name.get(todo.popleft())
        if table is None:
            continue
        for fk in table.foreign_keys:
            if fk.ref_table not in seen:
                seen.add(fk.ref_table)
                todo.append(fk.ref_table)
    return seen


# --- the model chooses ----------------------------------------------------------------------------------

CHOOSE_SYSTEM = (
    'You match a phrase of a question to a database column. Reply with JSON {"column": ...}: the column '
    'whose values are what the phrase means, or "none" if no column holds it. Do not pick a column that '
    "only looks similar."
)


def _offered(concept: Concept, schema: Schema, tables: list[str]) -> list[str]:
    """The columns offered for ``concept``: those of the tables the question's other words named (the
    runtime "of a track" is a column of Track), then the names most like the phrase."""
    own = [
        f"{t.name}.{c.name}"
        for name in tables
        if (t := schema.table(name)) is not None
        for c in t.columns
        if not (c.pk or _looks_like_key(c.name))
    ]
    near = _closest(concept.text, schema, MAX_OFFERED)
    return list(dict.fromkeys([*own[: MAX_OFFERED - 3], *near]))[:MAX_OFFERED]


def accept(concept: Concept, column: str, schema: Schema) -> bool:
    """Whether the model's choice can mean the phrase: a key is never a measure (a "rating" is not the
    average of an id), and a date only holds a time."""
    table_name, _, col_name = column.partition(".")
    table = schema.table(table_name)
    col = table.column(col_name) if table is not None else None
    if col is None:
        return False
    if (col.pk or _looks_like_key(col.name)) and concept.measured:
        return False
    is_date = bool(re.search(r"date|time", col.type, re.IGNORECASE)) or bool(
        re.search(r"(?:date|_at|time)$", col.name, re.IGNORECASE)
    )
    return not is_date or bool(set(concept.stems) & _TIME_WORDS)


async def choose(ctx: RunContext, q: Question, grounding: Grounding, schema: Schema) -> None:
    """For each candidate phrase (at most :data:`MAX_CHOICES`), the model picks the column that holds it or
    "none". "none", or a pick that cannot mean the phrase, makes it missing; an unreadable reply decides
    nothing (it is no evidence either way)."""
    tables = grounding.tables()
    for concept in grounding.candidates()[:MAX_CHOICES]:
        offered = _offered(concept, schema, tables)
        if not offered:
            continue
        options = [*offered, "none"]
        reply = await ask_model(
            ctx,
            q,
            "ground",
            [
                SystemMessage(content=CHOOSE_SYSTEM),
                UserMessage(
                    content=f"Question: {question_text(q.question)}\nPhrase: {concept.text}\n"
                    f"Columns: {', '.join(offered)}"
                ),
            ],
            OutputSchema(
                name="choice",
                json_schema={
                    "type": "object",
                    "properties": {"column": {"type": "string", "enum": options}},
                    "required": ["column"],
                    "additionalProperties": False,
                },
            ),
            max_tokens=40,
        )
        decide(concept, reply, offered, schema)


def decide(concept: Concept, reply: str, offered: list[str], schema: Schema) -> None:
    """Apply the model's reply to one candidate (see :func:`choose`)."""
    try:
        data = json.loads(reply)
    except ValueError:
        return
    picked = data.get("column") if isinstance(data, dict) else None
    if not isinstance(picked, str) or (picked != "none" and picked not in offered):
        return
    if picked != "none" and accept(concept, picked, schema):
        concept.grounds, concept.how = [picked], "model"
        return
    concept.missing = True
    concept.closest = [c for c in offered if c != picked or picked == "none"][:3]
    concept.evidence = _evidence(concept.text, concept.closest)


# --- what the flows call --------------------------------------------------------------------------------

#: Text columns one value lookup reads at most (a wide schema is not scanned whole).
LOOKUP_COLUMNS = 40
_TEXT_TYPES = ("char", "text", "string", "varchar", "clob", "")


def value_lookup(schema: Schema, stems: Sequence[str]) -> str | None:
    """One query that returns a row when a value of any text column contains one of ``stems`` (at most
    :data:`LOOKUP_COLUMNS` columns, the tables in schema order), or ``None`` when there is nothing to look
    in. Names are quoted for the dialect and the stems are letters only, so the query is the system's.

    >>> from corral.apps.data_agent._schema import Column, Table
    >>> staff = Table(name="staff", columns=[Column(name="role", type="TEXT"), Column(name="id", type="INT")])
    >>> print(value_lookup(Schema(dialect="sqlite", tables=[staff]), ["nurse"]))
    SELECT 1 FROM (SELECT 1 FROM staff WHERE LOWER(CAST(role AS TEXT)) LIKE '%nurse%' LIMIT 1) AS t0 LIMIT 1
    """
    safe = [s for s in stems if s.isascii() and s.isalpha() and len(s) >= 3]
    columns = [
        (t.name, c.name)
        for t in schema.tables
        for c in t.columns
        if c.type.lower().split("(")[0].strip() in _TEXT_TYPES or "char" in c.type.lower()
    ][:LOOKUP_COLUMNS]
    if not safe or not columns:
        return None

    def q(name: str) -> str:
        return quote_identifier(name, dialect=schema.dialect)

    parts = []
    for i, (table, column) in enumerate(columns):
        where = " OR ".join(f"LOWER(CAST({q(column)} AS TEXT)) LIKE '%{s.lower()}%'" for s in safe)
        parts.append(f"SELECT 1 FROM (SELECT 1 FROM {q(table)} WHERE {where} LIMIT 1) AS t{i}")
    return " UNION ALL ".join(parts) + " LIMIT 1"


def settled(grounding: Grounding | None) -> bool:
    """Every concept of the question is grounded by the system: a decline, or a query that used a wrong
    name, is then a mistake to fix, never a reason to say the data cannot answer. A column the model chose
    does not settle it: measured on the clinic set, the 0.5B model chose columns for "nurses" and "smoking
    habit", which the data does not have."""
    return (
        grounding is not None
        and not grounding.missing()
        and not grounding.unresolved()
        and all(c.how != "model" for c in grounding.concepts)
    )


async def grounded(ctx: RunContext, q: Question, schema: Schema) -> Grounding:
    """The grounding of ``q`` in ``schema``: the system's matching, then the model's choices for the
    phrases nothing matched."""
    result = ground(q.question, schema)
    if result.candidates():
        await choose(ctx, q, result, schema)
    return result


def note(q: Question, grounding: Grounding) -> None:
    """Announce what each phrase was grounded to (a check event)."""
    parts = [
        f"{c.text} → {', '.join(c.grounds[:2])}"
        if c.grounds
        else f"{c.text} → {'missing' if c.missing else '?'}"
        for c in grounding.concepts
    ]
    if parts:
        emit(q, CheckNoted(message="grounding: " + "; ".join(parts), finding="grounding"))


def frames_schema(described: dict[str, object]) -> Schema:
    """The pandas flow's description of its files as a :class:`Schema` (names, dtypes, samples)."""
    tables = []
    raw = described.get("tables")
    for t in raw if isinstance(raw, list) else []:
        if not isinstance(t, dict):
            continue
        columns = [
            Column(
                name=str(c.get("name")), type=str(c.get("dtype") or ""), samples=list(c.get("samples") or [])
            )
            for c in t.get("columns") or []
            if isinstance(c, dict)
        ]
        tables.append(Table(name=str(t.get("name")), columns=columns))
    return Schema(dialect="duckdb", tables=tables)


def widen(narrowed: Schema, full: Schema, grounding: Grounding, planned: Sequence[str] = ()) -> Schema:
    """``narrowed`` plus the tables a value or the model grounded a phrase in (narrowing matches names only),
    at most two, and the tables of a plan's joins."""
    have = {t.name for t in narrowed.tables}
    grounded = [
        name
        for c in grounding.concepts
        if c.how in ("value", "model")
        for name in dict.fromkeys(g.split(".", 1)[0] for g in c.grounds)
        if name not in have
    ][:2]
    extra = list(dict.fromkeys([*grounded, *(n for n in planned if n not in have)]))
    if not extra:
        return narrowed
    add = [t for t in full.tables if t.name in extra]
    brief = [t for t in narrowed.brief if t.name not in extra]
    return narrowed.model_copy(update={"tables": [*narrowed.tables, *add], "brief": brief})
