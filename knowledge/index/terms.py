"""Which of a query's words a lexical search matches (both databases).

Ranking costs one score per matching passage, and a word found in most passages adds almost
nothing to BM25 (its IDF is about zero). So a word in more than half the passages is left out,
and further words, commonest first, while the rest would still match more than ``MAX_RANKED``
passages; the rarest word always stays.
"""

from __future__ import annotations

from collections.abc import Mapping

MAX_RANKED = 2000


def rarest_terms(shares: Mapping[str, float], passages: float) -> list[str]:
    """The words to match, rarest first: ``shares`` maps each word to the share of ``passages``
    that hold it."""
    kept = sorted(shares, key=lambda term: shares[term])
    while len(kept) > 1 and (
        shares[kept[-1]] > 0.5 or sum(shares[term] for term in kept) * passages > MAX_RANKED
    ):
        kept.pop()
    return kept
