"""The scale-out config in deploy/ is valid Dagster config, and every path comes from the root.

No cluster here: each file is checked against the schema Dagster itself uses to load it
(instance, run config, workspace), the instance is built from it with SQLite standing in for
Postgres, and the code is checked, statically and by running it, for paths that do not come
from ``Layout`` (and so from the ``DistillPaths`` resource and ``DISTILL_ROOT``).
"""

import ast
import inspect
import re
import tomllib
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._config import process_config
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import dagster_instance_config
from dagster._core.storage.config import pg_config
from dagster._core.workspace.config_schema import process_workspace_config

import distillation_pipeline
from distillation_pipeline.definitions import build_definitions
from distillation_pipeline.defs.execute import run_pipeline
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.sample import generate_substrate
from distillation_pipeline_tests.conftest import PINNED

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
PACKAGE = Path(distillation_pipeline.__file__).parent
INSTANCE_FILES = ["dagster.postgres.yaml", "dagster.k8s.yaml"]
PG_ENV = {
    "DAGSTER_PG_HOST": "pg.internal",
    "DAGSTER_PG_PORT": "6543",
    "DAGSTER_PG_USERNAME": "dagster",
    "DAGSTER_PG_PASSWORD": "from-a-secret",
    "DAGSTER_PG_DB": "dagster",
}
NO_DAGSTER_K8S = (
    "dagster-k8s is not installed: its releases pin dagster exactly, so it goes into the cluster image "
    "(deploy/requirements-cluster.txt), not the dev environment"
)


