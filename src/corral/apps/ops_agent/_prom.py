"""Scrape a Prometheus text endpoint: bounded in time and bytes, parsed line by line."""

from __future__ import annotations

import math
import re

import httpx
from pydantic import BaseModel, Field

from corral.apps.ops_agent.errors import EvidenceError

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


class Sample(BaseModel):
    """One sample: metric name, labels as written, value."""

    name: str
    labels: str = ""
    value: float


class Scrape(BaseModel):
    """The samples of one scrape (those whose name starts with ``prefix``), at most ``limit``."""

    url: str
    samples: list[Sample] = Field(default_factory=list)
    total: int = 0
    cut: bool = False


def scrape(
    url: str, *, prefix: str = "", limit: int = 300, timeout_s: float = 5.0, max_bytes: int = 4 << 20
) -> Scrape:
    """GET ``url`` (http or https) and parse the Prometheus text exposition format."""
    if not url.startswith(("http://", "https://")):
        raise EvidenceError(f"a metrics endpoint is an http(s) URL, not {url!r}")
    body = bytearray()
    try:
        with httpx.stream("GET", url, timeout=timeout_s, follow_redirects=False) as response:
            if response.status_code != 200:
                raise EvidenceError(f"{url} answered HTTP {response.status_code}")
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    break
    except httpx.HTTPError as exc:
        raise EvidenceError(f"cannot scrape {url}: {exc}") from exc
    out = Scrape(url=url, cut=len(body) > max_bytes)
    for line in body[:max_bytes].decode("utf-8", "replace").splitlines():
        m = _SAMPLE.match(line)
        if m is None or not m.group(1).startswith(prefix):
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        out.total += 1
        if len(out.samples) < limit and math.isfinite(value):
            out.samples.append(Sample(name=m.group(1), labels=(m.group(2) or "")[:300], value=value))
    return out
