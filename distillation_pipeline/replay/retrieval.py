"""Retrieval over the RAG corpus (``exports/rag/playbooks.jsonl``): top K records for a task.

Three modes, one ranking contract (score descending, then id ascending, so ties never depend
on file order or hash seeds):

- ``jaccard_exact``: the seed's baseline, a scan of every record's token set. The reference.
- ``jaccard``: the same scores from an inverted index. Only records sharing a token with the
  query can score above zero, so it sums posting lists instead of visiting every record; it
  returns exactly what the scan returns (the scores come from the same integer counts).
- ``bm25``: Okapi BM25 (k1=1.5, b=0.75, Lucene idf) over the same postings, for a ranking that
  weighs rare tokens; not comparable to Jaccard scores.

The index is built once per corpus version, keyed on the corpus file's sha256, kept in this
process and on disk under ``data/_state/replay_index/`` so the next process (a sensor-launched
run, the next CLI call) loads it instead of re-tokenising the corpus. Record texts are not held
in memory: the index keeps each record's byte offset and re-reads only the top K rows.

Only rows that passed the firewall are in the corpus file; a row that is malformed or carries a
category RAG never admits is still refused here (counted in ``skipped``), not trusted.
"""

import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from distillation_pipeline.lib.atomic import atomic_writer
from distillation_pipeline.lib.hashing import file_sha256
from distillation_pipeline.lib.jsonl import iter_raw_lines, read_line_at
from distillation_pipeline.replay.tokens import jaccard_from_counts, token_set, tokens

MODES = ("jaccard", "jaccard_exact", "bm25")
RAG_CATEGORIES = ("accepted", "partially_accepted", "needs_human_review")
INDEX_FORMAT = 1  # bump when the tokenizer or the arrays change: old cache files are ignored
BM25_K1, BM25_B = 1.5, 0.75


class RetrievalError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Hit:
    """One retrieved record, in rank order."""

    id: str
    score: float
    category: str
    title: str
    content: str


@dataclass
class CorpusIndex:
    """Arrays over the corpus rows that were admitted, in file order (doc index = position)."""

    corpus_sha256: str
    corpus_path: Path
    ids: list[str]
    categories: np.ndarray  # int8 code into RAG_CATEGORIES
    offsets: np.ndarray  # int64 byte offset of each row in the corpus file
    set_len: np.ndarray  # int32 distinct tokens per record (the Jaccard denominator)
    total_len: np.ndarray  # int32 tokens per record with repeats (BM25 document length)
    id_rank: np.ndarray  # int32 rank of each id in sorted order: the tie-break as an int compare
    vocab: dict[str, int]
    indptr: np.ndarray  # int64, len(vocab) + 1: postings of token t are indices[indptr[t]:indptr[t+1]]
    indices: np.ndarray  # int32 doc indices, ascending within a token
    tf: np.ndarray  # float32 term frequency of the token in that doc, aligned with indices
    skipped: dict[str, int] = field(default_factory=dict)
    _token_sets: list[frozenset[str]] | None = None  # built on first exact scan only

    @property
    def size(self) -> int:
        return len(self.ids)

    # --- queries ----------------------------------------------------------------------------

    def search(self, query: str, k: int = 8, mode: str = "jaccard") -> list[Hit]:
        if mode not in MODES:
            raise RetrievalError(f"unknown retrieval mode {mode!r}; expected one of {MODES}")
        if k <= 0 or self.size == 0:
            return []
        if mode == "jaccard_exact":
            ranked = self._scan_jaccard(query, k)
        else:
            ranked = self._indexed(query, k, bm25=(mode == "bm25"))
        return [self._hit(doc, score) for doc, score in ranked]

    def _scan_jaccard(self, query: str, k: int) -> list[tuple[int, float]]:
        qset = token_set(query)
        if not qset:
            return []
        if self._token_sets is None:
            self._token_sets = self._all_token_sets()
        scored = []
        qlen = len(qset)
        for doc, dset in enumerate(self._token_sets):
            shared = len(qset & dset)
            if shared:
                scored.append((-jaccard_from_counts(shared, qlen, len(dset)), self.ids[doc], doc))
        scored.sort()
        return [(doc, -neg) for neg, _, doc in scored[:k]]

    def _indexed(self, query: str, k: int, bm25: bool) -> list[tuple[int, float]]:
        qtokens = tokens(query)
        qset = frozenset(qtokens)
        present = sorted({self.vocab[tok] for tok in qset if tok in self.vocab})
        if not present:
            return []
        slices = [slice(self.indptr[t], self.indptr[t + 1]) for t in present]
        docs = np.concatenate([self.indices[s] for s in slices])
        n = self.size
        if bm25:
            avgdl = float(self.total_len.mean()) or 1.0
            weights = []
            for t, s in zip(present, slices, strict=True):
                df = s.stop - s.start
                idf = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
                tf = self.tf[s].astype(np.float64)
                dl = self.total_len[self.indices[s]].astype(np.float64)
                weights.append(idf * tf * (BM25_K1 + 1) / (tf + BM25_K1 * (1 - BM25_B + BM25_B * dl / avgdl)))
            totals = np.bincount(docs, weights=np.concatenate(weights), minlength=n)
            candidates = np.flatnonzero(totals)
            scores = totals[candidates]
        else:
            shared = np.bincount(docs, minlength=n)
            candidates = np.flatnonzero(shared)
            counts = shared[candidates].astype(np.float64)
            # The same expression as tokens.jaccard_from_counts, on the same integers: IEEE
            # division is correctly rounded, so these floats equal the exact scan's bit for bit.
            scores = counts / (len(qset) + self.set_len[candidates].astype(np.float64) - counts)
        if candidates.size > k:
            kth = np.partition(scores, candidates.size - k)[candidates.size - k]
            keep = scores >= kth  # every record tied with the k-th stays in for the id tie-break
            candidates, scores = candidates[keep], scores[keep]
        order = np.lexsort((self.id_rank[candidates], -scores))[:k]
        return [(int(candidates[i]), float(scores[i])) for i in order]

    # --- rows -------------------------------------------------------------------------------

    def _all_token_sets(self) -> list[frozenset[str]]:
        """One pass over the corpus file (the scan is the reference, not the fast path)."""
        doc_at = {int(offset): doc for doc, offset in enumerate(self.offsets)}
        sets: list[frozenset[str]] = [frozenset()] * self.size
        for line in iter_raw_lines(self.corpus_path):
            doc = doc_at.get(line.offset)
            if doc is not None:
                sets[doc] = token_set(_doc_text(orjson.loads(line.data)))
        return sets

    def _row(self, doc: int) -> dict:
        return orjson.loads(read_line_at(self.corpus_path, int(self.offsets[doc])))

    def _hit(self, doc: int, score: float) -> Hit:
        row = self._row(doc)
        if row.get("id") != self.ids[doc]:
            raise RetrievalError(f"corpus changed under the index: {self.corpus_path} (re-open the index)")
        return Hit(
            id=self.ids[doc],
            score=round(score, 6),
            category=RAG_CATEGORIES[int(self.categories[doc])],
            title=str(row.get("title") or ""),
            content=str(row.get("content") or ""),
        )


