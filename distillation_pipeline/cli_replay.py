"""``distill replay`` and ``distill model serve|install``.

``distill replay`` runs the Dagster ``replay`` job in-process from the same definitions the UI
loads (``distillation_pipeline.definitions``), so the command line and the launchpad are one
code path. The run is recorded in the instance the UI shows (``defs.execute.default_instance``:
``$DAGSTER_HOME`` or ``<root>/.dagster_home``; ``DISTILL_DAGSTER_INSTANCE=ephemeral`` for none).

Exit codes: 0 the answer passed the gate, 1 it ran and failed the gate, 2 bad usage or a run that
could not produce an answer (one line on stderr).

Each sub-command sets ``handler`` on its parser (the ``distill`` convention): ``args.handler(args)``
returns the exit code.
"""

import argparse
import importlib
import os
import signal
import sys
import warnings
from typing import Any

EXIT_PASSED, EXIT_GATE_FAILED, EXIT_USAGE = 0, 1, 2

# ``replay.retrieval.MODES`` and ``replay.runner``'s defaults, spelled out: the parser is built
# for every command, and importing the replay runtime (httpx, numpy) cost every `distill run-all`
# ~0.3 s of start-up. A test holds these equal to the runtime's own.
MODES = ("jaccard", "jaccard_exact", "bm25")
DEFAULT_TOP_K = 8
DEFAULT_MAX_TOKENS = 160


