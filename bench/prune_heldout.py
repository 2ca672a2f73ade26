"""Pruned students on a held-out set big enough to see a 0.01 AUC drop.

    .venv/bin/python bench/prune_heldout.py DIR [DIR ...] [--seeds 601-630] [--boot 2000]

The card's test split (three synthetic streams, 4-11 positive windows per category) moves a
category's AUC by about 0.03 per window, so it cannot tell a drop of 0.01 from none. This runs
the unpruned student and each checkpoint in DIR on the windows of more synthetic streams (seeds
that no split of the card uses, checked), and prints per category the AUC, the drop against
the unpruned student on the same windows, and its 95 % interval from a paired bootstrap over
streams (windows of one stream are not independent). Streams are extracted once and cached with
``bench/prune.py``'s corpus.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from rich.console import Console
from rich.progress import track
from rich.table import Table

from models.distill import predict
from models.quality import roc_auc
from models.registry import SHIPPED, load_student
from schemas.errors import UsageError
from streaming.offline.prune import corpus
from streaming.offline.training import parse_seeds
from streaming.synth import Encoding

console = Console(width=170)
CACHE = Path.home() / ".cache" / "gopwatch" / "prune-corpus"
SHORT = {"photosensitive_flash": "flash", "qr_code": "QR", "text_lexicon": "text"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", type=Path, nargs="+", help="pruned checkpoints (gopwatch prune --out)")
    ap.add_argument("--seeds", default="601-630", help="held-out synthetic stream seeds, e.g. 601-630")
    ap.add_argument("--boot", type=int, default=2000, help="bootstrap resamples")
    args = ap.parse_args()
    torch.set_num_threads(1)
    try:
        seeds = parse_seeds(args.seeds)
    except UsageError as e:
        ap.error(f"--seeds: {e}")
    original, card = load_student(SHIPPED)
    used = {s for v in card.data.get("synthetic", {}).values() for s in v}
    if used & set(seeds):
        ap.error(f"--seeds overlap the card's splits: {sorted(used & set(seeds))}")
    width, height = (int(v) // 2 * 2 for v in card.data.get("resolution", (640, 360)))
    enc, minutes = Encoding(width=width, height=height), float(card.data.get("minutes", 1.0))
    parts = [
        corpus([s], minutes, enc, original, CACHE) for s in track(seeds, "held-out streams", console=console)
    ]
    labels = [p.labels for p in parts]
    nets = {"unpruned": original} | {d.name: load_student(d)[0] for d in args.dirs}
    probs = {name: [predict(net, p) for p in parts] for name, net in nets.items()}
    cats = [c for c in SHORT if c in original.cfg.categories]
    col = {c: original.cfg.categories.index(c) for c in cats}
    rng = np.random.default_rng(0)
    draws = [rng.integers(0, len(parts), len(parts)) for _ in range(args.boot)]

    def auc(name: str, c: str, idx: np.ndarray | range) -> float:
        y = np.concatenate([labels[i][:, col[c]] for i in idx])
        p = np.concatenate([probs[name][i][:, col[c]] for i in idx])
        keep = ~np.isnan(y)
        return roc_auc(y[keep], p[keep])

    whole = range(len(parts))
    pos = {c: int(np.nansum(np.concatenate([lab[:, col[c]] for lab in labels]))) for c in cats}
    n = sum(len(lab) for lab in labels)
    t = Table(title=f"held-out AUC on {len(parts)} synthetic streams (seeds {args.seeds}, {n} windows; "
              f"positives: {', '.join(f'{SHORT[c]} {pos[c]}' for c in cats)})")  # fmt: skip
    t.add_column("checkpoint")
    for c in cats:
        t.add_column(f"{SHORT[c]} AUC", justify="right")
        t.add_column(f"{SHORT[c]} drop [95 %]", justify="right")
    base = {c: [auc("unpruned", c, d) for d in draws] for c in cats}
    for name in nets:
        cells = []
        for c in cats:
            a = auc(name, c, whole)
            cells.append(f"{a:.4f}")
            if name == "unpruned":
                cells.append("-")
                continue
            drop = auc("unpruned", c, whole) - a
            boot = np.array([b - auc(name, c, d) for b, d in zip(base[c], draws, strict=True)])
            lo, hi = np.nanpercentile(boot, [2.5, 97.5])
            cells.append(f"{drop:+.4f} [{lo:+.4f}, {hi:+.4f}]")
        t.add_row(name, *cells)
    console.print(t)
    console.print("goal: the drop <= 0.01 per category (a positive drop is a loss)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
