"""``gopwatch prune --model ocr-detector``: the live text detector, pruned the product's way.

The detector (PP-OCRv4 mobile, :func:`models.teacher.live_ocr.live_detector`) is the live path's
biggest per-GOP network: it reads every I-frame. It comes without training data, so it is pruned
by distillation from itself: the unpruned network's probability map on training-side frames is
the target (binary cross-entropy), and no label is needed.

- **Frames**: I-frames of 720p streams over the training corpus's footage
  (:data:`~streaming.synth.scenario.PHOTOS`, :data:`~streaming.synth.scenario.CLIPS`): the
  synthetic generator's captions, and captions drawn with the probe suite's renderer (Debian's
  fonts; outlined, shadowed, boxed, plain, ticker; several colours, sizes and positions) on the
  training photographs under moving cameras, at the live path's 480-pixel detection size; flipped
  copies too. The suite's footage (its held-out photographs) is never used here.
- **Method** (:mod:`models.group_pruning`): choose the share of each dependency group's channels
  that gives the target MACs, train with the growing group-lasso penalty and the thresholding
  step, force what is left of the chosen to zero at the ramp's end, train on, cut.
- **Baseline** (``method="oneshot"``): the same channels zeroed at once and held, the same steps.
- **Checks**: the cut network must give the masked one's map; on held-out real-footage I-frames
  (the suite's probes) the boxes are compared with the unpruned detector's; latency is ONNX
  Runtime's, one thread, interleaved with the unpruned graph.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models import group_pruning as G
from models.onnx_torch import OnnxNet
from models.pruning import Schedule
from models.teacher.live_ocr import live_detector
from streaming.extract import ExtractConfig, StreamExtractor
from streaming.synth import Encoding, Scenario, encode_stream
from streaming.synth.scenario import CLIPS, PHOTOS, Scene, TextOverlay

Progress = Callable[[str, int, int], None]  # (stage, done, total)
SIZE = (480, 256)  # a 720p frame at the live path's 480-pixel detection size (rapidocr's rounding)
LINES = ("FREE CRYPTO GIVEAWAY", "thanks for watching", "SEND BTC DOUBLE IT", "Level 3  Score 1200",
         "subscribe for more", "DM ME ON TELEGRAM", "live from the studio", "WIN AN IPHONE NOW",
         "breaking news tonight", "gift subs appreciated", "chapter two", "GG well played")  # fmt: skip
OUTPUT = "ocr_det.onnx"


@dataclass(frozen=True)
class OcrPrunePlan:
    out_dir: Path
    target_macs: float = 0.5
    criterion: str = "l1"
    method: str = "progressive"
    steps: int = 1500
    batch: int = 4
    lr: float = 3e-4  # cosine decay to a twentieth over the steps
    text_weight: float = 0.0  # extra loss weight on the teacher's text pixels
    peak: float = 0.05  # the penalty weight at the ramp's end
    ramp_share: float = 2 / 3  # of the steps
    shrink: float = 0.5  # thresholding: group norms shrink by shrink x weight per step
    threshold: float = 1e-3
    round_to: int = 16
    streams: int = 2  # per training source
    sources: int | None = None  # the first this many training sources (None: all)
    seed: int = 0
    cache: Path | None = None


def to_input(rgb: np.ndarray) -> np.ndarray:
    """A frame as the detector's input: resized to :data:`SIZE`, ``x/127.5 - 1``, NCHW."""
    return cv2.dnn.blobFromImage(cv2.resize(rgb, SIZE), 1 / 127.5, mean=(127.5, 127.5, 127.5))


def keyframes(data: bytes) -> list[np.ndarray]:
    ex = StreamExtractor("f", ExtractConfig(keyframe_width=1280))
    return [g.keyframe for g in ex.feed(data) + ex.flush() if g.keyframe is not None]


