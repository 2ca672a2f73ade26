"""The compressed-domain still classifier: DCT coefficient maps in, scene class and risk cues out.

Each 8x8 block's lowest-frequency dequantised coefficients (``coefficients`` of them, in zig-zag
order) are one position of a map at 1/8 of the picture's size (the luma grid). The chroma maps
are smaller by the file's subsampling; a transposed convolution per subsampling (stride 2x2 for
4:2:0, 1x2 for 4:2:2, 1x1 for 4:4:4) brings them to the luma grid, where the three maps are
concatenated and convolved, the first convolution a non-overlapping 2x2 one. Pooling over the
whole grid makes any picture size acceptable.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.errors import CheckpointMismatchError, ModelError
from models.snapshot.jpeg import Coefficients, compress

SCENES = ("game", "screen", "talking_head", "natural", "black")
CUES = ("qr_code", "large_text")
UPSAMPLE = {"4:2:0": (2, 2), "4:2:2": (1, 2), "4:4:4": (1, 1)}


@dataclass(frozen=True)
class SnapshotConfig:
    width: int = 16
    kind: str = "dct"  # or "rgb": the pixel-domain baseline
    coefficients: int = 16  # per block, the lowest frequencies (zig-zag order); DCT only
    body: tuple[int, ...] = ()  # the body's three output widths (a pruned network's); () for 2w, 3w, 4w
    scenes: tuple[str, ...] = SCENES
    cues: tuple[str, ...] = CUES

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _block(cin: int, cout: int, stride: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2 if kernel % 2 else 0, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SnapshotNet(nn.Module):
    def __init__(self, cfg: SnapshotConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or SnapshotConfig()
        w, k = cfg.width, cfg.coefficients
        self.luma = nn.Sequential(nn.Conv2d(k, w, 1), nn.BatchNorm2d(w), nn.ReLU(inplace=True))
        # one deconvolution per subsampling, shared by Cb and Cr (stacked as a batch of planes)
        self.chroma = nn.ModuleDict(
            {
                name.replace(":", ""): nn.ConvTranspose2d(k, w // 2, kernel_size=s, stride=s)
                for name, s in UPSAMPLE.items()
            }
        )
        # the first convolution sees each 2x2 of blocks once: a 3x3 one cost twice the rest
        b = cfg.body or (2 * w, 3 * w, 4 * w)
        self.body = nn.Sequential(
            _block(2 * w, b[0], 2, kernel=2), _block(b[0], b[1], 2), _block(b[1], b[2], 2)
        )
        self.scene = nn.Linear(2 * b[2], len(cfg.scenes))
        self.cue = nn.Linear(2 * b[2], len(cfg.cues))

    def fuse(
        self, y: torch.Tensor, cb: torch.Tensor | None, cr: torch.Tensor | None, sub: str
    ) -> torch.Tensor:
        """(N, K, H, W) luma and (N, K, h, w) chroma maps, on the log scale (:func:`compress`,
        done by :func:`tensors` or by the reader) -> (N, 2*width, H, W) fused map."""
        ly = self.luma(y)
        n, _, hh, ww = y.shape
        if cb is None or cr is None:  # grey: no colour evidence
            zero = torch.zeros(n, self.cfg.width, hh, ww, dtype=ly.dtype)
            return torch.cat([ly, zero], dim=1)
        up = _deconv(self.chroma[sub.replace(":", "")], torch.cat([cb, cr], dim=0))
        up = nn.functional.pad(up, (0, max(0, ww - up.shape[3]), 0, max(0, hh - up.shape[2])))[:, :, :hh, :ww]
        return torch.cat([ly, up[:n], up[n:]], dim=1)

    def forward(
        self, y: torch.Tensor, cb: torch.Tensor | None, cr: torch.Tensor | None, sub: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scene logits (N, scenes) and cue logits (N, cues)."""
        pooled = self.features(y, cb, cr, sub)
        return self.scene(pooled), self.cue(pooled)

    def features(
        self, y: torch.Tensor, cb: torch.Tensor | None, cr: torch.Tensor | None, sub: str
    ) -> torch.Tensor:
        """The pooled (N, 8*width) features the heads read (and training distils into)."""
        z = self.body(self.fuse(y, cb, cr, sub))
        return torch.cat([z.mean(dim=(2, 3)), z.amax(dim=(2, 3))], dim=1)


