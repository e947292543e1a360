"""The model client (spec 7.3) against a real HTTP server on 127.0.0.1: typed errors, retries, the key."""

import socket
import time

import orjson
import pytest

from distillation_pipeline.replay.client import (
    ChatClient,
    ModelConfigError,
    ModelHTTPError,
    ModelMalformedResponse,
    ModelTimeout,
    ModelUnreachable,
    endpoint_host,
)
from distillation_pipeline_tests.http_server import serve

MESSAGES = [{"role": "user", "content": "hi"}]
SECRET = "sk-test-0123456789abcdefSECRET"


def completion(text: str = "an answer") -> bytes:
    return orjson.dumps({"model": "m", "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]})


def client(url: str, **kwargs) -> ChatClient:
    kwargs.setdefault("backoff_s", 0.01)
    return ChatClient(url, "m", **kwargs)


def test_a_completion_posts_the_openai_request_and_returns_the_text():
    with serve(lambda path, body: (200, completion("done"))) as server:
        result = client(server.url + "/v1", timeout_s=5).complete(MESSAGES, max_tokens=12)
    assert result.text == "done" and result.attempts == 1 and result.latency_ms >= 0
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["json"]["messages"] == MESSAGES and request["json"]["max_tokens"] == 12
    assert request["json"]["temperature"] == 0.0


def test_server_errors_are_retried_with_backoff_then_raised_with_the_status():
    with serve(lambda path, body: (500, b'{"error": "boom"}')) as server:
        with pytest.raises(ModelHTTPError, match="HTTP 500") as caught:
            client(server.url, max_retries=2).complete(MESSAGES)
    assert caught.value.status == 500 and len(server.requests) == 3
    assert "after 3 attempts" in str(caught.value)


def test_a_transient_failure_then_success_returns_the_answer():
    replies = iter([(503, b"busy"), (200, completion("second try"))])
    with serve(lambda path, body: next(replies)) as server:
        result = client(server.url, max_retries=2).complete(MESSAGES)
    assert result.text == "second try" and result.attempts == 2


def test_client_errors_are_not_retried():
    with serve(lambda path, body: (404, b"no such route")) as server:
        with pytest.raises(ModelHTTPError, match="HTTP 404"):
            client(server.url, max_retries=3).complete(MESSAGES)
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "reply",
    [b"<html>not json</html>", b'{"choices": []}', b'{"choices": [{"message": {"content": 42}}]}', b"[1, 2]"],
)
def test_malformed_json_is_its_own_error(reply):
    with serve(lambda path, body: (200, reply)) as server:
        with pytest.raises(ModelMalformedResponse, match="not a chat completion"):
            client(server.url).complete(MESSAGES)


def test_a_server_slower_than_the_timeout_raises_model_timeout():
    def slow(path, body):
        time.sleep(1.0)
        return 200, completion()

    with serve(slow) as server:
        started = time.perf_counter()
        with pytest.raises(ModelTimeout, match="did not answer within 0.2 s"):
            client(server.url, timeout_s=0.2, max_retries=1).complete(MESSAGES)
        assert time.perf_counter() - started < 1.5  # two attempts of 0.2 s, not the server's 1 s each


def test_nothing_listening_raises_model_unreachable():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(ModelUnreachable, match=f"127.0.0.1:{port}.*unreachable"):
            client(f"http://127.0.0.1:{port}", max_retries=1).complete(MESSAGES)


def test_the_api_key_is_sent_but_never_in_an_error(monkeypatch):
    monkeypatch.setenv("TEST_MODEL_KEY", SECRET)
    # A server that echoes the Authorization header back in its error body.
    with serve(lambda path, body: (401, b'{"error": "bad key Bearer ' + SECRET.encode() + b'"}')) as server:
        chat = ChatClient(server.url, "m", api_key_env="TEST_MODEL_KEY")
        with pytest.raises(ModelHTTPError) as caught:
            chat.complete(MESSAGES)
    assert server.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert SECRET not in str(caught.value) and "***" in str(caught.value)
    assert SECRET not in repr(chat) and SECRET not in str(vars(chat))  # read at call time, never stored


def test_credentials_in_the_url_never_reach_the_host_description():
    chat = ChatClient("http://user:hunter2@127.0.0.1:9/v1", "m")
    assert chat.host == "127.0.0.1:9" and "hunter2" not in repr(chat)
    with pytest.raises(ModelUnreachable) as caught:
        ChatClient("http://user:hunter2@127.0.0.1:9/v1", "m", max_retries=0).complete(MESSAGES)
    assert "hunter2" not in str(caught.value) and caught.value.__cause__ is None


def test_a_missing_key_variable_is_a_config_error_naming_the_variable_only(monkeypatch):
    monkeypatch.delenv("TEST_MODEL_KEY", raising=False)
    with pytest.raises(ModelConfigError, match="TEST_MODEL_KEY is not set"):
        ChatClient("http://127.0.0.1:9", "m", api_key_env="TEST_MODEL_KEY").complete(MESSAGES)


def test_endpoint_host_keeps_host_and_port_only():
    assert endpoint_host("https://user:secret@api.example.com/v1") == "api.example.com:443"
    assert endpoint_host("http://127.0.0.1:8080/v1") == "127.0.0.1:8080"
    assert endpoint_host("localhost:11434") == "localhost:11434"
