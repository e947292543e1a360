"""SFT instruction/response pairs in chat ``messages`` form (spec section 5).

Accepted runs only; partially accepted with ``include_partial``; rejected and
needs_human_review never, whatever the options. Each row is also written in OpenAI's
fine-tuning layout (``{"messages": [...]}`` only) to ``Layout.sft_openai_file``.
"""

from pydantic import ValidationError

from distillation_pipeline.exports import firewall
from distillation_pipeline.exports.candidates import Candidate, describe
from distillation_pipeline.exports.ids import sft_id
from distillation_pipeline.exports.paths import RepoManifest
from distillation_pipeline.exports.onepass import run_exports
from distillation_pipeline.exports.result import ExportResult
from distillation_pipeline.exports.streaming import (
    Refusal,
    Row,
    RowExport,
    prompt_response_refusal,
)
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.schemas import SftSample


def sft_export(layout: Layout, *, include_partial: bool = False, dry_run: bool = False) -> RowExport:
    """The SFT dataset as one participant of the shared export pass."""
    result = ExportResult("sft", dry_run=dry_run, options={"include_partial": include_partial})
    return RowExport(
        result,
        eligible=firewall.sft_eligible,
        build=lambda candidate, manifest: build_sft_row(candidate, manifest, include_partial=include_partial),
        dataset_file=layout.sft_file,
        variant_file=layout.sft_openai_file,
        quarantine_file=layout.quarantine_file("sft"),
    )


def export_sft(layout: Layout, *, include_partial: bool = False, dry_run: bool = False) -> ExportResult:
    """Export the SFT dataset alone (``onepass.run_exports`` runs it with the others)."""
    return run_exports(layout, [sft_export(layout, include_partial=include_partial, dry_run=dry_run)], dry_run=dry_run)["sft"]


def build_sft_row(candidate: Candidate, manifest: RepoManifest | None, *, include_partial: bool) -> Row | Refusal:
    refusal = firewall.sft_refusal(candidate.category, include_partial)
    if refusal is not None:
        return refusal
    refusal = prompt_response_refusal(candidate, manifest, check_paths=True)
    if refusal is not None:
        return refusal
    prompt, response = candidate.evidence.prompt, candidate.evidence.response
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    created_at, provenance = candidate.export_fields()
    row = {
        "schema_version": 1,
        "id": sft_id(messages),
        "created_at": candidate.created_at,
        "task_id": candidate.evidence.task_id,
        "messages": messages,
        "quality_score": candidate.category,
        "provenance": provenance,
    }
    try:
        SftSample.model_validate(row)  # the schema layer of the firewall: refuses what the rules let by
    except ValidationError as exc:
        return "schema_violation", describe(exc)
    row["created_at"] = created_at  # now the row is what the validated sample's model_dump(mode="json") is
    return Row(row["id"], row, candidate.category, variant={"messages": messages})