def training_frames(plan: OcrPrunePlan, progress: Progress | None = None) -> np.ndarray:
    """(N, 3, 256, 480) inputs from training-side streams, cached by the plan's recipe."""
    name = f"frames-v2-{plan.streams}-{plan.sources}-{plan.seed}.npy"
    path = plan.cache / name if plan.cache else None
    if path is not None and path.is_file():
        return np.load(path)
    rng = np.random.default_rng(plan.seed)
    sources = ([(s, "photo") for s in PHOTOS] + [(s, "clip") for s in CLIPS])[: plan.sources]
    out: list[np.ndarray] = []
    total = len(sources) * plan.streams
    for k in range(total):
        src, kind = sources[k % len(sources)]
        caps = tuple(TextOverlay(start_s=t, end_s=t + 3.0, text=str(rng.choice(LINES)),
                                 size=float(rng.uniform(0.03, 0.15)), x=float(rng.uniform(0.25, 0.75)),
                                 y=float(rng.uniform(0.08, 0.92)), box=bool(rng.random() < 0.5))
                     for t in (0.5, 5.0) if rng.random() < 0.75)  # fmt: skip
        motion = "pan" if rng.random() < 0.5 else "zoom"
        scene = Scene(start_s=0, kind=kind, source=src, motion=motion)
        enc = Encoding(width=1280, height=720, gop_s=1.0, segment_s=2.0)
        sc = Scenario(name=f"ocr-{k}", seed=plan.seed * 1000 + k, duration_s=10.0, scenes=(scene,),
                      encoding=enc, overlays=caps)  # fmt: skip
        out += [to_input(f)[0] for f in keyframes(encode_stream(sc))]
        if progress:
            progress("frames", k + 1, total)
    out += _styled_frames(plan, rng, progress)
    frames = np.stack(out).astype(np.float32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, frames)
    return frames


def held_out_frames(every: int = 3) -> list[np.ndarray]:
    """Detector inputs from the real-footage suite's probes (held-out photographs under moving
    cameras): every ``every``-th text probe and four benign ones, all their I-frames."""
    from streaming.offline import probes as P

    suite = P.suite()
    picked = [p for p in suite if p.category == "text_lexicon"][::every]
    picked += [p for p in suite if p.name.startswith("benign-")][:4]
    return [to_input(f) for p in picked for f in keyframes(p.encode())]


def _styled_frames(
    plan: OcrPrunePlan, rng: np.random.Generator, progress: Progress | None
) -> list[np.ndarray]:
    """Captions in the suite's fonts and styles over the training photographs (not the suite's)."""
    from streaming.offline import overlays as O
    from streaming.offline.probes import Probe
    from streaming.synth import assets

    photos = list(PHOTOS)[: plan.sources]
    fonts = O.fonts()
    total = len(photos) * plan.streams
    out: list[np.ndarray] = []
    for k in range(total):
        src = assets.photo_path(photos[k % len(photos)])
        paint = O.text_painter(str(rng.choice(LINES)), float(rng.uniform(0.03, 0.15)),
                               str(rng.choice(list(O.POSITIONS))), str(rng.choice(fonts)),
                               str(rng.choice(list(O.COLOURS))),
                               str(rng.choice(["outline", "shadow", "box", "plain", "ticker"])))  # fmt: skip
        probe = Probe(f"train-{k}", None, src, str(rng.choice(["pan", "zoom", "shake"])), paint)
        out += [to_input(f)[0] for f in keyframes(probe.encode())]
        if progress:
            progress("styled frames", k + 1, total)
    return out


def schedule(plan: OcrPrunePlan) -> Schedule:
    """The student's penalty schedule (:class:`models.pruning.Schedule`), its ramp a share of the steps."""
    return Schedule(peak=plan.peak, ramp=max(1, int(plan.steps * plan.ramp_share)), threshold=plan.threshold)


