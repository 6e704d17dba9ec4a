"""corral's own message format: what every model adapter speaks, whatever provider is behind it.

A conversation is a list of :data:`Message`. A model answers with a :class:`ModelResponse`: one assistant
message (text and/or tool calls), usage, why it stopped, and the *problems* found in its output (malformed
tool-call arguments, an unknown tool, an empty reply, a reply cut by max tokens). Problems are data, not
exceptions, so the agent loop can feed them back to the model.

>>> from corral.models import UserMessage, AssistantMessage, ToolCall
>>> call = ToolCall(id="c1", name="add", arguments={"a": 1, "b": 2})
>>> AssistantMessage(tool_calls=[call]).tool_calls[0].arguments
{'a': 1, 'b': 2}
>>> from corral.models import Usage
>>> (Usage(input_tokens=3, output_tokens=1) + Usage(input_tokens=2)).input_tokens
5
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SystemMessage(_Frozen):
    role: Literal["system"] = "system"
    content: str


class UserMessage(_Frozen):
    role: Literal["user"] = "user"
    content: str


class ToolCall(_Frozen):
    """A tool call the model asked for.

    ``arguments`` is the parsed JSON object, or ``None`` when the model's arguments were not a JSON object;
    ``raw_arguments`` keeps the text exactly as the model wrote it, so the error fed back can quote it.
    """

    id: str
    name: str
    arguments: dict[str, Any] | None = None
    raw_arguments: str | None = None


class AssistantMessage(_Frozen):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)


class ToolResultMessage(_Frozen):
    """The answer to one :class:`ToolCall`; ``is_error`` marks feedback about a failure."""

    role: Literal["tool"] = "tool"
    tool_call_id: str
    name: str
    content: str
    is_error: bool = False


Message = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolResultMessage,
    Field(discriminator="role"),
]


class ToolDefinition(_Frozen):
    """A tool as a model sees it: a name, a description and a JSON Schema of its arguments (an object)."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class OutputSchema(_Frozen):
    """Structured output: the reply's text must be JSON that validates against ``json_schema``."""

    name: str = "output"
    json_schema: dict[str, Any]


class Usage(_Frozen):
    """What one call (or, summed, a run) cost."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0
    #: Input tokens the model did not read again because its cache held them (a local model's KV cache).
    cached_tokens: int = 0
    #: Of ``latency_s``, the seconds spent reading the prompt and writing the reply, when the model says
    #: (a local model does; hosted APIs do not, and leave both 0).
    prompt_s: float = 0.0
    generation_s: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            requests=self.requests + other.requests,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            latency_s=self.latency_s + other.latency_s,
            cost_usd=self.cost_usd + other.cost_usd,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            prompt_s=self.prompt_s + other.prompt_s,
            generation_s=self.generation_s + other.generation_s,
        )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


FinishReason = Literal["stop", "tool_calls", "length", "content_filter", "other"]

ProblemKind = Literal[
    "invalid_arguments",  # a tool call's arguments are not a JSON object
    "unknown_tool",  # a tool call names a tool that was not offered
    "empty_reply",  # neither text nor tool calls
    "truncated",  # the reply was cut by max_tokens
    "invalid_output",  # structured output that is not JSON or does not match the schema
]


class OutputProblem(_Frozen):
    """Something wrong with the model's output, described for the model to fix."""

    kind: ProblemKind
    detail: str
    tool_call_id: str | None = None


class ModelSettings(_Frozen):
    max_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None
    timeout_s: float | None = None


class ModelResponse(_Frozen):
    message: AssistantMessage
    usage: Usage = Field(default_factory=Usage)
    model: str = ""
    finish_reason: FinishReason = "stop"
    problems: list[OutputProblem] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems
