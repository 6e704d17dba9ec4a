"""A peer framework's data agent on our question set: Pydantic AI over llama.cpp's OpenAI-compatible server.

    python bench/peer_agent.py                                   # 0.5B model, evals/chinook.jsonl
    python bench/peer_agent.py --models local:qwen2.5-coder-1.5b --limit 20

The other side of ``bench/data_agent.py`` (our agent and the single-shot baselines): the same questions, the
same GGUF file, the same llama.cpp thread count and context size, the same machine. This script starts
``python -m llama_cpp.server`` on a free loopback port with the GGUF our ``local`` model uses, runs
``bench/_peer_pydantic_ai.py`` in the anchors' venv (``/work/anchors-venv``, never this one: the peer must not
import corral) on every question, and scores each prediction with corral's own scorer
(:func:`corral.apps.data_agent._eval.score`, gold rows from the same sandboxed runner as ``corral eval``), so
the accuracy is computed exactly as for our agent. Prints execution accuracy by difficulty and the median
seconds per question in ``bench/data_agent.py``'s row format, and writes the full report as JSON.

Only questions over a SQLite ``db`` are asked (the peer's tools are SQLite tools); others are skipped and
counted. The server is always stopped at the end, also on an error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from corral.apps.data_agent import _run
from corral.apps.data_agent._answer import MAX_ROWS, Answer
from corral.apps.data_agent._eval import EvalQuestion, EvalReport, QuestionOutcome, load_eval_set, score
from corral.apps.data_agent._runner import QueryRunner
from corral.apps.data_agent._sources import open_source
from corral.models import LocalModel, Usage, resolve_model
from corral.models._local import default_threads

ROOT = Path(__file__).resolve().parents[1]
PEER_SCRIPT = Path(__file__).resolve().with_name("_peer_pydantic_ai.py")
ANCHORS_PYTHON = Path("/work/anchors-venv/bin/python")
SYSTEM = "peer-pydantic-ai"
ALIAS = "local-gguf"  # the model name the server answers to
N_CTX = 8192  # as corral's LocalModel
SERVER_START_S = 300.0


def _row(name: str, report: dict[str, Any]) -> str:
    """A result row, formatted exactly as ``bench/data_agent.py``'s ``_row``."""
    by = report["accuracy_by_difficulty"]
    cells = " ".join(f"{by.get(d, 0) * 100:6.0f}%" for d in ("easy", "medium", "hard"))
    return f"{name:<34} {cells} {report['accuracy'] * 100:6.0f}% {report['median_seconds']:8.1f}"


HEADER = f"{'system · model':<34} {'easy':>7} {'medium':>7} {'hard':>7} {'all':>7} {'median s':>8}"


# --- the anchors' venv -----------------------------------------------------------------------------------


def peer_versions(python: Path) -> dict[str, str] | None:
    """The versions of pydantic-ai and openai in the anchors' venv; ``None`` (and how to fix it, printed)
    when that venv or those packages are missing."""
    fix = (
        f"  python3 -m venv {python.parent.parent}\n"
        f"  {python.parent / 'pip'} install 'pydantic-ai-slim[openai]'"
    )
    if not python.is_file():
        print(f"peer agent: no anchors' venv at {python.parent.parent}. Create it with:\n{fix}")
        return None
    probe = (
        "import json, openai, pydantic_ai; print(json.dumps([pydantic_ai.__version__, openai.__version__]))"
    )
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(
            f"peer agent: the anchors' venv lacks pydantic-ai's OpenAI model ({done.stderr.strip()[-200:]})."
        )
        print(f"Install it with:\n  {python.parent / 'pip'} install 'pydantic-ai-slim[openai]'")
        return None
    pydantic_ai, openai = json.loads(done.stdout)
    return {"pydantic_ai": pydantic_ai, "openai": openai}


# --- the llama.cpp server --------------------------------------------------------------------------------


@dataclass
class Server:
    """A ``llama_cpp.server`` process we started, in its own process group."""

    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    log: IO[bytes]
    settings: dict[str, Any]


#: Every server started, so that :func:`main` can stop any still running whatever happened.
_STARTED: list[Server] = []


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(gguf: Path, threads: int, log_dir: Path) -> Server:
    """Start the server on a free loopback port and wait until it answers ``GET /v1/models``."""
    port = _free_port()
    settings: dict[str, Any] = {
        "model": str(gguf),
        "model_alias": ALIAS,
        "host": "127.0.0.1",
        "port": port,
        "n_ctx": N_CTX,
        "n_threads": threads,
        "n_threads_batch": threads,
        # As corral's LocalModel (llama-cpp-python's default): the server's default, True, computes the
        # vocabulary logits of every prompt token, slower and 4 GB more memory at n_ctx 8192.
        "logits_all": False,
    }
    cmd = [sys.executable, "-m", "llama_cpp.server"]
    for key, value in settings.items():
        cmd += [f"--{key}", str(value)]
    log_path = log_dir / f"llama_server_{port}.log"
    log = log_path.open("wb")
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(process, f"http://127.0.0.1:{port}/v1", log_path, log, settings)
    _STARTED.append(server)
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stop_server(server)
            tail = log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
            raise RuntimeError(f"the llama.cpp server exited with status {process.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(f"{server.base_url}/models", timeout=2) as response:
                if response.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    stop_server(server)
    raise RuntimeError(f"the llama.cpp server did not answer within {SERVER_START_S:.0f} s (log: {log_path})")


def stop_server(server: Server) -> None:
    """Stop the server (and anything it spawned: it leads its own process group) and close its log."""
    if server.process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout=10)
    server.log.close()


