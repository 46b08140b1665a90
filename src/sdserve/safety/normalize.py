"""Fold a prompt into the few word sequences a term list is matched against.

Evasions are undone in two steps:

1. ``clean``: one canonical string. NFKC (fullwidth, math letters, circled letters),
   invisible characters removed (zero-width spaces and joiners, soft hyphens, bidi
   marks, Hangul fillers, tag characters), look-alikes folded to Latin
   (``homoglyphs``), case folded, accents stripped.
2. ``views``: that string read several ways, each a list of ``Token``:

   - punctuation as word breaks, or the leetspeak symbols ``@ $ ! | +`` as letters;
   - as written, or *compacted*: runs of single letters with one repeated separator
     joined (``k i l l``, ``k.i.l.l``, ``n_u_d_e``) and punctuation inside a word
     dropped (``ki.ll``, ``self-harm`` -> ``selfharm``); compacted once more with
     each joined run split into known words (``segment``: "x x x p o r n" ->
     "xxx porn", "a n a k e d" -> "a naked").

   Each token carries every reading of its leetspeak digits and symbols
   (``k1ll`` -> ``kill`` and ``kiil``; ``1`` and ``|`` read as ``i`` or ``l``).

Repeated letters are not squeezed here: the matcher compares run lengths
(``kiiill`` matches ``kill``, ``bobs`` does not match ``boobs``).
"""

from __future__ import annotations

import functools
import itertools
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

from sdserve.safety.homoglyphs import AMBIGUOUS, LOWER_TABLE, UPPER_TABLE

# Characters that render as nothing but are not format characters (category Cf).
_INVISIBLE_LETTERS = {0x115F, 0x1160, 0x3164, 0xFFA0, 0x2800, 0x180E}
_DROP_CATEGORIES = {"Cf", "Mn", "Me", "Cc", "Cs"}

LEET: dict[str, str] = {
    "0": "o",
    "3": "e",
    "4": "a",
    "5": "s",
    "6": "g",
    "7": "t",
    "8": "b",
    "9": "g",
    "@": "a",
    "$": "s",
    "+": "t",
    "€": "e",
}
# Read as either i or l.
AMBIGUOUS_LEET = frozenset({"1", "!", "|", AMBIGUOUS})
SYMBOLS = "@$!|+€"
# Beyond this many i/l-ambiguous characters in one word, only the all-i and all-l
# readings are tried (2**n readings would let one long word cost too much).
_MAX_AMBIGUOUS = 5

_WORD = "a-z0-9" + AMBIGUOUS
_CLASSES = {False: f"[{_WORD}]", True: f"[{_WORD}{re.escape(SYMBOLS)}]"}


def _drop(ch: str) -> bool:
    if ord(ch) in _INVISIBLE_LETTERS:
        return True
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch) in _DROP_CATEGORIES


