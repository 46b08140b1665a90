"""Term lists: the TOML files shipped in ``sdserve/safety/data`` plus an operator's own.

One file per category (``violence.toml`` ...), and ``classes.toml`` for word classes
every category may use (``{person}``). An operator's folder
(``SDSERVE_PROMPT_POLICY_TERMS_DIR``) holds files of the same shape; each one either
extends the built-in list of its category (the default) or replaces it
(``mode = "replace"``), and a file for a new category adds that category. See
docs/safety.md for the format.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

CLASSES_FILE = "classes.toml"


class TermListError(ValueError):
    """A term list that cannot be used; names the file and the problem."""


@dataclass
class CategoryRules:
    name: str
    description: str = ""
    classes: dict[str, list[str]] = field(default_factory=dict)
    terms: dict[str, float] = field(default_factory=dict)
    exceptions: list[str] = field(default_factory=list)
    # Terms that count in the negative prompt ("clothes" there asks for their absence),
    # only when the prompt itself matches one of ``negative_when``.
    negative_terms: dict[str, float] = field(default_factory=dict)
    negative_when: list[str] = field(default_factory=list)

    def extend(self, other: CategoryRules) -> None:
        if other.description:
            self.description = other.description
        _merge_classes(self.classes, other.classes)
        _merge_weights(self.terms, other.terms)
        self.exceptions.extend(e for e in other.exceptions if e not in self.exceptions)
        _merge_weights(self.negative_terms, other.negative_terms)
        self.negative_when.extend(w for w in other.negative_when if w not in self.negative_when)


@dataclass
class TermLists:
    categories: dict[str, CategoryRules]
    classes: dict[str, list[str]]


def _merge_classes(into: dict[str, list[str]], more: dict[str, list[str]]) -> None:
    for name, members in more.items():
        have = into.setdefault(name, [])
        have.extend(m for m in members if m not in have)


def _merge_weights(into: dict[str, float], more: dict[str, float]) -> None:
    # A weight of 0 in an operator's file takes a built-in phrase out.
    for phrase, weight in more.items():
        if weight == 0:
            into.pop(phrase, None)
        else:
            into[phrase] = weight


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise TermListError(f"{where}: expected a list of non-empty strings")
    return [v.strip() for v in value]


def _weights(value: Any, where: str) -> dict[str, float]:
    if not isinstance(value, dict):
        raise TermListError(f'{where}: expected a table of "phrase" = weight')
    out: dict[str, float] = {}
    for phrase, weight in value.items():
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise TermListError(f"{where}: weight of {phrase!r} must be a number in [0, 1]")
        if not (0.0 <= weight <= 1.0) or math.isnan(weight):
            raise TermListError(f"{where}: weight of {phrase!r} is {weight}, not in [0, 1]")
        out[phrase.strip()] = float(weight)
    return out


def _classes(value: Any, where: str) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        raise TermListError(f"{where}: [classes] must be a table of name = [members]")
    return {name: _strings(m, f"{where} class {name}") for name, m in value.items()}


_KNOWN_KEYS = {"category", "description", "mode", "classes", "terms", "exceptions", "negative"}


def parse_file(text: str, where: str, default_name: str) -> tuple[CategoryRules, str]:
    """One category file -> (rules, mode)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TermListError(f"{where}: not valid TOML: {exc}") from exc
    unknown = set(data) - _KNOWN_KEYS
    if unknown:
        raise TermListError(f"{where}: unknown keys {sorted(unknown)}")
    mode = data.get("mode", "extend")
    if mode not in ("extend", "replace"):
        raise TermListError(f'{where}: mode must be "extend" or "replace", not {mode!r}')
    negative = data.get("negative", {})
    if not isinstance(negative, dict) or set(negative) - {"when", "terms"}:
        raise TermListError(f"{where}: [negative] takes only `when` and `terms`")
    name = data.get("category", default_name)
    if not isinstance(name, str) or not name.strip():
        raise TermListError(f"{where}: category must be a non-empty string")
    rules = CategoryRules(
        name=name.strip().lower(),
        description=str(data.get("description", "")),
        classes=_classes(data.get("classes", {}), where),
        terms=_weights(data.get("terms", {}), f"{where} [terms]"),
        exceptions=_strings(data.get("exceptions", []), f"{where} exceptions"),
        negative_terms=_weights(negative.get("terms", {}), f"{where} [negative.terms]"),
        negative_when=_strings(negative.get("when", []), f"{where} [negative] when"),
    )
    return rules, mode


def _builtin_files() -> list[tuple[str, str]]:
    folder = resources.files("sdserve.safety") / "data"
    return sorted(
        (entry.name, entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".toml")
    )


def _operator_files(folder: Path) -> list[tuple[str, str]]:
    if not folder.is_dir():
        raise TermListError(f"term lists folder {folder} does not exist or is not a folder")
    return [(p.name, p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.toml"))]


def load_term_lists(operator_dir: Path | None = None) -> TermLists:
    """The built-in lists, extended or replaced by the operator's folder if given."""
    lists = TermLists({}, {})
    layers = [("built-in", _builtin_files())]
    if operator_dir is not None:
        layers.append((str(operator_dir), _operator_files(operator_dir)))
    for origin, files in layers:
        for filename, text in files:
            where = f"{origin}/{filename}"
            rules, mode = parse_file(text, where, filename.removesuffix(".toml"))
            if filename == CLASSES_FILE:
                if mode == "replace":
                    lists.classes = {}
                _merge_classes(lists.classes, rules.classes)
                continue
            if mode == "replace" or rules.name not in lists.categories:
                lists.categories[rules.name] = rules
            else:
                lists.categories[rules.name].extend(rules)
    return lists
