"""Shared, orchestration-free building blocks: paths, JSONL I/O, hashing, atomic writes, time."""
