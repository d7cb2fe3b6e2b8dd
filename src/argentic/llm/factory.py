"""``LLMFactory.create(config)``: the provider named by ``llm.provider``, built from the config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from argentic.config import ArgenticConfig, LLMConfig
from argentic.errors import ConfigError
from argentic.llm.base import LLMProvider
from argentic.llm.scripted import FunctionLLM
from argentic.llm.types import ChatRequest


def llm_config(config: ArgenticConfig | LLMConfig | Mapping[str, Any]) -> LLMConfig:
    """The ``llm`` section from a whole config, the section itself, or a mapping of either."""
    if isinstance(config, ArgenticConfig):
        return config.llm
    if isinstance(config, LLMConfig):
        return config
    if isinstance(config, Mapping):
        from pydantic import ValidationError

        try:
            if "llm" in config:
                return ArgenticConfig.model_validate(config).llm
            return LLMConfig.model_validate(config)
        except ValidationError as exc:
            raise ConfigError(f"invalid llm configuration: {exc}") from exc
    raise ConfigError(f"expected an ArgenticConfig, LLMConfig or mapping, got {type(config).__name__}")


def endpoint_config(llm: LLMConfig, name: str) -> LLMConfig:
    """The ``llm`` section as endpoint ``name`` (``llm.endpoints.NAME``) sets it; its other keys stay."""
    endpoint = llm.endpoints.get(name)
    if endpoint is None:
        known = ", ".join(sorted(llm.endpoints)) or "none"
        raise ConfigError(f"llm.endpoints: no endpoint {name!r} (endpoints: {known})")
    provider = endpoint.provider or (llm.provider if llm.provider in ("vllm", "openai") else "vllm")
    update: dict[str, Any] = {"provider": provider, "endpoints": {}}
    url_key, model_key, key_key = (
        ("vllm_base_url", "vllm_model_name", "vllm_api_key")
        if provider == "vllm"
        else ("base_url", "model_name", "api_key")
    )
    server = endpoint.server or llm.server
    first_url = endpoint.base_urls[0] if endpoint.base_urls else endpoint.base_url
    if endpoint.base_urls or endpoint.base_url is not None:  # else the llm section's servers
        update["base_urls"] = list(endpoint.base_urls)
    if first_url is not None:
        update[url_key] = first_url
        if endpoint.server is None:
            # Serve where the endpoint points, with its model.
            parsed = urlsplit(first_url)
            server = server.model_copy(
                update={
                    "host": parsed.hostname or server.host,
                    "port": parsed.port or server.port,
                    "model": endpoint.model or server.model,
                }
            )
    update[model_key] = endpoint.model
    if endpoint.api_key is not None:
        update[key_key] = endpoint.api_key
    for key in ("temperature", "max_tokens", "top_p", "timeout_s"):
        value = getattr(endpoint, key)
        if value is not None:
            update[key] = value
    update["server"] = server
    return llm.model_copy(update=update)


def endpoint_url(llm: LLMConfig) -> str:
    """The base URL the configured provider talks to (its first server when it has several)."""
    return llm.server_urls()[0]


def _echo(request: ChatRequest) -> str:
    users = [m for m in request.messages if m.role == "user"]
    return users[-1].text if users else ""


class LLMFactory:
    """Builds the provider that ``llm.provider`` names."""

    @staticmethod
    def create(
        config: ArgenticConfig | LLMConfig | Mapping[str, Any], messager: object | None = None
    ) -> LLMProvider:
        """The configured provider. ``messager`` is accepted for compatibility; providers do not need it."""
        llm = llm_config(config)
        if llm.provider in ("vllm", "openai"):
            from argentic.llm.openai_provider import OpenAICompatibleProvider

            return OpenAICompatibleProvider.from_config(llm)
        if llm.provider == "vllm_engine":
            from argentic.llm.engine import VLLMEngineProvider

            return VLLMEngineProvider.from_config(llm)
        if llm.provider == "scripted":
            return FunctionLLM(_echo, model_name=llm.model_name or llm.vllm_model_name or "scripted")
        raise ConfigError(f"llm.provider = {llm.provider!r}: expected vllm, vllm_engine, openai or scripted")
