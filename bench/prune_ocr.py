"""The live text detector pruned by the progressive method against the one-shot baseline, at the
same MACs, on the same training-side frames and steps, in one run.

    .venv/bin/python bench/prune_ocr.py [--criteria l1,taylor] [--steps 400] [--target-macs 0.5]

Per row: MACs and ONNX Runtime latency per 720p I-frame at 480 pixels (one thread, median,
interleaved with the unpruned detector), and on held-out real-footage I-frames (the probe suite's
photographs, never trained on) the share of the unpruned detector's text boxes the pruned one
finds again (IoU >= 0.5, after the live reader's own post-processing) and the boxes only it
finds. About 8 minutes a row on two threads.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from rich.console import Console
from rich.table import Table

from streaming.offline.prune_ocr import OcrPrunePlan, held_out_frames, prune_detector

console = Console(width=130)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--criteria", default="l1,taylor", help="importance criteria, comma-separated")
    ap.add_argument("--steps", type=int, default=1500, help="training steps per row")
    ap.add_argument("--target-macs", type=float, default=0.5, help="the pruned MACs as a share")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for training (timing is 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with console.status("encoding the held-out probes…"):
        held = held_out_frames()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for criterion in args.criteria.split(","):
            for method in ("progressive", "oneshot"):
                plan = OcrPrunePlan(out_dir=Path(tmp) / f"{method}-{criterion}", target_macs=args.target_macs,
                                    criterion=criterion, method=method, steps=args.steps,
                                    cache=Path(".cache/gopwatch/ocr-prune"))  # fmt: skip
                with console.status(f"{method}, {criterion}…"):
                    rows.append(prune_detector(plan, held))
    title = f"the live text detector pruned to {args.target_macs:.0%} of its MACs, {args.steps} steps"
    t = Table(title=f"{title}, {len(held)} held-out real I-frames")
    for col in ("method", "criterion", "MACs", "fewer", "ms (unpruned)", "faster", "boxes found again",
                "new boxes", "forced at ramp end"):  # fmt: skip
        t.add_column(col, justify="left" if col in ("method", "criterion") else "right")
    for c in rows:
        lat, agree = c["latency_ms"], c["held_out"]
        forced = c["schedule"]["forced_at_ramp_end"] if c["method"] == "progressive" else "-"
        fewer = c["macs_unpruned"] / c["macs"]
        t.add_row(c["method"], c["criterion"], f"{c['macs'] / 1e6:.0f} M", f"{fewer:.2f}x",
                  f"{lat['pruned']:.1f} ({lat['unpruned']:.1f})", f"{lat['unpruned'] / lat['pruned']:.2f}x",
                  f"{agree['recall_of_unpruned_boxes']:.3f} of {agree['boxes']}", str(agree["extra_boxes"]),
                  str(forced))  # fmt: skip
    console.print(t)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
