"""Stills for the snapshot classifier: made, labelled, JPEG-encoded, trained on and scored.

Training stills are frames of synthetic streams (``random_scenario``) at random times, labelled
from the script: the scene kind (photo, clip and montage are ``natural``; black frames are made
separately, plain and with sensor noise or a faint logo) and the risk cues active at that time (a
QR code overlay, a text overlay). Each is JPEG-encoded at a random quality (50-95) and size
(360p-1080p), 4:2:0 mostly, 4:2:2, 4:4:4 and progressive sometimes, as platforms make them.

Training is cross-modal as the video student's is: besides the script's labels, the network's
pooled features learn (through a projection dropped after training) the RGB teacher's view of
the same still, EfficientNet-Lite0's ImageNet embedding of its decoded pixels.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from models.snapshot.jpeg import coefficients, inspect
from models.snapshot.net import CUES, SCENES, RgbNet, SnapshotConfig, SnapshotNet, rgb_tensor
from models.snapshot.onnx_net import StillNet
from streaming.screening import batch, classify_jpeg
from streaming.synth import Encoding, random_scenario
from streaming.synth.render import Renderer
from streaming.synth.scenario import QrOverlay, TextOverlay

KIND_SCENE = {"photo": "natural", "clip": "natural", "montage": "natural", "game": "game", "screen": "screen",
              "talking_head": "talking_head"}  # fmt: skip
SIZES = ((640, 360), (960, 540), (1280, 720), (1920, 1080))
CHECKPOINT, CARD = "snapshot.pt", "snapshot.card.json"
LR = 2e-3  # AdamW's learning rate (its peak with --cosine)


@dataclass(frozen=True, slots=True)
class Still:
    jpeg: bytes
    scene: int  # index into SCENES
    cues: tuple[float, ...]  # per CUES, 0/1
    quality: int = 0  # the JPEG quality it was written at
    height: int = 0


def encode_jpeg(rgb: np.ndarray, rng: np.random.Generator) -> tuple[bytes, int]:
    """A platform-like JPEG of ``rgb``: quality 50-95, mostly 4:2:0, sometimes 4:2:2, 4:4:4, progressive."""
    subs = [cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420] * 6
    subs += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    sub = rng.choice(subs)
    quality = int(rng.integers(50, 96))
    flags = [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, int(sub),
             cv2.IMWRITE_JPEG_PROGRESSIVE, int(rng.random() < 0.15)]  # fmt: skip
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), flags)
    assert ok
    return buf.tobytes(), quality


def synthetic_stills(seeds: list[int], per_stream: int, seed: int = 0) -> Iterator[Still]:
    """``per_stream`` labelled stills of each synthetic stream, plus a black one per stream."""
    rng = np.random.default_rng([seed, 0x57111])
    for s in seeds:
        w, h = SIZES[int(rng.integers(0, len(SIZES)))]
        sc = random_scenario(s, 0.5, Encoding(width=w, height=h))
        r = Renderer(sc)
        for _ in range(per_stream):
            t = float(rng.uniform(0, sc.duration_s - 0.1))
            kind = sc.scenes[sc.scene_at(t)].kind
            active = [o for o in sc.overlays if o.start_s <= t < o.end_s]
            cues = (float(any(isinstance(o, QrOverlay) for o in active)),
                    float(any(isinstance(o, TextOverlay) for o in active)))  # fmt: skip
            jpeg, q = encode_jpeg(r.frame(int(t * sc.encoding.fps)), rng)
            yield Still(jpeg, SCENES.index(KIND_SCENE[kind]), cues, q, h)
        jpeg, q = encode_jpeg(black_frame(w, h, rng), rng)
        yield Still(jpeg, SCENES.index("black"), (0.0, 0.0), q, h)


def real_stills(seed: int = 0, training: bool = False, variants: int = 1) -> Iterator[Still]:
    """Real photographs seen by a camera, each plain, with a large caption and with a QR code,
    JPEG-encoded at a random quality and size, labelled ``natural`` with the cue drawn.
    ``training``: the photographs the synthetic streams use (``variants`` views of each);
    otherwise the held-out ones, the probe suite's footage, which training never sees."""
    from streaming.offline.overlays import (
        BENIGN_LINES,
        RISK_LINES,
        camera,
        fonts,
        footage,
        qr_painter,
        text_painter,
    )
    from streaming.synth.assets import photo_path
    from streaming.synth.scenario import PHOTOS

    rng = np.random.default_rng([seed, 0x4EA1, int(training)])
    faces = fonts()
    sources = [photo_path(n) for n in PHOTOS] if training else list(footage().values())
    lines = (*RISK_LINES, *BENIGN_LINES) if training else RISK_LINES
    for k, source in enumerate(sources * variants):
        base = camera(source, str(rng.choice(["pan", "zoom", "static"])), float(rng.uniform(0, 8)), k)
        painters = {
            (0.0, 0.0): None,
            (0.0, 1.0): text_painter(str(rng.choice(lines)), float(rng.uniform(0.05, 0.12)),
                                     str(rng.choice(["top", "middle", "bottom"])), faces[k % len(faces)],
                                     str(rng.choice(["white", "yellow", "red"])),
                                     str(rng.choice(["outline", "box", "shadow", "plain"]))),
            # training sees codes up to 60 % of the height (a 16-coefficient network trained on
            # 20-35 % missed a half-height code); the held-out range stays the probe suite's
            (1.0, 0.0): qr_painter(float(rng.uniform(0.2, 0.35) if not training else rng.uniform(0.15, 0.6)),
                                   float(rng.uniform(0.25, 0.75)), float(rng.uniform(0.3, 0.7))),
        }  # fmt: skip
        for cues, paint in painters.items():
            img = base.copy() if paint is None else paint(base.copy(), 0.0)
            w, h = SIZES[int(rng.integers(0, len(SIZES)))]
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
            jpeg, q = encode_jpeg(img, rng)
            yield Still(jpeg, SCENES.index("natural"), cues, q, h)


