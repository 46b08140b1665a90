"""Write bench/data/prompt_policy_eval.jsonl from bench/data/prompt_policy_base.txt.

Every blocked base prompt is written as is ("plain") and once per evasion kind
("obfuscated:<kind>"), disguising only its [bracketed] words, the ones an evader
would expect a filter to catch. Benign-tricky prompts with bracketed words also get
two disguised variants: normalising must not turn them into refusals. The obfuscator
is seeded per split (dev and held-out use different seeds), so the file is
reproducible and the held-out variants were never looked at while tuning.

    python bench/make_prompt_policy_eval.py [--check]
"""

# ruff: noqa: RUF001  (look-alike characters are the point of this file)

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections.abc import Callable
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
BASE = DATA / "prompt_policy_base.txt"
EVAL = DATA / "prompt_policy_eval.jsonl"
SEEDS = {"dev": 20240901, "heldout": 77031}

ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"]
ACCENTED = {
    "a": "àáâäåā",
    "e": "èéêëē",
    "i": "ìíîïī",
    "o": "òóôöõō",
    "u": "ùúûüū",
    "n": "ñń",
    "c": "çć",
    "s": "śşš",
    "y": "ýÿ",
    "z": "źżž",
}
COMBINING = ["\u0301", "\u0308", "\u0330", "\u0335", "\u0336"]
HOMOGLYPHS = {
    "a": "аα",
    "b": "ЬƅВ",
    "c": "сϲ",
    "d": "ԁ",
    "e": "еε",
    "g": "ɡ",
    "h": "һН",
    "i": "іι",
    "j": "ј",
    "k": "кκ",
    "l": "ӏ",
    "m": "М",
    "n": "η",
    "o": "оοσ",
    "p": "рρ",
    "s": "ѕ",
    "t": "тτ",
    "u": "υ",
    "v": "ν",
    "w": "ԝω",
    "x": "хχ",
    "y": "уγ",
}
LEET = {
    "a": "4@",
    "b": "8",
    "e": "3",
    "g": "9",
    "i": "1!",
    "l": "1|",
    "o": "0",
    "s": "5$",
    "t": "7+",
}
# Unicode blocks NFKC folds back to ASCII: fullwidth, math bold, double-struck, circled.
STYLES = [0xFF41, 0x1D41A, 0x1D552, 0x24D0]


def _styled(word: str, rng: random.Random) -> str:
    base = rng.choice(STYLES)
    return "".join(chr(base + ord(c) - 97) if "a" <= c <= "z" else c for c in word)


def _case(word: str, rng: random.Random) -> str:
    out = "".join(c.upper() if rng.random() < 0.5 else c for c in word)
    return out if out != word else word.upper()


def _replace(table: dict[str, str], p: float) -> Callable[[str, random.Random], str]:
    def apply(word: str, rng: random.Random) -> str:
        spots = [i for i, c in enumerate(word) if c in table]
        if not spots:
            return word
        chosen = [i for i in spots if rng.random() < p] or [rng.choice(spots)]
        chars = list(word)
        for i in chosen:
            chars[i] = rng.choice(table[chars[i]])
        return "".join(chars)

    return apply


def _accents(word: str, rng: random.Random) -> str:
    if rng.random() < 0.5:
        return _replace(ACCENTED, 0.6)(word, rng)
    return "".join(c + rng.choice(COMBINING) if rng.random() < 0.5 else c for c in word)


def _zero_width(word: str, rng: random.Random) -> str:
    out = word[0]
    for c in word[1:]:
        if rng.random() < 0.6:
            out += rng.choice(ZERO_WIDTH)
        out += c
    return out if out != word else word[0] + ZERO_WIDTH[0] + word[1:]


def _letters(word: str) -> list[str]:
    """Characters with their combining marks attached, so spacing keeps accents on."""
    return re.findall(r".[\u0300-\u036f]*", word)


def _spaced(word: str, rng: random.Random) -> str:
    return " ".join(_letters(word))


def _punctuated(word: str, rng: random.Random) -> str:
    return rng.choice([".", "-", "_", "*", "·", ". "]).join(_letters(word))


def _repeated(word: str, rng: random.Random) -> str:
    letters = [i for i, c in enumerate(word) if c.isalpha()]
    chosen = set(rng.sample(letters, k=min(len(letters), rng.randint(1, 2))))
    return "".join(c * (rng.randint(3, 6) if i in chosen else 1) for i, c in enumerate(word))


CHAR_KINDS: dict[str, Callable[[str, random.Random], str]] = {
    "nfkc": _styled,
    "case": _case,
    "accents": _accents,
    "zero-width": _zero_width,
    "homoglyph": _replace(HOMOGLYPHS, 0.5),
    "leet": _replace(LEET, 0.7),
    "repeated": _repeated,
}
SPACING_KINDS: dict[str, Callable[[str, random.Random], str]] = {
    "spaced": _spaced,
    "punctuated": _punctuated,
}
KINDS = [*CHAR_KINDS, *SPACING_KINDS, "mixed"]


def disguise(segment: str, kind: str, rng: random.Random) -> str:
    """One bracketed segment (one or more words) disguised with one evasion kind."""
    if kind == "mixed":  # a character trick and a spacing trick together
        first = rng.choice(["leet", "homoglyph", "case", "accents", "repeated"])
        segment = disguise(segment, first, rng)
        return disguise(segment, rng.choice(list(SPACING_KINDS)), rng)
    fn = CHAR_KINDS.get(kind) or SPACING_KINDS[kind]
    joiner = "  " if kind in SPACING_KINDS else " "
    return joiner.join(fn(w, rng) for w in segment.split(" "))


def variant(text: str, kind: str, rng: random.Random) -> str:
    return re.sub(r"\[([^\]]+)\]", lambda m: disguise(m.group(1), kind, rng), text)


def plain(text: str) -> str:
    return text.replace("[", "").replace("]", "")


def read_base() -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    expected = split = kind = ""
    for line in BASE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("## "):
            expected, split, kind = line[3:].split()
        elif line and not line.startswith("#"):
            rows.append({"base": line, "expected": expected, "split": split, "kind": kind})
    return rows


def build() -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    rngs = {split: random.Random(seed) for split, seed in SEEDS.items()}
    for i, row in enumerate(read_base()):
        rng = rngs[row["split"]]
        base = row["base"]
        common = {"expected": row["expected"], "split": row["split"], "base_id": f"b{i:03d}"}
        if row["expected"] == "benign":
            out.append({"text": plain(base), "variant": row["kind"], **common})
            if "[" in base:
                for kind in rng.sample(KINDS, 2):
                    out.append(
                        {
                            "text": variant(base, kind, rng),
                            "variant": f"{row['kind']}:obfuscated:{kind}",
                            **common,
                        }
                    )
            continue
        out.append({"text": plain(base), "variant": "plain", **common})
        for kind in KINDS:
            out.append(
                {"text": variant(base, kind, rng), "variant": f"obfuscated:{kind}", **common}
            )
    return out


def render(rows: list[dict[str, str]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    args = parser.parse_args()
    text = render(build())
    if args.check:
        if not EVAL.exists() or EVAL.read_text(encoding="utf-8") != text:
            sys.exit(f"{EVAL} is stale: run python bench/make_prompt_policy_eval.py")
        return
    EVAL.write_text(text, encoding="utf-8")
    print(f"wrote {EVAL} ({text.count(chr(10))} prompts)")


if __name__ == "__main__":
    main()
