"""Resources shared by every topic: where the data lives and how this run was asked to behave."""

import os

import dagster as dg

from distillation_pipeline.lib.layout import Layout


def default_root() -> str:
    return os.environ.get("DISTILL_ROOT") or os.getcwd()


class DistillPaths(dg.ConfigurableResource):
    """The one place a run's data root comes from. Every file path is derived from it."""

    root: str

    def layout(self) -> Layout:
        return Layout.at(self.root)


class RunOptions(dg.ConfigurableResource):
    """Options every data command takes (spec section 9)."""

    recorded_at: str | None = None  # pin provenance time (ISO-8601) for byte-identical output
    dry_run: bool = False  # compute and report, write nothing
