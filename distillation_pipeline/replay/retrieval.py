"""Retrieval over the RAG corpus (``exports/rag/playbooks.jsonl``): top K records for a task.

Three modes, one ranking contract (score descending, then id ascending, so ties never depend
on file order or hash seeds):

- ``jaccard_exact``: the seed's baseline, a scan of every record's token set. The reference.
- ``jaccard``: the same scores from an inverted index; it returns exactly what the scan returns
  (the scores come from the same integer counts). Documents are numbered in (distinct tokens,
  id) order, so a query walks them shortest first and stops where no longer record can reach
  the k-th score found so far; past the first block only records holding one of the query's
  rarer tokens are candidates, and the frequent tokens' long postings are only probed for them
  (see ``_jaccard_indexed``).
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
from array import array
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
INDEX_FORMAT = 2  # bump when the tokenizer or the arrays change: old cache files are ignored
# (2: documents numbered in (set_len, id) order, no longer in file order)
BM25_K1, BM25_B = 1.5, 0.75
FIRST_BLOCK = 4096  # documents scored in full before the k-th score starts pruning; blocks then double
BM25_SAMPLE = 4096  # postings of the rarest query tokens whose records set BM25's score floor


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
    """Arrays over the corpus rows that were admitted, one entry per document.

    Document numbers follow (set_len, id) order, not file order: ``set_len`` is ascending, so a
    prefix of the documents is "every record with at most L distinct tokens" (see ``_reach``).
    """

    corpus_sha256: str
    corpus_path: Path
    ids: list[str]
    categories: np.ndarray  # int8 code into RAG_CATEGORIES
    offsets: np.ndarray  # int64 byte offset of each row in the corpus file
    set_len: np.ndarray  # int32 distinct tokens per record (the Jaccard denominator), ascending
    total_len: np.ndarray  # int32 tokens per record with repeats (BM25 document length)
    id_rank: np.ndarray  # int32 rank of each id in sorted order: the tie-break as an int compare
    vocab: dict[str, int]
    indptr: np.ndarray  # int64, len(vocab) + 1: postings of token t are indices[indptr[t]:indptr[t+1]]
    indices: np.ndarray  # int32 doc indices, ascending within a token
    tf: np.ndarray  # float32 term frequency of the token in that doc, aligned with indices
    skipped: dict[str, int] = field(default_factory=dict)
    _token_sets: list[frozenset[str]] | None = None  # built on first exact scan only
    _norm: np.ndarray | None = None  # BM25 length normalisation per record, on first BM25 query

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
        qset = token_set(query)
        present = sorted({self.vocab[tok] for tok in qset if tok in self.vocab})
        if not present:
            return []
        if bm25:
            return self._bm25(present, k)
        return self._jaccard_indexed(present, len(qset), k)

    def _bm25(self, present: list[int], k: int) -> list[tuple[int, float]]:
        """Okapi BM25 over every posting of the query's tokens.

        Each record's score is summed in token id order (one bincount), as it always was: the
        same floats, bit for bit. Only the top K is found without an O(corpus) sort: see
        ``_bm25_floor``.
        """
        slices = [slice(self.indptr[t], self.indptr[t + 1]) for t in present]
        docs = np.concatenate([self.indices[s] for s in slices])
        norm = self._bm25_norm()
        weights = []
        for s in slices:
            idf = _idf(self.size, s.stop - s.start)
            tf = self.tf[s].astype(np.float64)
            weights.append(idf * tf * (BM25_K1 + 1) / (tf + norm[self.indices[s]]))
        totals = np.bincount(docs, weights=np.concatenate(weights), minlength=self.size)
        candidates = np.flatnonzero(totals >= self._bm25_floor(totals, slices, k))
        return _top_k(candidates, totals[candidates], self.id_rank, k)

    def _bm25_floor(self, totals: np.ndarray, slices: list[slice], k: int) -> float:
        """A score the k-th best record surely reaches: the k-th best among a sample of records.

        The sample is the first (shortest) few thousand records of the query's rarest tokens,
        where BM25's best usually are, so the floor is cheap and cuts the candidates from every
        matching record (most of the corpus for template words) to a few. Every record scoring
        >= the floor is kept, so the top K is exact, ties included.
        """
        budget, parts = max(BM25_SAMPLE, 2 * k), []
        for s in sorted(slices, key=lambda s: (s.stop - s.start, s.start)):
            parts.append(self.indices[s][:budget])
            budget -= parts[-1].size
            if budget <= 0:
                break
        sample = np.unique(np.concatenate(parts))  # distinct records: a repeat must not count twice
        if sample.size < k:
            return float(np.finfo(np.float64).tiny)  # fewer than K sampled: keep every match
        scores = totals[sample]
        return float(np.partition(scores, scores.size - k)[scores.size - k])

    def _bm25_norm(self) -> np.ndarray:
        """Per record, BM25's length normalisation k1 * (1 - b + b * dl / avgdl), computed once."""
        if self._norm is None:
            avgdl = float(self.total_len.mean()) or 1.0
            dl = self.total_len.astype(np.float64)
            self._norm = BM25_K1 * (1 - BM25_B + BM25_B * dl / avgdl)
        return self._norm

    def _jaccard_indexed(self, present: list[int], qlen: int, k: int) -> list[tuple[int, float]]:
        """Exact top K by Jaccard, visiting documents in blocks, shortest first.

        With ``c`` shared tokens a record of ``L`` distinct tokens scores ``c / (qlen + L - c)``,
        which falls as L grows. Once K records are known, the k-th score bounds every other
        record: ``_reach`` turns it into, per possible count c, the document prefix that can
        still reach it. A block past that prefix for c = m (all query tokens) ends the search;
        inside it, a record that can reach the bound only with c >= cmin must hold one of the
        m - cmin + 1 rarest query tokens, so only those tokens' postings name candidates
        (``_block_counts``). Every record scoring >= the bound is scored, so the result equals
        the exhaustive scan, ties included.
        """
        spans = sorted((int(self.indptr[t + 1] - self.indptr[t]), t) for t in present)  # rarest first
        postings = [self.indices[self.indptr[t] : self.indptr[t + 1]] for _, t in spans]
        best = _Best(k, qlen, self.set_len, self.id_rank)
        lo, size = 0, FIRST_BLOCK
        while lo < self.size:
            reach = self._reach(best.kth, qlen, len(postings))
            if lo >= reach[0]:
                break  # set_len only grows from here: no later record can reach the k-th score
            hi = min(self.size, lo + size)
            best.add(*_block_counts(postings, reach, lo, hi))
            lo, size = hi, size * 2
        return best.ranked()

    def _reach(self, kth: tuple[int, int] | None, qlen: int, m: int) -> np.ndarray:
        """reach[j]: documents below it can reach the k-th score sharing m - j query tokens.

        A record with c shared tokens and L distinct ones reaches the k-th score
        ck / (qlen + Lk - ck) iff c * (qlen + Lk - ck) >= ck * (qlen + L - c), i.e.
        L <= c * (qlen + Lk - ck) // ck - qlen + c: integer arithmetic, so the boundary is exact
        (a record tied with the k-th stays in, for the id tie-break). Non-increasing in j.
        """
        if kth is None:
            return np.full(m, self.size, dtype=np.int64)
        ck, lk = kth
        shared = np.arange(m, 0, -1, dtype=np.int64)
        max_len = shared * (qlen + lk - ck) // ck - qlen + shared
        # searchsorted converts the haystack to the needle's dtype: keep both int32 (no O(n) copy)
        max_len = np.minimum(max_len, np.iinfo(np.int32).max).astype(self.set_len.dtype)
        return np.searchsorted(self.set_len, max_len, side="right")

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


