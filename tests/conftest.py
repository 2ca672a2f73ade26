"""Shared fixtures: small synthetic media made by the suite itself (cached per session)."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest

from models.registry import CARD, SHIPPED
from streaming.segmenter import Segment
from streaming.synth import Encoding, Scenario, encode_segments
from streaming.synth.scenario import FlashOverlay, QrOverlay, Scene, TextOverlay

SMALL = Encoding(width=320, height=180, fps=25, gop_s=2.0, segment_s=2.0, bframes=2, preset="ultrafast")


def small_scenario(seed: int = 11, duration_s: float = 8.0, **enc: object) -> Scenario:
    overlays = (
        FlashOverlay(start_s=1.0, end_s=3.0, hz=6, area=0.8),
        TextOverlay(start_s=4.5, end_s=6.0, text="FREE CRYPTO GIVEAWAY"),
        QrOverlay(start_s=6.2, end_s=7.8, size=0.5),
    )
    return Scenario(
        name=f"test-{seed}",
        seed=seed,
        duration_s=duration_s,
        encoding=SMALL.model_copy(update=enc),
        scenes=(
            Scene(start_s=0, kind="photo", source="astronaut", motion="pan", sprites=1),
            Scene(start_s=duration_s / 2, kind="game", transition="fade"),
        ),
        overlays=tuple(o for o in overlays if o.start_s < duration_s),
    )


@pytest.fixture(scope="session")
def small_stream() -> tuple[Scenario, bytes, list[Segment]]:
    sc = small_scenario()
    whole, segs = encode_segments(sc)
    return sc, whole, segs


def remux(ts: bytes, fmt: str, options: dict[str, str] | None = None) -> bytes:
    """The video of an MPEG-TS stream, packets unchanged, in another container."""
    buf = io.BytesIO()
    with av.open(io.BytesIO(ts)) as src, av.open(buf, "w", format=fmt, options=options or {}) as dst:
        vs = src.streams.video[0]
        ovs = dst.add_stream_from_template(vs)
        for pkt in src.demux(vs):
            if pkt.dts is not None:
                pkt.stream = ovs
                dst.mux(pkt)
    return buf.getvalue()


def tiny_video(codec: str, fmt: str, pix_fmt: str = "yuv420p", frames: int = 3) -> bytes:
    """A few blank 64x48 frames in ``codec`` inside ``fmt``: for wrong-codec tests."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        s = out.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, pix_fmt
        for i in range(frames):
            f = av.VideoFrame(64, 48, pix_fmt)
            f.pts = i
            out.mux(s.encode(f))
        out.mux(s.encode(None))
    return buf.getvalue()


@pytest.fixture(scope="session")
def sensitive_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped student with low thresholds: events open early and stay open, so tests of state
    hand-over, degradation and replay have events to compare."""
    folder = tmp_path_factory.mktemp("sensitive-model")
    for f in SHIPPED.iterdir():
        shutil.copy(f, folder / f.name)
    card = json.loads((folder / CARD).read_text())
    card["thresholds"] = {c: 0.03 for c in card["thresholds"]}
    (folder / CARD).write_text(json.dumps(card))
    return folder


def reencode_grey(src: Path, dst: Path, gop: int = 25, repeat: int = 1) -> Path:
    """A greyscale copy of a real clip (``repeat`` times over), re-encoded by libx264 with closed
    1 s GOPs: a rebroadcast."""
    with av.open(str(src)) as c:
        vs = c.streams.video[0]
        rate, w, h = vs.average_rate or 25, vs.codec_context.width, vs.codec_context.height
        greys = [frame.to_ndarray(format="gray") for frame in c.decode(vs)]
    with av.open(str(dst), "w", format="mpegts") as out:
        s = out.add_stream("libx264", rate=rate)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        params = f"keyint={gop}:min-keyint={gop}:scenecut=0"
        s.options = {"crf": "28", "preset": "veryfast", "x264-params": params}
        for grey in greys * repeat:
            rgb = np.repeat(grey[..., None], 3, axis=2)
            for p in s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return dst


def rewrite_npz(
    data: bytes, change: Callable[[bytes], bytes], entry: str | None = None, method: int = zipfile.ZIP_STORED
) -> bytes:
    """The ``.npz`` ``data`` with ``entry`` (None: every entry) replaced by ``change(its bytes)``, in
    a valid zip (fresh checksums): how tests forge hostile array headers that get past the zip layer."""
    old, buf = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name in old.namelist():
            b = old.read(name)
            z.writestr(name, change(b) if entry in (None, name) else b, compress_type=method)
    return buf.getvalue()
