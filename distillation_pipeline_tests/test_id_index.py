"""The export's id index answers exactly like a dict of first evidence ids, and its table
(what the next run looks up) holds every first copy, whatever the fingerprints do."""

import tempfile
from io import BytesIO
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from distillation_pipeline.exports import id_table
from distillation_pipeline.exports.id_table import IdIndex, IdTable, fingerprint
from distillation_pipeline_tests.test_firstseen import reference  # a dict of first values: the oracle

ids = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)  # tabs and newlines too


def offer_all(index: IdIndex, pairs: list[tuple[str, str]], fp=fingerprint) -> list[str | None]:
    answers = []
    for position, (key, evidence) in enumerate(pairs):
        first = index.lookup(key, fp(key))
        if first is None:
            index.add(key, fp(key), ("2026/01/01/s.jsonl", position), evidence)
        answers.append(first)
    return answers


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(ids, ids), max_size=200), st.sampled_from(["real", "colliding"]))
def test_answers_like_a_dict(pairs: list[tuple[str, str]], fingerprints: str) -> None:
    fp = fingerprint if fingerprints == "real" else (lambda key: (len(key) % 2) << 40)  # same slot, same tag
    with tempfile.TemporaryFile() as details:
        index = IdIndex(None, details, None)
        assert offer_all(index, pairs, fp) == reference(pairs)
        assert len(index) == len({key for key, _ in pairs})


def test_grows_and_the_table_it_writes_finds_every_first_copy(tmp_path: Path) -> None:
    n = 5 * id_table._START_SLOTS
    pairs = [(f"rag-{i:024x}", f"ev-{i}") for i in range(n)] + [(f"rag-{i:024x}", "later") for i in range(0, n, 7)]
    table_path, details_path = tmp_path / "ids.table", tmp_path / "ids.details.jsonl"
    with open(details_path, "w+b") as details:  # read back while written, as the state writer allows
        table = BytesIO()
        index = IdIndex(table, details, None)
        assert offer_all(index, pairs) == reference(pairs)
        index.finish()
    table_path.write_bytes(table.getvalue())
    loaded = IdTable(table_path, details_path)
    assert len(loaded) == n
    for i in range(0, n, 13):
        key = f"rag-{i:024x}"
        (where, evidence, _slot) = loaded.first(key, fingerprint(key))  # type: ignore[misc]
        assert where == ("2026/01/01/s.jsonl", i) and evidence == f"ev-{i}"
    assert loaded.first("rag-never", fingerprint("rag-never")) is None
    loaded.close()
