"""Known sound on real recordings: the knowledge base's audio space.

    .venv/bin/python bench/kb_audio.py [--taught 12] [--seed 0]

Real audio from Debian's archive, fetched once with ``apt-get download`` (no root needed) into
``~/.cache/gopwatch/audio``: the 31 music tracks of ``drascula-music`` and the 364 recorded
prompts of ``asterisk-core-sounds-en-wav`` (one speaker), joined into 30 s "talk streams".
``--taught`` tracks and 4 talk streams are taught as audio examples; the other tracks and talk
streams are never taught and are the negatives.

Each copy is a 12 s excerpt at a random place of a taught recording, changed as a re-broadcast
would change it, and heard as the live path hears a stream: one vector per 1 s GOP over the 2 s
before its end, a match being 2 consecutive GOPs that show the same example. Recall is measured at
the one threshold where precision is 1.0 (no negative and no copy scoring a wrong example that
high), then the threshold is fitted on half of the recordings and checked on the other half.
The last table is the live cost: the stream's audio tap (MPEG-TS demux, AAC decode, 8 kHz
resampling) plus one vector and one search per GOP, per second of stream, on one thread.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av
import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table

from models.kb import audio
from models.kb.base import AUDIO, Example, KnowledgeBase
from models.kb.match import MIN_RUN
from streaming.audio import AudioTap
from streaming.media import decode_pcm
from streaming.synth.encode import lossy_sound, write_sound

console = Console(width=120)
CACHE = Path.home() / ".cache" / "gopwatch" / "audio"
PACKAGES = ("drascula-music", "asterisk-core-sounds-en-wav")
EXCERPT_S = 12.0


def fetch() -> tuple[list[Path], list[Path]]:
    """The music tracks and the speech prompts, downloaded and unpacked on first use."""
    root = CACHE / "root"
    if not (CACHE / "done").exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", *PACKAGES], cwd=CACHE, check=True, capture_output=True)
        for deb in CACHE.glob("*.deb"):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
            deb.unlink()
        (CACHE / "done").touch()
    music = sorted((root / "usr/share/scummvm/drascula/audio").glob("track*.ogg"))
    speech = sorted((root / "usr/share/asterisk/sounds").rglob("*.wav"))
    return music, speech


def codec(pcm: np.ndarray, name: str, bitrate: int, rate: int) -> np.ndarray:
    """Through a lossy codec and back."""
    return lossy_sound(pcm, audio.RATE, name, bitrate, rate)[: len(pcm)]


def transforms(rng: np.random.Generator, talk: np.ndarray) -> dict[str, object]:
    def noise(x: np.ndarray, snr_db: float) -> np.ndarray:
        return x + rng.normal(0, x.std() * 10 ** (-snr_db / 20), len(x)).astype(np.float32)

    def voice_over(x: np.ndarray) -> np.ndarray:  # a commentator over the sound, 6 dB under it
        v = talk[: len(x)]
        return x + v * (x.std() / (v.std() + 1e-6)) * 0.5

    return {
        "as taught": lambda x: x,
        "AAC 32 kb/s": lambda x: codec(x, "aac", 32_000, 22050),
        "MP3 48 kb/s": lambda x: codec(x, "mp3", 48_000, 22050),
        "volume -12 dB": lambda x: x * 0.25,
        "noise 20 dB SNR": lambda x: noise(x, 20),
        "noise 10 dB SNR": lambda x: noise(x, 10),
        "voice-over -6 dB": voice_over,
        "speed +5 %": lambda x: np.interp(np.arange(0, len(x), 1.05), np.arange(len(x)), x).astype(
            np.float32
        ),
    }


def heard(pcm: np.ndarray) -> np.ndarray:
    """A stream's audio vectors: one per 1 s GOP, the 2 s before its end (zeros when silent)."""
    ends = range(audio.WINDOW, len(pcm) + 1, audio.RATE)
    return np.stack([audio.audio_vector(pcm[e - audio.WINDOW : e]) for e in ends])


def run_score(kb: KnowledgeBase, q: np.ndarray) -> dict[str, float]:
    """Per example, the best over runs of MIN_RUN GOPs of the run's weakest similarity."""
    per = kb.similarities(q, modality=AUDIO)
    best: dict[str, float] = {}
    for i in range(len(per) - MIN_RUN + 1):
        for eid in set().union(*per[i : i + MIN_RUN]):
            s = min(p.get(eid, -1.0) for p in per[i : i + MIN_RUN])
            best[eid] = max(best.get(eid, -1.0), s)
    return best


def recall_at_p1(pos: list[tuple[float, float]], neg: list[float]) -> tuple[float, float]:
    """(threshold, recall): the lowest threshold over every wrong score, and the copies over it."""
    t = max([*neg, *(w for _, w in pos)], default=0.0) + 1e-4
    return t, float(np.mean([s >= t for s, _ in pos]))