def share_for(net: nn.Module, example: torch.Tensor, keep: list[nn.Module], criterion: str,
              target: float, round_to: int) -> tuple[float, list[G.Coupled]]:  # fmt: skip
    """The channel share whose cut network has ``target`` of the MACs (bisection), and its groups."""
    full = G.macs(net, example)
    lo, hi = 0.0, 0.9
    best: tuple[float, list[G.Coupled]] | None = None
    for _ in range(10):
        mid = (lo + hi) / 2
        trial = copy.deepcopy(net)
        cs = G.groups(trial, example, [_same(trial, net, m) for m in keep])
        G.choose(cs, criterion, mid, round_to)
        ratio = G.macs(G.cut(trial, example, cs), example) / full
        if ratio <= target:
            hi, best = mid, (mid, cs)
        else:
            lo = mid
    share = best[0] if best else hi
    cs = G.groups(net, example, keep)
    G.choose(cs, criterion, share, round_to)
    return share, cs


def _same(copy_: nn.Module, orig: nn.Module, module: nn.Module) -> nn.Module:
    """``module`` of ``orig`` found in its deep copy."""
    name = next(n for n, m in orig.named_modules() if m is module)
    return dict(copy_.named_modules())[name]


def _head(net: nn.Module) -> list[nn.Module]:
    """The map's last layer: its one output channel stays."""
    return [[m for m in net.modules() if isinstance(m, nn.ConvTranspose2d | nn.Conv2d)][-1]]


def train(net: nn.Module, cs: list[G.Coupled], frames: np.ndarray, targets: np.ndarray, plan: OcrPrunePlan,
          progress: Progress | None = None) -> dict[str, Any]:  # fmt: skip
    """Distil into ``net`` with the plan's method; the chosen channels end at exactly zero."""
    rng = np.random.default_rng(plan.seed)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=plan.lr)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, plan.steps, eta_min=plan.lr / 20)
    net.eval()  # batch norm keeps its statistics: small batches of one kind of frame
    constraint = G.Constraint(cs, schedule(plan), plan.method, plan.shrink)
    losses = []
    for step in range(1, plan.steps + 1):
        idx = rng.choice(len(frames), plan.batch, replace=False)
        x, y = torch.from_numpy(frames[idx]), torch.from_numpy(targets[idx])
        if rng.random() < 0.5:
            x, y = x.flip(3), y.flip(3)
        loss = F.binary_cross_entropy(net(x).clamp(1e-6, 1 - 1e-6), y, weight=1 + plan.text_weight * y)
        opt.zero_grad()
        constraint.loss(loss, step).backward()
        opt.step()
        decay.step()
        losses.append(float(loss.detach()))
        constraint.after_step(step)
        if progress:
            progress(f"training ({plan.method})", step, plan.steps)
    zero_at, forced = constraint.zero_at, constraint.forced
    return {"ramp_steps": constraint.schedule.ramp, "all_zero_at_step": zero_at, "forced_at_ramp_end": forced,
            "loss_first": float(np.mean(losses[:20])), "loss_last": float(np.mean(losses[-20:]))}  # fmt: skip


def _post() -> Callable[[np.ndarray], list[tuple[int, int, int, int]]]:
    """The live reader's own DB post-processing (thresholds, unclipping) as boxes in input pixels."""
    from models.teacher.sources import OcrSource

    reader = OcrSource(max_side=480, live=True)
    reader.detect(np.zeros((SIZE[1], SIZE[0], 3), np.uint8))  # loads the detector and its settings
    post = reader._ocr.text_det.postprocess_op

    def boxes(prob: np.ndarray) -> list[tuple[int, int, int, int]]:
        quads, _ = post(prob, (SIZE[1], SIZE[0]))
        out = []
        for q in quads:
            q = np.asarray(q).reshape(-1, 2)
            x0, y0 = q.min(0)
            x1, y1 = q.max(0)
            out.append((int(x0), int(y0), int(x1 - x0), int(y1 - y0)))
        return out

    return boxes


def _iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    x0, y0, x1, y1 = (
        max(a[0], b[0]),
        max(a[1], b[1]),
        min(a[0] + a[2], b[0] + b[2]),
        min(a[1] + a[3], b[1] + b[3]),
    )
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    return inter / float(a[2] * a[3] + b[2] * b[3] - inter)


