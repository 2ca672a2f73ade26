"""Pruning the student: the progressive method against Torch-Pruning-style one-shot pruning.

    .venv/bin/python bench/prune.py [--criteria l1,taylor] [--target-macs 0.5] [--suite quick|full]
                                    [--scope layer|global] [--round-to 16]

For each criterion, in the same run and on the same data, epochs and MACs:

- ``progressive``: the growing group-sparsity penalty with the thresholding step, then the cut
  (``gopwatch prune``);
- ``oneshot``: the same filters zeroed at once and fine-tuned for the same steps (the baseline).

Per network: MACs and parameters per GOP, milliseconds per GOP on one thread (median of
interleaved runs against the unpruned network), held-out AUC per category against the unpruned
network's, the real-footage probe suite's verdicts against the unpruned network's, and the whole
live path's CPU per second of 720p video (the engine's decode, extraction and student, interleaved),
read as streams per core. The AUC drops here are on the card's three test streams, which move by
about 0.03 a window; ``bench/prune_heldout.py`` measures the kept checkpoints (``--keep``) on 30 more.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from rich.console import Console
from rich.progress import track
from rich.table import Table

from models import pruning
from models.registry import SHIPPED, load_student
from schemas.settings import Settings
from streaming.offline.prune import PrunePlan, ms_per_gop, prune_student
from streaming.pipeline import LivePath, analyze_source
from streaming.synth import Encoding, encode_stream, random_scenario

console = Console(width=160)
CACHE = Path.home() / ".cache" / "gopwatch" / "prune-corpus"


def verdicts(model_dir: Path, quick: bool) -> dict[str, bool]:
    """Per probe of the real-footage suite: an event of its category (risk) or any (benign)."""
    from streaming.offline.probes import run_probe, suite

    live = LivePath.load(Settings(), model_dir)
    out = {}
    for p in track(suite(quick), description=f"probes, {model_dir.name}", console=console):
        r = run_probe(live, p)
        out[p.name] = r.found if p.category else bool(r.false_alarms)
    return out


def live_cpu(dirs: list[Path], seconds: float = 60.0, rounds: int = 2) -> list[float]:
    """CPU seconds per second of a 720p25 synthetic stream through the live path, per model,
    interleaved ``rounds`` times (the median kept)."""
    torch.set_num_threads(1)
    sc = random_scenario(909, seconds / 60, Encoding(width=1280, height=720))
    data = encode_stream(sc)
    lives = [LivePath.load(Settings(), d) for d in dirs]
    times: list[list[float]] = [[] for _ in dirs]
    for r in range(rounds):
        for i, live in enumerate(lives):
            t = time.process_time()
            for _ in analyze_source(data, live.session(f"cpu-{r}-{i}")):
                pass
            times[i].append((time.process_time() - t) / seconds)
    return [float(np.median(t)) for t in times]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--criteria", default="l1,taylor", help="importance criteria, comma-separated")
    ap.add_argument("--target-macs", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--suite", choices=("quick", "full", "none"), default="quick")
    ap.add_argument("--keep", type=Path, default=None, help="keep the pruned checkpoints in this folder")
    ap.add_argument(
        "--scope", choices=pruning.SCOPES, default="layer", help="one share per layer, or one ranking"
    )
    ap.add_argument(
        "--round-to", type=int, default=16, help="each layer keeps a multiple of this many filters"
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    crits = [c.strip() for c in args.criteria.split(",") if c.strip()]
    if not crits or any(c not in pruning.CRITERIA for c in crits):
        ap.error(f"--criteria: from {', '.join(pruning.CRITERIA)}")
    work = args.keep or Path(tempfile.mkdtemp(prefix="gopwatch-prune-"))
    original = load_student(SHIPPED)[0]
    base_macs = pruning.macs_per_gop(original)
    runs = []
    for crit in crits:
        for method in ("progressive", "oneshot"):
            out = work / f"{method}-{crit}"
            with console.status(f"{method} pruning, {crit} criterion…"):
                t0 = time.perf_counter()
                res = prune_student(PrunePlan(out_dir=out, target_macs=args.target_macs, criterion=crit,
                                              method=method, epochs=args.epochs, cache=CACHE,
                                              scope=args.scope, round_to=args.round_to))  # fmt: skip
            console.print(f"{method} {crit}: {time.perf_counter() - t0:.0f} s")
            runs.append((method, crit, out, res))
    nets = [load_student(r[2])[0] for r in runs]
    lat_base, lat = [], [[] for _ in runs]
    for _ in range(3):  # interleaved
        lat_base.append(ms_per_gop(original))
        for i, net in enumerate(nets):
            lat[i].append(ms_per_gop(net))
    base_ms = float(np.median(lat_base))
    quick = args.suite == "quick"
    ref = verdicts(SHIPPED, quick) if args.suite != "none" else {}
    cpu = live_cpu([SHIPPED, *(r[2] for r in runs)])
    t = Table(title=f"student pruned to {args.target_macs:g} of its MACs per GOP ({args.scope} ranking, "
              f"layers kept in multiples of {args.round_to}; {base_ms:.2f} ms per GOP unpruned on ONNX "
              "Runtime), same data and steps")  # fmt: skip
    short = {
        "photosensitive_flash": "flash",
        "qr_code": "qr",
        "text_lexicon": "text",
        "known_content": "known*",
    }
    cols = ["method", "criterion", "MACs", "fewer", "params", "ms/GOP", "faster"]
    cols += [f"AUC drop {v}" for v in short.values()] + [
        "probe verdicts changed",
        "live CPU-s/s",
        "streams/core",
    ]
    for col in cols:
        t.add_column(col, justify="left" if col in ("method", "criterion") else "right")
    params = sum(p.numel() for p in original.parameters())
    t.add_row("unpruned", "-", f"{base_macs / 1e6:.2f} M", "1.00x", f"{params:,}", f"{base_ms:.2f}", "1.00x",
              *(["-"] * len(short)), "-", f"{cpu[0]:.4f}", "1.00x")  # fmt: skip
    for i, (method, crit, out, res) in enumerate(runs):
        m = res.card.metrics
        drops = [
            res.before[c].get("auc_vs_truth", np.nan) - res.after[c].get("auc_vs_truth", np.nan)
            for c in short
        ]
        changed = "-"
        if ref:
            got = verdicts(out, quick)
            changed = f"{sum(got[k] != ref[k] for k in ref)} of {len(ref)}"
        ms = float(np.median(lat[i]))
        t.add_row(method, crit, f"{m['macs_per_gop'] / 1e6:.2f} M", f"{base_macs / m['macs_per_gop']:.2f}x",
                  f"{m['params']:,}", f"{ms:.2f}", f"{base_ms / ms:.2f}x", *(f"{d:+.3f}" for d in drops),
                  changed,
                  f"{cpu[i + 1]:.4f}", f"{cpu[0] / cpu[i + 1]:.2f}x")  # fmt: skip
    console.print(t)
    console.print(
        "known*: the label-trained known-content head, which no decision uses (the knowledge base decides)"
    )
    console.print("goals: >= 2x fewer MACs, >= 1.5x faster, AUC drop <= 0.01 per category, the same probe "
                  "verdicts; progressive better than one-shot at equal MACs")  # fmt: skip
    console.print(f"checkpoints: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
