"""The one tokenizer retrieval, the checklist and the gate share.

Lower-cased runs of letters and digits (``_`` kept, so ``provider_routing`` stays one token),
two characters or more, minus a short list of English function words. Keeping it this plain
is deliberate: Jaccard over these sets is the seed's baseline, and the inverted index must
reproduce the exhaustive scan exactly, so both sides must see the very same sets.
"""

import re

_TOKEN = re.compile(r"[a-z0-9_]+")

STOPWORDS = frozenset(
    """
    a an and are as at be been but by can could did do does for from had has have he her his how
    i if in into is it its me my no not of on or our she so than that the their them then there
    these they this those to too was we were what when where which while who why will with would
    you your yes any all also just about over under up out
    """.split()
)


def tokens(text: str) -> list[str]:
    """Tokens in order, duplicates kept (for callers that care about order)."""
    return [tok for tok in _TOKEN.findall(text.lower()) if len(tok) >= 2 and tok not in STOPWORDS]


def token_set(text: str) -> frozenset[str]:
    return frozenset(tokens(text))


def jaccard(query: frozenset[str], doc: frozenset[str]) -> float:
    """|q & d| / |q | d|, computed from integer counts so every caller gets the same float."""
    if not query or not doc:
        return 0.0
    shared = len(query & doc)
    return jaccard_from_counts(shared, len(query), len(doc))


def jaccard_from_counts(shared: int, query_len: int, doc_len: int) -> float:
    if shared == 0:
        return 0.0
    return shared / (query_len + doc_len - shared)
