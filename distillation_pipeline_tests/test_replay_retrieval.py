"""Retrieval (spec 7.1): Jaccard ranking, id tie-break, the index equals the scan, built once per corpus version."""

import random

import orjson
import pytest

from distillation_pipeline.lib.layout import Layout
from distillation_pipeline.replay import retrieval
from distillation_pipeline.replay.retrieval import RetrievalError, build_index, open_index
from distillation_pipeline.replay.synthetic import make_corpus, write_corpus
from distillation_pipeline.replay.tokens import jaccard, token_set
from distillation_pipeline_tests.replay_fixtures import rag_row, write_rows


@pytest.fixture(autouse=True)
def _fresh_cache():
    retrieval.clear_memory_cache()
    yield
    retrieval.clear_memory_cache()


def test_jaccard_scores_are_shared_over_union(tmp_path):
    path = write_rows(
        tmp_path / "rag.jsonl",
        [rag_row("a", "gateway retry breaker"), rag_row("b", "gateway cache"), rag_row("c", "billing ledger")],
    )
    hits = build_index(path).search("gateway retry", k=8, mode="jaccard")
    assert [(h.id, h.score) for h in hits] == [("a", round(2 / 3, 6)), ("b", round(1 / 3, 6))]
    assert jaccard(token_set("gateway retry"), token_set("gateway retry breaker")) == 2 / 3


def test_records_sharing_no_token_are_not_retrieved(tmp_path):
    path = write_rows(tmp_path / "rag.jsonl", [rag_row("a", "billing ledger")])
    assert build_index(path).search("gateway retry", k=8) == []
    assert build_index(path).search("the of and", k=8) == []  # only stopwords: nothing to match


@pytest.mark.parametrize("mode", ["jaccard", "jaccard_exact", "bm25"])
def test_ties_break_by_id_whatever_the_file_order(tmp_path, mode):
    rows = [rag_row(rid, "gateway retry breaker") for rid in ("m", "c", "x", "a")]
    for order in (rows, rows[::-1]):
        retrieval.clear_memory_cache()
        path = write_rows(tmp_path / "rag.jsonl", order)
        assert [h.id for h in build_index(path).search("gateway retry", k=3, mode=mode)] == ["a", "c", "m"]


def test_indexed_jaccard_equals_the_exhaustive_scan(tmp_path):
    layout = Layout.at(tmp_path)
    records = make_corpus(3000, seed=5, filler_size=2000)
    write_corpus(layout.rag_file, records)
    index = build_index(layout.rag_file)
    rng = random.Random(9)
    for record in rng.sample(records, 60):
        query = f"{record.title} {' '.join(rng.sample(record.content.split(), 2))}"
        fast = [(h.id, h.score) for h in index.search(query, k=8, mode="jaccard")]
        slow = [(h.id, h.score) for h in index.search(query, k=8, mode="jaccard_exact")]
        assert fast == slow and len(fast) == 8


def test_bm25_prefers_the_rare_token(tmp_path):
    rows = [rag_row(f"common{i}", "gateway gateway routing") for i in range(20)] + [rag_row("rare", "gateway hnsw")]
    hits = build_index(write_rows(tmp_path / "rag.jsonl", rows)).search("gateway hnsw", k=1, mode="bm25")
    assert hits[0].id == "rare"


def test_malformed_and_refused_rows_are_counted_not_indexed(tmp_path):
    rejected = orjson.dumps({"id": "r", "content": "gateway", "source_category": "rejected"}) + b"\n"
    path = write_rows(
        tmp_path / "rag.jsonl",
        [rag_row("a", "gateway retry"), rag_row("a", "gateway duplicate")],
        [b"{not json\n", rejected, b'{"id": "e", "content": "  ", "source_category": "accepted"}\n', b'{"id": "torn"'],
    )
    index = build_index(path)
    assert index.ids == ["a"]
    assert index.skipped == {
        "duplicate_id": 1,
        "malformed_json": 1,
        "unsafe_rag_category": 1,
        "schema_violation": 1,
        "torn_line": 1,
    }


def test_hits_carry_the_record_text_and_category(tmp_path):
    path = write_rows(tmp_path / "rag.jsonl", [rag_row("p", "gateway retry\nVerify x", "partially_accepted", "T")])
    hit = build_index(path).search("gateway", k=1)[0]
    assert (hit.id, hit.category, hit.title, hit.content) == ("p", "partially_accepted", "T", "gateway retry\nVerify x")


def test_index_is_built_once_per_corpus_version(tmp_path, monkeypatch):
    layout = Layout.at(tmp_path)
    write_rows(layout.rag_file, [rag_row("a", "gateway retry")])
    cache = tmp_path / "data" / "_state" / "replay_index"
    builds = []
    real_build = retrieval.build_index
    monkeypatch.setattr(retrieval, "build_index", lambda *a, **k: builds.append(1) or real_build(*a, **k))

    first = open_index(layout.rag_file, cache)
    for _ in range(5):
        assert open_index(layout.rag_file, cache) is first  # same process: the same object
    retrieval.clear_memory_cache()
    reloaded = open_index(layout.rag_file, cache)  # a new process: from the disk cache
    assert len(builds) == 1
    assert reloaded.ids == first.ids and reloaded.vocab == first.vocab
    assert [f.name for f in cache.iterdir()] == [f"{first.corpus_sha256}.v{retrieval.INDEX_FORMAT}.npz"]

    write_rows(layout.rag_file, [rag_row("a", "gateway retry"), rag_row("b", "gateway cache")])
    changed = open_index(layout.rag_file, cache)
    assert len(builds) == 2 and changed.ids == ["a", "b"]


def test_a_corrupt_cache_file_is_rebuilt_not_trusted(tmp_path):
    layout = Layout.at(tmp_path)
    write_rows(layout.rag_file, [rag_row("a", "gateway retry")])
    cache = tmp_path / "cache"
    index = open_index(layout.rag_file, cache)
    retrieval.cache_file(cache, index.corpus_sha256).write_bytes(b"garbage")
    retrieval.clear_memory_cache()
    assert open_index(layout.rag_file, cache).search("gateway", k=1)[0].id == "a"


def test_missing_corpus_is_an_error_not_a_silent_baseline(tmp_path):
    with pytest.raises(RetrievalError, match="no RAG corpus"):
        open_index(Layout.at(tmp_path).rag_file, None)


def test_unknown_mode_is_refused(tmp_path):
    path = write_rows(tmp_path / "rag.jsonl", [rag_row("a", "gateway")])
    with pytest.raises(RetrievalError, match="unknown retrieval mode"):
        build_index(path).search("gateway", mode="vector")
