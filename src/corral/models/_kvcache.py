"""A local model's KV cache kept across prompts that share a prefix (the instructions, the schema).

llama.cpp keeps the key/value cache of the last prompt, and ``llama-cpp-python`` reuses its longest common
prefix with the next prompt. That is lost as soon as a different prompt comes between two alike ones (the
judge's between two query-writing prompts; another question's between two of the same source). So after
each call the model's state is saved here, and before a call whose prompt shares a longer prefix with a
saved state than with the live one, that state is restored: llama.cpp then reads only the rest.

``llama-cpp-python``'s own ``LlamaRAMCache`` does the same but copies the logits buffer with every state
(``n_batch`` × vocabulary floats: 311 MB for a Qwen2.5 model), which costs more than it saves; here only
llama.cpp's own state is kept, and the one token after the shared prefix is always read again, so the
logits are rebuilt by llama.cpp itself.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: Restoring costs a copy of the state: not worth it to save fewer tokens than this.
MIN_GAIN_TOKENS = 32


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """The length of the longest common prefix of two token lists.

    >>> common_prefix([1, 2, 3], [1, 2, 4, 5]), common_prefix([], [1])
    (2, 0)
    """
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass(frozen=True, slots=True)
class _Entry:
    tokens: tuple[int, ...]
    state: bytes


class PrefixCache:
    """Saved states of one loaded model, newest first, within ``max_bytes``."""

    def __init__(self, *, max_bytes: int = 256 * 1024 * 1024, max_entries: int = 8) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.entries: list[_Entry] = []
        self.restores = 0

    def best(self, tokens: Sequence[int]) -> tuple[_Entry | None, int]:
        """The saved state sharing the longest prefix with ``tokens``, and that prefix's length."""
        found: tuple[_Entry | None, int] = (None, 0)
        for entry in self.entries:
            n = common_prefix(entry.tokens, tokens)
            if n > found[1]:
                found = (entry, n)
        return found

    def add(self, tokens: Sequence[int], state: bytes) -> None:
        """Keep ``state`` (the model after reading ``tokens``); a saved state whose tokens it extends, or that
        the limits no longer leave room for, goes."""
        new = _Entry(tuple(tokens), state)
        kept = [e for e in self.entries if common_prefix(e.tokens, new.tokens) < len(e.tokens)]
        self.entries = [new]
        size = len(state)
        for entry in kept:
            if len(self.entries) >= self.max_entries or size + len(entry.state) > self.max_bytes:
                break
            self.entries.append(entry)
            size += len(entry.state)

    def before(self, llama: Any, tokens: Sequence[int]) -> None:
        """Restore the saved state that shares a clearly longer prefix with ``tokens`` than the live one."""
        live = common_prefix(llama.input_ids[: llama.n_tokens].tolist(), tokens)
        entry, shared = self.best(tokens)
        if entry is None or shared < live + MIN_GAIN_TOKENS:
            return
        restore(llama, entry)
        self.restores += 1

    def after(self, llama: Any) -> None:
        """Save the live state (after a call)."""
        if llama.n_tokens > 0:
            self.add(llama.input_ids[: llama.n_tokens].tolist(), save(llama))


def save(llama: Any) -> bytes:
    """llama.cpp's state of ``llama``'s context (its KV cache), as bytes."""
    import llama_cpp

    size = llama_cpp.llama_state_get_size(llama.ctx)
    buffer = (ctypes.c_uint8 * int(size))()
    written = llama_cpp.llama_state_get_data(llama.ctx, buffer, size)
    if int(written) > int(size):
        raise RuntimeError("llama.cpp wrote more state than it said it would")
    return bytes(buffer[: int(written)])


def restore(llama: Any, entry: _Entry) -> None:
    """Put ``entry``'s state back into ``llama``'s context; its next prompt continues from those tokens."""
    import llama_cpp
    import numpy as np

    size = len(entry.state)
    buffer = (ctypes.c_uint8 * size).from_buffer_copy(entry.state)
    if llama_cpp.llama_state_set_data(llama.ctx, buffer, size) != size:
        raise RuntimeError("llama.cpp did not take the saved state back")
    n = len(entry.tokens)
    llama.input_ids[:n] = np.asarray(entry.tokens, dtype=llama.input_ids.dtype)
    llama.n_tokens = n
    # The logits of the restored context are not ours to trust: make llama-cpp-python read a token again.
    llama._requires_eval = True
