"""The risk lexicon: phrases that make on-screen text a ``text_lexicon`` risk.

The default covers common live-stream scam and off-platform solicitation phrases. Matching is on
normalised text (case-folded, punctuation to spaces, runs of spaces collapsed), by whole words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

DEFAULT_PHRASES: tuple[str, ...] = (
    "free crypto",
    "crypto giveaway",
    "double your bitcoin",
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

    def __post_init__(self) -> None:
        object.__setattr__(self, "_norm", tuple(normalise(p) for p in self.phrases if normalise(p)))

    @classmethod
    def of(cls, phrases: Iterable[str]) -> Lexicon:
        return cls(tuple(phrases))

    def matches(self, text: str) -> tuple[str, ...]:
        """The lexicon phrases found in ``text``, as whole words."""
        hay = f" {normalise(text)} "
        return tuple(p for p in self._norm if f" {p} " in hay)


DEFAULT_LEXICON = Lexicon()
