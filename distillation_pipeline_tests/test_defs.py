"""The whole Definitions object loads, and the domain stays free of orchestration."""

import ast
from pathlib import Path

import dagster as dg

import distillation_pipeline
from distillation_pipeline.definitions import defs

PACKAGE = Path(distillation_pipeline.__file__).parent
DOMAIN_PACKAGES = ["lib", "evidence", "scoring", "exports", "receipts", "replay", "sample", "alerts"]


def test_definitions_load_and_resolve() -> None:
    repository = defs.get_repository_def()
    assert repository.get_all_jobs()
    dg.Definitions.validate_loadable(defs)


def test_every_stage_is_an_asset_in_the_pipeline_group() -> None:
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {"evidence"} <= keys


def test_every_definition_has_a_description() -> None:
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        assert graph.get(key).description, f"asset {key} has no description"
    for job in defs.get_repository_def().get_all_jobs():
        if not job.name.startswith("__"):
            assert job.description, f"job {job.name} has no description"


def test_domain_packages_never_import_dagster() -> None:
    offenders = []
    for package in DOMAIN_PACKAGES:
        for path in (PACKAGE / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                if any(name == "dagster" or name.startswith("dagster") for name in names):
                    offenders.append(str(path.relative_to(PACKAGE)))
    assert not offenders, f"domain modules importing dagster: {offenders}"
