"""FirstSeen answers exactly like a dict of first values, fingerprint collisions included."""

from hypothesis import given, settings
from hypothesis import strategies as st

from distillation_pipeline.lib import firstseen
from distillation_pipeline.lib.firstseen import FirstSeen


def reference(pairs: list[tuple[str, str]]) -> list[str | None]:
    seen: dict[str, str] = {}
    answers = []
    for key, value in pairs:
        answers.append(seen.get(key))
        seen.setdefault(key, value)
    return answers


ids = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)  # tabs and newlines too


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(ids, ids), max_size=200))
def test_answers_like_a_dict(pairs: list[tuple[str, str]]) -> None:
    index = FirstSeen()
    answers = []
    for key, value in pairs:
        before = index.get(key)  # looking does not remember
        answers.append(index.first(key, value))
        assert before == answers[-1]
    assert answers == reference(pairs)
    assert len(index) == len({k for k, _ in pairs})


def test_grows_past_its_first_table_and_keeps_every_answer() -> None:
    index = FirstSeen()
    n = 3 * firstseen._START_SLOTS
    assert all(index.first(f"id-{i}", f"ev-{i}") is None for i in range(n))
    assert all(index.first(f"id-{i}", "later") == f"ev-{i}" for i in range(0, n, 7))
    assert len(index) == n


class CollidingKey(str):
    """A str whose hash is the same for every value: every id lands on one fingerprint."""

    def __hash__(self) -> int:
        return 42


def test_fingerprint_collisions_are_told_apart() -> None:
    index = FirstSeen()
    keys = [CollidingKey(f"k{i}") for i in range(50)]
    assert [index.first(k, f"v{i}") for i, k in enumerate(keys)] == [None] * 50
    assert [index.first(k, "again") for k in keys] == [f"v{i}" for i in range(50)]
    assert index.get(CollidingKey("never")) is None and index.get(keys[7]) == "v7"