def clean(text: str) -> str:
    """The canonical string: lower-case Latin, invisibles and accents gone."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(" " if ch.isspace() else ch for ch in text if not _drop(ch))
    text = text.translate(UPPER_TABLE).casefold()
    # Accents: decompose, drop the combining marks, recompose what is left.
    text = unicodedata.normalize("NFD", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) not in ("Mn", "Me"))
    text = unicodedata.normalize("NFC", text).translate(LOWER_TABLE)
    return text


def _spaced_letters(letter: str) -> re.Pattern[str]:
    # Three or more single letters, each pair split by the same 1-3 non-letters:
    # "k i l l", "k.i.l.l", "k - i - l - l". A different separator ends the run, so
    # "k i l l  t h e m" (two spaces between words) stays two words.
    sep = f"(?:(?!{letter}).){{1,3}}"
    return re.compile(
        f"(?<!{letter}){letter}(?P<sep>{sep}){letter}(?:(?P=sep){letter})+(?!{letter})"
    )


def _spaced_pairs(letter: str) -> re.Pattern[str]:
    # Two spaced letters between wide gaps, a short word in a spaced-out phrase:
    # "t o" in "d e a t h  t o  t h e m". Alone, "a b" is left as it is.
    sep = f"(?:(?!{letter})\\S){{0,2}}\\s?"
    return re.compile(
        f"(?:(?<=\\s\\s)|(?<=^)){letter}{sep}{letter}(?=\\s\\s|$)"
        f"|(?<=\\s\\s){letter}{sep}{letter}(?!{letter})"
    )


def _inner_punct(letter: str) -> re.Pattern[str]:
    # One or two non-letters (never a space) between letters: "ki.ll", "self-harm".
    return re.compile(f"(?<={letter})(?:(?!{letter})\\S){{1,2}}(?={letter})")


_SPACED = {sym: _spaced_letters(cls) for sym, cls in _CLASSES.items()}
_PAIRS = {sym: _spaced_pairs(cls) for sym, cls in _CLASSES.items()}
_INNER = {sym: _inner_punct(cls) for sym, cls in _CLASSES.items()}
_TOKENS = {sym: re.compile(f"{cls}+") for sym, cls in _CLASSES.items()}


def compact(
    text: str, symbols_are_letters: bool = False, segment: Callable[[str], str] | None = None
) -> str:
    """Join spaced-out letters and drop punctuation inside words.

    ``segment`` splits a joined run back into words ("a n a k e d" -> "a naked",
    "x x x p o r n" -> "xxx porn"); without it a run becomes one word.
    """
    letter = re.compile(_CLASSES[symbols_are_letters])

    def join(m: re.Match[str]) -> str:
        joined = "".join(letter.findall(m.group(0)))
        return segment(joined) if segment else joined

    text = _SPACED[symbols_are_letters].sub(join, text)
    text = _PAIRS[symbols_are_letters].sub(lambda m: "".join(letter.findall(m.group(0))), text)
    return _INNER[symbols_are_letters].sub("", text)


_RUN = re.compile(r"(.)\1*", re.S)


def runs(word: str) -> tuple[str, tuple[int, ...]]:
    """``kiiill`` -> (``kil``, (1, 3, 2)): letters with repeats squeezed, and the counts."""
    found = [(m.group(1), m.end() - m.start()) for m in _RUN.finditer(word)]
    return "".join(ch for ch, _ in found), tuple(n for _, n in found)


def readings(raw: str) -> set[str]:
    """Every reading of one word: as written, and with leetspeak decoded."""
    if not any(ch in LEET or ch in AMBIGUOUS_LEET for ch in raw):
        return {raw}
    out = {raw.replace(AMBIGUOUS, "i")}
    decoded = "".join(LEET.get(ch, ch) for ch in raw)
    spots = [i for i, ch in enumerate(decoded) if ch in AMBIGUOUS_LEET]
    if len(spots) > _MAX_AMBIGUOUS:
        choices: list[tuple[str, ...]] = [("i",) * len(spots), ("l",) * len(spots)]
    else:
        choices = list(itertools.product("il", repeat=len(spots)))
    for choice in choices:
        chars = list(decoded)
        for spot, letter in zip(spots, choice, strict=True):
            chars[spot] = letter
        out.add("".join(chars))
    return out


@dataclass(frozen=True)
class Token:
    """One word of a view, with its run-length form per reading for fast matching."""

    raw: str
    forms: dict[str, list[tuple[int, ...]]] = field(hash=False, compare=False)

    @classmethod
    def of(cls, raw: str) -> Token:
        return _token(raw)

    def matches(self, key: str, counts: tuple[int, ...]) -> bool:
        """True when some reading has the word's letters, each run at least as long."""
        for have in self.forms.get(key, ()):
            if all(h >= w for h, w in zip(have, counts, strict=True)):
                return True
        return False


@functools.lru_cache(maxsize=8192)
def _token(raw: str) -> Token:
    # Prompts repeat words across views and requests; tokens are never changed.
    forms: dict[str, list[tuple[int, ...]]] = {}
    for reading in readings(raw):
        key, counts = runs(reading)
        forms.setdefault(key, []).append(counts)
    return Token(raw, forms)


@dataclass(frozen=True)
class Normalized:
    text: str
    clean: str
    views: tuple[tuple[Token, ...], ...]


def tokenize(text: str, symbols_are_letters: bool = False) -> list[str]:
    return _TOKENS[symbols_are_letters].findall(text)


def normalize(text: str, segment: Callable[[str], str] | None = None) -> Normalized:
    """All views of ``text``; ``segment`` (a ``Segmenter``) adds views where spaced-out
    runs are split into words rather than joined into one."""
    canonical = clean(text)
    seen: set[tuple[str, ...]] = set()
    views: list[tuple[Token, ...]] = []
    for symbols_are_letters in (False, True):
        variants = [canonical, compact(canonical, symbols_are_letters)]
        if segment is not None:
            variants.append(compact(canonical, symbols_are_letters, segment))
        for variant in variants:
            raw = tuple(tokenize(variant, symbols_are_letters))
            if raw in seen:
                continue
            seen.add(raw)
            views.append(tuple(Token.of(w) for w in raw))
    return Normalized(text, canonical, tuple(views))


def term_words(text: str) -> list[str]:
    """A term-list word or phrase as words (no leetspeak: operators write plain text)."""
    text = unicodedata.normalize("NFKD", text.casefold())
    return tokenize("".join(ch for ch in text if not unicodedata.combining(ch)))
