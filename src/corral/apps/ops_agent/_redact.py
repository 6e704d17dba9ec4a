"""Redaction: secrets are taken out of evidence before a model or the journal sees it.

Every evidence tool's output passes through one :class:`Redactor` inside the step that collects it, so the
journal records only the redacted text and a model can only be shown that. Rules are regular expressions
(configurable: pass your own, or extend :data:`DEFAULT_RULES`), and a mapping whose key names a secret
(``PASSWORD``, ``api_key``, ``DATABASE_URL`` …) has its value replaced whatever it looks like.

>>> r = Redactor()
>>> r.text("login ada@example.com with password=hunter2 to postgres://app:s3cret@db:5432/x")
'login [email] with password=[redacted] to postgres://app:[redacted]@db:5432/x'
>>> r.scrub({"env": {"API_TOKEN": "abc", "HOME": "/root"}})
{'env': {'API_TOKEN': '[redacted]', 'HOME': '/root'}}
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

_SECRET_WORDS = (
    r"pass(?:word|wd|phrase)?|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key|"
    r"client[_-]?secret|auth(?:orization)?|credentials?|session[_-]?id|cookie|dsn|signature"
)

_WORD_HINTS = (
    "pass",
    "pwd",
    "secret",
    "token",
    "key",
    "auth",
    "credential",
    "session",
    "cookie",
    "dsn",
    "sign",
)

#: A mapping key (environment variable, JSON field, header) whose value is a secret whatever it looks like.
SECRET_KEY = re.compile(
    rf"(?i)({_SECRET_WORDS}|(?:^|_)(?:database|db|redis|mongo|amqp|broker)_?url$|(?:^|_)key$)"
)


@dataclass(frozen=True, slots=True)
class RedactionRule:
    """One rule: where ``pattern`` matches, the named ``group`` (0: the whole match) becomes ``mask``."""

    name: str
    pattern: str
    group: int = 0
    mask: str = "[redacted]"
    #: Lower-case substrings of which one must occur for the pattern to be tried (a quick test that skips
    #: most of a log's lines); empty: always tried.
    hint: tuple[str, ...] = ()

    def compiled(self) -> tuple[re.Pattern[str], re.Pattern[str] | None]:
        """The pattern, and for a ``(?i)`` pattern the same without the flag, to run over lower-cased text:
        Python's case-insensitive alternations are about ten times slower than plain ones."""
        if self.pattern.startswith("(?i)"):
            return re.compile(self.pattern), re.compile(self.pattern[4:])
        return re.compile(self.pattern), None


#: The rules applied by default, in order (an earlier rule's mask is never matched by a later one).
DEFAULT_RULES: tuple[RedactionRule, ...] = (
    RedactionRule(
        "private_key",
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
        mask="[redacted private key]",
        hint=("private key",),
    ),
    # Each pattern starts where a match can start (a literal, or a lookbehind at a word's start): a leading
    # repeated class would be retried at every character of every word, and redaction would crawl.
    RedactionRule(
        "url_credentials",
        r"(?<![a-zA-Z0-9+.-])[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:([^@\s/]+)@",
        group=1,
        hint=("://",),
    ),
    RedactionRule(
        "bearer",
        r"(?i)\b(?:bearer|basic|token)\s+([A-Za-z0-9._~+/=-]{8,})",
        group=1,
        hint=("bearer", "basic", "token"),
    ),
    RedactionRule(
        "key_value",
        rf"(?i)(?:{_SECRET_WORDS})[A-Za-z0-9_.-]*[\"']?\s*[=:]\s*[\"']?([^\s\"'&,;}}]+)",
        group=1,
        hint=_WORD_HINTS,
    ),
    RedactionRule(
        "cli_flag", rf"(?i)-(?:{_SECRET_WORDS})[a-z0-9-]*\s+([^\s-][^\s]*)", group=1, hint=_WORD_HINTS
    ),
    RedactionRule(
        "connection_string", r"(?i)\b(?:pwd|password)\s*=\s*([^;\s]+)", group=1, hint=("pwd", "password")
    ),
    RedactionRule("aws_key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", hint=("akia", "asia")),
    RedactionRule("github_token", r"\bgh[pousr]_[A-Za-z0-9]{30,}\b", hint=("gh",)),
    RedactionRule("slack_token", r"\bxox[abprs]-[A-Za-z0-9-]{10,}", hint=("xox",)),
    RedactionRule("api_key", r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{20,}", hint=("sk-", "pk-", "rk-")),
    RedactionRule("google_key", r"\bAIza[0-9A-Za-z_-]{35}\b", hint=("aiza",)),
    RedactionRule("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", hint=("eyj",)),
    RedactionRule(
        "email",
        r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
        mask="[email]",
        hint=("@",),
    ),
)


@dataclass(frozen=True)
class Redactor:
    """Applies ``rules`` to text, and to every string and secret-named key of JSON-like data.

    ``literals`` are exact values always masked (secrets you know, e.g. from a vault). ``max_chars`` bounds
    one string (longer ones are cut, so a rule never scans megabytes).
    """

    rules: Sequence[RedactionRule] = DEFAULT_RULES
    literals: Sequence[str] = ()
    max_chars: int = 200_000
    _compiled: tuple[tuple[re.Pattern[str], re.Pattern[str] | None, RedactionRule], ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", tuple((*rule.compiled(), rule) for rule in self.rules))

    def text(self, value: str) -> str:
        """``value`` with every rule applied."""
        if len(value) > self.max_chars:
            value = value[: self.max_chars] + "…[cut]"
        for literal in self.literals:
            if literal:
                value = value.replace(literal, "[redacted]")
        lowered = value.lower()
        for pattern, lower, rule in self._compiled:
            if rule.hint and not any(h in lowered for h in rule.hint):
                continue
            if lower is not None and len(lowered) == len(value):  # same offsets: match there, mask here
                value = _masked(value, lower.finditer(lowered), rule)
            else:
                value = pattern.sub(functools.partial(_mask, rule=rule), value)
            lowered = value.lower()
        return value

    def scrub(self, value: Any) -> Any:
        """A copy of JSON-like ``value`` (dicts, lists, strings, numbers) with every string redacted and the
        value of every secret-named key masked."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self._field(k, v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.scrub(v) for v in value]
        return value

    def _field(self, key: Any, value: Any) -> Any:
        if isinstance(key, str) and isinstance(value, str) and value and SECRET_KEY.search(key):
            return "[redacted]"
        return self.scrub(value)

    def environment(self, pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
        """An environment with secret-named variables masked and every value redacted."""
        return {name: str(self._field(name, value)) for name, value in pairs}


def _masked(value: str, matches: Iterable[re.Match[str]], rule: RedactionRule) -> str:
    parts, end = [], 0
    for m in matches:
        start, stop = m.span(rule.group) if rule.group and m.group(rule.group) is not None else m.span()
        parts += [value[end:start], rule.mask]
        end = stop
    return "".join(parts) + value[end:] if parts else value


def _mask(match: re.Match[str], rule: RedactionRule) -> str:
    if rule.group == 0 or match.group(rule.group) is None:
        return rule.mask
    start, end = match.span(rule.group)
    whole = match.group(0)
    offset = match.start(0)
    return whole[: start - offset] + rule.mask + whole[end - offset :]
