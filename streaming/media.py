"""Every PyAV idiom gopwatch uses lives here: opening containers from bytes or paths, remuxing,
encoding, decoding to RGB/luma, and translating PyAV's errors into :mod:`streaming.errors`.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.container
import numpy as np
from av.sidedata.sidedata import SideDataContainer

from schemas.segment import Codec, Container
from streaming.errors import CorruptSegmentError, MediaError, UnsupportedCodecError

SUPPORTED_CODECS: dict[str, Codec] = {"h264": Codec.H264, "hevc": Codec.HEVC, "mpeg4": Codec.MPEG4}
_FORMAT_TO_CONTAINER: dict[str, Container] = {
    "mpegts": Container.MPEGTS,
    "mov,mp4,m4a,3gp,3g2,mj2": Container.FMP4,
    "h264": Container.ANNEXB,
    "hevc": Container.ANNEXB,
}


@dataclass(frozen=True, slots=True)
class VideoInfo:
    codec: Codec
    container: Container
    width: int
    height: int
    fps: float
    duration_s: float | None
    has_audio: bool


def _describe(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:200]


@contextmanager
def translate_av_errors(what: str) -> Iterator[None]:
    """Turn PyAV/FFmpeg failures into a :class:`CorruptSegmentError` naming ``what``."""
    try:
        yield
    except MediaError:
        raise
    except (av.error.FFmpegError, EOFError, ValueError, IndexError) as e:  # PyAV raises all three
        raise CorruptSegmentError(f"{what}: {_describe(e)}") from e


# the live sources FFmpeg opens by URL (everything else is a path)
URL_SCHEMES = ("rtmp://", "rtmps://", "srt://", "http://", "https://", "udp://", "tcp://", "rtsp://")


def is_url(source: str) -> bool:
    return source.startswith(URL_SCHEMES)


def open_input(
    source: bytes | str | Path,
    fmt: str | None = None,
    read_timeout_s: float | None = None,
    open_timeout_s: float | None = None,
    probe_s: float | None = None,
) -> av.container.InputContainer:
    """Open a container from bytes (in memory) or from a path/URL FFmpeg understands. Live
    sources: a read that waits longer than ``read_timeout_s`` raises ``av.error.ExitError``, an
    open that waits longer than ``open_timeout_s`` a :class:`CorruptSegmentError`, and ``probe_s``
    bounds how long the open reads to learn the streams (FFmpeg's default, 5 s, waits that long
    for a declared track that never sends, e.g. RTMP's audio when the encoder has none)."""
    what = "segment" if isinstance(source, bytes) else str(source)
    if isinstance(source, bytes) and not source:
        raise CorruptSegmentError("empty payload (0 bytes)")
    with translate_av_errors(f"cannot open {what}"):
        target: Any = io.BytesIO(source) if isinstance(source, bytes) else str(source)
        options = {} if probe_s is None else {"analyzeduration": str(round(probe_s * 1e6))}
        if read_timeout_s is None and open_timeout_s is None:
            return av.open(target, mode="r", format=fmt, options=options)
        timeout = (open_timeout_s, read_timeout_s)
        return av.open(target, mode="r", format=fmt, options=options, timeout=timeout)


def video_stream(container: av.container.InputContainer) -> av.VideoStream:
    if not container.streams.video:
        raise CorruptSegmentError("no video stream in the container")
    return container.streams.video[0]


def codec_of(stream: av.VideoStream) -> Codec:
    name = stream.codec_context.name
    if name not in SUPPORTED_CODECS:
        raise UnsupportedCodecError(
            f"unsupported video codec {name!r}; gopwatch analyses {', '.join(SUPPORTED_CODECS)}"
        )
    return SUPPORTED_CODECS[name]


def container_of(container: av.container.InputContainer) -> Container:
    name = container.format.name
    if name in _FORMAT_TO_CONTAINER:
        return _FORMAT_TO_CONTAINER[name]
    if "mp4" in name or "mov" in name:
        return Container.FMP4
    raise CorruptSegmentError(f"unsupported container format {name!r}")


def probe(source: bytes | str | Path) -> VideoInfo:
    with open_input(source) as c:
        vs = video_stream(c)
        rate = vs.average_rate or vs.guessed_rate or Fraction(25)
        if not vs.codec_context.width or not vs.codec_context.height:
            raise CorruptSegmentError("no decodable video picture (truncated segment?)")
        return VideoInfo(
            codec=codec_of(vs),
            container=container_of(c),
            width=vs.codec_context.width,
            height=vs.codec_context.height,
            fps=float(rate),
            duration_s=(c.duration / 1_000_000) if c.duration else None,
            has_audio=bool(c.streams.audio),
        )


def decode_rgb(
    source: bytes | str | Path, width: int | None = None, height: int | None = None
) -> Iterator[tuple[float, np.ndarray]]:
    """Every frame as (media time in seconds, HxWx3 uint8 RGB), optionally rescaled."""
    with open_input(source) as c:
        vs = video_stream(c)
        with translate_av_errors("decode failed"):
            for frame in c.decode(vs):
                t = float(frame.time) if frame.time is not None else 0.0
                yield t, frame.to_ndarray(format="rgb24", width=width, height=height)


def decode_pcm(source: bytes | str | Path, rate: int, max_s: float) -> np.ndarray | None:
    """The first audio track as mono float32 at ``rate`` Hz, at most ``max_s`` seconds of it;
    None when there is no audio track."""
    with open_input(source) as c:
        if not c.streams.audio:
            return None
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        parts: list[np.ndarray] = []
        n, limit = 0, int(max_s * rate)
        with translate_av_errors("audio decode failed"):
            for frame in c.decode(c.streams.audio[0]):
                for f in resampler.resample(frame):
                    parts.append(f.to_ndarray().reshape(-1))
                    n += len(parts[-1])
                if n >= limit:
                    break
        return np.concatenate(parts)[:limit].astype(np.float32) if parts else np.zeros(0, np.float32)


MV_COLUMNS = (
    "source", "w", "h", "src_x", "src_y", "dst_x", "dst_y", "motion_x", "motion_y", "motion_scale",
)  # fmt: skip
EMPTY_MVS = np.zeros((0, len(MV_COLUMNS)), np.int32)


def enable_mv_export(ctx: av.codec.context.CodecContext) -> None:
    """Ask FFmpeg's decoder to attach motion vectors to P/B frames (absent on key frames)."""
    opts = dict(ctx.options)
    opts["flags2"] = "+export_mvs"
    ctx.options = opts


def padded_packet(data: bytes) -> av.Packet:
    """A packet holding a copy of ``data`` followed by FFmpeg's zeroed input padding.

    ``av.Packet(bytes)`` points FFmpeg at the bytes object's own memory, with no padding after it,
    while decoders read up to AV_INPUT_BUFFER_PADDING_SIZE bytes past the end: the MPEG-4 Part 2
    decoder then read whatever followed on the heap, and two runs on the same bytes differed in
    about one run in five. ``av.Packet(size)`` allocates with av_new_packet (padding zeroed).
    """
    pkt = av.Packet(len(data))
    memoryview(pkt)[:] = data
    return pkt


_MV_DTYPE: list[np.dtype] = []  # PyAV's AVMotionVector dtype, learnt from its first array


def side_data(frame: av.VideoFrame, kind: str) -> Any:
    """One side-data entry of ``frame`` (``"MOTION_VECTORS"``, ``"VIDEO_ENC_PARAMS"``), or None.

    ``frame.side_data`` caches a container on the frame that points back at it: a cycle only the
    cyclic GC frees, so every frame it touches (and its FFmpeg buffers) outlives its use until the
    next collection, and the decoder's buffer pools keep allocating fresh zeroed memory: page faults
    that cost more kernel time than the decode. A container of our own leaves no cycle, so the frame
    is released as soon as its last user lets go."""
    return SideDataContainer(frame).get(kind)  # type: ignore[call-arg]  # the stub omits the frame


def motion_vector_records(frame: av.VideoFrame) -> np.ndarray | None:
    """FFmpeg's AVMotionVector array (a numpy structured array over the side data, no copy), or None.

    PyAV's ``to_ndarray`` builds a new dtype for every frame: ~10 us, and numba's dispatcher
    types a structured array by its dtype object, so a new one costs another ~7 us per kernel
    call. The dtype is taken from PyAV once and every later array is a view with that instance.
    """
    sd = side_data(frame, "MOTION_VECTORS")
    if sd is None:
        return None
    if not _MV_DTYPE:
        _MV_DTYPE.append(sd.to_ndarray().dtype)
    a = np.frombuffer(sd, _MV_DTYPE[0])
    return a if len(a) else None


def mv_table(records: np.ndarray | None) -> np.ndarray:
    """int32 (N, 10) in the mv-extractor layout (``MV_COLUMNS``), rows in FFmpeg's order."""
    if records is None:
        return EMPTY_MVS
    return np.stack([records[c].astype(np.int32) for c in MV_COLUMNS], axis=1)


def motion_vectors(frame: av.VideoFrame) -> np.ndarray:
    """A frame's motion vectors as FFmpeg exports them: int32 (N, 10) in the mv-extractor layout
    (``MV_COLUMNS``), rows in FFmpeg's order; (0, 10) for frames without vectors."""
    return mv_table(motion_vector_records(frame))


def frame_qp(frame: av.VideoFrame) -> float:
    """Mean QP over the frame's blocks from ``venc_params`` side data (decoder option
    ``export_side_data=venc_params``; H.264 exports it), or NaN. The block array
    (AVVideoBlockParams: src_x, src_y, w, h, delta_qp as int32) is read straight from the side-data
    buffer, where PyAV's ``qp_map()`` would build it in Python."""
    sd = side_data(frame, "VIDEO_ENC_PARAMS")
    if sd is None:
        return float("nan")
    if not sd.nb_blocks or sd.block_size < 20:
        return float(sd.qp)
    n = sd.nb_blocks
    raw = np.frombuffer(memoryview(sd), np.uint8, count=n * sd.block_size, offset=sd.blocks_offset)
    delta = raw.view(np.int32)[4 :: sd.block_size // 4]  # each block's delta_qp
    return float(sd.qp + int(np.add.reduce(delta, dtype=np.int64)) / n)


def starts_with_idr(data: bytes, codec: Codec) -> bool:
    """Whether an access unit (Annex-B, or 4-byte length-prefixed as in MP4) holds an IDR picture:
    H.264 NAL type 5, HEVC IDR_W_RADL/IDR_N_LP (19, 20). A keyframe that is not one (an open GOP's
    I-frame, an HEVC CRA, MPEG-4 Part 2) may be followed by frames that refer to the GOP before."""
    if codec is Codec.H264:

        def idr(b: int) -> bool:
            return b & 0x1F == 5
    elif codec is Codec.HEVC:

        def idr(b: int) -> bool:
            return (b >> 1) & 0x3F in (19, 20)
    else:
        return False
    if data[:3] == b"\x00\x00\x01" or data[:4] == b"\x00\x00\x00\x01":  # Annex-B
        i = data.find(b"\x00\x00\x01")
        while 0 <= i < len(data) - 3:
            if idr(data[i + 3]):
                return True
            i = data.find(b"\x00\x00\x01", i + 3)
        return False
    i = 0
    while i + 4 < len(data):  # length-prefixed NAL units
        n = int.from_bytes(data[i : i + 4], "big")
        if n <= 0 or i + 4 + n > len(data):
            return False
        if idr(data[i + 4]):
            return True
        i += 4 + n
    return False


_PICTURE_TYPES = ("?", "I", "P", "B")  # AVPictureType: 1 I, 2 P, 3 B


def picture_type(frame: av.VideoFrame) -> str:
    """'I', 'P', 'B' (or '?' for anything else)."""
    t = int(frame.pict_type)
    return _PICTURE_TYPES[t] if 0 < t < 4 else "?"


def luma(frame: av.VideoFrame, padded: bool = False) -> np.ndarray:
    """The Y plane as an (H, W) uint8 array (no colour conversion, no copy). With ``padded`` the
    rows keep FFmpeg's line padding (H, line_size): contiguous, so OpenCV need not copy it."""
    plane = frame.planes[0]
    raw = np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)
    return raw if padded else raw[:, : frame.width]


def iter_motion_vectors(source: bytes | str | Path) -> Iterator[tuple[int, str, np.ndarray]]:
    """PyAV's own export, for cross-checks: (display index, 'I'/'P'/'B', raw (N, 10) vectors)."""
    with open_input(source) as c:
        vs = video_stream(c)
        codec_of(vs)
        enable_mv_export(vs.codec_context)
        vs.codec_context.thread_type = "NONE"
        with translate_av_errors("decode failed"):
            for i, frame in enumerate(c.decode(vs)):
                yield i, picture_type(frame), motion_vectors(frame)
