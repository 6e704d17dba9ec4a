"""The one protocol every model adapter implements."""

from __future__ import annotations

import abc
from collections.abc import Sequence

from corral.models._messages import Message, ModelResponse, ModelSettings, OutputSchema, ToolDefinition


class Model(abc.ABC):
    """A chat model behind one async method.

    Adapters translate our :mod:`message format <corral.models._messages>` to their provider and back, and
    report malformed output as :class:`~corral.models.OutputProblem` entries of the response instead of
    raising. They raise :class:`~corral.models.errors.ModelError` subclasses only when no response could be
    had at all (after retries). Durability is not their business: the agent loop records each call as a
    durable step, so a resumed run never pays for the same call twice.
    """

    #: The name a user types to get this model, e.g. ``"local:qwen2.5-coder-0.5b"``.
    name: str

    @abc.abstractmethod
    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        output_schema: OutputSchema | None = None,
        settings: ModelSettings | None = None,
    ) -> ModelResponse:
        """Send the conversation and return the model's next message."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most adapters hold nothing
        """Release what the adapter holds (HTTP pools, a loaded model)."""
