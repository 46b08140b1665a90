"""Split a run of spaced-out letters back into words.

"x x x p o r n" and "a r a b s c o c k r o a c h e s" join into one string with no
word breaks left; this finds the split into known words (the term lists' own words
plus common short words) that leaves the fewest letters unexplained. It only ever
sees spaced-out runs: splitting ordinary words this way would read "therapist" as
"the rapist".
"""

from __future__ import annotations

from collections.abc import Iterable

from sdserve.safety.normalize import readings, runs

COMMON_WORDS = frozenset(
    {
        *("a", "an", "the", "of", "to", "in", "on", "at", "by", "for", "with", "and", "or"),
        *("but", "is", "are", "was", "were", "be", "been", "being", "it", "its", "this"),
        *("that", "these", "those", "all", "any", "some", "no", "not", "my", "your", "his"),
        *("her", "their", "our", "me", "you", "him", "them", "we", "they", "i", "he", "she"),
        *("who", "what", "as", "so", "do", "does", "did", "have", "has", "had", "will"),
        *("would", "can", "just", "only", "up", "out", "off", "from", "into", "over"),
        *("under", "about", "like", "than", "then", "there", "here"),
    }
)
_LONGEST = 32


class Segmenter:
    def __init__(self, words: Iterable[str]) -> None:
        self.known = {runs(w)[0] for w in (*COMMON_WORDS, *words) if w}
        self.longest = min(_LONGEST, max((len(k) for k in self.known), default=1))

    def __call__(self, raw: str) -> str:
        """``raw`` with spaces between the words found (leetspeak kept as written).

        The split chosen maximises the sum of squared lengths of the known words it
        finds, so long words win over chains of short ones ("a sieg", not "as leg").
        Letters no word explains stay together ("s s a u l t" stays "ssault"), so a
        word split across two runs can still be rejoined later.
        """
        best: tuple[tuple[int, int], list[tuple[int, bool]]] | None = None
        for reading in readings(raw):
            found = self._split(reading)
            if best is None or found[0] > best[0]:
                best = found
        assert best is not None
        words: list[str] = []
        start, known_before = 0, True
        for end, known in best[1]:
            piece = raw[start:end]
            if not known and not known_before and words:
                words[-1] += piece
            else:
                words.append(piece)
            start, known_before = end, known
        return " ".join(words)

    def _split(self, text: str) -> tuple[tuple[int, int], list[tuple[int, bool]]]:
        """((score, -pieces), [(end of piece in ``text``, piece is a word of 2+ letters)])."""
        # Squeeze repeats ("jewwwws") so lookups ignore them; map squeezed positions
        # back to the text so the words keep their letters.
        squeezed, counts = runs(text)
        ends = [0]
        for n in counts:
            ends.append(ends[-1] + n)
        n = len(squeezed)
        best: list[tuple[int, int]] = [(0, 0)] + [(-1, 0)] * n
        back = [(0, False)] * (n + 1)
        for i in range(1, n + 1):
            for j in range(max(0, i - self.longest), i):
                if squeezed[j:i] in self.known:
                    gain = (ends[i] - ends[j]) ** 2
                elif i - j == 1:
                    gain = 0
                else:
                    continue
                score = (best[j][0] + gain, best[j][1] - 1)
                if score > best[i]:
                    best[i], back[i] = score, (j, gain > 1)
        pieces: list[tuple[int, bool]] = []
        i = n
        while i > 0:
            j, known = back[i]
            pieces.append((ends[i], known))
            i = j
        return best[n], pieces[::-1]
