"""Term-list phrases compiled into word patterns, and matched against a prompt's views.

Phrase syntax (one string in a term list):

- ``kill yourself``     the words in order, whole words only;
- ``stab|stabs|stabbed`` one word out of several (each option may be a phrase);
- ``{person}``          any member of the list's ``[classes] person`` (phrases allowed;
  ``{a}|{b}|word`` mixes classes and words);
- ``a|the?``             an optional word (``?`` at the end; not as the first word);
- ``~``                 up to three arbitrary words (``kill ~ {person}`` matches
  "kill the old man");
- hyphens and other punctuation split words as in prompts; a hyphenated word also
  matches written as one word (``self-harm`` matches "self harm" and "selfharm"), and
  so does a whole phrase without classes or gaps.

A word matches a prompt word when some reading of it (leetspeak, i/l) has the same
letters with every run at least as long (``kiiill`` matches ``kill``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from sdserve.safety.normalize import Token, runs, term_words

GAP = "~"
GAP_WORDS = 3
# A phrase of words only is also matched as one word, unless that makes too many forms.
_MAX_CONCAT_FORMS = 64

Word = tuple[str, tuple[int, ...]]  # run-length form: (squeezed letters, run counts)
Option = tuple[Word, ...]  # one way to fill an element: consecutive words


class Choice:
    """One element of a pattern: a token sequence out of several options."""

    def __init__(self, options: tuple[Option, ...]) -> None:
        self.options = options
        self.optional = () in options
        # Options by their first word's letters: a token only tries the few that fit.
        self.by_first: dict[str, list[Option]] = {}
        for option in options:
            if option:
                self.by_first.setdefault(option[0][0], []).append(option)

    def candidates(self, token: Token | None) -> Iterator[Option]:
        if token is not None:
            for key in token.forms:
                yield from self.by_first.get(key, ())
        if self.optional:
            yield ()


@dataclass(frozen=True)
class Gap:
    most: int = GAP_WORDS


Element = Choice | Gap


class PatternError(ValueError):
    pass


@dataclass(frozen=True)
class Pattern:
    """One phrase of a term list; ``source`` is the phrase as the operator wrote it."""

    source: str
    elements: tuple[Element, ...]

    def first_keys(self) -> set[str]:
        first = self.elements[0]
        assert isinstance(first, Choice)
        return {option[0][0] for option in first.options}


def _word(text: str) -> Word:
    return runs(text)


def _option(text: str, where: str) -> Option:
    words = term_words(text)
    if not words:
        raise PatternError(f"{where}: empty word in {text!r}")
    return tuple(_word(w) for w in words)


def compile_pattern(
    source: str, classes: Mapping[str, Sequence[str]], where: str = "term list"
) -> list[Pattern]:
    """The pattern for ``source``, plus its one-word spelling where there is one."""
    elements: list[Element] = []
    for part in source.split():
        if part == GAP:
            elements.append(Gap())
            continue
        optional = part.endswith("?")
        options: list[Option] = []
        for alt in part.removesuffix("?").split("|"):
            if alt.startswith("{") and alt.endswith("}"):
                name = alt[1:-1]
                if name not in classes:
                    raise PatternError(f"{where}: unknown class {{{name}}} in {source!r}")
                options.extend(_option(m, where) for m in classes[name])
            elif alt:
                options.append(_option(alt, where))
        # "self-harm" also matches as "selfharm"
        options += [(runs(_expand_all(o)),) for o in options if len(o) > 1]
        if optional:
            options.append(())
        elements.append(Choice(tuple(dict.fromkeys(options))))
    if not elements:
        raise PatternError(f"{where}: empty phrase")
    if isinstance(elements[0], Gap) or isinstance(elements[-1], Gap):
        raise PatternError(f"{where}: {source!r} may not start or end with {GAP}")
    if any(o == () for o in elements[0].options if isinstance(elements[0], Choice)):
        raise PatternError(f"{where}: {source!r} may not start with an optional word")
    out = [Pattern(source, tuple(elements))]
    joined = _one_word(elements)
    if joined:
        out.append(Pattern(source, (Choice(tuple((w,) for w in joined)),)))
    return out


def _one_word(elements: list[Element]) -> list[Word]:
    """``self harm`` -> ``selfharm``: the phrase written without spaces."""
    if any(isinstance(e, Gap) for e in elements):
        return []
    choices = [e.options for e in elements if isinstance(e, Choice)]
    total = 1
    for c in choices:
        total *= len(c)
    words_in_phrase = sum(max(len(o) for o in c) for c in choices)
    if total > _MAX_CONCAT_FORMS or words_in_phrase < 2:
        return []
    out: list[Word] = []
    for combo in itertools.product(*choices):
        out.append(runs("".join(_expand_all(option) for option in combo)))
    return list(dict.fromkeys(out))


def _expand_all(option: Option) -> str:
    return "".join(_expand(w) for w in option)


def _expand(word: Word) -> str:
    key, counts = word
    return "".join(ch * n for ch, n in zip(key, counts, strict=True))


class Matcher:
    """Finds every (pattern, start, end) of a set of patterns in one token view."""

    def __init__(self, patterns: Sequence[Pattern]) -> None:
        self.by_first: dict[str, list[Pattern]] = {}
        for p in patterns:
            for key in p.first_keys():
                self.by_first.setdefault(key, []).append(p)

    def find(self, tokens: Sequence[Token]) -> Iterator[tuple[Pattern, int, int]]:
        for i, tok in enumerate(tokens):
            tried: set[int] = set()
            for key in tok.forms:
                for p in self.by_first.get(key, ()):
                    if id(p) in tried:
                        continue
                    tried.add(id(p))
                    end = _match(tokens, p.elements, 0, i)
                    if end is not None:
                        yield p, i, end


def _match(tokens: Sequence[Token], elements: Sequence[Element], k: int, i: int) -> int | None:
    if k == len(elements):
        return i
    element = elements[k]
    if isinstance(element, Gap):
        for skip in range(element.most + 1):
            if i + skip > len(tokens):
                break
            end = _match(tokens, elements, k + 1, i + skip)
            if end is not None:
                return end
        return None
    for option in element.candidates(tokens[i] if i < len(tokens) else None):
        n = len(option)
        if i + n > len(tokens):
            continue
        if all(tokens[i + j].matches(*option[j]) for j in range(n)):
            end = _match(tokens, elements, k + 1, i + n)
            if end is not None:
                return end
    return None
