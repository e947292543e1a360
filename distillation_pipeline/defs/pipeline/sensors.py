"""Sensors of the pipeline topic."""

SENSORS: list = []
