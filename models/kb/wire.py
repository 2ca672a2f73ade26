"""One knowledge-base example as a record of the compacted ``gopwatch.kb`` topic (key = example id,
a null value = removed): ``GWK1``, a 4-byte big-endian head length, the JSON head
(:class:`schemas.kb.KbEntryHead`), then ``count`` x ``dim`` float32 vectors, ``count`` int32
frame positions and, for a clip with sound, ``sound`` x 384 float32 audio vectors, little-endian.
Every size is checked against the record's length and the limits before anything is allocated.
"""

from __future__ import annotations

import numpy as np
from pydantic import ValidationError

from models.errors import KbError
from models.kb.base import AUDIO, DIMS, MAX_VECTORS, VISUAL, Example
from schemas.kb import KbEntryHead

MAGIC = b"GWK1"
MAX_HEAD = 64 * 1024


def encode_example(ex: Example) -> bytes:
    head = KbEntryHead(
        example_id=ex.example_id, category=ex.category, negative=ex.negative, notes=ex.notes,
        source_sha256=ex.source_sha256, count=len(ex.vectors), dim=ex.vectors.shape[1],
        modality=ex.modality, text=ex.text, sound=0 if ex.sound is None else len(ex.sound),
    ).model_dump_json().encode()  # fmt: skip
    positions = ex.positions if ex.positions is not None else np.zeros(len(ex.vectors), np.int32)
    sound = b"" if ex.sound is None else np.ascontiguousarray(ex.sound, "<f4").tobytes()
    return b"".join([
        MAGIC, len(head).to_bytes(4, "big"), head,
        np.ascontiguousarray(ex.vectors, "<f4").tobytes(), np.ascontiguousarray(positions, "<i4").tobytes(),
        sound,
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
    if head.dim != dim or not 0 < head.count <= MAX_VECTORS:
        raise KbError(f"{head.count} vectors of {head.dim} dims (expected 1..{MAX_VECTORS} of {dim})")
    if head.sound and (head.modality != VISUAL or head.sound > MAX_VECTORS):
        raise KbError(
            f"{head.sound} sound vectors on a {head.modality} example (at most {MAX_VECTORS}, clips only)"
        )
    body = value[8 + n :]
    own, adim = head.count * (dim * 4 + 4), DIMS[AUDIO]
    if len(body) != own + head.sound * adim * 4:
        raise KbError(f"body of {len(body)} bytes, expected {own + head.sound * adim * 4}")
    vectors = np.frombuffer(body, "<f4", head.count * dim).reshape(head.count, dim).astype(np.float32)
    positions = np.frombuffer(body, "<i4", head.count, offset=head.count * dim * 4).astype(np.int32)
    sound = None
    if head.sound:
        sound = (
            np.frombuffer(body, "<f4", head.sound * adim, offset=own)
            .reshape(head.sound, adim)
            .astype(np.float32)
        )
    return Example(head.example_id, head.category, vectors, head.negative, head.notes, head.source_sha256,
                   positions, head.modality, head.text, sound)  # fmt: skip