def agreement(pruned: Any, full: Any, frames: list[np.ndarray]) -> dict[str, float]:
    """On held-out frames, with the live reader's post-processing: the unpruned detector's text
    boxes found again (IoU >= 0.5), and boxes that only the pruned one finds."""
    boxes = _post()
    found = kept = extra = 0
    for x in frames:
        a, b = (boxes(s.run(None, {"x": x})[0]) for s in (full, pruned))
        found += len(a)
        kept += sum(any(_iou(p, q) >= 0.5 for q in b) for p in a)
        extra += sum(not any(_iou(q, p) >= 0.5 for p in a) for q in b)
    return {"boxes": found, "recall_of_unpruned_boxes": kept / max(found, 1), "extra_boxes": extra}


def latency_ms(paths: list[Path], frames: list[np.ndarray], rounds: int = 3) -> list[float]:
    """Median ms per frame of each ONNX file, one thread, interleaved."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = 1, 1, 3
    sessions = [ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"]) for p in paths]
    times: list[list[float]] = [[] for _ in sessions]
    for s in sessions:
        s.run(None, {"x": frames[0]})
    for _ in range(rounds):
        for x in frames:
            for i, s in enumerate(sessions):
                t0 = time.perf_counter()
                s.run(None, {"x": x})
                times[i].append((time.perf_counter() - t0) * 1e3)
    return [float(np.median(t)) for t in times]


def teacher_maps(net: nn.Module, frames: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate(
            [net(torch.from_numpy(frames[i : i + 8])).numpy() for i in range(0, len(frames), 8)]
        )


def prune_detector(
    plan: OcrPrunePlan, held_out: list[np.ndarray], progress: Progress | None = None
) -> dict[str, Any]:
    """Prune, cut, export and measure; writes :data:`OUTPUT` and its card to ``plan.out_dir``."""
    import onnxruntime as ort

    src = live_detector()
    net = OnnxNet(src)
    params_unpruned = sum(p.numel() for p in net.parameters())
    frames = training_frames(plan, progress)
    targets = teacher_maps(net, frames)
    example = torch.from_numpy(frames[:1])
    share, cs = share_for(net, example, _head(net), plan.criterion, plan.target_macs, plan.round_to)
    if plan.criterion == "taylor":  # gradients of the distillation loss at the start
        loss = F.binary_cross_entropy(net(torch.from_numpy(frames[:8])).clamp(1e-6, 1 - 1e-6),
                                      torch.from_numpy(targets[:8]))  # fmt: skip
        loss.backward()
        G.choose(cs, plan.criterion, share, plan.round_to)
        net.zero_grad()
    full_macs = G.macs(net, example)
    history = train(net, cs, frames, targets, plan, progress)
    with torch.no_grad():
        masked = net(example)
    cut = G.cut(net, example, cs)
    assert isinstance(cut, OnnxNet)
    with torch.no_grad():
        gap = float((cut(example) - masked).abs().max())
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    out = plan.out_dir / OUTPUT
    cut.export(out, example)
    ms = latency_ms([src, out], held_out)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    agree = agreement(ort.InferenceSession(str(out), so), ort.InferenceSession(str(src), so), held_out)
    card = {
        "model": "ocr-detector", "source": src.name, "method": plan.method, "criterion": plan.criterion,
        "share_of_channels": round(share, 4), "macs": G.macs(cut, example), "macs_unpruned": full_macs,
        "params": sum(p.numel() for p in cut.parameters()),
        "params_unpruned": params_unpruned,
        "latency_ms": {"pruned": ms[1], "unpruned": ms[0], "threads": 1, "input": list(SIZE)},
        "held_out": agree | {"frames": len(held_out)}, "cut_vs_masked_max_gap": gap,
        "schedule": schedule(plan).to_dict() | history,
        "plan": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(plan).items()},
        "training_frames": len(frames), "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
    }  # fmt: skip
    (plan.out_dir / "ocr_det.card.json").write_text(json.dumps(card, indent=2))
    return card
