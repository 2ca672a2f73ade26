"""Writes the seed corpus the fuzz targets start from: ``python -m tests.fuzz.seeds``.

Small real inputs of each format, so the fuzzer begins inside the parsers rather than at their
first check. The files are checked in; rerun this only to change them. Inputs that fuzzing found
crashing sit beside them, named for what they are, so every pass starts from them too.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from models.kb.base import AUDIO, DIMS, TEXT, VISUAL, Example
from models.kb.wire import encode_example
from schemas.events import SegmentRef
from schemas.records import ControlKind, StreamControl
from schemas.segment import Codec, Container, SegmentHeaders
from streaming.snapshot import FedSegment, StreamSnapshot
from tests.conftest import remux, tiny_video

CORPUS = Path(__file__).parent / "corpus"


def seeds() -> dict[str, dict[str, bytes]]:
    ts = tiny_video("libx264", "mpegts", frames=4)
    headers = SegmentHeaders(sequence=3, media_start_s=6.0, media_duration_s=2.0, container=Container.MPEGTS,
                             codec=Codec.H264, ingest_ms=1_700_000_000_000, ends_gop=True)  # fmt: skip
    ref = SegmentRef(topic="gopwatch.segments", partition=1, offset=42, sequence=3)
    snap = StreamSnapshot(stream_id="cam-1", model_version="m", replay=[], init=None, pending=None,
                          gop_index=2, last=ref, last_ingest_ms=1, skipped_total=0,
                          open_events={"qr_code": {"revision": 1}})  # fmt: skip
    fed = FedSegment(ref, Container.MPEGTS, 50, 0, 1880)
    heard = np.eye(3, DIMS[AUDIO], 1, dtype=np.float16)  # the knowledge base's last GOP, with sound
    ring = [(4.0, 6.0, np.eye(1, DIMS[VISUAL], 2, dtype=np.float32), heard, np.array([[77, 1]], np.int32))]
    sounded = dataclasses.replace(snap, heard=[fed], ring=ring, continuity={"audio_track": {"pid": 257}})
    unit = np.eye(1, DIMS[VISUAL], 3, dtype=np.float32)
    kb_visual = Example("clip-a", "banned_stream_rebroadcast", np.repeat(unit, 2, axis=0), notes="seed")
    kb_text = Example("clip-a", "text_lexicon", np.eye(1, DIMS[TEXT], 7, dtype=np.float32), modality=TEXT,
                      text="free gift cards")  # fmt: skip
    kb_sound = Example("clip-a", "banned_song", np.repeat(unit, 2, axis=0),
                       sound=np.eye(2, DIMS[AUDIO], 5, dtype=np.float32),
                       marks=np.array([[4242, 0], [1717, 3]], np.int32))  # fmt: skip
    control = StreamControl(
        stream_id="cam-1", kind=ControlKind.END_OF_STREAM, last_sequence=9, media_end_s=20.0
    )
    mpeg4_ts = tiny_video("mpeg4", "mpegts", frames=3)
    hevc_ts = tiny_video("libx265", "mpegts", frames=3)
    fmp4 = remux(ts, "mp4", {"movflags": "frag_keyframe+empty_moov+default_base_moof"})
    return {
        "tsdemux": {"h264.ts": ts, "mpeg4.ts": mpeg4_ts},
        "fmp4": {"h264.mp4": fmp4},
        "extract": {"h264.ts": ts, "mpeg4.ts": mpeg4_ts, "h264.mp4": fmp4, "hevc.ts": hevc_ts},
        "annexb": {
            "h264.264": tiny_video("libx264", "h264", frames=3),
            "mpeg4.m4v": tiny_video("mpeg4", "m4v"),
        },
        "headers": {"segment.txt": b"\n".join(k.encode() + b"=" + v for k, v in headers.to_kafka())},
        "snapshot": {"snapshot.gws": snap.to_bytes(), "with-sound.gws": sounded.to_bytes()},
        "control": {"end.json": control.model_dump_json().encode()},
        "kbentry": {
            "visual.gwk": encode_example(kb_visual),
            "text.gwk": encode_example(kb_text),
            "clip-with-sound.gwk": encode_example(kb_sound),
        },
        "audiotap": {"aac.ts": tiny_sound()},
        "jpeg": tiny_stills(),
    }


def tiny_stills() -> dict[str, bytes]:
    """Small JPEGs of each layout the reader takes: 4:2:0, 4:4:4 with restart markers, grey and
    progressive."""
    import cv2

    rng = np.random.default_rng(0)
    pic = cv2.GaussianBlur(rng.integers(0, 256, (40, 56, 3), np.uint8), (5, 5), 0)

    def enc(img: np.ndarray, *params: int) -> bytes:
        return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 70, *params])[1].tobytes()

    full_chroma = (cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444)
    return {
        "420.jpg": enc(pic),
        "444-restarts.jpg": enc(pic, *full_chroma, cv2.IMWRITE_JPEG_RST_INTERVAL, 2),
        "grey.jpg": enc(cv2.cvtColor(pic, cv2.COLOR_BGR2GRAY)),
        "progressive.jpg": enc(pic, cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
    }


def tiny_sound() -> bytes:
    """0.5 s of AAC tone in MPEG-TS, small enough to mutate."""
    import io

    import av

    from streaming.synth.encode import write_sound

    buf = io.BytesIO()
    with av.open(buf, "w", format="mpegts") as out:
        s = out.add_stream("aac", rate=8000)
        s.layout, s.bit_rate = "mono", 16000
        write_sound(out, s, (0.3 * np.sin(np.arange(4000) * 2 * np.pi * 440 / 8000)).astype(np.float32), 8000)
    return buf.getvalue()


def main() -> None:
    for target, files in seeds().items():
        folder = CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (folder / name).write_bytes(data)
            print(f"{folder / name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