def _doc_text(row: dict) -> str:
    return f"{row.get('title') or ''}\n{row.get('content') or ''}"


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


def build_index(corpus_path: Path, corpus_sha256: str | None = None) -> CorpusIndex:
    """Read the corpus once and build the postings. Malformed or refused rows are counted."""
    sha = corpus_sha256 or file_sha256(corpus_path)
    ids: list[str] = []
    seen: set[str] = set()
    categories: list[int] = []
    offsets: list[int] = []
    set_len: list[int] = []
    total_len: list[int] = []
    vocab: dict[str, int] = {}
    pair_tok: list[int] = []
    pair_tf: list[int] = []
    pair_count: list[int] = []  # distinct tokens per admitted doc, to expand doc indices later
    skipped: dict[str, int] = {}

    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    for line in iter_raw_lines(corpus_path):
        if not line.data.strip():
            continue
        if not line.terminated:
            skip("torn_line")
            continue
        try:
            row = orjson.loads(line.data)
        except orjson.JSONDecodeError:
            skip("malformed_json")
            continue
        if not isinstance(row, dict):
            skip("schema_violation")
            continue
        rid, content, category = row.get("id"), row.get("content"), row.get("source_category")
        if not isinstance(rid, str) or not rid or not isinstance(content, str) or not content.strip():
            skip("schema_violation")
            continue
        if category not in RAG_CATEGORIES:
            skip("unsafe_rag_category")
            continue
        if rid in seen:
            skip("duplicate_id")
            continue
        seen.add(rid)
        doc_tokens = tokens(_doc_text(row))
        counts: dict[int, int] = {}
        for tok in doc_tokens:
            tid = vocab.setdefault(tok, len(vocab))
            counts[tid] = counts.get(tid, 0) + 1
        ids.append(rid)
        categories.append(RAG_CATEGORIES.index(category))
        offsets.append(line.offset)
        set_len.append(len(counts))
        total_len.append(len(doc_tokens))
        pair_tok.extend(counts.keys())
        pair_tf.extend(counts.values())
        pair_count.append(len(counts))

    n = len(ids)
    tok_arr = np.asarray(pair_tok, dtype=np.int64)
    doc_arr = np.repeat(np.arange(n, dtype=np.int32), np.asarray(pair_count, dtype=np.int64))
    order = np.argsort(tok_arr, kind="stable")  # stable: doc indices stay ascending per token
    indptr = np.zeros(len(vocab) + 1, dtype=np.int64)
    np.cumsum(np.bincount(tok_arr, minlength=len(vocab)), out=indptr[1:])
    id_rank = np.empty(n, dtype=np.int32)
    id_rank[np.asarray(sorted(range(n), key=ids.__getitem__), dtype=np.int64)] = np.arange(n, dtype=np.int32)
    return CorpusIndex(
        corpus_sha256=sha,
        corpus_path=corpus_path,
        ids=ids,
        categories=np.asarray(categories, dtype=np.int8),
        offsets=np.asarray(offsets, dtype=np.int64),
        set_len=np.asarray(set_len, dtype=np.int32),
        total_len=np.asarray(total_len, dtype=np.int32),
        id_rank=id_rank,
        vocab=vocab,
        indptr=indptr,
        indices=doc_arr[order],
        tf=np.asarray(pair_tf, dtype=np.float32)[order],
        skipped=skipped,
    )


