"""Look-alike characters folded onto the Latin letters they imitate.

NFKC already folds fullwidth forms, mathematical alphanumerics and circled letters;
these tables cover what it leaves: Cyrillic, Greek, Armenian and small-capital
letters that *look* Latin. Unicode's confusables skeleton (TR39) is not used as is
because it also rewrites plain ASCII (``m`` -> ``rn``, ``l`` -> ``I``) and maps some
look-alikes to the wrong letter for this purpose (palochka ``ӏ`` looks like ``l``).

``AMBIGUOUS`` stands for a character that reads as either ``i`` or ``l`` (capital
``I``, ``1``, ``|``, palochka): the matcher tries both.
"""

# ruff: noqa: RUF001, RUF002, RUF003  (look-alike characters are the point of this file)

from __future__ import annotations

AMBIGUOUS = "\ue000"  # private use: never produced by normal text after folding

# Applied before case folding: capitals whose lowercase forms stop looking Latin
# (Greek capital eta looks like H, its lowercase like n).
UPPER: dict[str, str] = {
    "I": AMBIGUOUS,
    "Ι": AMBIGUOUS,  # Greek capital iota
    "І": AMBIGUOUS,  # Cyrillic capital byelorussian-ukrainian i
    "Ӏ": AMBIGUOUS,  # Cyrillic palochka
    "ǀ": AMBIGUOUS,  # Latin letter dental click
    # Final sigma looks like c; NFKC turns the lunate sigma (also a c) into it, and
    # case folding would turn it into σ (an o).
    "ς": "c",
    "ϲ": "c",
    "Α": "a",
    "Β": "b",
    "Ε": "e",
    "Ζ": "z",
    "Η": "h",
    "Κ": "k",
    "Μ": "m",
    "Ν": "n",
    "Ο": "o",
    "Ρ": "p",
    "Τ": "t",
    "Υ": "y",
    "Χ": "x",
    "А": "a",
    "В": "b",
    "Е": "e",
    "З": "3",
    "К": "k",
    "М": "m",
    "Н": "h",
    "О": "o",
    "Р": "p",
    "С": "c",
    "Т": "t",
    "У": "y",
    "Х": "x",
    "Ј": "j",
    "Ѕ": "s",
    "Ԁ": "d",
    "Ԛ": "q",
    "Ԝ": "w",
}

# Applied after case folding and accent stripping.
LOWER: dict[str, str] = {
    # Cyrillic
    "а": "a",
    "в": "b",
    "г": "r",
    "е": "e",
    "з": "3",
    "к": "k",
    "м": "m",
    "н": "h",
    "о": "o",
    "п": "n",
    "р": "p",
    "с": "c",
    "т": "t",
    "у": "y",
    "х": "x",
    "ш": "w",
    "щ": "w",
    "ъ": "b",
    "ь": "b",
    "ѕ": "s",
    "і": "i",
    "ј": "j",
    "ӏ": AMBIGUOUS,
    "ԁ": "d",
    "ԛ": "q",
    "ԝ": "w",
    "ү": "y",
    "һ": "h",
    "ѵ": "v",
    "ѡ": "w",
    "ҫ": "c",
    "ӧ": "o",
    # Greek
    "α": "a",
    "β": "b",
    "γ": "y",
    "ε": "e",
    "ζ": "z",
    "η": "n",
    "ι": "i",
    "κ": "k",
    "μ": "u",
    "ν": "v",
    "ο": "o",
    "π": "n",
    "ρ": "p",
    "σ": "o",
    "τ": "t",
    "υ": "u",
    "χ": "x",
    "ω": "w",
    "ϳ": "j",
    "ϸ": "p",
    # Armenian
    "օ": "o",
    "ս": "u",
    "ց": "g",
    "հ": "h",
    "ո": "n",
    "ա": "w",
    "զ": "q",
    # Latin letters that NFD does not take apart, and small capitals
    "ı": "i",
    "ø": "o",
    "đ": "d",
    "ł": "l",
    "ħ": "h",
    "ð": "d",
    "ƅ": "b",
    "ɑ": "a",
    "ɡ": "g",
    "ɩ": "i",
    "ɪ": "i",
    "ʟ": "l",
    "ᴀ": "a",
    "ʙ": "b",
    "ᴄ": "c",
    "ᴅ": "d",
    "ᴇ": "e",
    "ꜰ": "f",
    "ɢ": "g",
    "ʜ": "h",
    "ᴊ": "j",
    "ᴋ": "k",
    "ᴍ": "m",
    "ɴ": "n",
    "ᴏ": "o",
    "ᴘ": "p",
    "ʀ": "r",
    "ꜱ": "s",
    "ᴛ": "t",
    "ᴜ": "u",
    "ᴠ": "v",
    "ᴡ": "w",
    "ʏ": "y",
    "ᴢ": "z",
}

# Emoji letter blocks that NFKC leaves alone: regional indicators and negative
# (white-on-black) circled and squared capitals, each a run of A..Z.
for _start in (0x1F1E6, 0x1F150, 0x1F170):
    for _k in range(26):
        LOWER[chr(_start + _k)] = chr(ord("a") + _k)

UPPER_TABLE = str.maketrans(UPPER)
LOWER_TABLE = str.maketrans(LOWER)