def add_replay_commands(subparsers: "argparse._SubParsersAction") -> None:
    replay = subparsers.add_parser(
        "replay",
        help="answer a task with the local model grounded by the RAG corpus, gate it, log it",
        description="Replay (spec section 7). Model endpoints default to DISTILL_LOCAL_MODEL_URL "
        "(http://127.0.0.1:8080, see `distill model serve`) and DISTILL_ESCALATION_MODEL_URL.",
    )
    replay.add_argument("--task", required=True, help="the task to answer")
    replay.add_argument("--task-id", default=None, help="task id for the run log (default replay-<task hash>)")
    replay.add_argument("--local-only", action="store_true", help="never escalate")
    replay.add_argument("--allow-escalation", action="store_true", help="escalate when the gate fails")
    replay.add_argument("--no-retrieval", action="store_true", help="the explicit baseline: no RAG grounding")
    replay.add_argument("--root", default=None, help="data root (default: DISTILL_ROOT or the current directory)")
    replay.add_argument("--top-k", type=int, default=DEFAULT_TOP_K)
    replay.add_argument("--retrieval-mode", choices=MODES, default="jaccard")
    replay.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    replay.add_argument("--model-url", default=None, help="override the local model base URL")
    replay.add_argument("--model", default=None, help="override the local model name")
    replay.add_argument("--escalation-url", default=None, help="override the escalation model base URL")
    replay.add_argument("--escalation-model", default=None, help="override the escalation model name")
    replay.add_argument("--json", action="store_true", help="print the logged run row as JSON")
    replay.set_defaults(handler=cmd_replay)

    model = subparsers.add_parser("model", help="the embedded local model (SmolLM2-135M-Instruct on llama.cpp)")
    model_commands = model.add_subparsers(dest="model_command", metavar="{serve,install}")
    model_commands.required = True
    serve = model_commands.add_parser("serve", help="serve the local model on an OpenAI-compatible API")
    serve.add_argument("--port", type=int, default=None, help="port (default 8080)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.set_defaults(handler=cmd_model_serve)
    install = model_commands.add_parser("install", help="install llama-cpp-python[server] and the model (idempotent)")
    install.set_defaults(handler=cmd_model_install)


# --------------------------------------------------------------------------------------------
# replay
# --------------------------------------------------------------------------------------------


def load_definitions(root: str) -> tuple[Any, str]:
    """The project definitions (what the UI loads); replay's own only while those lack the job."""
    try:
        module = importlib.import_module("distillation_pipeline.definitions")
    except ModuleNotFoundError as exc:
        if exc.name != "distillation_pipeline.definitions":
            raise
        module = None
    if module is not None and module.defs.get_repository_def().has_job("replay"):
        return module.defs, "distillation_pipeline.definitions"
    from distillation_pipeline.defs.replay import standalone_defs

    return standalone_defs(root), "distillation_pipeline.defs.replay (standalone)"


def _fail(message: str) -> int:
    print(f"distill replay: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _endpoint_overrides(bound: Any, url: str | None, model: str | None) -> dict[str, Any] | None:
    """Run config for an endpoint with some fields overridden. Dagster replaces a resource's whole
    config when run config names it, so the fields not overridden are carried over from the
    resource the definitions bound."""
    changes = {key: value for key, value in (("base_url", url), ("model", model)) if value is not None}
    if not changes:
        return None
    current = bound.model_dump() if bound is not None and hasattr(bound, "model_dump") else {}
    return {"config": {**current, **changes}}


def build_run_config(args: argparse.Namespace, root: str, bound_resources: dict[str, Any] | None = None) -> dict[str, Any]:
    op_config: dict[str, Any] = {
        "task": args.task,
        "local_only": args.local_only,
        "allow_escalation": args.allow_escalation,
        "no_retrieval": args.no_retrieval,
        "top_k": args.top_k,
        "retrieval_mode": args.retrieval_mode,
        "max_tokens": args.max_tokens,
    }
    if args.task_id:
        op_config["task_id"] = args.task_id
    bound = bound_resources or {}
    resources: dict[str, Any] = {"paths": {"config": {"root": root}}}
    for key, override in (
        ("local_model", _endpoint_overrides(bound.get("local_model"), args.model_url, args.model)),
        ("escalation_model", _endpoint_overrides(bound.get("escalation_model"), args.escalation_url, args.escalation_model)),
    ):
        if override:
            resources[key] = override
    return {
        "ops": {"replay_task": {"config": op_config}},
        "resources": resources,
        # The command prints its own summary and one error line; Dagster's step-failure traceback
        # is for -v (and the UI's run log when the instance is persistent).
        "loggers": {"console": {"config": {"log_level": "INFO" if getattr(args, "verbose", False) else "CRITICAL"}}},
    }


def cmd_replay(args: argparse.Namespace) -> int:
    if not args.task.strip():
        return _fail("--task is empty")
    if args.local_only and args.allow_escalation:
        return _fail("--local-only forbids escalation; pass one of --local-only and --allow-escalation")
    if args.top_k < 1:
        return _fail("--top-k must be at least 1")
    root = os.path.abspath(args.root or os.environ.get("DISTILL_ROOT") or os.getcwd())

    import dagster as dg  # imported here: `distill --help` should not pay for Dagster

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    definitions, source = load_definitions(root)
    job = definitions.resolve_job_def("replay")
    from pathlib import Path

    from distillation_pipeline.defs.execute import default_instance

    instance = default_instance(Path(root))
    try:
        result = job.execute_in_process(
            run_config=build_run_config(args, root, definitions.resources or {}),
            instance=instance,
            raise_on_error=False,
        )
    except dg.DagsterInvalidConfigError as exc:
        return _fail(f"invalid replay configuration: {str(exc).splitlines()[0]}")
    if not result.success:
        return _fail(_failure_message(result))
    row = result.output_for_node("replay_task")
    if args.json:
        import orjson

        print(orjson.dumps(row, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2).decode())
    else:
        _print_run(row, root, source, result.run_id)
    return EXIT_PASSED if row["validation_passed"] else EXIT_GATE_FAILED


def _failure_message(result: Any) -> str:
    for event in result.all_events:
        if event.is_step_failure or event.is_failure:
            data = event.step_failure_data if event.is_step_failure else None
            if data is not None and data.user_failure_data is not None and data.user_failure_data.description:
                return data.user_failure_data.description.removeprefix("replay: ")
            if data is not None and data.error is not None:
                return data.error.message.strip().splitlines()[0]
    return "the replay run failed (see the Dagster run log)"


def _print_run(row: dict[str, Any], root: str, source: str, dagster_run_id: str) -> None:
    from distillation_pipeline.lib.layout import Layout

    print("answer:")
    print(row["output"].strip() or "(empty)")
    print()
    for call in row["calls"]:
        status = "error" if not call["ok"] else ("passed" if call["gate_passed"] else "failed")
        print(f"gate ({call['role']} model {call['model']} at {call['base_url_host']}): {status}")
        if call.get("error"):
            print(f"  error: {call['error']}")
        for check in call.get("gate") or []:
            mark = "ok  " if check["passed"] else "FAIL"
            value = "n/a" if check["value"] is None else f"{check['value']:g}"
            op = "<=" if check["name"] == "length_max" else (">=" if check["name"] != "no_hedging" else "==")
            print(f"  [{mark}] {check['name']:<18} {value} {op} {check['threshold']:g}  {check['detail']}")
    bundle = row["bundle"]
    print()
    print(
        f"result: {'PASSED' if row['validation_passed'] else 'FAILED'}"
        f"{' after escalation' if row['escalated'] else ''}; retrieval {row['retrieval_mode']}: "
        f"{len(row['retrieved'])} records, {len(bundle['exemplars'])} exemplars, {len(bundle['warnings'])} warnings, "
        f"{len(bundle['checklist'])} checklist steps"
    )
    print(f"logged: {Layout.at(root).replay_log} (run_id {row['run_id']}, task_id {row['task_id']})")
    print(f"dagster: job replay from {source}, run {dagster_run_id}")


# --------------------------------------------------------------------------------------------
# model serve | install
# --------------------------------------------------------------------------------------------


def cmd_model_install(args: argparse.Namespace) -> int:
    from distillation_pipeline.replay.model_server import (
        LLAMA_CPP_REQUIREMENT,
        ModelServerError,
        ensure_llama_server_installed,
        model_path,
    )

    try:
        installed_now = ensure_llama_server_installed()
        path = model_path()
    except ModelServerError as exc:
        print(f"distill model install: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{LLAMA_CPP_REQUIREMENT}: {'installed' if installed_now else 'already installed'}")
    print(f"model: {path}")
    return 0


def cmd_model_serve(args: argparse.Namespace) -> int:
    from distillation_pipeline.replay.model_server import DEFAULT_PORT, MODEL_ALIAS, ModelServerError, start_server

    port = args.port or DEFAULT_PORT
    try:
        server = start_server(port, host=args.host)
    except ModelServerError as exc:
        print(f"distill model serve: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"serving {MODEL_ALIAS} on {server.base_url}/v1 (OpenAI-compatible); log: {server.log_path}; Ctrl-C stops")
    sys.stdout.flush()

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM too: never leave the server process behind

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        code = server.process.wait()
    except KeyboardInterrupt:
        server.stop()
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"distill model serve: error: server exited with code {code}:\n{server.log_tail()}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (the project's ``distill`` registers the same commands)."""
    parser = argparse.ArgumentParser(prog="distill")
    add_replay_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
