"""The Dagster UI as people meet it, in a real headless browser.

The webserver and the daemon (the project's own binaries and workspace.yaml) start on 127.0.0.1
with a temporary DAGSTER_HOME and a small sample substrate as DISTILL_ROOT; the nightly job is
launched through GraphQL, as the UI's "Materialize all" does, and runs through the daemon's
queue; then Debian's chromium, driven by Playwright, opens the pages a user opens: the asset
graph, an asset's checks, and the replay job's launchpad.

Screenshots are saved to this module's pytest temp folder (printed), and to docs/ when
DISTILL_UPDATE_SCREENSHOTS=1. Needs chromium: scripts/install-browser.sh installs it, and the
test skips, saying why, only when it cannot be installed.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
import yaml
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright

from distillation_pipeline.definitions import build_definitions
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.sample import generate_substrate
from distillation_pipeline_tests.conftest import PINNED

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv running the tests: .venv/bin under test.sh
DOCS = REPO / "docs"
STAGES = ["evidence", "scored_runs", "rag_playbooks", "sft_dataset", "preference_dataset", "run_summary"]
PIPELINE_JOB = "distill_pipeline"
REPLAY_JOB = "replay"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # we run as root in CI; the sandbox refuses root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_START_S = 180
RUN_TIMEOUT_S = 900  # a cold CI machine: six steps, each a fresh process importing dagster
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}
expect.set_options(timeout=30_000)  # pages fill in after their first paint: names first, status later


# --- the browser ------------------------------------------------------------------------------------


def find_chromium() -> str | None:
    for candidate in (os.environ.get("DISTILL_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed by scripts/install-browser.sh when missing; skip only if it cannot be."""
    path = find_chromium()
    if path is None:
        result = subprocess.run(
            ["bash", str(REPO / "scripts" / "install-browser.sh")],
            check=False,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        path = find_chromium()
        if path is None:
            why = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            pytest.skip(
                f"chromium is not installed and could not be installed ({why[0]}); see scripts/install-browser.sh"
            )
    return path


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ui_artefacts")


@pytest.fixture(scope="module")
def browser(chromium: str, artefacts: Path) -> Iterator[BrowserContext]:
    with sync_playwright() as playwright:
        # A persistent context is how Playwright takes our own fresh --user-data-dir.
        context = playwright.chromium.launch_persistent_context(
            user_data_dir=str(artefacts / "chromium-profile"),
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_FLAGS,
            # wide enough that the asset graph draws full nodes (status rows), not the zoomed-out boxes
            viewport={"width": 1600, "height": 1000},
        )
        context.set_default_timeout(60_000)
        try:
            yield context
        finally:
            context.close()


def screenshot(page: Page, artefacts: Path, name: str, clip: dict[str, float] | None = None) -> Path:
    path = artefacts / name
    page.screenshot(path=str(path), clip=clip)
    print(f"screenshot: {path}")
    if os.environ.get("DISTILL_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(path, DOCS / name)
    return path


def around(nodes: Any, padding: float) -> dict[str, float]:
    """The page area holding every visible element of ``nodes``, plus a margin: a legible crop."""
    boxes = [box for box in (nodes.nth(i).bounding_box() for i in range(nodes.count())) if box]
    left, top = min(b["x"] for b in boxes) - padding, min(b["y"] for b in boxes) - padding
    right = max(b["x"] + b["width"] for b in boxes) + padding
    bottom = max(b["y"] + b["height"] for b in boxes) + padding
    return {"x": max(left, 0), "y": max(top, 0), "width": right - max(left, 0), "height": bottom - max(top, 0)}


# --- the servers ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class DagsterUI:
    url: str
    root: Path
    logs: dict[str, Path]
    processes: list[subprocess.Popen] = field(default_factory=list)
    location: str = ""
    jobs: set[str] = field(default_factory=set)

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = httpx.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60)
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def log_tail(self, lines: int = 40) -> str:
        tails = []
        for name, path in self.logs.items():
            text = path.read_text(errors="replace").splitlines() if path.exists() else []
            tails.append(f"--- {name} ({path}) ---\n" + "\n".join(text[-lines:]))
        return "\n".join(tails)


def start(command: list[str], env: dict[str, str], log: IO[bytes]) -> subprocess.Popen:
    # Own process group, so teardown stops the server and every process it started (code
    # servers, run workers) by that group's id, and nothing else.
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # stragglers of the group (code server, run workers)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


def wait_until(what: str, ready: Any, timeout_s: float, ui: DagsterUI, poll_s: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for process in ui.processes:
            if process.poll() is not None:
                pytest.fail(
                    f"{process.args[0]} exited ({process.returncode}) while waiting for {what}\n{ui.log_tail()}"
                )
        try:
            value = ready()
        except (httpx.HTTPError, OSError):
            value = None
        if value:
            return value
        time.sleep(poll_s)
    pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}\n{ui.log_tail()}")


WORKSPACE_QUERY = """
{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on RepositoryLocation { repositories { name jobs { name } } }
                        ... on PythonError { message } } } } } }
"""


def loaded_location(ui: DagsterUI) -> tuple[str, set[str]] | None:
    workspace = ui.graphql(WORKSPACE_QUERY)["workspaceOrError"]
    for entry in workspace.get("locationEntries", []):
        location = entry["locationOrLoadError"]
        if location and location["__typename"] == "PythonError":
            pytest.fail(f"code location {entry['name']} failed to load: {location['message']}")
        if entry["loadStatus"] == "LOADED" and location:
            for repository in location["repositories"]:
                jobs = {job["name"] for job in repository["jobs"]}
                if PIPELINE_JOB in jobs:
                    return entry["name"], jobs
    return None


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterUI]:
    base = tmp_path_factory.mktemp("dagster_ui")
    root, home = base / "root", base / "dagster_home"
    generate_substrate(root, 3000, seed=7)
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump({"telemetry": {"enabled": False}, "nux": {"enabled": False}}))
    env = {k: v for k, v in os.environ.items() if k != "DISTILL_DAGSTER_INSTANCE"}
    env.update(
        DAGSTER_HOME=str(home),
        DISTILL_ROOT=str(root),
        PYTHONUNBUFFERED="1",
        # keep the nightly schedule (running by default) from firing a second pipeline run
        # into the same root mid-test: Feb 29, 00:00 UTC
        DISTILL_NIGHTLY_CRON="0 0 29 2 *",
    )
    port = free_port()
    workspace = str(REPO / "workspace.yaml")
    ui = DagsterUI(
        url=f"http://127.0.0.1:{port}",
        root=root,
        logs={"webserver": base / "webserver.log", "daemon": base / "daemon.log"},
    )
    # Create and migrate the instance's SQLite storage once, before two processes race to do it
    # (seen in CI: "Version table 'alembic_version' has more than one head present").
    subprocess.run(
        [str(BIN / "python"), "-c", "import dagster; dagster.DagsterInstance.get().get_runs(limit=1)"],
        env=env, cwd=REPO, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    with open(ui.logs["webserver"], "wb") as web_log, open(ui.logs["daemon"], "wb") as daemon_log:
        try:
            ui.processes.append(
                start(
                    [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", workspace], env, web_log
                )
            )
            wait_until(
                "/server_info",
                lambda: httpx.get(f"{ui.url}/server_info", timeout=5).status_code == 200,
                SERVER_START_S,
                ui,
            )
            ui.processes.append(start([str(BIN / "dagster-daemon"), "run", "-w", workspace], env, daemon_log))
            ui.location, ui.jobs = wait_until(
                "the code location to load", lambda: loaded_location(ui), SERVER_START_S, ui
            )
            yield ui
        finally:
            for process in ui.processes:
                stop(process)


LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
    ... on PipelineNotFoundError { message }
  }
}
"""
RUN_STATUS = "query Run($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"


@pytest.fixture(scope="module")
def finished_run(dagster_ui: DagsterUI) -> dict[str, str]:
    """The nightly job, launched through GraphQL; it waits in the queue until the daemon starts it."""
    params = {
        "selector": {
            "repositoryLocationName": dagster_ui.location,
            "repositoryName": "__repository__",
            "jobName": PIPELINE_JOB,
        },
        "runConfigData": {"resources": {"options": {"config": {"recorded_at": PINNED}}}},
    }
    launched = dagster_ui.graphql(LAUNCH, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    def status() -> str | None:
        value = dagster_ui.graphql(RUN_STATUS, {"id": run_id})["runOrError"]["status"]
        return value if value in TERMINAL else None

    return {
        "run_id": run_id,
        "status": wait_until(f"run {run_id} to finish", status, RUN_TIMEOUT_S, dagster_ui, poll_s=2),
    }


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    page = browser.new_page()
    try:
        yield page
    finally:
        page.close()


# --- the tests --------------------------------------------------------------------------------------


def test_nightly_job_launched_through_graphql_runs_through_the_daemon(
    dagster_ui: DagsterUI, finished_run: dict
) -> None:
    assert finished_run["status"] == "SUCCESS", dagster_ui.log_tail()
    # the run wrote into the DISTILL_ROOT the servers were given, not anywhere else
    assert (Layout.at(dagster_ui.root).run_dir(finished_run["run_id"]) / "summary.json").is_file()


def test_asset_graph_shows_every_stage_materialized(
    dagster_ui: DagsterUI, finished_run: dict, page: Page, artefacts: Path
) -> None:
    page.set_viewport_size({"width": 1920, "height": 1000})  # room around the graph: no controls in the crop
    page.goto(f"{dagster_ui.url}/asset-groups")
    graph = page.locator("svg foreignObject")  # the graph's nodes, not the asset list beside it
    for stage in STAGES:
        expect(graph.get_by_text(stage, exact=True).filter(visible=True).first).to_be_visible()
    # every stage shows its materialization, and every checked asset an "n / n Passed" tally
    expect(graph.get_by_text("Materialized", exact=True).filter(visible=True)).to_have_count(len(STAGES))
    checked = {key.asset_key for key in build_definitions().resolve_asset_graph().asset_check_keys}
    expect(graph.get_by_text(re.compile(r"^(\d+) / \1 Passed$")).filter(visible=True)).to_have_count(len(checked))
    page.wait_for_timeout(500)  # let the edges finish drawing before the picture
    screenshot(page, artefacts, "asset_graph.png", clip=around(graph, padding=32))


def test_asset_checks_tab_shows_each_check_passed(
    dagster_ui: DagsterUI, finished_run: dict, page: Page, artefacts: Path
) -> None:
    graph = build_definitions().resolve_asset_graph()
    expected = sorted(key.name for key in graph.asset_check_keys if key.asset_key.to_user_string() == "sft_dataset")
    assert "no_credentials" in expected and len(expected) >= 5
    page.goto(f"{dagster_ui.url}/assets/sft_dataset?view=checks")
    expect(page.get_by_text(f"Checks ({len(expected)})")).to_be_visible()
    for name in expected:
        status = page.locator(f'[title="{name}"] + span')  # the status line under the check's name
        expect(status).to_have_text("Succeeded")
    page.get_by_text("no_credentials", exact=True).filter(visible=True).first.click()
    expect(page).to_have_url(re.compile(r"checkDetail=no_credentials"))
    expect(page.get_by_text("Evaluation result")).to_be_visible()
    expect(page.get_by_text("Passed", exact=True).filter(visible=True).first).to_be_visible()
    screenshot(page, artefacts, "asset_check.png")


REPLAY_CONFIG = "ops:\n  replay_task:\n    config:\n      task: Add a retry budget to the provider router\n"


def test_replay_launchpad_accepts_a_task(dagster_ui: DagsterUI, page: Page, artefacts: Path) -> None:
    if REPLAY_JOB not in dagster_ui.jobs:
        pytest.xfail(
            f"job {REPLAY_JOB!r} is not in the definitions the webserver loaded ({sorted(dagster_ui.jobs)}): "
            "distillation_pipeline/defs/replay/ is not merged into definitions.py yet"
        )
    page.goto(f"{dagster_ui.url}/locations/{dagster_ui.location}/jobs/{REPLAY_JOB}/playground")
    editor = page.locator(".CodeMirror").first
    expect(editor).to_be_visible()
    launch = page.get_by_role("button", name="Launch Run")
    # the scaffolded config has no task: the launchpad must say so before we type one
    expect(page.get_by_text('Missing required config entry "task"', exact=False)).to_be_visible()
    editor.click()
    page.keyboard.press("Control+A")
    # insert_text types the YAML as one input event, so the editor's auto-indent leaves it as is
    page.keyboard.insert_text(REPLAY_CONFIG)
    expect(page.get_by_text("No errors", exact=True)).to_be_visible()
    expect(page.get_by_text('Missing required config entry "task"', exact=False)).to_have_count(0)
    expect(launch).to_be_enabled()
    assert page.evaluate("document.querySelector('.CodeMirror').CodeMirror.getValue()") == REPLAY_CONFIG
    screenshot(page, artefacts, "replay_launchpad.png")