async def _stop_child(child: asyncio.subprocess.Process) -> None:
    """Stop the peer process we started (it leads its own process group)."""
    if child.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(child.wait(), 5)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        await child.wait()


# --- asking the peer -------------------------------------------------------------------------------------


async def ask_peer(
    python: Path,
    server: Server,
    questions: list[EvalQuestion],
    args: argparse.Namespace,
    on_prediction: Callable[[EvalQuestion, dict[str, Any]], None],
) -> None:
    """Run the peer on ``questions`` in one child process; a stalled or crashed child is killed, its current
    question recorded as failed, and a fresh child continues with the rest. A child that crashes before its
    first answer raises :class:`RuntimeError` (the peer cannot run at all)."""
    pending = list(questions)
    # Per question: the agent's own limit, plus an untimed wait for the server after a timeout.
    watchdog = args.timeout * 2 + 660
    peer_log_path = server.log_path.with_name("peer_agent.log")
    with peer_log_path.open("ab") as peer_log:
        while pending:
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as f:
                json.dump([{"id": q.id, "question": q.question, "db": q.db} for q in pending], f)
                qfile = f.name
            cmd = [str(python), str(PEER_SCRIPT), "--base-url", server.base_url, "--model", ALIAS]
            cmd += ["--questions", qfile, "--timeout", str(args.timeout)]
            cmd += ["--request-limit", str(args.request_limit)]
            child = await asyncio.create_subprocess_exec(
                *cmd,
                stdout=asyncio.subprocess.PIPE,
                stderr=peer_log,
                start_new_session=True,
                limit=256 * 1024 * 1024,
            )
            assert child.stdout is not None
            answered = 0
            try:
                while pending:
                    started = time.perf_counter()
                    try:
                        line = await asyncio.wait_for(child.stdout.readline(), watchdog)
                    except TimeoutError:
                        error = "the peer process stalled"
                        on_prediction(pending.pop(0), {"error": error, "seconds": args.timeout})
                        break
                    if not line:
                        await child.wait()
                        if not answered and child.returncode:
                            raise RuntimeError(
                                f"the peer agent exited with status {child.returncode} before its first "
                                f"answer; see {peer_log_path}"
                            )
                        error = f"the peer process exited with status {child.returncode}"
                        seconds = min(time.perf_counter() - started, args.timeout)
                        on_prediction(pending.pop(0), {"error": error, "seconds": seconds})
                        break
                    answered += 1
                    prediction = json.loads(line)
                    question = pending.pop(0)
                    if prediction.get("id") != question.id:
                        prediction = {"error": f"out of order: got {prediction.get('id')}"}
                    on_prediction(question, prediction)
            finally:
                await _stop_child(child)
                os.unlink(qfile)


def to_answer(prediction: dict[str, Any]) -> Answer:
    """The peer's prediction as corral's :class:`Answer`, the type the scorer takes."""
    status = prediction.get("status", "failed")
    if status not in ("answered", "cannot_answer", "failed"):
        status = "failed"
    return Answer(
        status=status,
        answer=str(prediction.get("answer") or prediction.get("error") or ""),
        sql=prediction.get("sql"),
        columns=[str(c) for c in prediction.get("columns") or []],
        rows=[list(r) for r in prediction.get("rows") or []][:MAX_ROWS],
        row_count=int(prediction.get("row_count") or 0),
        usage=Usage(
            requests=int(prediction.get("requests") or 0),
            input_tokens=int(prediction.get("input_tokens") or 0),
            output_tokens=int(prediction.get("output_tokens") or 0),
        ),
    )


async def gold_rows_for(questions: list[EvalQuestion]) -> dict[str, list[list[Any]] | None]:
    """Gold results through the same sandboxed runner ``corral eval`` uses."""
    runners: dict[tuple[str | None, tuple[str, ...]], QueryRunner] = {}
    gold: dict[str, list[list[Any]] | None] = {}
    for q in questions:
        if q.gold_sql is None:
            gold[q.id] = None
            continue
        key = (q.db, tuple(q.files))
        if key not in runners:
            runners[key] = _run.make_runner(open_source(q.db, q.files))
        result = await runners[key].run(q.gold_sql, max_rows=MAX_ROWS)
        gold[q.id] = result.rows if result.ok else None
    return gold


