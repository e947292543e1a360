"""Preference pairs: same task, accepted over rejected first, partial as fallback, capped."""


import pytest

from distillation_pipeline.exports import export_preference
from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.schemas import PreferenceSample
from distillation_pipeline_tests.export_fixtures import (
    conserved,
    later,
    make_run,
    read_jsonl,
    reasons,
    write_manifest,
    write_runs,
)


def pairs(layout: Layout) -> list[dict]:
    rows = read_jsonl(layout.preference_file)
    for row in rows:
        PreferenceSample.model_validate(row)
    return rows


def ids(rows: list[dict]) -> list[tuple[str, str]]:
    return [(row["chosen_provenance"]["evidence_id"], row["rejected_provenance"]["evidence_id"]) for row in rows]


def test_pair_is_trl_dpo_shaped_with_provenance_on_both_sides(layout: Layout) -> None:
    good = make_run("good", prompt="Fix routing", response="Fixed it", recorded_at=later(1))
    bad = make_run("bad", category="rejected", prompt="Fix routing", response="Broke it", recorded_at=later(5))
    write_runs(layout, [good, bad])
    result = conserved(export_preference(layout))
    (row,) = pairs(layout)
    assert (row["prompt"], row["chosen"], row["rejected"]) == ("Fix routing", "Fixed it", "Broke it")
    assert row["pair_kind"] == "accepted_over_rejected" and row["task_id"] == "task-1"
    assert ids([row]) == [(good.id, bad.id)]
    assert row["created_at"] == "2026-11-01T05:00:00Z"  # the later of the two recorded_at
    assert row["id"].startswith("pref-")
    assert result.per_category == {"accepted_over_rejected": 1} and result.runs_paired == 2


def test_openai_preference_layout(layout: Layout) -> None:
    write_runs(
        layout,
        [make_run("g", prompt="P", response="Good"), make_run("b", category="rejected", prompt="P", response="Bad")],
    )
    export_preference(layout)
    assert read_jsonl(layout.preference_openai_file) == [
        {
            "input": {"messages": [{"role": "user", "content": "P"}]},
            "preferred_output": [{"role": "assistant", "content": "Good"}],
            "non_preferred_output": [{"role": "assistant", "content": "Bad"}],
        }
    ]


def test_rejected_first_then_partial_as_fallback(layout: Layout) -> None:
    good = make_run("good", response="Good")
    partial = make_run("partial", category="partially_accepted", response="Half")
    bad = make_run("bad", category="rejected", response="Bad")
    write_runs(layout, [good, partial, bad])
    conserved(export_preference(layout, max_pairs_per_task=1))
    assert ids(pairs(layout)) == [(good.id, bad.id)]
    conserved(export_preference(layout))
    assert [row["pair_kind"] for row in pairs(layout)] == ["accepted_over_rejected", "accepted_over_partial"]


def test_at_most_max_pairs_per_task_spread_over_chosen_runs(layout: Layout) -> None:
    goods = [make_run(f"g{i}", response=f"Good {i}") for i in range(3)]
    bads = [make_run(f"b{i}", category="rejected", response=f"Bad {i}") for i in range(3)]
    write_runs(layout, goods + bads)
    result = conserved(export_preference(layout))
    rows = pairs(layout)
    assert len(rows) == 5  # of 9 possible
    chosen = [c for c, _ in ids(rows)]
    assert {chosen.count(run.id) for run in goods} == {1, 2}, "each chosen run meets a rejected one before any repeats"
    assert len(set(ids(rows))) == 5
    assert result.runs_paired == 6 and result.unpaired == {}
    conserved(export_preference(layout, max_pairs_per_task=2))
    assert len(pairs(layout)) == 2


def test_over_the_cap_runs_are_counted_unpaired(layout: Layout) -> None:
    goods = [make_run(f"g{i}", response=f"Good {i}") for i in range(3)]
    write_runs(layout, goods + [make_run("b", category="rejected", response="Bad")])
    result = conserved(export_preference(layout, max_pairs_per_task=1))
    assert result.written == 1 and result.runs_paired == 2 and result.unpaired == {"over_pair_cap": 2}


def test_pairs_only_within_a_task_in_task_order(layout: Layout) -> None:
    write_runs(
        layout,
        [
            make_run("z-good", task_id="t-z", response="Z good"),
            make_run("a-bad", task_id="t-a", category="rejected", response="A bad"),
            make_run("z-bad", task_id="t-z", category="rejected", response="Z bad"),
            make_run("a-good", task_id="t-a", response="A good"),
            make_run("lonely", task_id="t-lonely", response="Nobody to pair with"),
        ],
    )
    result = conserved(export_preference(layout))
    assert [row["task_id"] for row in pairs(layout)] == ["t-a", "t-z"]
    assert result.unpaired == {"no_counterpart": 1}


