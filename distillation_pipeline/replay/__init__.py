"""Replay (spec section 7): answer a task with a small local model grounded by retrieval.

retrieval -> bundle -> prompt -> client (local model) -> gate -> [escalation] -> runlog.
No Dagster here: ``distillation_pipeline.defs.replay`` wraps ``runner.run_replay`` in a job.
"""
