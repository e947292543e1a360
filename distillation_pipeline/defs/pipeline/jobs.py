"""Jobs: the nightly pipeline. The CLI runs subsets of it with ``asset_selection``."""

import dagster as dg

PIPELINE_JOB_NAME = "distill_pipeline"

distill_pipeline = dg.define_asset_job(
    name=PIPELINE_JOB_NAME,
    selection=dg.AssetSelection.groups("distillation"),
    tags={"distill/pipeline": "true"},  # the instance's run queue allows one such run at a time
    description=(
        "Collect evidence, score it, export the RAG/SFT/preference datasets behind the firewall, and write "
        "receipts, the run summary and drift. Runs nightly; `distill run-all` runs the same job in-process."
    ),
)

JOBS = [distill_pipeline]
