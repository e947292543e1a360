"""RAG playbooks: accepted and partially accepted runs as retrievable text (spec section 5).

Never rejected; needs_human_review only with ``include_review``. A row's ``content`` is the
prompt and the response (or the stream's content); ``cited_paths`` are the file paths that
text's answer part cites, each checked against the repository manifest.
"""

from pydantic import ValidationError

from distillation_pipeline.exports import firewall
from distillation_pipeline.exports.candidates import Candidate, describe
from distillation_pipeline.exports.ids import rag_id
from distillation_pipeline.exports.paths import RepoManifest, cited_paths
from distillation_pipeline.exports.onepass import run_exports
from distillation_pipeline.exports.result import ExportResult
from distillation_pipeline.exports.secrets import find_secret_in
from distillation_pipeline.exports.streaming import (
    Refusal,
    Row,
    RowExport,
    hallucination_refusal,
)
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.schemas import RagSample

_TITLE_CHARS = 160


def rag_export(layout: Layout, *, include_review: bool = False, dry_run: bool = False) -> RowExport:
    """The RAG dataset as one participant of the shared export pass."""
    result = ExportResult("rag", dry_run=dry_run, options={"include_review": include_review})
    return RowExport(
        result,
        eligible=firewall.rag_eligible,
        build=lambda candidate, manifest: build_rag_row(candidate, manifest, include_review=include_review),
        dataset_file=layout.rag_file,
        variant_file=None,
        quarantine_file=layout.quarantine_file("rag"),
    )


def export_rag(layout: Layout, *, include_review: bool = False, dry_run: bool = False) -> ExportResult:
    """Export the RAG dataset alone (``onepass.run_exports`` runs it with the others)."""
    return run_exports(layout, [rag_export(layout, include_review=include_review, dry_run=dry_run)], dry_run=dry_run)["rag"]


def _has_text(text: str | None) -> bool:
    return bool(text and text.strip())


def rag_title(candidate: Candidate) -> str:
    evidence = candidate.evidence
    if _has_text(evidence.prompt):
        first_line = next(line.strip() for line in evidence.prompt.splitlines() if line.strip())  # type: ignore[union-attr]
        return first_line[:_TITLE_CHARS]
    return f"{evidence.stream} {evidence.task_id or evidence.source_id or evidence.id}"


def build_rag_row(candidate: Candidate, manifest: RepoManifest | None, *, include_review: bool) -> Row | Refusal:
    refusal = firewall.rag_refusal(candidate.category, include_review)
    if refusal is not None:
        return refusal
    evidence = candidate.evidence
    if _has_text(evidence.response):
        answer = evidence.response
        content = f"{evidence.prompt}\n\n{answer}" if _has_text(evidence.prompt) else answer
    elif _has_text(evidence.content):
        answer = content = evidence.content
    else:
        return "empty_content", "no response or content text"
    title = rag_title(candidate)
    secret = find_secret_in((("title", title), ("content", content)))
    if secret is not None:
        return "secret_detected", secret
    cited = cited_paths(answer)
    refusal = hallucination_refusal(manifest, cited)
    if refusal is not None:
        return refusal
    created_at, provenance = candidate.export_fields()
    row = {
        "schema_version": 1,
        "id": rag_id(title, content),  # type: ignore[arg-type]
        "created_at": candidate.created_at,
        "task_id": evidence.task_id,
        "title": title,
        "content": content,
        "source_category": candidate.category,
        "cited_paths": cited,
        "provenance": provenance,
    }
    try:
        RagSample.model_validate(row)  # the schema layer of the firewall: refuses what the rules let by
    except ValidationError as exc:
        return "schema_violation", describe(exc)
    row["created_at"] = created_at  # now the row is what the validated sample's model_dump(mode="json") is
    return Row(row["id"], row, candidate.category)
