"""Retrieval (spec 7.1): Jaccard ranking, id tie-break, the index equals the scan, built once per corpus version."""

import math
import random

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# --- the pruned index walk equals the scan -------------------------------------------------------
#
# ``CorpusIndex._jaccard_indexed`` skips records that cannot reach the k-th score found so far.
# These corpora are built to catch a bound that is off by one: exact ties (duplicate texts, ids
# out of file order), a few tokens in almost every record (the template words of the real
# export), very short and very long records, and queries of only frequent tokens, of unknown
# tokens, and with k beyond the number of matches. FIRST_BLOCK is lowered so that a corpus of a
# few hundred records is walked in many blocks, as a 1M one is.

FREQUENT = ["verify", "check", "gateway", "retry", "ensure"]
WORDS = [f"w{i:03d}" for i in range(150)]


def _random_rows(rng: random.Random, size: int) -> list[bytes]:
    texts: list[str] = []
    for _ in range(size):
        if texts and rng.random() < 0.2:
            texts.append(rng.choice(texts))  # an exact duplicate: every query ties them
            continue
        length = rng.choice((1, 2, 3, rng.randint(4, 12), rng.randint(20, 70)))
        words = [tok for tok in FREQUENT if rng.random() < 0.8]
        words += [WORDS[int(len(WORDS) * rng.random() ** 3)] for _ in range(length)]
        texts.append(" ".join(rng.sample(words, len(words))) or "w149")
    ids = [f"r{rng.randrange(10**6):06d}-{i}" for i in range(size)]
    rng.shuffle(ids)  # id order is neither file order nor length order
    return [
        orjson.dumps({"id": rid, "title": "", "content": text, "source_category": "accepted"}) + b"\n"
        for rid, text in zip(ids, texts, strict=True)
    ]


def _random_queries(rng: random.Random) -> list[str]:
    return [
        " ".join(rng.sample(FREQUENT, rng.randint(1, len(FREQUENT)))),  # only template tokens
        " ".join(rng.sample(FREQUENT + WORDS[:10], 6)),
        " ".join(rng.sample(WORDS, rng.randint(1, 8))) + " " + rng.choice(FREQUENT),
        f"{rng.choice(WORDS[100:])} unknowntoken another_unknown",  # |q| counts unknown tokens
        rng.choice(WORDS[120:]),  # one rare token: few matches, k beyond them
        "the of and",  # stopwords only: an empty query
        "",
    ]


def _ranked(index, query: str, k: int, mode: str) -> list[tuple[str, float]]:
    return [(h.id, h.score) for h in index.search(query, k=k, mode=mode)]


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    size=st.integers(1, 400),
    first_block=st.sampled_from([1, 2, 3, 16, 4096]),
    k=st.sampled_from([1, 2, 5, 8, 40, 1000]),
)
def test_pruned_jaccard_equals_the_scan_on_random_corpora(tmp_path_factory, seed, size, first_block, k):
    rng = random.Random(seed)
    path = tmp_path_factory.mktemp("corpus") / "rag.jsonl"
    path.write_bytes(b"".join(_random_rows(rng, size)))
    index = build_index(path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(retrieval, "FIRST_BLOCK", first_block)
        for query in _random_queries(rng):
            assert _ranked(index, query, k, "jaccard") == _ranked(index, query, k, "jaccard_exact"), query


def _bm25_reference(index, query: str, k: int) -> list[tuple[str, float]]:
    """BM25 as it was before the score floor: every matching record scored and sorted."""
    present = sorted({index.vocab[t] for t in token_set(query) if t in index.vocab})
    if not present:
        return []
    avgdl = float(index.total_len.mean()) or 1.0
    totals = np.zeros(index.size)
    for t in present:
        docs = index.indices[index.indptr[t] : index.indptr[t + 1]]
        tf = index.tf[index.indptr[t] : index.indptr[t + 1]].astype(np.float64)
        dl = index.total_len[docs].astype(np.float64)
        idf = math.log(1.0 + (index.size - docs.size + 0.5) / (docs.size + 0.5))
        np.add.at(totals, docs, idf * tf * (2.5) / (tf + 1.5 * (1 - 0.75 + 0.75 * dl / avgdl)))
    ranked = sorted((-score, index.ids[doc]) for doc, score in enumerate(totals) if score > 0)
    return [(rid, -neg) for neg, rid in ranked[:k]]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(1, 300), sample=st.sampled_from([1, 5, 4096]), k=st.sampled_from([1, 8, 500]))
def test_bm25_top_k_equals_scoring_every_match(tmp_path_factory, seed, size, sample, k):
    rng = random.Random(seed)
    path = tmp_path_factory.mktemp("corpus") / "rag.jsonl"
    path.write_bytes(b"".join(_random_rows(rng, size)))
    index = build_index(path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(retrieval, "BM25_SAMPLE", sample)  # a small sample: a low floor, many candidates kept
        for query in _random_queries(rng):
            fast = [(index.ids[doc], score) for doc, score in index._indexed(query, k, bm25=True)]
            assert fast == _bm25_reference(index, query, k), query


def test_results_do_not_depend_on_file_order(tmp_path):
    rng = random.Random(4)
    rows = _random_rows(rng, 300)
    forward = build_index(write_rows(tmp_path / "a.jsonl", [], rows))
    backward = build_index(write_rows(tmp_path / "b.jsonl", [], rows[::-1]))
    for query in _random_queries(rng):
        for mode in retrieval.MODES:
            assert _ranked(forward, query, 8, mode) == _ranked(backward, query, 8, mode)


def test_documents_are_numbered_shortest_first_and_postings_ascend(tmp_path):
    index = build_index(write_rows(tmp_path / "rag.jsonl", [], _random_rows(random.Random(2), 300)))
    keys = list(zip(index.set_len.tolist(), index.ids, strict=True))
    assert keys == sorted(keys)  # (set_len, id): the order _reach's prefixes rely on
    assert [index.ids[d] for d in np.argsort(index.id_rank)] == sorted(index.ids)
    for t in range(len(index.vocab)):
        postings = index.indices[index.indptr[t] : index.indptr[t + 1]]
        assert (np.diff(postings) > 0).all()


def test_the_walk_stops_where_no_record_can_reach_the_kth_score(tmp_path, monkeypatch):
    short = [rag_row(f"s{i:02d}", "gateway retry breaker") for i in range(10)]
    long = [rag_row(f"l{i:03d}", "gateway retry " + " ".join(f"pad{j}" for j in range(30))) for i in range(200)]
    index = build_index(write_rows(tmp_path / "rag.jsonl", long + short))
    visited = []
    real = retrieval._block_counts
    monkeypatch.setattr(retrieval, "FIRST_BLOCK", 4)
    monkeypatch.setattr(retrieval, "_block_counts", lambda p, r, lo, hi: visited.append(hi) or real(p, r, lo, hi))
    hits = index.search("gateway retry", k=8)
    assert [h.id for h in hits] == [f"s{i:02d}" for i in range(8)]
    assert max(visited) < index.size  # the 200 long records were never counted
