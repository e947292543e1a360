"""Distillation pipeline: agent logs in, trustworthy datasets and receipts out.

Domain packages (no Dagster import): ``lib``, ``evidence``, ``scoring``, ``exports``,
``receipts``, ``replay``, ``sample``. Dagster wiring lives in ``defs`` and is assembled in
``definitions.py``; the ``distill`` command (``cli.py``) runs that same graph in-process.
"""

__version__ = "0.1.0"
