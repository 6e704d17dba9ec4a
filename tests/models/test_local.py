"""The real 0.5B model: in process (llama-cpp-python) and behind llama-cpp-python's OpenAI-compatible server.

A tool call and a structured output must both parse and validate. One server is started per session (its
model load counts once) on a free loopback port; temperature 0 and a seed keep the replies reproducible.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator

import pytest

from corral.models import (
    LocalModel,
    ModelSettings,
    OpenAIModel,
    OutputSchema,
    RetryPolicy,
    ToolDefinition,
    ToolResultMessage,
    UserMessage,
    install_weights,
    schema_error,
)

pytestmark = [pytest.mark.model, pytest.mark.slow]

ADD = ToolDefinition(
    name="add",
    description="Add two integers",
    parameters={
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
)
CITY = OutputSchema(
    name="city",
    json_schema={
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        "required": ["city", "country"],
    },
)
EXACT = ModelSettings(temperature=0.0, seed=7, max_tokens=128)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# llama_cpp.server with the same model parameters corral's in-process model uses (on a CPU that advertises
# AMX, llama.cpp's extra buffer types crash some guests: see corral.models._local.extra_buffers).
_SERVER_BOOT = """
import runpy
from corral.models._local import _model_params, extra_buffers
with _model_params(extra_buffers=extra_buffers()):
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m llama_cpp.server`` with the 0.5B model; yields its ``/v1`` base URL."""
    path = install_weights("qwen2.5-coder-0.5b", show_progress=False)
    port = _free_port()
    command = [sys.executable, "-c", _SERVER_BOOT, "--model", str(path), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--n_ctx", "4096", "--chat_format", "chatml-function-calling"]
    # The server logs ~170 KB while loading: a pipe would fill and block it, so log to a file.
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=1) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
async def served(llama_server: str) -> AsyncIterator[OpenAIModel]:
    model = OpenAIModel(
        "qwen", base_url=llama_server, response_format_style="json_object", retry=RetryPolicy(attempts=1)
    )
    yield model
    await model.aclose()


async def test_server_tool_call_parses_and_validates(served: OpenAIModel) -> None:
    response = await served.request(
        [UserMessage(content="Use the add tool to add 17 and 25.")], tools=[ADD], settings=EXACT
    )
    assert response.ok, response.problems
    (call,) = response.message.tool_calls
    assert call.name == "add"
    assert call.arguments is not None and schema_error(call.arguments, ADD.parameters) is None
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0


async def test_server_structured_output_parses_and_validates(served: OpenAIModel) -> None:
    response = await served.request(
        [UserMessage(content="Name the capital of France.")], output_schema=CITY, settings=EXACT
    )
    assert response.ok, response.problems
    assert schema_error(json.loads(response.message.content or ""), CITY.json_schema) is None


@pytest.fixture(scope="module")
def local() -> LocalModel:
    model = LocalModel("qwen2.5-coder-0.5b", n_ctx=4096)
    model.load()
    return model


async def test_in_process_tool_call_then_answer(local: LocalModel) -> None:
    question = UserMessage(content="Use the add tool to add 17 and 25.")
    first = await local.request([question], tools=[ADD], settings=EXACT)
    assert first.ok, first.problems
    (call,) = first.message.tool_calls
    assert call.name == "add" and call.arguments is not None
    assert schema_error(call.arguments, ADD.parameters) is None
    assert first.finish_reason == "tool_calls" and first.usage.cost_usd == 0.0
    result = ToolResultMessage(tool_call_id=call.id, name="add", content=str(sum(call.arguments.values())))
    second = await local.request([question, first.message, result], tools=[ADD], settings=EXACT)
    assert second.ok and not second.message.tool_calls
    assert second.message.content  # it answered instead of calling again


async def test_in_process_structured_output_parses_and_validates(local: LocalModel) -> None:
    response = await local.request(
        [UserMessage(content="Name the capital of France.")], output_schema=CITY, settings=EXACT
    )
    assert response.ok, response.problems
    value = json.loads(response.message.content or "")
    assert schema_error(value, CITY.json_schema) is None


async def test_in_process_truncation_is_a_problem_not_an_exception(local: LocalModel) -> None:
    tiny = ModelSettings(temperature=0.0, seed=7, max_tokens=3)
    response = await local.request(
        [UserMessage(content="Use the add tool to add 17 and 25.")], tools=[ADD], settings=tiny
    )
    assert response.finish_reason == "length"
    assert "truncated" in [p.kind for p in response.problems]


async def test_the_event_loop_stays_free_during_inference(local: LocalModel) -> None:
    import asyncio

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    started = time.perf_counter()
    await local.request([UserMessage(content="Say hello in five words.")], settings=EXACT)
    elapsed = time.perf_counter() - started
    task.cancel()
    # If inference blocked the loop the ticker could not have run in the meantime.
    assert ticks >= max(3, int(elapsed / 0.01 * 0.3))


async def test_in_process_timeout_is_a_typed_error_and_the_model_still_works(local: LocalModel) -> None:
    from corral.models.errors import ModelTimeoutError

    hurried = ModelSettings(temperature=0.0, seed=7, max_tokens=48, timeout_s=0.05)
    with pytest.raises(ModelTimeoutError, match="timeout"):
        await local.request([UserMessage(content="Write a long poem about the sea.")], settings=hurried)
    after = await local.request(
        [UserMessage(content="Name the capital of France.")], output_schema=CITY, settings=EXACT
    )
    assert after.ok, after.problems
