"""Benchmarks for issue 7: throughput, memory, incremental cost and retrieval, 10k to 1M rows.

``python -m benchmarks.run`` is the one command; see ``docs/benchmarks.md``.
"""