# --------------------------------------------------------------------------------------------
# Caching: once per corpus version, in this process and on disk
# --------------------------------------------------------------------------------------------

_MEMORY: "OrderedDict[str, CorpusIndex]" = OrderedDict()
_MEMORY_LIMIT = 2
_SHA_BY_STAT: dict[tuple, str] = {}


def corpus_version(corpus_path: Path) -> str:
    """sha256 of the corpus file, memoised on (inode, size, mtime) so a query doesn't rehash it."""
    st = corpus_path.stat()
    key = (str(corpus_path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    sha = _SHA_BY_STAT.get(key)
    if sha is None:
        sha = file_sha256(corpus_path)
        _SHA_BY_STAT[key] = sha
    return sha


def cache_file(cache_dir: Path, corpus_sha256: str) -> Path:
    return cache_dir / f"{corpus_sha256}.v{INDEX_FORMAT}.npz"


def open_index(corpus_path: Path, cache_dir: Path | None) -> CorpusIndex:
    """The index for the corpus as it is now: from memory, else from disk, else built (and saved)."""
    if not corpus_path.exists():
        raise RetrievalError(f"no RAG corpus at {corpus_path}: run the exports first, or replay with --no-retrieval")
    sha = corpus_version(corpus_path)
    cached = _MEMORY.get(sha)
    if cached is not None and cached.corpus_path == corpus_path:
        _MEMORY.move_to_end(sha)
        return cached
    index = None
    if cache_dir is not None and cache_file(cache_dir, sha).exists():
        index = _load(cache_file(cache_dir, sha), corpus_path, sha)
    if index is None:
        index = build_index(corpus_path, sha)
        if cache_dir is not None:
            _save(index, cache_file(cache_dir, sha))
    _MEMORY[sha] = index
    while len(_MEMORY) > _MEMORY_LIMIT:
        _MEMORY.popitem(last=False)
    return index


def clear_memory_cache() -> None:
    _MEMORY.clear()
    _SHA_BY_STAT.clear()


def _save(index: CorpusIndex, path: Path) -> None:
    vocab_words = sorted(index.vocab, key=index.vocab.__getitem__)
    skipped = orjson.dumps(index.skipped, option=orjson.OPT_SORT_KEYS).decode()
    with atomic_writer(path) as handle:
        np.savez(
            handle,
            ids=np.asarray(index.ids, dtype=str),
            vocab=np.asarray(vocab_words, dtype=str),
            categories=index.categories,
            offsets=index.offsets,
            set_len=index.set_len,
            total_len=index.total_len,
            id_rank=index.id_rank,
            indptr=index.indptr,
            indices=index.indices,
            tf=index.tf,
            skipped=np.asarray([skipped]),
        )


def _load(path: Path, corpus_path: Path, sha: str) -> CorpusIndex | None:
    """A cache file that can't be read is rebuilt, not trusted (a crash can't tear it, a disk can)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            vocab_words = data["vocab"].tolist()
            return CorpusIndex(
                corpus_sha256=sha,
                corpus_path=corpus_path,
                ids=data["ids"].tolist(),
                categories=data["categories"],
                offsets=data["offsets"],
                set_len=data["set_len"],
                total_len=data["total_len"],
                id_rank=data["id_rank"],
                vocab={word: i for i, word in enumerate(vocab_words)},
                indptr=data["indptr"],
                indices=data["indices"],
                tf=data["tf"],
                skipped=orjson.loads(str(data["skipped"][0])),
            )
    except (OSError, ValueError, KeyError):
        try:
            os.unlink(path)
        except OSError:
            pass
        return None
