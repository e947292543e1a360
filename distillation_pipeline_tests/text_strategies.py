"""Hypothesis texts for the oracle tests of the text scans (secrets, cited paths)."""

from collections.abc import Sequence

from hypothesis import strategies as st


def joined_texts(fragments: Sequence[str], alphabet: str, separators: Sequence[str], max_parts: int) -> st.SearchStrategy[str]:
    """Up to ``max_parts`` pieces, each followed by one of ``separators``; a piece is one of
    ``fragments``, a short text over ``alphabet``, or any short text."""
    pieces = st.one_of(st.sampled_from(fragments), st.text(alphabet=alphabet, max_size=12), st.text(max_size=6))

    @st.composite
    def texts(draw: st.DrawFn) -> str:
        parts = draw(st.lists(pieces, max_size=max_parts))
        after = draw(st.lists(st.sampled_from(separators), min_size=len(parts), max_size=len(parts)))
        return "".join(part + separator for part, separator in zip(parts, after))

    return texts()
