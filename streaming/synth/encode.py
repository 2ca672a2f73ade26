"""Encode a scenario with libx264 (or libx265 / MPEG-4 Part 2) through PyAV into MPEG-TS bytes.

Keyframes fall exactly every ``gop_s`` seconds (fixed keyint, no scene-cut keyframes, closed
GOPs), so the stream cuts into GOP-aligned segments with :func:`streaming.segmenter.segment_stream`.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import av
import numpy as np

from streaming.segmenter import Segment, segment_stream
from streaming.synth.render import Renderer
from streaming.synth.scenario import Scenario

Progress = Callable[[int, int], None]
AUDIO_RATE = 48000


def encode_stream(scenario: Scenario, progress: Progress | None = None) -> bytes:
    """The whole stream as MPEG-TS bytes."""
    e = scenario.encoding
    renderer = Renderer(scenario)
    keyint = max(1, round(e.gop_s * e.fps))
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mpegts") as out:
        vs = out.add_stream(e.codec, rate=e.fps)
        vs.width, vs.height, vs.pix_fmt = e.width, e.height, "yuv420p"
        vs.codec_context.gop_size = keyint
        if e.codec == "libx264":
            vs.options = {
                "preset": e.preset,
                "crf": str(e.crf),
                "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0:bframes={e.bframes}"
                ":open-gop=0:threads=1",
            }
        elif e.codec == "libx265":
            vs.options = {
                "preset": e.preset,
                "crf": str(e.crf),
                "x265-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0:bframes={e.bframes}"
                ":open-gop=0:log-level=error",
            }
        else:
            vs.codec_context.max_b_frames = e.bframes
            vs.codec_context.qmin, vs.codec_context.qmax = 2, 12
        aus = None
        if e.audio:
            aus = out.add_stream("aac", rate=AUDIO_RATE)
            aus.layout = "mono"
        n = renderer.n_frames
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(renderer.frame(i), format="rgb24")
            frame.pts = i
            out.mux(vs.encode(frame))
            if aus is not None:
                samples = renderer.audio(i, AUDIO_RATE)
                af = av.AudioFrame.from_ndarray(samples[None, :], format="fltp", layout="mono")
                af.sample_rate = AUDIO_RATE
                af.pts = i * len(samples)
                out.mux(aus.encode(af))
            if progress is not None:
                progress(i + 1, n)
        out.mux(vs.encode(None))
        if aus is not None:
            out.mux(aus.encode(None))
    return buf.getvalue()


def encode_segments(scenario: Scenario, progress: Progress | None = None) -> tuple[bytes, list[Segment]]:
    """The whole stream and its GOP-aligned MPEG-TS segments."""
    whole = encode_stream(scenario, progress)
    return whole, list(segment_stream(whole, scenario.encoding.segment_s))


def frames_array(scenario: Scenario) -> np.ndarray:
    """All rendered (pre-encoding) frames; for tests on short scenarios."""
    r = Renderer(scenario)
    return np.stack([r.frame(i) for i in range(r.n_frames)])


def write_sound(
    out: av.container.OutputContainer, stream: av.AudioStream, pcm: np.ndarray, rate: int
) -> None:
    """Mono float ``pcm`` at ``rate`` Hz encoded into ``stream`` of ``out`` (resampled to the
    stream's sample format, layout and rate), the encoder flushed."""
    frame = av.AudioFrame.from_ndarray(pcm[None, :].astype(np.float32), format="flt", layout="mono")
    frame.sample_rate = rate
    cc = stream.codec_context
    resampler = av.AudioResampler(format=cc.format.name, layout=cc.layout.name, rate=cc.sample_rate)
    for f in [*resampler.resample(frame), *resampler.resample(None)]:
        f.pts = None  # the encoder counts samples
        for p in stream.encode(f):
            out.mux(p)
    for p in stream.encode(None):
        out.mux(p)


def lossy_sound(pcm: np.ndarray, rate: int, codec: str, bitrate: int, codec_rate: int) -> np.ndarray:
    """Mono float ``pcm`` at ``rate`` Hz through a lossy audio codec (``aac`` or ``mp3``) at
    ``bitrate`` and ``codec_rate`` Hz, decoded back to ``rate`` Hz: a re-broadcast's sound."""
    from streaming.media import decode_pcm

    buf = io.BytesIO()
    with av.open(buf, "w", format="adts" if codec == "aac" else "mp3") as out:
        s = out.add_stream(codec, rate=codec_rate)
        s.bit_rate, s.layout = bitrate, "mono"
        write_sound(out, s, pcm, rate)
    back = decode_pcm(buf.getvalue(), rate, len(pcm) / rate + 1.0)
    assert back is not None
    return back
