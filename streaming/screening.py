"""Screening platform stills, pure: a JPEG in, its scene and risk cues read from the DCT
coefficients, and whether the stream should get full GOP analysis (a :class:`SnapshotVerdict`).

The same still gives the same verdict (one thread, no wall time inside), and the verdict id comes
from the stream, the capture time and the model, so a redelivered still is recognisable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from models.snapshot.fold import channels_last, for_inference
from models.snapshot.jpeg import Coefficients, coefficients, inspect
from models.snapshot.net import (
    CUES,
    SCENES,
    compress,
    load_snapshot,
    rgb_small,
    rgb_tensor,
)
from models.snapshot.onnx_net import StillNet
from models.teacher.sources import read_qr
from schemas.screening import SnapshotVerdict, StillSource, make_verdict_id

ESCALATE_AT: dict[str, float] = {"qr_code": 0.5, "large_text": 0.5}
QR_FORMAT_ONLY = 0.9  # the qr_code cue of a symbol whose format information was read, not its data


def batch(cs: list[Coefficients]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, str]:
    """Coefficients of stills of one size and sampling as the network's input tensors (on its
    log scale)."""

    def stack(planes: list[np.ndarray]) -> torch.Tensor:
        # one still: a view, which keeps the native reader's channels-last memory (no copy)
        x = torch.from_numpy(planes[0])[None] if len(planes) == 1 else torch.from_numpy(np.stack(planes))
        return x if cs[0].log_scaled else compress(x)

    y = stack([c.y for c in cs])
    if cs[0].cb is None:
        return y, None, None, "grey"
    cb = stack([c.cb for c in cs if c.cb is not None])
    cr = stack([c.cr for c in cs if c.cr is not None])
    return y, cb, cr, cs[0].subsampling


def probabilities(s_logits: torch.Tensor, c_logits: torch.Tensor) -> dict[str, object]:
    """The first still's scene (argmax) with its probability, every scene's, every cue's."""
    s, c = s_logits[0].numpy().astype(np.float64), c_logits[0].numpy().astype(np.float64)
    e = np.exp(s - s.max())  # seven numbers: numpy, without torch's per-op dispatch
    p, q = e / e.sum(), 1 / (1 + np.exp(-c))
    k = int(p.argmax())
    return {"scene": SCENES[k], "scene_p": round(float(p[k]), 4),
            "scenes": {n: round(float(v), 4) for n, v in zip(SCENES, p, strict=True)},
            "cues": {n: round(float(v), 4) for n, v in zip(CUES, q, strict=True)}}  # fmt: skip


@torch.inference_mode()
def classify(net: StillNet, c: Coefficients) -> dict[str, object]:
    """One still's scene class with its probability, and each cue's probability."""
    y, cb, cr, sub = batch([c])
    return probabilities(*net.eval()(channels_last(y), channels_last(cb), channels_last(cr), sub))


@torch.inference_mode()
def classify_jpeg(net: StillNet, data: bytes, qr_reader: bool = True) -> dict[str, object]:
    """A JPEG's classification by either network; the JPEG checked first (:class:`JpegError`).
    With ``qr_reader``, zxing-cpp also looks for QR codes in a quarter-size grey picture, which
    the DCT path makes from each luma block's lowest coefficients while it reads them and the RGB
    path takes from its decoded input: a code it reads sets the ``qr_code`` cue
    (:func:`with_read_qr`)."""
    if net.cfg.kind == "rgb":
        inspect(data)
        small = rgb_small(data)
        v = probabilities(*net.eval()(channels_last(rgb_tensor(small)[None])))
        return with_read_qr(v, cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)) if qr_reader else v
    c = coefficients(data, log_scaled=True, keep=net.cfg.coefficients, quarter=qr_reader)
    v = classify(net, c)
    return with_read_qr(v, c.quarter) if c.quarter is not None else v


def with_read_qr(v: dict[str, object], grey: np.ndarray) -> dict[str, object]:
    """``v`` with its ``qr_code`` cue at least 1.0 where zxing-cpp decodes a QR code in ``grey``,
    at least :data:`QR_FORMAT_ONLY` where it reads only a symbol's format information (BCH-coded:
    not a pattern met by chance). A network on 16 coefficients per block sees a code half the
    picture high as flat blocks; the quarter-size picture shows its modules 2-3 pixels wide."""
    symbols = read_qr(grey)
    if symbols:
        cues: dict[str, float] = v["cues"]  # type: ignore[assignment]
        cues["qr_code"] = max(cues["qr_code"], 1.0 if any(text for text, _, _ in symbols) else QR_FORMAT_ONLY)
    return v


@dataclass
class Screener:
    net: StillNet
    model_version: str
    escalate_at: dict[str, float] = field(default_factory=lambda: dict(ESCALATE_AT))
    escalate_for_s: float = 300.0

    @classmethod
    def load(cls, folder: Path, escalate_for_s: float = 300.0) -> Screener:
        trained, card = load_snapshot(folder)
        version = f"{card.get('version', 'snapshot')}+{str(card.get('sha256', ''))[:8]}"
        return cls(for_inference(trained), version, escalate_for_s=escalate_for_s)

    def screen(self, stream_id: str, capture_ms: int, jpeg: bytes, source: StillSource) -> SnapshotVerdict:
        """The still's verdict. Raises :class:`JpegError` for a file that is not a complete,
        supported JPEG, with the reason."""
        info = inspect(jpeg)
        v = classify_jpeg(self.net, jpeg)
        cues: dict[str, float] = v["cues"]  # type: ignore[assignment]
        reasons = tuple(f"{c} {p:.2f} >= {self.escalate_at[c]:.2f}" for c, p in cues.items()
                        if c in self.escalate_at and p >= self.escalate_at[c])  # fmt: skip
        sub = {1: "grey"}.get(info.components) or _subsampling(info.sampling)
        return SnapshotVerdict(
            verdict_id=make_verdict_id(stream_id, capture_ms, self.model_version), stream_id=stream_id,
            capture_ms=capture_ms, scene=str(v["scene"]), scene_p=v["scene_p"],
            scenes=v["scenes"], cues=cues, escalate=bool(reasons),
            escalate_for_s=self.escalate_for_s if reasons else 0.0, reasons=reasons,
            model_version=self.model_version, width=info.width, height=info.height, subsampling=sub,
            source=source,
        )  # fmt: skip


def _subsampling(sampling: tuple[tuple[int, int], ...]) -> str:
    (yv, yh), (cv, ch) = sampling[0], sampling[1]
    return {(2, 2): "4:2:0", (1, 2): "4:2:2", (1, 1): "4:4:4"}.get((yv // cv, yh // ch), f"{sampling}")
