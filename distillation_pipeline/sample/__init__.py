"""Sample substrates: a realistic, messy ``data/_kb/`` to develop, test and benchmark against."""

from distillation_pipeline.sample.generator import SampleStats, generate_substrate

__all__ = ["SampleStats", "generate_substrate"]
