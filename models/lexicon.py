"""The risk lexicon: phrases that make on-screen text a ``text_lexicon`` risk.

The default covers common live-stream scam and off-platform solicitation phrases. Matching is on
normalised text (case-folded, punctuation to spaces, runs of spaces collapsed), by whole words; a
phrase's words may also run together (OCR often drops the space in a caption: "FREECRYPTO
GIVEAWAY"), but never into a longer word ("carefree cryptography" does not match "free crypto").
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

DEFAULT_PHRASES: tuple[str, ...] = (
    "free crypto",
    "crypto giveaway",
    "double your bitcoin",
    "send crypto",
    "send btc",
    "send eth",
    "guaranteed profit",
    "investment opportunity",
    "dm me on telegram",
    "join my telegram",
    "add me on whatsapp",
    "whatsapp me",
    "cashapp me",
    "venmo me",
    "onlyfans link",
    "link in bio",
    "free gift card",
    "claim your prize",
    "wire transfer",
    "private show",
    "verify your account",
)

_NON_WORD = re.compile(r"[^0-9a-z]+")


def normalise(text: str) -> str:
    return " ".join(_NON_WORD.sub(" ", text.casefold()).split())


@dataclass(frozen=True, slots=True)
class Lexicon:
    phrases: tuple[str, ...] = DEFAULT_PHRASES
    _norm: tuple[str, ...] = field(init=False, repr=False)
    _patterns: tuple[re.Pattern[str], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        norm = tuple(normalise(p) for p in self.phrases if normalise(p))
        object.__setattr__(self, "_norm", norm)
        joined = (
            re.compile(r"(?<![0-9a-z])" + " ?".join(map(re.escape, p.split())) + r"(?![0-9a-z])")
            for p in norm
        )
        object.__setattr__(self, "_patterns", tuple(joined))

    @classmethod
    def of(cls, phrases: Iterable[str]) -> Lexicon:
        return cls(tuple(phrases))

    def matches(self, text: str) -> tuple[str, ...]:
        """The lexicon phrases found in ``text``, as whole words."""
        hay = normalise(text)
        return tuple(p for p, pat in zip(self._norm, self._patterns, strict=True) if pat.search(hay))


DEFAULT_LEXICON = Lexicon()
