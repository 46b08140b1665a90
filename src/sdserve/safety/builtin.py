"""The built-in prompt policy: weighted term lists matched on normalised prompts.

A category's score combines the weights of the distinct phrases that hit, as
independent evidence: ``1 - prod(1 - w)``. One strong phrase (0.9) refuses on its own;
two weak ones (0.4 each, 0.64) do not; three do (0.78). A phrase is ignored where it
lies inside a match of one of the category's exception phrases ("breast cancer",
"nude lipstick"), so context decides, not the bare word.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sdserve.safety.decisions import DEFAULT_THRESHOLD, PolicyDecision, decide
from sdserve.safety.normalize import Normalized, normalize, term_words
from sdserve.safety.patterns import Matcher, Pattern, compile_pattern
from sdserve.safety.segment import Segmenter
from sdserve.safety.terms import CategoryRules, TermListError, TermLists, load_term_lists


@dataclass
class _Compiled:
    name: str
    weights: dict[str, float]
    terms: Matcher
    exceptions: Matcher
    negative_weights: dict[str, float]
    negative_terms: Matcher
    negative_when: Matcher


def _compile(rules: CategoryRules, shared: dict[str, list[str]]) -> _Compiled:
    classes = {k: list(v) for k, v in shared.items()}
    for name, members in rules.classes.items():
        classes.setdefault(name, []).extend(m for m in members if m not in classes[name])
    where = f"category {rules.name}"

    def patterns(phrases: list[str]) -> list[Pattern]:
        out: list[Pattern] = []
        for phrase in phrases:
            try:
                out.extend(compile_pattern(phrase, classes, where))
            except ValueError as exc:
                raise TermListError(str(exc)) from exc
        return out

    return _Compiled(
        rules.name,
        dict(rules.terms),
        Matcher(patterns(list(rules.terms))),
        Matcher(patterns(rules.exceptions)),
        dict(rules.negative_terms),
        Matcher(patterns(list(rules.negative_terms))),
        Matcher(patterns(rules.negative_when)),
    )


def _hits(text: Normalized, terms: Matcher, exceptions: Matcher | None) -> set[str]:
    found: set[str] = set()
    for view in text.views:
        spans = [(s, e) for _, s, e in exceptions.find(view)] if exceptions else []
        for pattern, start, end in terms.find(view):
            # An exception cancels a hit it overlaps ("shoot a portrait" cancels
            # "shoot ~ {person}" in "shoot a portrait of him"), so exceptions are
            # written without ~: a wide one would cancel real hits beside it.
            if any(s < end and start < e for s, e in spans):
                continue
            found.add(pattern.source)
    return found


def _vocabulary(lists: TermLists) -> set[str]:
    """Every word the lists use: what spaced-out letters are split back into."""
    phrases: list[str] = [m for ms in lists.classes.values() for m in ms]
    for r in lists.categories.values():
        phrases += [*r.terms, *r.exceptions, *r.negative_terms, *r.negative_when]
        phrases += [m for ms in r.classes.values() for m in ms]
    words: set[str] = set()
    for phrase in phrases:
        for part in phrase.replace("|", " ").split():
            if not part.startswith("{") and part != "~":
                words.update(term_words(part.removesuffix("?")))
    return words


def combine(weights: list[float]) -> float:
    """Independent evidence: the chance that at least one phrase is right."""
    miss = 1.0
    for w in weights:
        miss *= 1.0 - w
    return 1.0 - miss


class BuiltinPolicy:
    name = "builtin"

    def __init__(self, lists: TermLists, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.threshold = threshold
        self.categories = [_compile(r, lists.classes) for r in lists.categories.values()]
        self.segmenter = Segmenter(_vocabulary(lists))

    @classmethod
    def load(
        cls, operator_dir: Path | None = None, threshold: float = DEFAULT_THRESHOLD
    ) -> BuiltinPolicy:
        return cls(load_term_lists(operator_dir), threshold)

    def scores(
        self, prompt: str, negative_prompt: str = ""
    ) -> tuple[dict[str, float], dict[str, list[str]]]:
        text = normalize(prompt, self.segmenter)
        negative = normalize(negative_prompt, self.segmenter) if negative_prompt.strip() else None
        scores: dict[str, float] = {}
        matches: dict[str, list[str]] = {}
        for cat in self.categories:
            found = {p: cat.weights[p] for p in _hits(text, cat.terms, cat.exceptions)}
            if negative is not None and _hits(text, cat.negative_when, None):
                for p in _hits(negative, cat.negative_terms, None):
                    found[f"negative: {p}"] = cat.negative_weights[p]
            scores[cat.name] = round(min(1.0, combine(list(found.values()))), 4)
            if found:
                matches[cat.name] = sorted(found)
        return scores, matches

    def check(
        self, prompt: str, negative_prompt: str = "", threshold: float | None = None
    ) -> PolicyDecision:
        scores, matches = self.scores(prompt, negative_prompt)
        return decide(
            scores, self.threshold if threshold is None else threshold, "builtin", matches
        )
