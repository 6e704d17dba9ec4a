"""A model call as a durable step: a resumed run gets the recorded response instead of paying again.

Durability wraps a model; it does not live inside each adapter. Inside a run function::

    model = JournaledModel(resolve_model(), ctx)
    response = await model.request(messages, tools=tools)     # journaled as step "model:<name>"

On replay the step returns the :class:`ModelResponse` from the journal and the provider is not called. A
:class:`~corral.models.errors.ModelError` that survived the retries is recorded too, and replays as the same
error type: a resumed run takes the same path it took before the crash.
"""

from __future__ import annotations

from collections.abc import Sequence

from corral.durable import RunContext
from corral.models._base import Model
from corral.models._messages import Message, ModelResponse, ModelSettings, OutputSchema, ToolDefinition


async def durable_request(
    ctx: RunContext,
    model: Model,
    messages: Sequence[Message],
    *,
    tools: Sequence[ToolDefinition] = (),
    output_schema: OutputSchema | None = None,
    settings: ModelSettings | None = None,
) -> ModelResponse:
    """``model.request(...)`` as the step ``model:<model.name>`` of ``ctx``'s run."""
    return await ctx.step(
        f"model:{model.name}",
        model.request,
        list(messages),
        tools=list(tools),
        output_schema=output_schema,
        settings=settings,
        returns=ModelResponse,
    )


class JournaledModel(Model):
    """``model`` with each request journaled as a step of ``ctx``'s run (see :func:`durable_request`)."""

    def __init__(self, model: Model, ctx: RunContext) -> None:
        self.model = model
        self.ctx = ctx
        self.name = model.name

    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        output_schema: OutputSchema | None = None,
        settings: ModelSettings | None = None,
    ) -> ModelResponse:
        """The wrapped model's response, from the journal when this step already ran."""
        return await durable_request(
            self.ctx, self.model, messages, tools=tools, output_schema=output_schema, settings=settings
        )

    async def aclose(self) -> None:
        """Close the wrapped model."""
        await self.model.aclose()