def test_review_runs_and_runs_without_task_are_unpaired_not_quarantined(layout: Layout) -> None:
    write_runs(
        layout,
        [
            make_run("g", response="Good"),
            make_run("rev", category="needs_human_review", response="Unsure"),
            make_run("orphan", task_id=None, category="rejected", response="Bad"),
        ],
    )
    result = conserved(export_preference(layout))
    assert result.written == 0 and result.quarantined == 0
    assert result.unpaired == {"category_needs_human_review": 1, "no_task_id": 1, "no_counterpart": 1}


def test_content_only_streams_are_ineligible(layout: Layout) -> None:
    write_runs(layout, [make_run("f", stream="audits", prompt=None, content="topic")])
    result = conserved(export_preference(layout))
    assert result.ineligible == {"audits": 1}


def test_same_text_on_both_sides_is_invalid_pairing(layout: Layout) -> None:
    good = make_run("good", response="Same answer")
    bad = make_run("bad", category="rejected", response="  Same answer\n")
    write_runs(layout, [good, bad])
    result = conserved(export_preference(layout))
    assert pairs(layout) == [] and reasons(layout.quarantine_file("preference")) == ["invalid_preference_pairing"]
    assert result.unpaired == {"pairs_refused": 2}


def test_same_run_on_both_sides_is_self_pairing(layout: Layout) -> None:
    """One evidence id scored twice (two categories) must never face itself."""
    run_id = "scrum_reviews:0123456789abcdef0123"
    write_runs(
        layout,
        [
            make_run("v1", response="Version one", evidence_id=run_id),
            make_run("v2", category="rejected", response="Version two", evidence_id=run_id),
        ],
    )
    conserved(export_preference(layout))
    assert pairs(layout) == []
    (row,) = read_jsonl(layout.quarantine_file("preference"))
    assert row["reason"] == "self_pairing" and row["evidence_id"] == run_id


def test_duplicate_pair_content_is_duplicate_id(layout: Layout) -> None:
    write_runs(
        layout,
        [
            make_run("g1", prompt="P", response="Good"),
            make_run("g2", prompt="P", response="Good"),  # another run with the same text
            make_run("b", category="rejected", prompt="P", response="Bad"),
        ],
    )
    result = conserved(export_preference(layout))
    assert len(pairs(layout)) == 1
    assert result.per_reason == {"duplicate_id": 1}


def test_candidate_needs_prompt_and_response(layout: Layout) -> None:
    write_runs(layout, [make_run("g", response="Good"), make_run("b", category="rejected", response="  ")])
    result = conserved(export_preference(layout))
    assert result.per_reason == {"empty_content": 1} and result.runs_quarantined == 1


def test_credential_on_either_side_refuses_the_run(layout: Layout) -> None:
    token = "ghp_" + "a1B2c3D4" * 5
    write_runs(layout, [make_run("g", response="Good"), make_run("b", category="rejected", response=f"use {token}")])
    result = conserved(export_preference(layout))
    assert result.written == 0 and result.per_reason == {"secret_detected": 1}
    assert token not in layout.quarantine_file("preference").read_text()


def test_hallucinated_path_refuses_chosen_but_not_rejected_side(layout: Layout) -> None:
    write_manifest(layout)
    write_runs(
        layout,
        [
            make_run("g", task_id="t1", response="Edited services/router/provider_adapter.py"),
            make_run("b", task_id="t1", category="rejected", response="Edited services/ghost.py"),
            make_run("g-ghost", task_id="t2", response="Edited services/ghost.py"),
            make_run("b2", task_id="t2", category="rejected", response="Bad"),
        ],
    )
    result = conserved(export_preference(layout))
    assert [row["task_id"] for row in pairs(layout)] == ["t1"]
    assert result.per_reason == {"hallucinated_file_path": 1}


def test_max_pairs_per_task_must_be_positive(layout: Layout) -> None:
    with pytest.raises(ValueError):
        export_preference(layout, max_pairs_per_task=0)


def test_runs_spilled_to_disk_in_small_chunks_pair_exactly_as_in_memory(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs wait for pairing in sorted chunk files; the merge must give the in-memory order."""
    from distillation_pipeline.exports import run_refs

    runs = []
    for i in range(40):  # tasks interleaved across partitions, so every chunk holds several tasks
        task = f"task-{(i * 7) % 9}"
        category = ("accepted", "rejected", "partially_accepted", "accepted")[i % 4]
        runs.append(make_run(f"r{i}", task_id=task, category=category, response=f"answer {i}", recorded_at=later(i % 30)))
    write_runs(layout, runs)
    export_preference(layout, max_pairs_per_task=3)
    in_memory = (layout.preference_file.read_bytes(), layout.quarantine_file("preference").read_bytes())
    monkeypatch.setattr(run_refs, "DEFAULT_CHUNK_RUNS", 3)
    result = conserved(export_preference(layout, max_pairs_per_task=3))
    assert (layout.preference_file.read_bytes(), layout.quarantine_file("preference").read_bytes()) == in_memory
    assert result.written >= 9 and len(pairs(layout)) == result.written
