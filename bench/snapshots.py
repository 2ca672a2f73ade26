"""What reading a still costs: JPEG DCT coefficients (partial decode) against a full decode to RGB.

    .venv/bin/python bench/snapshots.py [--rounds 30]

One real photograph (scikit-image's astronaut) re-encoded at quality 85, 4:2:0, at 360p, 720p and
1080p; per size, interleaved rounds on one thread, the median in milliseconds per still:

- full decode to RGB by OpenCV (libjpeg-turbo, with its SIMD IDCT and colour conversion);
- ``jpeglib.read_dct`` (the coefficients, no IDCT) with the libjpeg builds jpeglib ships: 6b (its
  default) and libjpeg-turbo 2.1;
- OpenCV's decode at 1/8 scale: Huffman decoding with only the DC coefficients kept and a
  1x1 inverse DCT, the floor under any reader that must walk the entropy-coded data;
- ``models.snapshot.jpeg.coefficients(data, log_scaled=True, keep=K)``: the checks, and the
  native reader (``dct.c``: libjpeg-turbo's Huffman decoder with its inverse DCT replaced, each
  block's K lowest coefficients dequantised and log-scaled into the network's layout), for all 64
  coefficients and for the 16 the classifier takes;
- the compressed-domain classifier's screening copy (:mod:`models.snapshot.fold`) on those 16,
  run by PyTorch and by ONNX Runtime (:mod:`models.snapshot.onnx_net`, what the tier runs).

With ``--dct-model`` and ``--rgb-model`` (``gopwatch snapshots train [--kind rgb]``): both
classifiers scored on the same held-out stills (synthetic seeds 9001-9040 and the real held-out
photographs), and each whole path timed per 720p still, interleaved: DCT (checks, coefficient
read, network) against RGB (full decode, scaling to 320x180, network), both networks run by ONNX
Runtime as the tier runs them, and again with their PyTorch copies.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import jpeglib
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from models.snapshot.fold import FoldedSnapshotNet, channels_last, for_inference
from models.snapshot.jpeg import coefficients
from models.snapshot.net import SnapshotNet, tensors
from streaming.synth.assets import photo

console = Console(width=120)
SIZES = {"360p": (640, 360), "720p": (1280, 720), "1080p": (1920, 1080)}


def one_size(
    path: Path, w: int, h: int, rounds: int, net: FoldedSnapshotNet, ort: object
) -> dict[str, float]:
    """Median milliseconds per step for one picture size, the steps interleaved."""
    _, buf = cv2.imencode(".jpg", cv2.resize(photo("astronaut"), (w, h)), [cv2.IMWRITE_JPEG_QUALITY, 85])
    data = buf.tobytes()
    path.write_bytes(data)
    c = coefficients(data, log_scaled=True, keep=net.cfg.coefficients)
    inputs = [channels_last(x) for x in tensors(c)[:3]]

    def read(version: str) -> None:
        jpeglib.version.set(version)
        j = jpeglib.read_dct(str(path))
        j.Y, j.Cb, j.Cr  # noqa: B018  (the planes are read on first access)

    steps = {
        "full": lambda: cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR),
        "6b": lambda: read("6b"),
        "turbo": lambda: read("turbo210"),
        "floor": lambda: cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_COLOR_8),
        "coefficients64": lambda: coefficients(data, log_scaled=True),
        "coefficients": lambda: coefficients(data, log_scaled=True, keep=net.cfg.coefficients),
        "net": lambda: net(*inputs, c.subsampling),
        "net_ort": lambda: ort(*inputs, c.subsampling),  # type: ignore[operator]
    }
    times: dict[str, list[float]] = {k: [] for k in steps}
    with torch.inference_mode():
        for _ in range(rounds):
            for k, fn in steps.items():
                t0 = time.perf_counter()
                fn()
                times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: float(np.median(v)) for k, v in times.items()}


def whole_path_ms(
    paths: dict[str, tuple[object, bool]], data: bytes, rounds: int, block: int
) -> dict[str, list[float]]:
    """Milliseconds per call of each path (a network, and whether the QR reader runs) on ``data``,
    ``rounds`` calls each. ``block`` 1: strictly interleaved (each call follows another path's,
    which has evicted its caches). Larger: blocks of ``block`` calls per path, the paths
    alternating block by block and the order flipped every round, the first call of each block
    not counted (the one that refills the caches the other path left): each path as a worker that
    runs only that path would see it, with the same drift."""
    from streaming.screening import classify_jpeg

    times: dict[str, list[float]] = {k: [] for k in paths}
    order = list(paths)
    with torch.inference_mode():
        for r in range(max(1, rounds // block)):
            for k in order if r % 2 == 0 else order[::-1]:
                net, reader = paths[k]
                for j in range(block + (block > 1)):
                    t0 = time.perf_counter()
                    classify_jpeg(net, data, reader)  # type: ignore[arg-type]
                    if j or block == 1:
                        times[k].append((time.perf_counter() - t0) * 1e3)
    return times


def compare(dct_dir: Path, rgb_dir: Path, rounds: int) -> None:
    """Accuracy on the same held-out stills and whole-path time per 720p still, interleaved and
    blocked (:func:`whole_path_ms`), each path with and without the QR reader."""
    from models.snapshot.net import load_snapshot
    from streaming.offline.stills import accuracy, held_out_stills

    # each as its tier would run it: batch norms folded, channels-last (and the DCT one's chroma
    # path composed into its first convolution)
    trained = {"DCT": load_snapshot(dct_dir)[0], "RGB": load_snapshot(rgb_dir)[0]}
    nets = {k: for_inference(v) for k, v in trained.items()}  # run by ONNX Runtime
    paths = {f"{k}{name}": (net, reader) for k, net in nets.items()
             for name, reader in (("", True), (", no QR reader", False))}  # fmt: skip
    paths.update({f"{k}, PyTorch copy": (for_inference(v, "torch"), True) for k, v in trained.items()})
    synthetic, real = held_out_stills()
    _, buf = cv2.imencode(".jpg", cv2.resize(photo("astronaut"), (1280, 720)), [cv2.IMWRITE_JPEG_QUALITY, 85])
    data = buf.tobytes()
    interleaved = {k: float(np.median(v)) for k, v in whole_path_ms(paths, data, rounds, 1).items()}
    blocked = {k: float(np.median(v)) for k, v in whole_path_ms(paths, data, rounds, 10).items()}
    t = Table(title=f"the two classifiers on the same held-out stills ({len(synthetic)} synthetic, "
              f"{len(real)} real) and per 720p still, one thread")  # fmt: skip
    for col in ("path", "scene acc. synthetic", "scene acc. real", "QR cue real", "text cue real",
                "ms per 720p still, interleaved", "ms, blocked", "stills/s per core (blocked)",
                "cores, 100k streams, 1 still/30 s"):  # fmt: skip
        t.add_column(col, justify="right")
    for k, (net, reader) in paths.items():
        a, b = accuracy(net, synthetic, reader), accuracy(net, real, reader)  # type: ignore[arg-type]
        t.add_row(k, f"{a['scene_accuracy']:.3f}", f"{b['scene_accuracy']:.3f}",
                  f"{b['qr_code_accuracy']:.3f}", f"{b['large_text_accuracy']:.3f}", f"{interleaved[k]:.2f}",
                  f"{blocked[k]:.2f}", f"{1000 / blocked[k]:.0f}",
                  f"{100_000 / 30 / (1000 / blocked[k]):.1f}")  # fmt: skip
    console.print(t)
    for suffix in ("", ", no QR reader", ", PyTorch copy"):
        il = interleaved[f"RGB{suffix}"] / interleaved[f"DCT{suffix}"]
        bl = blocked[f"RGB{suffix}"] / blocked[f"DCT{suffix}"]
        console.print(f"RGB path time / DCT path time{suffix or ', both with the QR reader'}: "
                      f"{il:.2f}x interleaved, {bl:.2f}x blocked")  # fmt: skip
    robust(nets, synthetic + real)


def robust(nets: dict[str, object], stills: list) -> None:
    """Accuracy of both classifiers by JPEG quality band and by picture height, on the same stills."""
    from streaming.offline.stills import robustness

    parts = {k: robustness(net, stills) for k, net in nets.items()}  # type: ignore[arg-type]
    t = Table(title=f"by JPEG quality and size, the same {len(stills)} held-out stills (synthetic and real)")
    t.add_column("stills", justify="left")
    t.add_column("n", justify="right")
    for metric in ("scene", "QR cue", "text cue"):
        for k in nets:
            t.add_column(f"{metric}, {k}", justify="right")
    for part in parts["DCT"]:
        row = [part, str(parts["DCT"][part]["n"])]
        for key in ("scene_accuracy", "qr_code_accuracy", "large_text_accuracy"):
            row += [f"{parts[k][part][key]:.3f}" for k in nets]
        t.add_row(*row)
    console.print(t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--dct-model", type=Path, default=None, help="a snapshot classifier folder")
    ap.add_argument("--rgb-model", type=Path, default=None, help="an RGB baseline folder (--kind rgb)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    trained = SnapshotNet().eval()
    net, ort = FoldedSnapshotNet(trained), for_inference(trained)
    work = Path(tempfile.mkdtemp(prefix="gopwatch-stills-"))
    t = Table(title=f"milliseconds per still, one thread, median of {args.rounds} interleaved rounds")
    for col in ("size", "full decode (OpenCV)", "read_dct libjpeg 6b", "read_dct turbo 2.1",
                "1/8 decode (floor)", "native, 64 coef.", "native, 16 coef.", "DCT network (PyTorch)",
                "DCT network (ONNX Runtime)",
                "16 coef. / full decode"):  # fmt: skip
        t.add_column(col, justify="right")
    for name, (w, h) in SIZES.items():
        med = one_size(work / f"{name}.jpg", w, h, args.rounds, net, ort)
        t.add_row(name, *(f"{v:.2f}" for v in med.values()), f"{med['coefficients'] / med['full']:.2f}x")
    console.print(t)
    shutil.rmtree(work, ignore_errors=True)
    if args.dct_model and args.rgb_model:
        compare(args.dct_model, args.rgb_model, args.rounds)
    console.print("goal (issue 16): partial decode + inference >= 2x faster than full decode + an RGB "
                  "network of the same accuracy; >= 200 stills/s per core at 720p")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
