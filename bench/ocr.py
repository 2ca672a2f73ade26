"""The live cascade's text detector as the wheel ships it, with its graph rewritten, and with the
detection-only front (models/teacher/live_ocr.py) on each runtime (ONNX Runtime, OpenVINO in f32
and in bfloat16), in the same run: milliseconds per I-frame on one thread, and whether the lines
found agree.

    .venv/bin/python bench/ocr.py [--rounds 5]

The I-frames are those of five real-footage probes (720p, held-out photographs under moving
cameras, captions of several sizes, subtitles, a QR code), detected at the live path's 480-pixel
long side, each detector called in turn on each frame.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from rich.console import Console
from rich.table import Table

from models.teacher.live_ocr import RUNTIMES, mobile_detector
from models.teacher.sources import OcrSource
from streaming.extract import ExtractConfig, StreamExtractor
from streaming.offline import probes as P

console = Console(width=110)
PROBES = ("text-0.05-bottom-plain", "text-0.08-middle-plain", "text-0.12-left-box",
          "qr-0.25-warp0.00-occl0.00", "benign-hud")  # fmt: skip


def keyframes() -> list[np.ndarray]:
    suite = P.suite()
    frames = []
    for name in PROBES:
        probe = next((p for p in suite if p.name.startswith(name)), None)
        if probe is None:
            continue
        ex = StreamExtractor(name, ExtractConfig(keyframe_width=1280))
        frames += [g.keyframe for g in ex.feed(probe.encode()) + ex.flush() if g.keyframe is not None]
    return frames


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds over the frames")
    args = ap.parse_args()
    import cv2

    cv2.setNumThreads(1)
    with console.status("encoding the probes…"):
        frames = keyframes()
    wheel = OcrSource(max_side=480, live=True, runtime="onnxruntime")
    wheel._ocr.cfg.Det.model_path = str(mobile_detector())  # the wheel's own graph
    rewritten = OcrSource(max_side=480, live=True, runtime="onnxruntime")
    # each reader its own models: the front swaps its detector's session on first use
    front = {rt: OcrSource(max_side=480, live=True, runtime=rt) for rt in RUNTIMES}

    def whole_call(reader: OcrSource) -> Callable[[np.ndarray], list[np.ndarray]]:
        def detect(rgb: np.ndarray) -> list[np.ndarray]:  # rapidocr's own call, recognition off
            res = reader._ocr(rgb, use_det=True, use_cls=False, use_rec=False)
            return [] if res.boxes is None else [np.asarray(q, np.float32).reshape(4, 2) for q in res.boxes]

        return detect

    variants = {
        "wheel's graph, rapidocr's call": whole_call(wheel),
        "rewritten graph, rapidocr's call": whole_call(rewritten),
        "rewritten graph, the front, ONNX Runtime": front["onnxruntime"].detect,
        "rewritten graph, the front, OpenVINO": front["openvino"].detect,
        "rewritten graph, the front, OpenVINO bf16 (shipped)": front["openvino-bf16"].detect,
    }
    boxes = {k: [v(f) for f in frames] for k, v in variants.items()}  # also loads the models
    ms: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for f in frames:
            for k, v in variants.items():
                t0 = time.process_time()
                v(f)
                ms[k].append((time.process_time() - t0) * 1e3)
    ref = boxes["wheel's graph, rapidocr's call"]
    t = Table(title=f"text detection per 720p I-frame at 480 px, one thread, {len(frames)} I-frames × "
              f"{args.rounds} interleaved rounds")  # fmt: skip
    for col in ("detector", "median ms", "ratio to the wheel's", "lines found", "same boxes (±1 px)"):
        t.add_column(col, justify="right")
    base = statistics.median(ms["wheel's graph, rapidocr's call"])
    for k in variants:
        same = sum(
            len(a) == len(b) and all(np.abs(p - q).max() <= 1.0 for p, q in zip(a, b, strict=True))
            for a, b in zip(boxes[k], ref, strict=True)
        )
        med = statistics.median(ms[k])
        lines = str(sum(map(len, boxes[k])))
        t.add_row(k, f"{med:.1f}", f"{base / med:.2f}x", lines, f"{same}/{len(frames)}")
    console.print(t)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
