"""The replay queue: a folder of request files, one JSON object per file, one run per file.

A request file is ``data/replay_queue/<name>.json``::

    {"task": "Fix flaky retry in the gateway", "allow_escalation": true}

with optional ``task_id``, ``local_only``, ``allow_escalation``, ``no_retrieval`` (booleans).
Writers put the file in place atomically (``submit_request`` does: a hidden temporary file, then
a rename), so the sensor never reads half a request; files starting with ``.`` are ignored.

A request's key is its file name plus the sha256 of its bytes: the sensor launches one run per
key and never the same key twice. Rewriting a file with different content is a new request;
the same task submitted twice under two names is two requests, on purpose (a repeat is data).
"""

import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from distillation_pipeline.lib.atomic import atomic_write_bytes
from distillation_pipeline.lib.hashing import sha256_hex

FLAGS = ("local_only", "allow_escalation", "no_retrieval")


@dataclass(frozen=True)
class QueueRequest:
    name: str  # file name in the queue folder
    key: str  # name + content hash: the run key
    task: str
    task_id: str | None
    local_only: bool
    allow_escalation: bool
    no_retrieval: bool


@dataclass(frozen=True)
class RejectedRequest:
    name: str
    key: str
    reason: str


def parse_request(name: str, data: bytes) -> QueueRequest | RejectedRequest:
    key = f"{name}:{sha256_hex(data)[:16]}"
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return RejectedRequest(name, key, "malformed JSON")
    if not isinstance(body, dict):
        return RejectedRequest(name, key, "not a JSON object")
    task = body.get("task")
    if not isinstance(task, str) or not task.strip():
        return RejectedRequest(name, key, "missing or empty task")
    for flag in FLAGS:
        if flag in body and not isinstance(body[flag], bool):
            return RejectedRequest(name, key, f"{flag} must be true or false")
    if body.get("local_only") and body.get("allow_escalation"):
        return RejectedRequest(name, key, "local_only forbids allow_escalation")
    task_id = body.get("task_id")
    if task_id is not None and (not isinstance(task_id, str) or not task_id.strip()):
        return RejectedRequest(name, key, "task_id must be a non-empty string")
    return QueueRequest(
        name=name,
        key=key,
        task=task,
        task_id=task_id,
        local_only=bool(body.get("local_only", False)),
        allow_escalation=bool(body.get("allow_escalation", False)),
        no_retrieval=bool(body.get("no_retrieval", False)),
    )


def read_queue(queue_dir: Path) -> list[QueueRequest | RejectedRequest]:
    """Every request file, sorted by name so launches happen in a stable order."""
    if not queue_dir.is_dir():
        return []
    found = []
    for path in sorted(queue_dir.glob("*.json")):
        if path.name.startswith(".") or not path.is_file():
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue  # removed between listing and reading: nothing to run
        found.append(parse_request(path.name, data))
    return found


def submit_request(queue_dir: Path, task: str, *, name: str | None = None, **flags: object) -> Path:
    body = {"task": task, **{k: v for k, v in flags.items() if v is not None}}
    data = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    stem = name or f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{sha256_hex(data)[:12]}"
    path = queue_dir / f"{stem}.json"
    atomic_write_bytes(path, data)
    return path