def load_yaml(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def home_with(tmp_path: Path, config: dict) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


# --- instance config: dagster.yaml ----------------------------------------------------------------


@pytest.mark.parametrize("name", INSTANCE_FILES)
def test_instance_config_passes_dagsters_own_schema(tmp_path: Path, name: str) -> None:
    validated, custom_class = dagster_instance_config(str(home_with(tmp_path, load_yaml(name))))
    assert custom_class is None
    assert set(validated["storage"]) == {"postgres"}
    # no credential in the file: every connection setting comes from the environment
    assert all(
        isinstance(v, dict) and set(v) == {"env"}
        for k, v in validated["storage"]["postgres"]["postgres_db"].items()
        if k != "params"
    )


def test_instance_schema_check_is_real_a_typo_is_refused(tmp_path: Path) -> None:
    config = load_yaml("dagster.postgres.yaml")
    config["storage"]["postgres"]["postgres_db"]["hostnam"] = config["storage"]["postgres"]["postgres_db"].pop(
        "hostname"
    )
    with pytest.raises(DagsterInvalidConfigError):
        dagster_instance_config(str(home_with(tmp_path, config)))


@pytest.mark.parametrize("name", INSTANCE_FILES)
def test_postgres_settings_resolve_from_the_environment_without_connecting(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    storage = load_yaml(name)["storage"]["postgres"]
    for key, value in PG_ENV.items():
        monkeypatch.setenv(key, value)
    resolved = process_config(pg_config(), storage)  # what dagster-postgres does before it connects
    assert resolved.success, resolved.errors
    db = resolved.value["postgres_db"]
    assert (db["hostname"], db["port"], db["password"]) == ("pg.internal", 6543, "from-a-secret")
    monkeypatch.delenv("DAGSTER_PG_HOST")
    assert not process_config(pg_config(), storage).success


@pytest.mark.parametrize("name", INSTANCE_FILES)
def test_instance_builds_with_the_queue_and_an_llm_pool_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Everything but storage (SQLite stands in for Postgres) and the k8s launcher is built for real."""
    monkeypatch.setenv("DAGSTER_COMPUTE_LOG_DIR", str(tmp_path / "compute_logs"))
    config = load_yaml(name)
    config["storage"] = {"sqlite": {"base_dir": str(tmp_path / "storage")}}
    if config["run_launcher"]["module"] == "dagster_k8s":
        config["run_launcher"] = {"module": "dagster.core.launcher", "class": "DefaultRunLauncher"}
    instance = dg.DagsterInstance.from_config(str(home_with(tmp_path, config)))
    try:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None and queue.max_concurrent_runs >= 1
        assert {"key": "dagster/job_name", "value": "distill_pipeline", "limit": 1} in queue.tag_concurrency_limits
        llm = instance.event_log_storage.get_concurrency_info("llm")
        assert (llm.limit, llm.using_default_limit) == (1, True)
        # raising it on the live instance, as docs/deployment.md says, overrides the default
        instance.event_log_storage.set_concurrency_slots("llm", 2)
        assert instance.event_log_storage.get_concurrency_info("llm").slot_count == 2
    finally:
        instance.dispose()


def test_only_replay_takes_a_slot_of_the_llm_pool() -> None:
    """The default pool limit throttles replay's model calls and nothing of the nightly pipeline."""
    jobs = pytest.importorskip("distillation_pipeline.defs.replay.jobs", reason="the replay job is not in this tree")
    assert {node.definition.pool for node in jobs.replay_job.graph.nodes} == {"llm"}
    pipeline = build_definitions().resolve_job_def("distill_pipeline")
    assert {node.definition.pool for node in pipeline.graph.nodes} == {None}


def test_k8s_run_launcher_config_matches_dagster_k8s(monkeypatch: pytest.MonkeyPatch) -> None:
    dagster_k8s = pytest.importorskip("dagster_k8s", reason=NO_DAGSTER_K8S)
    monkeypatch.setenv("DAGSTER_K8S_NAMESPACE", "distill")
    launcher = load_yaml("dagster.k8s.yaml")["run_launcher"]
    result = process_config(dagster_k8s.K8sRunLauncher.config_type(), launcher["config"])
    assert result.success, result.errors


# --- run config and workspace ---------------------------------------------------------------------


def test_pipeline_run_config_validates_against_the_job_loaded_from_another_root(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DISTILL_ROOT", "/mnt/distill")
    defs = build_definitions()
    resolved = dg.validate_run_config(defs.resolve_job_def("distill_pipeline"), load_yaml("run_config.yaml"))
    assert resolved["execution"]["multi_or_in_process_executor"]["multiprocess"]["max_concurrent"] == 2
    with pytest.raises(dg.DagsterInvalidConfigError):
        dg.validate_run_config(defs.resolve_job_def("distill_pipeline"), {"execution": {"config": {"multiproces": {}}}})


def test_k8s_executor_run_config_validates_once_the_executor_is_selected() -> None:
    dagster_k8s = pytest.importorskip("dagster_k8s", reason=NO_DAGSTER_K8S)
    defs = dg.Definitions.merge(build_definitions(), dg.Definitions(executor=dagster_k8s.k8s_job_executor))
    resolved = dg.validate_run_config(
        defs.resolve_job_def("distill_pipeline"), load_yaml("run_config.k8s_executor.yaml")
    )
    assert resolved["execution"]["k8s"]["max_concurrent"] == 3


def test_grpc_workspace_validates_and_names_the_projects_code_location(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILL_CODE_SERVER_HOST", "distill-code")
    monkeypatch.setenv("DISTILL_CODE_SERVER_PORT", "4000")
    result = process_workspace_config(load_yaml("workspace.grpc.yaml"))
    assert result.success, result.errors
    server = result.value["load_from"][0]["grpc_server"]
    assert (server["host"], server["port"]) == ("distill-code", 4000)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert server["location_name"] == pyproject["tool"]["dagster"]["code_location_name"]


def test_cluster_requirements_pin_the_integration_libraries_of_the_pinned_dagster() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    dagster_pin = next(d for d in pyproject["project"]["dependencies"] if d.startswith("dagster=="))
    major, minor, patch = (int(part) for part in dagster_pin.removeprefix("dagster==").split("."))
    assert major == 1
    pins = [
        line.split("==")
        for line in (DEPLOY / "requirements-cluster.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert {name for name, _ in pins} == {"dagster-postgres", "dagster-k8s"}
    assert all(version == f"0.{minor + 16}.{patch}" for _, version in pins), pins


# --- every path from the root ---------------------------------------------------------------------


def test_definitions_take_the_data_root_from_distill_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILL_ROOT", "/mnt/distill")
    paths = build_definitions().resources["paths"]
    assert paths.root == "/mnt/distill"
    assert paths.layout().root == Path("/mnt/distill")


def layout_paths(layout: Layout) -> dict[str, Path]:
    """Every path a Layout hands out, properties and methods alike, with sample arguments."""
    samples = {"stream": "scrum_reviews", "dataset": "sft", "run_id": "run-1", "event_date": "2026-10-02"}
    found = {}
    for name, member in inspect.getmembers(Layout):
        if name.startswith("_") or name in ("at", "relative", "root"):
            continue
        if isinstance(member, property):
            found[name] = getattr(layout, name)
        elif inspect.isfunction(member):
            params = list(inspect.signature(member).parameters)[1:]
            found[name] = getattr(layout, name)(*(samples[p] for p in params))
    return found


def test_every_layout_path_is_under_the_root(tmp_path: Path) -> None:
    root = tmp_path / "mounted bucket"
    paths = layout_paths(Layout.at(root))
    assert len(paths) > 20
    outside = {name: path for name, path in paths.items() if not Path(path).is_relative_to(root.resolve())}
    assert not outside


def test_a_pipeline_run_writes_only_under_its_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, elsewhere = tmp_path / "root", tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a path built from the working directory would land here
    generate_substrate(root, 400, seed=3)
    outcome = run_pipeline(root, recorded_at=PINNED, instance=dg.DagsterInstance.ephemeral())
    assert outcome.success, outcome.failures
    assert list(elsewhere.iterdir()) == []
    top_level = {p.name for p in root.iterdir()}
    layout = Layout.at(root)
    assert top_level == {
        p.relative_to(layout.root).parts[0] for p in (layout.kb_dir, layout.exports_dir, layout.reports_dir)
    }


# The static half: string literals that spell a layout path outside lib/layout.py. A literal is
# a path when it is an operand of ``/``, an argument of Path()/open()/os.path.join(), or text
# that starts a root-relative path ("data/", "exports/", "reports/"). Docstrings, descriptions
# and help texts are prose, not paths.
ROOT_RELATIVE = re.compile(r"(?<![\w./-])(?:data|exports|reports)/")
PROSE_KEYWORDS = {"description", "help", "epilog", "usage"}
PATH_CALLS = {"Path", "open", "join", "PurePath", "PosixPath"}

# (module, literal fragment) -> why it is not a path the code touches.
ALLOWED: dict[tuple[str, str], str] = {
    (
        "sample/repo.py",
        "reports/distillation/phase",
    ): "file names of the simulated platform repository written into its manifest (data), not our outputs",
    (
        "replay/synthetic.py",
        "data/_kb/scrum_reviews.jsonl",
    ): "provenance text inside synthetic benchmark rows, never opened",
    (
        "receipts/summary.py",
        "datasets in exports/ were not refreshed",
    ): "prose of summary.md telling a reader where the datasets are",
}
# (module, literal fragment) -> the fix. Real paths built outside the layout; each is still
# rooted (joined to layout.root), so another root works today, but the layout's shape is
# restated. Remove an entry when it is fixed: the test fails on stale entries.
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {}


def layout_segments() -> set[str]:
    """The names lib/layout.py joins into paths: what nobody else may join."""
    tree = ast.parse((PACKAGE / "lib" / "layout.py").read_text())
    return {
        side.value
        for node in ast.walk(tree)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)
        for side in (node.left, node.right)
        if isinstance(side, ast.Constant) and isinstance(side.value, str)
    }


def prose_nodes(tree: ast.AST) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
        ):
            ids.add(id(body[0].value))  # docstring
        if isinstance(node, ast.keyword) and node.arg in PROSE_KEYWORDS:
            ids |= {id(n) for n in ast.walk(node.value)}
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and ("DESCRIPTION" in t.id or t.id.endswith("_HELP")) for t in node.targets
        ):
            ids |= {id(n) for n in ast.walk(node.value)}
    return ids


def literal_text(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return None


def path_literals(source: str, segments: set[str]) -> list[str]:
    tree = ast.parse(source)
    prose = prose_nodes(tree)
    found = []
    for node in ast.walk(tree):
        operands: list[ast.AST] = []
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            operands = [node.left, node.right]
        elif isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            operands = list(node.args) if name in PATH_CALLS else []
        for operand in operands:
            text = literal_text(operand)
            if text is not None and text.split("/")[0] in segments:
                found.append(text)
        is_text = isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose
        if is_text and ROOT_RELATIVE.search(node.value):
            found.append(node.value)
    return found


def test_the_scan_finds_paths_spelled_out_in_code() -> None:
    """The scanner itself: it must see every way a path can be spelled, and not prose."""
    segments = layout_segments()
    code = '''
"""Docstring naming data/_kb/ is prose."""
root / "exports" / "sft"
Path("reports")
open(f"data/{stream}.jsonl")
message = "written to exports/sft/"
asset(description="reads data/evidence/")
'''
    assert sorted(path_literals(code, segments)) == [
        "data/",
        "data/{}.jsonl",
        "exports",
        "reports",
        "sft",
        "written to exports/sft/",
    ]


def test_no_module_spells_out_a_layout_path() -> None:
    segments = layout_segments()
    found: set[tuple[str, str]] = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).as_posix()
        if module == "lib/layout.py":
            continue
        for text in path_literals(path.read_text(), segments):
            found.add((module, text))

    def explained(item: tuple[str, str], table: dict[tuple[str, str], Any]) -> tuple[str, str] | None:
        return next((key for key in table if key[0] == item[0] and key[1] in item[1]), None)

    unexplained = sorted(
        item for item in found if not explained(item, ALLOWED) and not explained(item, KNOWN_VIOLATIONS)
    )
    assert not unexplained, f"paths built outside lib/layout.py (ask the Layout): {unexplained}"
    used = {explained(item, ALLOWED) or explained(item, KNOWN_VIOLATIONS) for item in found}
    stale = sorted((set(ALLOWED) | set(KNOWN_VIOLATIONS)) - used)
    assert not stale, f"allowlist entries that no longer match anything (remove them): {stale}"