def _deconv(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer`` (a ConvTranspose2d whose kernel equals its stride) applied to ``x``, computed as a
    1x1 convolution to every kernel position's channels, then each position moved to its place
    (depth to space). The same numbers: kernels that equal the stride never overlap, and this
    runs several times faster on a CPU than the transposed convolution."""
    assert isinstance(layer, nn.ConvTranspose2d)
    cin, cout, kh, kw = layer.weight.shape
    w = layer.weight.permute(1, 2, 3, 0).reshape(cout * kh * kw, cin, 1, 1)
    b = None if layer.bias is None else layer.bias.repeat_interleave(kh * kw)
    n, _, h, ww = x.shape
    z = nn.functional.conv2d(x, w, b).view(n, cout, kh, kw, h, ww)
    return z.permute(0, 1, 4, 2, 5, 3).reshape(n, cout, h * kh, ww * kw)


def tensors(c: Coefficients) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, str]:
    """One still's coefficients as a batch of one, on the network's log scale."""

    def t(a: np.ndarray | None) -> torch.Tensor | None:
        if a is None:
            return None
        x = torch.from_numpy(a)[None]
        return x if c.log_scaled else compress(x)

    return t(c.y), t(c.cb), t(c.cr), c.subsampling  # type: ignore[return-value]


def load_snapshot(folder: Path) -> tuple[SnapshotNet | RgbNet, dict[str, object]]:
    """The checkpoint and its card, the checkpoint's sha256 checked against the card's."""
    ckpt, card_path = folder / "snapshot.pt", folder / "snapshot.card.json"
    if not ckpt.exists() or not card_path.exists():
        raise ModelError(f"no snapshot classifier in {folder} (need snapshot.pt and snapshot.card.json)")
    card = json.loads(card_path.read_text())
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    if digest != card.get("sha256"):
        raise CheckpointMismatchError(
            f"{ckpt} has sha256 {digest[:12]}…, its card says {str(card.get('sha256'))[:12]}…"
        )
    payload = torch.load(ckpt, map_location="cpu", weights_only=True)
    c = payload["config"]
    cfg = SnapshotConfig(width=int(c["width"]), kind=str(c.get("kind", "dct")), scenes=tuple(c["scenes"]),
                         cues=tuple(c["cues"]), body=tuple(int(b) for b in c.get("body", ())))  # fmt: skip
    if cfg.kind == "dct" and "coefficients" not in c:
        raise CheckpointMismatchError(f"{ckpt} predates zig-zag coefficient input: retrain it")
    cfg = replace(cfg, coefficients=int(c.get("coefficients", 64)))
    net: SnapshotNet | RgbNet = (RgbNet if cfg.kind == "rgb" else SnapshotNet)(cfg)
    net.load_state_dict(payload["state_dict"])
    return net.eval(), card


class RgbNet(nn.Module):
    """The pixel-domain baseline: the fully decoded still at 320x180, four strided convolutions,
    the same pooling and heads (what the compressed-domain network is measured against)."""

    SIZE = (320, 180)

    def __init__(self, cfg: SnapshotConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or SnapshotConfig()
        w = cfg.width
        self.body = nn.Sequential(
            _block(3, w, 2), _block(w, 2 * w, 2), _block(2 * w, 3 * w, 2), _block(3 * w, 4 * w, 2)
        )
        self.scene = nn.Linear(8 * w, len(cfg.scenes))
        self.cue = nn.Linear(8 * w, len(cfg.cues))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.features(x)
        return self.scene(pooled), self.cue(pooled)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        z = self.body(x)
        return torch.cat([z.mean(dim=(2, 3)), z.amax(dim=(2, 3))], dim=1)


def rgb_small(data: bytes) -> np.ndarray:
    """A JPEG fully decoded (libjpeg-turbo via OpenCV) and scaled to the baseline's input size, BGR."""
    import cv2

    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ModelError("not a decodable image")
    return cv2.resize(bgr, RgbNet.SIZE, interpolation=cv2.INTER_AREA)


def rgb_tensor(data: bytes | np.ndarray) -> torch.Tensor:
    """The baseline's input, (3, H, W): a JPEG's bytes, or what :func:`rgb_small` made of them."""
    small = rgb_small(data) if isinstance(data, bytes) else data
    # one pass (BGR to RGB, to float, scaled), and a channels-last view of it: what the screening
    # copy takes, so the baseline's input costs no more copies than the compressed-domain one's
    import cv2

    rgb = cv2.cvtColor(small, cv2.COLOR_BGR2RGB).astype(np.float32)
    rgb *= np.float32(1 / 255)
    return torch.from_numpy(rgb).permute(2, 0, 1)