def black_frame(w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """A black or static frame: flat dark, with sensor noise, or with a faint corner logo."""
    img = np.full((h, w, 3), int(rng.integers(0, 24)), np.uint8)
    if rng.random() < 0.5:
        img = np.clip(img + rng.normal(0, rng.uniform(1, 6), img.shape), 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        cv2.putText(img, "LIVE", (w // 20, h // 10), cv2.FONT_HERSHEY_SIMPLEX, h / 500, (60, 60, 60), 2)
    return img


def same_shape_groups(stills: list[Still], idx: np.ndarray) -> Iterator[np.ndarray]:
    """``idx`` split into groups of one picture size and sampling (a batch needs one shape), read
    from the headers alone."""
    keys: dict[tuple[object, ...], list[int]] = {}
    for i in idx:
        info = inspect(stills[i].jpeg)
        keys.setdefault((info.width, info.height, info.sampling), []).append(int(i))
    for members in keys.values():
        yield np.array(members)


def net_inputs(net: SnapshotNet | RgbNet, items: list[Still]) -> tuple[object, ...]:
    """A batch as ``net`` takes it: DCT coefficients, or decoded pixels."""
    if isinstance(net, RgbNet):
        return (torch.stack([rgb_tensor(s.jpeg) for s in items]),)
    return batch([coefficients(s.jpeg, log_scaled=True, keep=net.cfg.coefficients) for s in items])


def teacher_embeddings(stills: list[Still], chunk: int = 32) -> torch.Tensor:
    """The RGB teacher's view of each still: EfficientNet-Lite0's ImageNet embedding of its fully
    decoded pixels at 224x224, unit length, (N, 1280)."""
    from models.teacher.efficientnet import efficientnet_lite0, preprocess

    net = efficientnet_lite0().eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(stills), chunk):
            part = stills[i : i + chunk]
            bgr = [cv2.imdecode(np.frombuffer(s.jpeg, np.uint8), cv2.IMREAD_COLOR) for s in part]
            small = np.stack([cv2.resize(x, (224, 224), interpolation=cv2.INTER_AREA) for x in bgr])
            small = np.ascontiguousarray(small[..., ::-1])  # RGB
            out.append(F.normalize(net.forward_features(preprocess(torch.from_numpy(small))), dim=1))
    return torch.cat(out)


def train(stills: list[Still], epochs: int = 8, batch: int = 16, seed: int = 0,
          progress: Callable[[int, int], None] | None = None, width: int = 16,
          kind: str = "dct", keep: int = 16, teacher: float = 0.0, cosine: bool = False,
          ema: float = 0.0) -> SnapshotNet | RgbNet:  # fmt: skip
    """``teacher``: the weight of the distillation term (1 - cosine between the projected pooled
    features and :func:`teacher_embeddings`); 0 trains on the labels alone. ``cosine``: the
    learning rate falls by a half cosine over the epochs, (1 + cos(pi e / epochs)) / 2 of it in
    epoch e (else it stays constant). ``ema``: the weights returned are an exponential moving
    average of every step's, batch-norm statistics included (0: the last step's), so the result
    does not hang on where the last batches fell."""
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    scene = torch.tensor([s.scene for s in stills])
    cues = torch.tensor([s.cues for s in stills], dtype=torch.float32)
    net: SnapshotNet | RgbNet = (RgbNet if kind == "rgb" else SnapshotNet)(
        SnapshotConfig(width=width, kind=kind, coefficients=keep)
    )
    target = teacher_embeddings(stills) if teacher > 0 else None
    project = torch.nn.Linear(8 * width, target.shape[1] if target is not None else 1)
    opt = torch.optim.AdamW([*net.parameters(), *project.parameters()], lr=LR, weight_decay=1e-4)
    average = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(ema), use_buffers=True) if ema else None
    for epoch in range(epochs):
        if cosine:
            for group in opt.param_groups:
                group["lr"] = LR * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
        net.train()
        # coefficients read per batch (6 MB each), not kept for the whole set
        for g in same_shape_groups(stills, rng.permutation(len(stills))):
            for start in range(0, len(g), batch):
                idx = g[start : start + batch]
                if len(idx) < 2:
                    continue
                pooled = net.features(*net_inputs(net, [stills[i] for i in idx]))  # type: ignore[arg-type]
                loss = F.cross_entropy(net.scene(pooled), scene[idx]) + F.binary_cross_entropy_with_logits(
                    net.cue(pooled), cues[idx]
                )
                if target is not None:
                    loss = loss + teacher * (1 - F.cosine_similarity(project(pooled), target[idx])).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                if average is not None:
                    average.update_parameters(net)
        if progress:
            progress(epoch + 1, epochs)
    if average is not None:
        net.load_state_dict(average.module.state_dict())
    return net.eval()


def robustness(net: StillNet, stills: list[Still]) -> dict[str, dict[str, float]]:
    """Scene accuracy by JPEG quality band and by picture height."""
    bands = {"q50-64": (50, 65), "q65-79": (65, 80), "q80-95": (80, 96)}
    out: dict[str, dict[str, float]] = {}
    for name, (lo, hi) in bands.items():
        part = [s for s in stills if lo <= s.quality < hi]
        if part:
            out[name] = accuracy(net, part) | {"n": len(part)}
    for h in sorted({s.height for s in stills}):
        part = [s for s in stills if s.height == h]
        out[f"{h}p"] = accuracy(net, part) | {"n": len(part)}
    return out


def accuracy(net: StillNet, stills: list[Still], qr_reader: bool = False) -> dict[str, float]:
    """Scene accuracy and per-cue accuracy at 0.5 on labelled stills: the network's own (a
    model card's), or with ``qr_reader`` the screening tier's (:func:`classify_jpeg`)."""
    hits, cue_hits = 0, np.zeros(len(CUES))
    for s in stills:
        v = classify_jpeg(net, s.jpeg, qr_reader)
        hits += v["scene"] == SCENES[s.scene]
        cue_hits += [(v["cues"][n] >= 0.5) == bool(s.cues[i]) for i, n in enumerate(CUES)]  # type: ignore[index]
    n = max(len(stills), 1)
    return {
        "scene_accuracy": hits / n,
        **{f"{c}_accuracy": float(cue_hits[i] / n) for i, c in enumerate(CUES)},
    }


def held_out_stills(per_stream: int = 6) -> tuple[list[Still], list[Still]]:
    """The classifier card's held-out stills: synthetic seeds 9001-9040, and the real held-out
    photographs (the probe suite's). The same whatever the training seed, so seeds compare on one set."""
    return list(synthetic_stills(list(range(9001, 9041)), per_stream, 1)), list(real_stills(0))


def save(folder: Path, net: SnapshotNet | RgbNet, card: dict[str, object]) -> None:
    from models.registry import sha256_file

    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"config": net.cfg.to_dict(), "state_dict": net.state_dict()}, folder / CHECKPOINT)
    (folder / CARD).write_text(
        json.dumps({**card, "sha256": sha256_file(folder / CHECKPOINT)}, indent=2) + "\n"
    )


