"""Dagster wiring only: assets, checks, jobs, schedules, sensors and resources, by topic.

Each topic package exposes ``defs`` (a ``dagster.Definitions``); ``definitions.py`` merges them.
Domain logic stays in the orchestration-free packages these modules call.
"""
