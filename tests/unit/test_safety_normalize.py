"""The prompt normaliser: each evasion it undoes, and what it must leave alone."""

# ruff: noqa: RUF001  (look-alike characters are the point of these tests)

from __future__ import annotations

import pytest

from sdserve.safety.homoglyphs import AMBIGUOUS
from sdserve.safety.normalize import clean, compact, normalize, readings, runs
from sdserve.safety.segment import Segmenter


def words(text: str, segment: Segmenter | None = None) -> set[tuple[str, ...]]:
    """Every view of ``text`` as plain word tuples."""
    return {tuple(t.raw for t in view) for view in normalize(text, segment).views}


def any_view_has(text: str, word: str, segment: Segmenter | None = None) -> bool:
    key, counts = runs(word)
    return any(t.matches(key, counts) for view in normalize(text, segment).views for t in view)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ＮＵＤＥ", "nude"),  # fullwidth
        ("𝐧𝐮𝐝𝐞", "nude"),  # mathematical bold
        ("ⓝⓤⓓⓔ", "nude"),  # circled
        ("🅽🆄🅳🅴", "nude"),  # negative squared, not folded by NFKC
        ("NuDe", "nude"),
        ("núdé", "nude"),
        ("nu\u0308de\u0301", "nude"),  # combining marks
        ("n\u200bu\u200cd\u200de\u2060", "nude"),  # zero-width characters
        ("nu\u00adde\ufeff", "nude"),  # soft hyphen, BOM
        ("n\u3164ude", "nude"),  # Hangul filler renders as nothing
        ("пυԁе", "nude"),  # Cyrillic/Greek look-alikes
        ("ᴋɪʟʟ", "kill"),  # small capitals
        ("МАЅЅАСRЕ", "massacre"),  # Cyrillic capitals
        ("ѕυιϲιԁе", "suicide"),  # lunate sigma (NFKC makes it a final sigma, a c)
    ],
)
def test_clean_folds_disguises(text: str, expected: str) -> None:
    assert clean(text) == expected


def test_clean_keeps_ordinary_text() -> None:
    assert clean("A café in Zürich, 1990s!") == f"{AMBIGUOUS.join(['a'])} cafe in zurich, 1990s!"
    assert clean("tab\tand\nnewline") == "tab and newline"


def test_capital_i_and_palochka_read_as_i_or_l() -> None:
    assert clean("KIlI") == f"k{AMBIGUOUS}l{AMBIGUOUS}"
    assert {"kill", "kili", "kiii"} <= readings(clean("kiII"))
    assert "kill" in readings(clean("кіӏӏ"))


@pytest.mark.parametrize(
    ("raw", "reading"),
    [
        ("k1ll", "kill"),
        ("ki11", "kill"),
        ("n00d3", "noode"),
        ("@ss", "ass"),
        ("$3x", "sex"),
        ("5u1c1d3", "suicide"),
        ("7orture", "torture"),
        ("8lood", "blood"),
        ("|<", "l<"),
    ],
)
def test_leetspeak_readings(raw: str, reading: str) -> None:
    assert reading in readings(raw)


def test_readings_keep_the_word_as_written() -> None:
    assert "1488" in readings("1488")
    assert readings("plain") == {"plain"}


def test_many_ambiguous_characters_stay_cheap() -> None:
    # 2**n readings would explode; past the cap only all-i and all-l are tried.
    out = readings("1" * 40)
    assert "i" * 40 in out and "l" * 40 in out
    assert len(out) <= 4


@pytest.mark.parametrize(
    "text",
    ["k i l l", "k.i.l.l", "k-i-l-l", "k_i_l_l", "k*i*l*l", "k . i . l . l", "k·i·l·l"],
)
def test_spaced_and_punctuated_letters_join(text: str) -> None:
    assert compact(clean(text)) == "kill"


def test_a_different_separator_ends_a_spaced_word() -> None:
    assert compact(clean("k i l l  t h e m")) == "kill  them"
    assert compact(clean("w a n t  t o  d i e")) == "want  to  die"


def test_punctuation_inside_a_word_is_dropped() -> None:
    assert compact(clean("ki.ll self-harm n_u_d_e")) == "kill selfharm nude"


def test_ordinary_sentences_are_not_joined() -> None:
    assert compact(clean("a cat on a mat")) == "a cat on a mat"
    assert compact(clean("plan a b")) == "plan a b"


def test_symbols_are_letters_only_in_their_own_view() -> None:
    views = words("kill! @ss")
    assert ("kill", "ss") in views  # punctuation reading
    assert ("kill!", "@ss") in views  # leetspeak reading


def test_repeated_letters_match_by_run_length() -> None:
    assert any_view_has("kiiiilllll", "kill")
    assert any_view_has("nuuuuude", "nude")
    assert not any_view_has("bobs", "boobs")  # fewer letters is another word
    assert not any_view_has("skill", "kill")  # whole words only


def test_segmenter_splits_spaced_runs_into_known_words() -> None:
    seg = Segmenter(["xxx", "porn", "arabs", "cockroaches", "sieg", "heil", "leg"])
    assert seg("xxxporn") == "xxx porn"
    assert seg("qzvk") == "qzvk"  # letters no word explains stay together
    assert Segmenter(["naked"])("anaked") == "a naked"
    assert seg("arabscockroaches") == "arabs cockroaches"
    assert seg("a5!e9") == "a 5!e9"  # "a sieg" beats "as leg": longer words win
    assert seg("jewwwws") == "jewwwws"
    assert Segmenter(["jews", "all"])("alljewwwws") == "all jewwwws"


def test_segmented_view_only_for_spaced_runs() -> None:
    seg = Segmenter(["the", "rapist", "naked"])
    assert ("therapist",) in words("therapist", seg)
    assert all(view != ("the", "rapist") for view in words("therapist", seg))
    assert ("a", "naked", "woman") in words("a n a k e d woman", seg)
