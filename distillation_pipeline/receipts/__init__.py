"""Receipts, run summaries and drift: what every run read, wrote and how far it moved."""