async def bench_model(
    name: str,
    questions: list[EvalQuestion],
    python: Path,
    args: argparse.Namespace,
    log_dir: Path,
    results: dict[str, Any],
) -> dict[str, Any]:
    """Start a server for the local model ``name``, run the peer on ``questions``, score, stop the server.

    The report goes into ``results`` as it is, also when the run is interrupted."""
    model = resolve_model(name)
    if not isinstance(model, LocalModel):
        raise SystemExit(
            f"{name}: the peer bench needs a local model (local, local:<name>, local:/path.gguf)"
        )
    gguf = model.path()
    gold = await gold_rows_for(questions)
    report = EvalReport(system=SYSTEM, model=model.name)
    details: list[dict[str, Any]] = []

    def on_prediction(q: EvalQuestion, prediction: dict[str, Any]) -> None:
        answer = to_answer(prediction)
        correct = score(q, answer, gold.get(q.id))
        seconds = float(prediction.get("seconds") or 0.0)
        report.outcomes.append(
            QuestionOutcome(
                id=q.id,
                difficulty=q.difficulty,
                correct=correct,
                status=answer.status,
                seconds=seconds,
                tokens=answer.usage.total_tokens,
                model_calls=answer.usage.requests,
                sql=answer.sql,
                gold_sql=q.gold_sql,
                error=prediction.get("error"),
            )
        )
        details.append(
            {
                "id": q.id,
                "answer": prediction.get("answer"),
                "queries": prediction.get("queries", []),
                "tool_calls": prediction.get("tool_calls", 0),
                "trace": prediction.get("trace", []),
                "rows_head": (prediction.get("rows") or [])[:5],
                "row_count": prediction.get("row_count", 0),
            }
        )
        mark = "ok " if correct else "BAD"
        n = len(report.outcomes)
        print(
            f"[{name} {SYSTEM}] {n}/{len(questions)} {mark} {seconds:5.1f}s {q.id} [{q.difficulty}] "
            f"{answer.status}" + (f" ({prediction['error'][:120]})" if prediction.get("error") else ""),
            flush=True,
        )

    print(
        f"[{name}] starting llama_cpp.server with {gguf} ({args.threads} thread(s), n_ctx {N_CTX})",
        flush=True,
    )
    server = start_server(gguf, args.threads, log_dir)
    try:
        print(f"[{name}] server ready at {server.base_url} (log: {server.log_path})", flush=True)
        await ask_peer(python, server, questions, args, on_prediction)
    finally:
        stop_server(server)
        data = report.to_json()
        data["server"] = server.settings
        data["details"] = details
        data["complete"] = len(report.outcomes) == len(questions)
        results[f"{name}/{SYSTEM}"] = data
    return data


async def run(args: argparse.Namespace, versions: dict[str, str]) -> int:
    questions = load_eval_set(args.set, limit=args.limit)
    asked = [q for q in questions if q.db is not None and not q.files and "://" not in q.db]
    skipped = len(questions) - len(asked)
    if skipped:
        print(f"skipping {skipped} question(s) not over a SQLite file (the peer's tools are SQLite tools)")
    out = Path(args.out)
    log_dir = Path(tempfile.mkdtemp(prefix="corral-peer-"))
    results: dict[str, Any] = {
        "set": args.set,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "peer": {
            "framework": "pydantic-ai",
            **versions,
            "timeout_s": args.timeout,
            "request_limit": args.request_limit,
        },
        "skipped": skipped,
    }
    lines = []
    try:
        for name in args.models.split(","):
            data = await bench_model(name.strip(), asked, Path(args.anchors_python), args, log_dir, results)
            lines.append(_row(f"{SYSTEM} · {data['model']}", data))
    finally:
        _write(out, results)
    print()
    print(f"execution accuracy on {args.set}")
    print(HEADER)
    for line in lines:
        print(line)
    print(f"reports: {out}")
    return 0


def _write(out: Path, results: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--set", default=str(ROOT / "evals" / "chinook.jsonl"))
    parser.add_argument(
        "--models", "--model", dest="models", default="local", help="local model names, comma-separated"
    )
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per question (default 120)")
    parser.add_argument(
        "--request-limit", type=int, default=10, help="model requests per question (default 10)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=default_threads(),
        help="llama.cpp threads (default: as corral's local model)",
    )
    parser.add_argument("--anchors-python", default=str(ANCHORS_PYTHON))
    parser.add_argument("--out", default="peer_agent_bench.json")
    args = parser.parse_args()

    versions = peer_versions(Path(args.anchors_python))
    if versions is None:
        return 0

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        return asyncio.run(run(args, versions))
    except KeyboardInterrupt:
        print("\ninterrupted: partial results are in the report", file=sys.stderr)
        return 130
    finally:
        for server in _STARTED:
            stop_server(server)


if __name__ == "__main__":
    sys.exit(main())
