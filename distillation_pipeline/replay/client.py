"""An OpenAI-compatible ``/v1/chat/completions`` client (llama.cpp server, Ollama, vLLM, hosted APIs).

Failures are typed, because the caller decides differently on each: ``ModelUnreachable`` (nothing
listening), ``ModelTimeout``, ``ModelHTTPError`` (a non-200 answer, with its status) and
``ModelMalformedResponse`` (200, but not the JSON shape the API promises). Transient ones
(unreachable, timeout, 429 and 5xx) are retried with exponential backoff; the rest are not,
because asking again gets the same answer.

The API key is read from the environment variable named by ``api_key_env`` at call time. It is
never stored on the client, never part of an error message (a server that echoes it back in an
error body gets it masked), and the only endpoint description that leaves this module is
``host:port``.
"""

import functools
import logging
import os
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import orjson

# httpx logs each request with its full URL at INFO; an endpoint URL may carry user:password@.
logging.getLogger("httpx").setLevel(logging.WARNING)


class ModelError(RuntimeError):
    """Base of every model-call failure. ``kind`` is a stable code for logs and run rows."""

    kind = "model_error"

    def __init__(self, message: str, *, endpoint: str = "") -> None:
        super().__init__(message)
        self.endpoint = endpoint


class ModelConfigError(ModelError):
    kind = "config"


class ModelUnreachable(ModelError):
    kind = "unreachable"


class ModelTimeout(ModelError):
    kind = "timeout"


class ModelHTTPError(ModelError):
    kind = "http_status"

    def __init__(self, message: str, *, endpoint: str = "", status: int = 0) -> None:
        super().__init__(message, endpoint=endpoint)
        self.status = status


class ModelMalformedResponse(ModelError):
    kind = "malformed_response"


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    model: str  # the model the server says answered (falls back to the one asked for)
    latency_ms: float
    attempts: int
    finish_reason: str | None = None


def endpoint_host(base_url: str) -> str:
    """``host:port`` of a base URL, with any user:password@ and path dropped."""
    parts = urlsplit(base_url if "://" in base_url else f"http://{base_url}")
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{host}:{port}"


class ChatClient:
    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        timeout_s: float = 60.0,
        max_retries: int = 2,
        backoff_s: float = 0.5,
        api_key_env: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not base_url.strip():
            raise ModelConfigError("model endpoint has no base_url")
        url = base_url.strip().rstrip("/")
        if url.endswith("/v1"):  # accept both http://host:port and http://host:port/v1
            url = url[: -len("/v1")]
        if "://" not in url:
            url = f"http://{url}"
        self._url = f"{url}/v1/chat/completions"
        self.host = endpoint_host(url)
        self.model = model
        self.timeout_s = timeout_s
        self.max_retries = max(0, max_retries)
        self.backoff_s = backoff_s
        self.api_key_env = api_key_env or None
        self._transport = transport

    def __repr__(self) -> str:  # never the URL's userinfo, never the key
        return f"ChatClient(host={self.host!r}, model={self.model!r})"

    def _headers(self) -> tuple[dict[str, str], str | None]:
        headers = {"Content-Type": "application/json"}
        if not self.api_key_env:
            return headers, None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ModelConfigError(
                f"API key environment variable {self.api_key_env} is not set (endpoint {self.host})", endpoint=self.host
            )
        headers["Authorization"] = f"Bearer {key}"
        return headers, key

    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int | None = 0,
    ) -> Completion:
        headers, key = self._headers()
        body: dict = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        if seed is not None:
            body["seed"] = seed
        payload = orjson.dumps(body)
        started = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._once(payload, headers, key, started, attempt)
            except (ModelUnreachable, ModelTimeout, ModelHTTPError) as exc:
                retryable = not isinstance(exc, ModelHTTPError) or exc.status == 429 or exc.status >= 500
                if not retryable or attempt > self.max_retries:
                    if attempt > 1:
                        exc.args = (f"{exc.args[0]} (after {attempt} attempts)",)
                    raise
                time.sleep(self.backoff_s * (2 ** (attempt - 1)))

    def _once(self, payload: bytes, headers: dict[str, str], key: str | None, started: float, attempt: int) -> Completion:
        where = f"{self.host} ({self.model})"
        try:
            with httpx.Client(timeout=self.timeout_s, transport=self._transport, verify=_ssl_context()) as http:
                response = http.post(self._url, content=payload, headers=headers)
        except httpx.TimeoutException:
            raise ModelTimeout(f"model at {where} did not answer within {self.timeout_s:g} s", endpoint=self.host) from None
        except httpx.TransportError as exc:
            raise ModelUnreachable(
                f"model at {where} is unreachable ({type(exc).__name__})", endpoint=self.host
            ) from None
        if response.status_code != 200:
            snippet = _mask(response.text[:200], key).replace("\n", " ")
            raise ModelHTTPError(
                f"model at {where} answered HTTP {response.status_code}: {snippet}",
                endpoint=self.host,
                status=response.status_code,
            )
        try:
            data = orjson.loads(response.content)
            choice = data["choices"][0]
            text = choice["message"]["content"]
            if text is None:
                text = ""
            if not isinstance(text, str):
                raise TypeError("content is not a string")
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
            raise ModelMalformedResponse(
                f"model at {where} sent a response that is not a chat completion ({type(exc).__name__})",
                endpoint=self.host,
            ) from None
        return Completion(
            text=text,
            model=str(data.get("model") or self.model) if isinstance(data, dict) else self.model,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            attempts=attempt,
            finish_reason=choice.get("finish_reason") if isinstance(choice, dict) else None,
        )


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Building the default context loads the CA bundle (tens of ms); one per process is enough.
    return httpx.create_ssl_context()


def _mask(text: str, key: str | None) -> str:
    return text.replace(key, "***") if key else text
