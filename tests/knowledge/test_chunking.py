"""Chunking by tokens and by headings: sizes, overlap, boundaries and titles."""

from __future__ import annotations

import itertools

import pytest

from knowledge.chunking import chunk_text, count_tokens

SENTENCES = [f"Sentence number {i} talks about topic {i} in a few plain words." for i in range(60)]
TEXT = "\n\n".join(" ".join(SENTENCES[i : i + 3]) for i in range(0, 60, 3))


def tokens(text: str) -> int:
    return sum(count_tokens(text.split()))


def test_windows_respect_size_and_cover_everything() -> None:
    pieces = chunk_text(TEXT, strategy="tokens", size=64, overlap=0)
    assert len(pieces) > 5
    assert all(tokens(p.text) <= 64 for p in pieces)
    assert [p.position for p in pieces] == list(range(len(pieces)))
    joined = " ".join(p.text for p in pieces).split()
    assert joined == TEXT.split()  # no overlap: every word once, in order


def test_cuts_prefer_sentence_and_paragraph_ends() -> None:
    pieces = chunk_text(TEXT, strategy="tokens", size=64, overlap=0)
    assert all(p.text.rstrip().endswith(".") for p in pieces)


def test_overlap_repeats_the_end_of_the_previous_window() -> None:
    pieces = chunk_text(TEXT, strategy="tokens", size=64, overlap=16)
    for before, after in itertools.pairwise(pieces):
        shared = 0
        words_before, words_after = before.text.split(), after.text.split()
        for n in range(1, len(words_after)):
            if words_before[-n:] == words_after[:n]:
                shared = n
        assert shared > 0
        assert sum(count_tokens(words_after[:shared])) <= 16


def test_headings_split_sections_with_their_path_as_title() -> None:
    text = (
        "# Manual\n\nIntro text.\n\n## Install\n\nDrill two holes.\n\n### Wiring\n\nConnect R and W.\n\n"
        "## Troubleshooting\n\n```\n# not a heading inside code\n```\n\nE12 means no boiler.\n"
    )
    pieces = chunk_text(text, fmt="markdown", strategy="headings", size=128, overlap=0)
    assert [p.title for p in pieces] == [
        "Manual",
        "Manual > Install",
        "Manual > Install > Wiring",
        "Manual > Troubleshooting",
    ]
    assert pieces[2].text.startswith("### Wiring") and "Connect R and W." in pieces[2].text
    assert "# not a heading inside code" in pieces[3].text


def test_long_sections_are_cut_and_keep_their_title() -> None:
    text = "# Guide\n\n## Long part\n\n" + TEXT
    pieces = chunk_text(text, fmt="markdown", strategy="headings", size=48, overlap=8)
    assert len(pieces) > 3
    assert all(p.title == "Guide > Long part" for p in pieces)
    assert all(tokens(p.text) <= 48 for p in pieces)


def test_headings_strategy_without_headings_cuts_by_tokens() -> None:
    assert chunk_text(TEXT, strategy="headings", size=64, overlap=0) == chunk_text(
        TEXT, strategy="tokens", size=64, overlap=0
    )


def test_token_windows_carry_the_heading_they_start_under() -> None:
    text = "# A\n\n" + " ".join(SENTENCES[:10]) + "\n\n# B\n\n" + " ".join(SENTENCES[10:20])
    pieces = chunk_text(text, fmt="markdown", strategy="tokens", size=48, overlap=0)
    assert pieces[0].title == "A" and pieces[-1].title == "B"


def test_empty_text_and_bad_settings() -> None:
    assert chunk_text("   \n ", strategy="tokens") == []
    with pytest.raises(ValueError):
        chunk_text("x", strategy="sentences")
    with pytest.raises(ValueError):
        chunk_text("x", size=2)


def test_a_word_longer_than_a_window_is_kept_whole() -> None:
    pieces = chunk_text("short " + "x" * 400 + " tail", strategy="tokens", size=16, overlap=4)
    assert any("x" * 400 in p.text for p in pieces)
