"""Content-addressed ids for exported rows.

An exported row's id is a hash of its dataset and its training content (not of its provenance),
so the same text exported twice gets the same id and shows up as ``duplicate_id``, and the
id of a row can be recomputed from the row itself (``verify`` does, to catch edited rows).
Preference ids hash the sha256 of each *stripped* text rather than the texts, because pairs
are chosen from per-run hashes before any text is re-read (and "the same text" for a pair
means equal after stripping whitespace, as in ``PreferenceSample``).
"""

from typing import Any

from distillation_pipeline.lib.hashing import canonical_json, sha256_hex

ID_PREFIX = {"rag": "rag-", "sft": "sft-", "preference": "pref-", "quarantine": "q-"}
_ID_HEX = 24


def content_id(dataset: str, content: Any) -> str:
    digest = sha256_hex(canonical_json({"dataset": dataset, "content": content}))
    return ID_PREFIX[dataset] + digest[:_ID_HEX]


def text_sha256(text: str) -> str:
    return sha256_hex(text.encode("utf-8"))


def rag_id(title: str, content: str) -> str:
    return content_id("rag", {"title": title, "content": content})


def sft_id(messages: list[dict[str, str]]) -> str:
    return content_id("sft", [{"role": m["role"], "content": m["content"]} for m in messages])


def preference_id(prompt_sha256: str, chosen_sha256: str, rejected_sha256: str) -> str:
    return content_id("preference", {"prompt": prompt_sha256, "chosen": chosen_sha256, "rejected": rejected_sha256})


def quarantine_id(dataset: str, *parts: Any) -> str:
    return content_id("quarantine", [dataset, *parts])
