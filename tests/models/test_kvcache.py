"""The local model's prefix cache: which saved state a prompt gets back, and, with the real 0.5B model, that
a prompt sharing a prefix with an earlier one (another prompt in between) is read only past that prefix and
answers exactly as without the cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.models import LocalModel, ModelSettings, SystemMessage, UserMessage
from corral.models._kvcache import PrefixCache, common_prefix
from corral.models._local import extra_buffers


def test_the_longest_shared_prefix_wins() -> None:
    cache = PrefixCache()
    cache.add([1, 2, 3, 4], b"a")
    cache.add([9, 9], b"b")
    entry, n = cache.best([1, 2, 3, 7])
    assert entry is not None and entry.state == b"a" and n == 3
    assert cache.best([5]) == (None, 0)


def test_a_state_that_extends_another_replaces_it() -> None:
    cache = PrefixCache()
    cache.add([1, 2], b"short")
    cache.add([1, 2, 3], b"long")
    assert [e.state for e in cache.entries] == [b"long"]


def test_the_limits_drop_the_oldest_states() -> None:
    cache = PrefixCache(max_bytes=10, max_entries=3)
    for i in range(5):
        cache.add([i], bytes(4))
    assert [e.tokens for e in cache.entries] == [(4,), (3,)]  # 3 x 4 bytes would pass 10
    cache = PrefixCache(max_bytes=1000, max_entries=3)
    for i in range(5):
        cache.add([i], bytes(4))
    assert [e.tokens for e in cache.entries] == [(4,), (3,), (2,)]


def test_extra_buffers_follow_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_LOCAL_EXTRA_BUFFERS", "off")
    assert extra_buffers() is False
    monkeypatch.setenv("CORRAL_LOCAL_EXTRA_BUFFERS", "on")
    assert extra_buffers() is True
    monkeypatch.setenv("CORRAL_LOCAL_EXTRA_BUFFERS", "auto")
    assert extra_buffers() is ("amx_tile" not in Path("/proc/cpuinfo").read_text())


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 3]) == 3
    assert common_prefix([1], [2]) == 0


SCHEMA = "\n".join(
    f"CREATE TABLE t{i} (id INTEGER PRIMARY KEY, name TEXT, amount REAL, created_at TEXT);" for i in range(40)
)
EXACT = ModelSettings(temperature=0.0, seed=3, max_tokens=40)


def _prompt(question: str) -> list[SystemMessage | UserMessage]:
    return [
        SystemMessage(content="You write one SQLite query. Reply with the query in a ```sql block."),
        UserMessage(content=f"Schema:\n{SCHEMA}\n\nQuestion: {question}"),
    ]


@pytest.mark.model
@pytest.mark.slow
async def test_a_shared_prefix_is_read_once_and_answers_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    model = LocalModel("qwen2.5-coder-0.5b", n_ctx=4096)
    first = await model.request(_prompt("How many rows has t3?"), settings=EXACT)
    # Another prompt in between: llama.cpp's own cache now holds it, not the schema.
    await model.request([UserMessage(content="Say hello.")], settings=EXACT)
    second = await model.request(_prompt("How many rows has t7?"), settings=EXACT)
    assert first.usage.cached_tokens == 0
    assert second.usage.cached_tokens > 0.9 * second.usage.input_tokens
    assert second.usage.prompt_s < first.usage.prompt_s
    # The same prompt without the cache (a model loaded with it off) writes the same reply.
    monkeypatch.setenv("CORRAL_LOCAL_KV_CACHE", "off")
    plain = LocalModel("qwen2.5-coder-0.5b", n_ctx=4097)
    await plain.request(_prompt("How many rows has t3?"), settings=EXACT)
    await plain.request([UserMessage(content="Say hello.")], settings=EXACT)
    again = await plain.request(_prompt("How many rows has t7?"), settings=EXACT)
    assert again.usage.cached_tokens < 50  # read in full
    assert again.message.content == second.message.content