def train_snapshot(out_dir: Path, seeds: list[int], per_stream: int, epochs: int, seed: int = 0,
                   progress: Callable[[int, int], None] | None = None,
                   width: int = 16, kind: str = "dct", keep: int = 16,
                   teacher: float = 0.0, cosine: bool = False,
                   ema: float = 0.0) -> dict[str, object]:  # fmt: skip
    """The whole recipe: stills made, the classifier trained, scored on held-out synthetic stills
    (seeds 9001-9040) and on the real held-out photographs, and saved with its card."""
    import time

    train_set = list(synthetic_stills(seeds, per_stream, seed)) + list(
        real_stills(seed, training=True, variants=24)
    )
    synthetic, real = held_out_stills(per_stream)
    t0 = time.process_time()
    net = train(
        train_set,
        epochs=epochs,
        seed=seed,
        progress=progress,
        width=width,
        kind=kind,
        keep=keep,
        teacher=teacher,
        cosine=cosine,
        ema=ema,
    )
    card: dict[str, object] = {
        "name": "gopwatch-snapshot" + ("-rgb-baseline" if kind == "rgb" else ""),
        "version": f"snapshot-{kind}-{seed}-{len(train_set)}",
        "config": net.cfg.to_dict(), "scenes": list(SCENES), "cues": list(CUES),
        "data": {"train_synthetic_seeds": [seeds[0], seeds[-1]], "stills_per_stream": per_stream,
                 "train_real": "the synthetic streams' photographs (scenario.PHOTOS), 24 camera "
                               "views each, plain, with a caption and with a QR code",
                 "train_stills": len(train_set), "held_out_synthetic_seeds": [9001, 9040],
                 "held_out_real": "the probe suite's photographs (streaming/offline/overlays.footage), "
                                  "plain, with a caption and with a QR code"},
        "training": {"epochs": epochs, "seed": seed, "cpu_s": round(time.process_time() - t0, 1),
                     "labels": "the synthetic script's scene kind and active overlays",
                     "learning_rate": f"{LR}, {'a half cosine over the epochs' if cosine else 'constant'}",
                     "weight_average": {"ema_decay": ema} if ema else None,
                     "teacher": {"weight": teacher, "model": "EfficientNet-Lite0 (ImageNet) embedding of the "
                                 "decoded still at 224x224", "loss": "1 - cosine, through a linear "
                                 "projection of the pooled features (dropped after training)"}},
        "metrics": {"synthetic_held_out": accuracy(net, synthetic) | {"n": len(synthetic)},
                    "real_held_out": accuracy(net, real) | {"n": len(real)},
                    "by_quality_and_size": robustness(net, synthetic + real)},
    }  # fmt: skip
    save(out_dir, net, card)
    written: dict[str, object] = json.loads((out_dir / CARD).read_text())
    return written