def live_cost(music: list[Path], kb: KnowledgeBase, seconds: int = 60) -> tuple[float, float]:
    """CPU-s per second of stream: the tap (demux + decode + resample) and vector + search."""
    pcm = decode_pcm(music[0], 44100, seconds)
    assert pcm is not None
    buf = io.BytesIO()
    with av.open(buf, "w", format="mpegts") as out:
        s = out.add_stream("aac", rate=44100)
        s.layout = "stereo"
        write_sound(out, s, pcm, 44100)
    ts = buf.getvalue()
    tap, chunk = AudioTap(), len(ts) // seconds
    t0 = time.process_time()
    for i in range(0, len(ts), chunk):
        tap.feed(ts[i : i + chunk])
    tap_s = time.process_time() - t0
    t0 = time.process_time()
    q = []
    for e in range(2, seconds):
        v = tap.vector(float(e) + tap._start_s)
        if v is not None:
            q.append(v)
            if len(q) >= MIN_RUN:
                kb.match(np.stack(q[-MIN_RUN:]), AUDIO)
    match_s = time.process_time() - t0
    return tap_s / seconds, match_s / seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--taught", type=int, default=12, help="music tracks taught (the rest are negatives)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    music, speech = fetch()
    tracks = [decode_pcm(p, audio.RATE, 60) for p in track(music, description="decoding", console=console)]
    tracks_ok = [
        (p.stem, t) for p, t in zip(music, tracks, strict=True) if t is not None and len(t) > 16 * audio.RATE
    ]
    prompts = [decode_pcm(p, audio.RATE, 30) for p in speech]
    talk_all = np.concatenate([p for p in prompts if p is not None])
    talks = [(f"talk{i}", talk_all[i * 30 * audio.RATE : (i + 1) * 30 * audio.RATE]) for i in range(8)]
    taught = tracks_ok[: args.taught] + talks[:4]
    untaught = tracks_ok[args.taught :] + talks[4:]
    kb = KnowledgeBase()
    for name, pcm in taught:
        vecs, starts = audio.example_vectors(pcm, 20_000)
        kb.add(Example(name, "banned_song", vecs, positions=starts, modality=AUDIO))
    voice = talk_all[-60 * audio.RATE :]  # prompts no talk stream uses, for the voice-over
    tf = transforms(rng, voice)
    pos: dict[str, list[tuple[str, float, float]]] = {k: [] for k in tf}  # name, own, best wrong
    for name, pcm in track(taught, description="copies", console=console):
        for tname, fn in tf.items():
            for _ in range(2):
                at = int(rng.uniform(0, len(pcm) / audio.RATE - EXCERPT_S - 1) * audio.RATE)
                x = fn(pcm[at : at + int(EXCERPT_S * audio.RATE)])  # type: ignore[operator]
                sc = run_score(kb, heard(np.asarray(x, np.float32)))
                wrong = max((s for e, s in sc.items() if e != name), default=0.0)
                pos[tname].append((name, sc.get(name, 0.0), wrong))
    neg: list[tuple[str, float]] = []
    for name, pcm in untaught:
        for k in range(4):
            at = int(k * (len(pcm) / audio.RATE - EXCERPT_S) / 4 * audio.RATE)
            sc = run_score(kb, heard(pcm[at : at + int(EXCERPT_S * audio.RATE)]))
            neg.append((name, max(sc.values(), default=0.0)))
    allpos = [(s, w) for rows in pos.values() for _, s, w in rows]
    t, rec = recall_at_p1(allpos, [s for _, s in neg])
    table = Table("change", "copies", "recall at precision 1.0", "mean similarity", title=(
        f"{len(taught)} taught recordings ({args.taught} music, 4 talk), {len(untaught)} never taught "
        f"({len(neg)} negative excerpts); threshold {t:.3f}"))  # fmt: skip
    for tname, rows in pos.items():
        table.add_row(tname, str(len(rows)), f"{np.mean([s >= t for _, s, _ in rows]):.2f}",
                      f"{np.mean([s for _, s, _ in rows]):.3f}")  # fmt: skip
    table.add_row("all", str(len(allpos)), f"{rec:.2f}", f"{np.mean([s for s, _ in allpos]):.3f}")
    console.print(table)
    worst = max(s for _, s in neg), max(w for _, w in allpos), min(s for s, _ in allpos)
    console.print("highest negative {:.3f}; highest wrong example {:.3f}; lowest copy {:.3f}".format(*worst))
    # held out: fit on the recordings of one half, check on the other
    names = [n for n, _ in taught + untaught]
    halves = [set(names[0::2]), set(names[1::2])]
    held = Table("fitted on", "threshold", "checked recall", "false matches", title="held-out threshold")
    for a, b in (halves, halves[::-1]):
        fit_t, _ = recall_at_p1(
            [(s, w) for rows in pos.values() for n, s, w in rows if n in a], [s for n, s in neg if n in a]
        )
        checked = [(s, w) for rows in pos.values() for n, s, w in rows if n in b]
        false = sum(w >= fit_t for _, w in checked) + sum(s >= fit_t for n, s in neg if n in b)
        got = np.mean([s >= fit_t for s, _ in checked])
        held.add_row(f"{len(a)} recordings", f"{fit_t:.3f}", f"{got:.2f}",
                     f"{false} of {len(checked) + sum(n in b for n, _ in neg)}")  # fmt: skip
    console.print(held)
    shipped = KnowledgeBase().threshold("x", AUDIO)
    false = sum(w >= shipped for _, w in allpos) + sum(s >= shipped for _, s in neg)
    got = np.mean([s >= shipped for s, _ in allpos])
    console.print(f"shipped threshold {shipped:.2f}: recall {got:.2f}, {false} false matches")
    tap_s, match_s = live_cost(music, kb)
    cost = Table(
        "part",
        "CPU-s per second of stream",
        title=f"live cost, one thread ({kb.vector_count(AUDIO)} vectors)",
    )
    cost.add_row("audio tap: demux, AAC decode, 8 kHz", f"{tap_s:.5f}")
    cost.add_row("vector + search per 1 s GOP", f"{match_s:.5f}")
    cost.add_row("total (goal for the whole base: 0.01)", f"{tap_s + match_s:.5f}")
    console.print(cost)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
