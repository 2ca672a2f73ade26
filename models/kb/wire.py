"""One knowledge-base example as a record of the compacted ``gopwatch.kb`` topic (key = example id,
a null value = removed): ``GWK1``, a 4-byte big-endian head length, the JSON head
(:class:`schemas.kb.KbEntryHead`), then ``count`` x ``dim`` float32 vectors, ``count`` int32
frame positions, for a clip with sound ``sound`` x 384 float32 audio vectors, and for an example
with sound ``marks`` landmarks (int32 hash and frame pairs), little-endian.
Every size is checked against the record's length and the limits before anything is allocated.
"""

from __future__ import annotations

import json
import re

import numpy as np
from pydantic import ValidationError

from models.errors import KbError
from models.kb.base import AUDIO, DIMS, MAX_SOUND, MAX_VECTORS, TEXT, VISUAL, Example, KnowledgeBase
from models.kb.landmarks import MAX_MARKS
from models.kb.text import MAX_TEXT_DIM, current
from schemas.kb import KbEntryHead

MAGIC = b"GWK1"
MAX_HEAD = 64 * 1024
THRESHOLDS_KEY = b"_thresholds"  # the record of per-category thresholds (no example id starts with "_")
MAX_THRESHOLDS = 10_000
_THRESHOLD_KEY = re.compile(r"^[a-z][a-z0-9_]{1,63}(:(text|audio|landmarks))?$")


def encode_example(ex: Example) -> bytes:
    head = KbEntryHead(
        example_id=ex.example_id, category=ex.category, negative=ex.negative, notes=ex.notes,
        source_sha256=ex.source_sha256, count=len(ex.vectors), dim=ex.vectors.shape[1],
        modality=ex.modality, text=ex.text, sound=0 if ex.sound is None else len(ex.sound),
        marks=0 if ex.marks is None else len(ex.marks),
    ).model_dump_json().encode()  # fmt: skip
    positions = ex.positions if ex.positions is not None else np.zeros(len(ex.vectors), np.int32)
    sound = b"" if ex.sound is None else np.ascontiguousarray(ex.sound, "<f4").tobytes()
    marks = b"" if ex.marks is None else np.ascontiguousarray(ex.marks, "<i4").tobytes()
    return b"".join([
        MAGIC, len(head).to_bytes(4, "big"), head,
        np.ascontiguousarray(ex.vectors, "<f4").tobytes(), np.ascontiguousarray(positions, "<i4").tobytes(),
        sound, marks,
    ])  # fmt: skip


def decode_example(key: bytes | None, value: bytes) -> Example:
    """The example a record carries; :class:`KbError` with the reason for anything else."""
    if value[:4] != MAGIC or len(value) < 8:
        raise KbError("not a knowledge-base entry (no GWK1 header)")
    n = int.from_bytes(value[4:8], "big")
    if n > MAX_HEAD or 8 + n > len(value):
        raise KbError(f"head length {n} out of bounds (record of {len(value)} bytes)")
    try:
        head = KbEntryHead.model_validate_json(value[8 : 8 + n])
    except ValidationError as e:
        raise KbError(f"bad head: {e.errors()[0]['loc']}: {e.errors()[0]['msg']}") from None
    if key is not None and key.decode("utf-8", "replace") != head.example_id:
        raise KbError(f"key {key[:64]!r} is not the example id {head.example_id!r}")
    dim = DIMS[head.modality]
    if head.modality == TEXT and head.text and 0 < head.dim <= MAX_TEXT_DIM:
        dim = head.dim  # an earlier version's text space: embedded again from the line below
    most = MAX_SOUND if head.modality == AUDIO else MAX_VECTORS
    if head.dim != dim or not 0 < head.count <= most:
        raise KbError(f"{head.count} vectors of {head.dim} dims (expected 1..{most} of {dim})")
    if head.sound and (head.modality != VISUAL or head.sound > MAX_SOUND):
        raise KbError(
            f"{head.sound} sound vectors on a {head.modality} example (at most {MAX_SOUND}, clips only)"
        )
    if head.marks and (head.marks > MAX_MARKS or not (head.modality == AUDIO or head.sound)):
        raise KbError(f"{head.marks} landmarks on an example without sound (at most {MAX_MARKS})")
    body = value[8 + n :]
    own, adim = head.count * (dim * 4 + 4), DIMS[AUDIO]
    heard = own + head.sound * adim * 4
    if len(body) != heard + head.marks * 8:
        raise KbError(f"body of {len(body)} bytes, expected {heard + head.marks * 8}")
    vectors = np.frombuffer(body, "<f4", head.count * dim).reshape(head.count, dim).astype(np.float32)
    positions = np.frombuffer(body, "<i4", head.count, offset=head.count * dim * 4).astype(np.int32)
    sound = None
    if head.sound:
        sound = (
            np.frombuffer(body, "<f4", head.sound * adim, offset=own)
            .reshape(head.sound, adim)
            .astype(np.float32)
        )
    marks = None
    if head.marks:
        marks = np.frombuffer(body, "<i4", head.marks * 2, offset=heard).reshape(-1, 2).astype(np.int32)
    if head.modality == TEXT:
        vectors = current(vectors, head.text)
    return Example(head.example_id, head.category, vectors, head.negative, head.notes, head.source_sha256,
                   positions, head.modality, head.text, sound, marks)  # fmt: skip


def encode_thresholds(thresholds: dict[str, float]) -> bytes:
    """The value of the ``_thresholds`` record: JSON, category (``c`` or ``c:<space>``) -> 0..1."""
    return json.dumps(dict(sorted(thresholds.items()))).encode()


def decode_thresholds(value: bytes) -> dict[str, float]:
    try:
        raw = json.loads(value[: MAX_HEAD + 1]) if len(value) <= MAX_HEAD else None
    except (ValueError, UnicodeDecodeError) as e:
        raise KbError(f"thresholds record is not JSON ({e})") from None
    if not isinstance(raw, dict) or len(raw) > MAX_THRESHOLDS:
        raise KbError("thresholds record must be a JSON object of at most 10,000 categories (64 KiB)")
    out = {}
    for k, v in raw.items():
        if not _THRESHOLD_KEY.match(k) or not isinstance(v, int | float) or not 0.0 <= v <= 1.0:
            raise KbError(f"threshold {k!r}: {v!r} (a category, optionally ':<space>', and 0..1)")
        out[k] = float(v)
    return out


def apply_change(kb: KnowledgeBase, key: bytes | None, value: bytes | None) -> Example | None:
    """One record of the ``gopwatch.kb`` topic applied to ``kb``: an entry adds or replaces its
    example (returned), a null value removes the key's, the ``_thresholds`` record sets the
    per-category thresholds (its null value clears them). :class:`KbError` for anything else."""
    if key == THRESHOLDS_KEY:
        kb.set_thresholds(decode_thresholds(value) if value is not None else {})
        return None
    if value is None:
        kb.remove((key or b"").decode("utf-8", "replace"))
        return None
    ex = decode_example(key, value)
    kb.add(ex)
    return ex