def _idf(n: int, df: int) -> float:
    return math.log(1.0 + (n - df + 0.5) / (df + 0.5))


def _block_counts(postings: list[np.ndarray], reach: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidates in documents [lo, hi) that can still reach the k-th score, with exact shared counts.

    ``postings`` are the query tokens' doc lists, rarest first; ``reach`` is ``_reach``'s answer.
    Token j names candidates only below reach[j] (beyond it a record whose rarest shared token is
    j has too few tokens to score high enough). For a candidate past reach[j], token j is probed
    in the posting list instead, rarest tokens first, and the candidate is dropped as soon as
    the tokens left can no longer lift its count to the minimum its length needs.
    """
    m = len(postings)
    heads, blocks = [], []
    for post, stop in zip(postings, reach, strict=True):
        a, b, c = np.searchsorted(post, np.asarray((lo, min(hi, stop), hi), dtype=post.dtype))
        blocks.append(post[a:c])
        if stop > lo:
            heads.append(post[a:b])
    docs, counts = _count_unique(np.concatenate(heads), lo, hi)
    ascending = reach[::-1]
    # A doc at or past reach[j] needs more than m - j shared tokens: its minimum count is one
    # more than the number of such j.
    need = np.searchsorted(ascending, docs, side="right") + 1
    for j in range(1, m):
        tail = int(np.searchsorted(docs, reach[j]))  # candidates whose count lacks token j
        if tail == docs.size:
            continue
        counts[tail:] += _contains(blocks[j], docs[tail:])
        alive = counts[tail:] + (m - 1 - j) >= need[tail:]
        if not alive.all():
            keep = np.concatenate((np.ones(tail, dtype=bool), alive))
            docs, counts, need = docs[keep], counts[keep], need[keep]
    keep = counts >= need
    return docs[keep], counts[keep]


def _count_unique(docs: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct doc numbers (ascending) and how often each occurs.

    A bincount over the block when the postings fill it (the first blocks), else a sort: neither
    costs more than the block or the postings in it.
    """
    if docs.size * 4 >= hi - lo:
        counts = np.bincount(docs - lo, minlength=hi - lo)
        found = np.flatnonzero(counts)
        return found + lo, counts[found]
    found, counts = np.unique(docs, return_counts=True)
    return found, counts


def _contains(postings: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """For sorted ``docs``: is each in the sorted ``postings``? (binary search, no O(n) pass)"""
    if postings.size == 0:
        return np.zeros(docs.size, dtype=np.int64)
    docs = docs.astype(postings.dtype, copy=False)  # same dtype: searchsorted won't copy postings
    at = np.minimum(np.searchsorted(postings, docs), postings.size - 1)
    return (postings[at] == docs).astype(np.int64)


def _top_k(docs: np.ndarray, scores: np.ndarray, id_rank: np.ndarray, k: int) -> list[tuple[int, float]]:
    return [(int(docs[i]), float(scores[i])) for i in _rank(docs, scores, id_rank, k)]


def _rank(docs: np.ndarray, scores: np.ndarray, id_rank: np.ndarray, k: int) -> np.ndarray:
    """Positions of the K best, by score descending, then id ascending.

    Only scores >= the k-th largest are sorted: every record tied with the k-th stays in, so
    the id tie-break sees them all.
    """
    among = np.arange(docs.size)
    if docs.size > 4 * k:
        kth = np.partition(scores, docs.size - k)[docs.size - k]
        among = np.flatnonzero(scores >= kth)
    return among[np.lexsort((id_rank[docs[among]], -scores[among]))[:k]]


class _Best:
    """The K best records seen so far, and the k-th as (shared, set_len) once there are K."""

    def __init__(self, k: int, qlen: int, set_len: np.ndarray, id_rank: np.ndarray):
        self.k, self.qlen, self.set_len, self.id_rank = k, qlen, set_len, id_rank
        self.docs = np.zeros(0, dtype=np.int64)
        self.counts = np.zeros(0, dtype=np.int64)
        self.kth: tuple[int, int] | None = None

    def add(self, docs: np.ndarray, counts: np.ndarray) -> None:
        if docs.size == 0:
            return
        docs = np.concatenate((self.docs, docs))
        counts = np.concatenate((self.counts, counts))
        top = _rank(docs, self._scores(docs, counts), self.id_rank, self.k)
        self.docs, self.counts = docs[top], counts[top]
        if self.docs.size == self.k:
            self.kth = (int(self.counts[-1]), int(self.set_len[self.docs[-1]]))

    def ranked(self) -> list[tuple[int, float]]:
        scores = self._scores(self.docs, self.counts)
        return [(int(doc), float(score)) for doc, score in zip(self.docs, scores, strict=True)]

    def _scores(self, docs: np.ndarray, counts: np.ndarray) -> np.ndarray:
        # The same expression as tokens.jaccard_from_counts, on the same integers: IEEE division
        # is correctly rounded, so these floats equal the exact scan's bit for bit.
        counts = counts.astype(np.float64)
        return counts / (self.qlen + self.set_len[docs].astype(np.float64) - counts)


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
    # (token id, tf) per distinct token of each admitted doc, and the doc's number of them;
    # int32 arrays, not lists: 40 M Python ints at 1M records would cost over a gigabyte.
    pair_tok, pair_tf, pair_count = array("i"), array("i"), array("i")
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

    columns = {"categories": categories, "offsets": offsets, "set_len": set_len, "total_len": total_len}
    pairs = (np.asarray(pair_tok, dtype=np.int32), np.asarray(pair_tf, dtype=np.int32))
    return _assemble(sha, corpus_path, ids, columns, vocab, pairs, np.asarray(pair_count, dtype=np.int64), skipped)


def _assemble(
    sha: str,
    corpus_path: Path,
    ids: list[str],
    columns: dict[str, list[int]],
    vocab: dict[str, int],
    pairs: tuple[np.ndarray, np.ndarray],
    pair_count: np.ndarray,
    skipped: dict[str, int],
) -> CorpusIndex:
    """Number the documents in (set_len, id) order and lay the postings out by token, then doc.

    ``pairs`` are (token id, tf) per distinct token, doc by doc in file order; ``pair_count``
    says how many each doc has.
    """
    n = len(ids)
    id_rank = np.empty(n, dtype=np.int32)
    id_rank[np.asarray(sorted(range(n), key=ids.__getitem__), dtype=np.int64)] = np.arange(n, dtype=np.int32)
    set_len = np.asarray(columns["set_len"], dtype=np.int32)
    old_at = np.lexsort((id_rank, set_len))  # the file-order doc behind each new doc number
    gather = _regroup(pair_count, old_at)
    pair_tok, pair_tf = (column[gather] for column in pairs)
    del gather
    # Pairs are now doc by doc in the new order: a stable sort by token keeps each posting
    # list in ascending doc order.
    order = np.argsort(pair_tok, kind="stable")
    indptr = np.zeros(len(vocab) + 1, dtype=np.int64)
    np.cumsum(np.bincount(pair_tok, minlength=len(vocab)), out=indptr[1:])
    doc_arr = np.repeat(np.arange(n, dtype=np.int32), pair_count[old_at])
    return CorpusIndex(
        corpus_sha256=sha,
        corpus_path=corpus_path,
        ids=[ids[i] for i in old_at],
        categories=np.asarray(columns["categories"], dtype=np.int8)[old_at],
        offsets=np.asarray(columns["offsets"], dtype=np.int64)[old_at],
        set_len=set_len[old_at],
        total_len=np.asarray(columns["total_len"], dtype=np.int32)[old_at],
        id_rank=id_rank[old_at],
        vocab=vocab,
        indptr=indptr,
        indices=doc_arr[order],
        tf=pair_tf[order].astype(np.float32),
        skipped=skipped,
    )


def _regroup(pair_count: np.ndarray, old_at: np.ndarray) -> np.ndarray:
    """Positions of the pairs when their doc groups are laid out in ``old_at`` order.

    Doc d's pairs sit at starts[d] .. starts[d] + pair_count[d]; in the new layout they follow
    each other, so position i of the new layout maps to i + (old start - new start) of its doc.
    """
    starts = np.zeros(pair_count.size + 1, dtype=np.int64)
    np.cumsum(pair_count, out=starts[1:])
    new_count = pair_count[old_at]
    new_starts = np.zeros(pair_count.size + 1, dtype=np.int64)
    np.cumsum(new_count, out=new_starts[1:])
    shift = np.repeat(starts[:-1][old_at] - new_starts[:-1], new_count)
    return np.arange(int(starts[-1]), dtype=np.int64) + shift


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
