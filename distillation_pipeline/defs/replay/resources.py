"""Model endpoints for replay: the local model and, separately configured, the escalation model.

Defaults come from the environment so the UI, the sensor and ``distill replay`` agree without
run config: ``DISTILL_LOCAL_MODEL_URL`` (default the embedded server, ``distill model serve``,
on http://127.0.0.1:8080), ``DISTILL_LOCAL_MODEL``, ``DISTILL_ESCALATION_MODEL_URL`` (empty: no
escalation endpoint), ``DISTILL_ESCALATION_MODEL`` and ``DISTILL_ESCALATION_API_KEY_ENV``. The
key itself is never config: only the *name* of the environment variable that holds it.
"""

import os

import dagster as dg
from pydantic import Field

from distillation_pipeline.replay.client import ChatClient
from distillation_pipeline.replay.model_server import DEFAULT_PORT, MODEL_ALIAS


class ModelEndpoint(dg.ConfigurableResource):
    """An OpenAI-compatible /v1/chat/completions endpoint (llama.cpp server, Ollama, vLLM, hosted)."""

    base_url: str = Field(default="", description="e.g. http://127.0.0.1:8080 (with or without /v1); empty: not configured")
    model: str = Field(default="", description="model name sent in the request and recorded in the run log")
    timeout_s: float = Field(default=60.0, description="per-attempt timeout in seconds")
    max_retries: int = Field(default=2, description="retries after the first attempt, on unreachable, timeout, 429, 5xx")
    api_key_env: str = Field(default="", description="NAME of the environment variable holding the API key; empty: no key")

    @property
    def configured(self) -> bool:
        return bool(self.base_url.strip())

    def client(self) -> ChatClient | None:
        """A client for this endpoint, or None when no base_url is set (escalation unavailable)."""
        if not self.configured:
            return None
        return ChatClient(
            self.base_url,
            self.model,
            timeout_s=self.timeout_s,
            max_retries=self.max_retries,
            api_key_env=self.api_key_env or None,
        )


def local_endpoint_from_env() -> ModelEndpoint:
    return ModelEndpoint(
        base_url=os.environ.get("DISTILL_LOCAL_MODEL_URL", f"http://127.0.0.1:{DEFAULT_PORT}"),
        model=os.environ.get("DISTILL_LOCAL_MODEL", MODEL_ALIAS),
        timeout_s=float(os.environ.get("DISTILL_LOCAL_MODEL_TIMEOUT_S", "120")),
        api_key_env=os.environ.get("DISTILL_LOCAL_API_KEY_ENV", ""),
    )


def escalation_endpoint_from_env() -> ModelEndpoint:
    return ModelEndpoint(
        base_url=os.environ.get("DISTILL_ESCALATION_MODEL_URL", ""),
        model=os.environ.get("DISTILL_ESCALATION_MODEL", ""),
        timeout_s=float(os.environ.get("DISTILL_ESCALATION_MODEL_TIMEOUT_S", "120")),
        api_key_env=os.environ.get("DISTILL_ESCALATION_API_KEY_ENV", ""),
    )
