"""What the cascade costs the live path, in the same run: real-footage probes through the whole
path (extraction, student, cascade, events) without the cascade, with OpenCV's QR reader (the
teacher's) and with zxing-cpp's (the live cascade's), interleaved.

    .venv/bin/python bench/cascade.py [--rounds 3]

The probes are five of the real-footage suite (``streaming/offline/probes.py``: 720p25, 2 s
closed GOPs, held-out photographs under moving cameras, 14 s each): a scam line, two QR codes (one
partly covered), a flash and subtitles. Each variant is timed in CPU seconds on one thread per
second of video (model loading excluded), with what it found on each probe.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from rich.console import Console
from rich.table import Table

from models.cascade import Cascade
from models.registry import SHIPPED
from schemas.settings import Settings
from streaming.offline import probes as P
from streaming.pipeline import LivePath, analyze_source

console = Console(width=120)
PROBES = ("text-0.08-middle-plain", "qr-0.25-warp0.00-occl0.00", "qr-0.25-warp0.00-occl0.15",
          "flash-0.60-4hz-white-centre", "benign-subtitles")  # fmt: skip


def variants() -> dict[str, LivePath]:
    s = Settings(torch_threads=1)
    out = {"no cascade": LivePath.load(s, SHIPPED, cascade=False)}
    for reader in ("opencv", "zxing"):
        live = LivePath.load(s, SHIPPED, cascade=True)
        out[f"cascade, QR by {reader}"] = replace(live, cascade=Cascade(kb=live.kb, qr_reader=reader).warm())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every variant")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import cv2

    cv2.setNumThreads(1)
    suite = P.suite()
    probes = [next(p for p in suite if p.name.startswith(name)) for name in PROBES]
    with console.status("encoding the probes…"):
        media = {p.name: p.encode() for p in probes}
    lives = variants()
    cpu = {k: 0.0 for k in lives}
    found: dict[str, list[str]] = {k: [] for k in lives}
    for r in range(args.rounds):
        for name, live in lives.items():
            for p in probes:
                session = live.session(f"{p.name}-{r}")
                t0 = time.process_time()
                scored = list(analyze_source(media[p.name], session))
                cpu[name] += time.process_time() - t0
                if r == 0:  # an event of the probe's category (none at all on the benign one)
                    cats = {str(e.category) for x in scored for e in x.events}
                    hit = p.category in cats if p.category else not cats
                    found[name].append(f"{p.name.split('-')[0]} {'yes' if hit else 'no'}")
    seconds = args.rounds * sum(p.duration_s for p in probes)
    base = cpu["no cascade"] / seconds
    t = Table(title=f"CPU-s per second of 720p video, one thread, {args.rounds} interleaved rounds of "
              f"{len(probes)} probes")  # fmt: skip
    raised = "its category raised"
    for col in ("variant", "CPU-s per s", "added by the cascade", "ratio to no cascade", raised):
        t.add_column(col, justify="left" if col == raised else "right")
    for name in lives:
        v = cpu[name] / seconds
        t.add_row(name, f"{v:.4f}", f"{v - base:+.4f}", f"{v / base:.2f}x", ", ".join(found[name]))
    console.print(t)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
